//! The life of element instances: activate, complete, take flows, terminate, and catch errors.
//!
//! Each step writes Zeebe's lifecycle events (ELEMENT_ACTIVATING, ELEMENT_ACTIVATED, ELEMENT_COMPLETING,
//! ELEMENT_COMPLETED, SEQUENCE_FLOW_TAKEN, ELEMENT_TERMINATING, ELEMENT_TERMINATED). A step that fails
//! on user data (a mapping, a condition, a job type) raises an incident and leaves the instance where it
//! stopped; resolving the incident runs the same step again (see [`Ctx::retry_element`]).

use std::sync::Arc;

use serde_json::{Map, Value as Json};
use waggle_protocol::command::{CommandResult, ProcessInstanceCreated};
use waggle_protocol::key;
use waggle_protocol::record::{
    ErrorType, Intent, JobIntent, JobRecord, MessageSubscriptionRecord, ProcessInstanceIntent, ProcessInstanceRecord,
    ProcessMessageSubscriptionIntent, ProcessMessageSubscriptionRecord, RecordValue, RejectionType,
};

use super::applier::is_join;
use super::variables::{insert_path, ScopeView};
use super::{Ctx, PartitionCommand, Step};
use crate::feel::{FeelError, Value};
use crate::model::{
    ElementIdx, ElementKind, EndKind, Mapping, MessageDefinition, ProcessModel, TaskBehavior, ValueExpr,
};
use crate::state::tables::elements::{self, ElementInstance, Lifecycle};
use crate::state::tables::{jobs, subscriptions};

/// Why a step stopped: becomes an incident.
pub(super) struct Failure {
    pub error_type: ErrorType,
    pub message: String,
}

impl Failure {
    fn new(error_type: ErrorType, message: impl Into<String>) -> Self {
        Self { error_type, message: message.into() }
    }
}

fn feel_failure(error_type: ErrorType, what: &str, source: &str, error: FeelError) -> Failure {
    Failure::new(error_type, format!("failed to evaluate {what} '{source}': {error}"))
}

impl Ctx<'_> {
    /// Writes ELEMENT_ACTIVATING for a new instance of `element` and continues its activation.
    pub(super) fn activate_element(
        &mut self,
        model: &Arc<ProcessModel>,
        element: ElementIdx,
        flow_scope_key: i64,
        template: &ProcessInstanceRecord,
    ) {
        let key = if element == ProcessModel::ROOT { template.process_instance_key } else { self.new_key() };
        self.activate_element_as(model, element, flow_scope_key, template, key);
    }

    /// The record of a new instance of `element`, before it is activated.
    pub(super) fn element_record(
        model: &ProcessModel,
        element: ElementIdx,
        flow_scope_key: i64,
        template: &ProcessInstanceRecord,
    ) -> ProcessInstanceRecord {
        let e = model.element(element);
        ProcessInstanceRecord {
            element_id: e.id.clone(),
            flow_scope_key,
            bpmn_element_type: e.element_type(),
            bpmn_event_type: e.event_type(),
            ..template.clone()
        }
    }

    /// Writes ELEMENT_ACTIVATING for a new instance of `element` with a key chosen before (when its
    /// activation was deferred) and continues its activation.
    pub(super) fn activate_element_as(
        &mut self,
        model: &Arc<ProcessModel>,
        element: ElementIdx,
        flow_scope_key: i64,
        template: &ProcessInstanceRecord,
        key: i64,
    ) {
        let record = Self::element_record(model, element, flow_scope_key, template);
        self.event(
            key,
            Intent::ProcessInstance(ProcessInstanceIntent::ElementActivating),
            RecordValue::ProcessInstance(record),
        );
        self.continue_activation(model, key, None);
    }

    /// Activation after ELEMENT_ACTIVATING: input mappings, then what the element does.
    /// `payload` are variables the element starts with (a caught error's variables).
    pub(super) fn continue_activation(
        &mut self,
        model: &Arc<ProcessModel>,
        key: i64,
        payload: Option<&Map<String, Json>>,
    ) {
        let Some(instance) = elements::get(&*self.kv, key) else { return };
        let Some(idx) = model.find(&instance.record.element_id) else { return };
        let element = model.element(idx);
        if !element.inputs.is_empty() {
            match self.evaluate_mappings(&element.inputs, instance.record.flow_scope_key, key) {
                Ok(values) => self.merge_local(key, &values),
                Err(failure) => return self.raise_incident(&instance, failure, -1),
            }
        }
        if let Some(payload) = payload {
            self.apply_payload(model, key, payload);
        }
        let activated = |ctx: &mut Self| ctx.lifecycle_event(&instance, ProcessInstanceIntent::ElementActivated);
        match &element.kind {
            ElementKind::Process { none_start } | ElementKind::SubProcess { none_start } => {
                activated(self);
                if let Some(start) = *none_start {
                    self.queue_activation(model, start, key, &instance.record);
                }
            }
            ElementKind::Task { behavior: TaskBehavior::Job(definition), .. } => {
                let job_type = match self.value_of(&definition.job_type, key) {
                    Ok(t) if !t.is_empty() => t,
                    Ok(_) => {
                        return self.raise_incident(
                            &instance,
                            Failure::new(ErrorType::ExtractValueError, "the job type evaluated to an empty string"),
                            -1,
                        )
                    }
                    Err(failure) => return self.raise_incident(&instance, failure, -1),
                };
                let retries = match self.value_of(&definition.retries, key) {
                    Ok(r) => match r.parse::<f64>() {
                        Ok(n) if n.fract() == 0.0 && n >= 0.0 => n as i32,
                        _ => {
                            return self.raise_incident(
                                &instance,
                                Failure::new(
                                    ErrorType::ExtractValueError,
                                    format!("the job retries must be a non-negative whole number, but were '{r}'"),
                                ),
                                -1,
                            )
                        }
                    },
                    Err(failure) => return self.raise_incident(&instance, failure, -1),
                };
                let headers: Map<String, Json> =
                    definition.headers.iter().map(|(k, v)| (k.clone(), Json::String(v.clone()))).collect();
                let job = JobRecord {
                    job_type: job_type.clone(),
                    retries,
                    deadline: -1,
                    custom_headers: Json::Object(headers).to_string(),
                    variables: String::new(),
                    element_id: instance.record.element_id.clone(),
                    element_instance_key: key,
                    process_instance_key: instance.record.process_instance_key,
                    bpmn_process_id: instance.record.bpmn_process_id.clone(),
                    process_definition_version: instance.record.version,
                    process_definition_key: instance.record.process_definition_key,
                    tenant_id: instance.record.tenant_id.clone(),
                    ..Default::default()
                };
                let job_key = self.new_key();
                self.event(job_key, Intent::Job(JobIntent::Created), RecordValue::Job(job));
                activated(self);
                self.out.jobs_available.push(job_type);
            }
            ElementKind::Task { behavior: TaskBehavior::Script { expression, result_variable }, .. } => {
                let result = match self.evaluate(expression, key, None) {
                    Ok(v) => v,
                    Err(e) => {
                        return self.raise_incident(
                            &instance,
                            feel_failure(ErrorType::ExtractValueError, "the script", expression.source(), e),
                            -1,
                        )
                    }
                };
                activated(self);
                let mut document = Map::new();
                document.insert(result_variable.clone(), result.to_json());
                self.apply_payload(model, key, &document);
                self.queue.push_back(Step::Complete { key });
            }
            ElementKind::IntermediateCatchEvent { message } | ElementKind::ReceiveTask { message } => {
                let (name, correlation_key) = match self.subscription_of(message, key) {
                    Ok(found) => found,
                    Err(failure) => return self.raise_incident(&instance, failure, -1),
                };
                activated(self);
                self.open_subscription(&instance, name, correlation_key);
            }
            _ => {
                activated(self);
                self.queue.push_back(Step::Complete { key });
            }
        }
    }

    fn queue_activation(
        &mut self,
        model: &Arc<ProcessModel>,
        element: ElementIdx,
        flow_scope_key: i64,
        template: &ProcessInstanceRecord,
    ) {
        self.queue.push_back(Step::Activate {
            model: model.clone(),
            element,
            flow_scope_key,
            template: template.clone(),
        });
    }

    fn lifecycle_event(&mut self, instance: &ElementInstance, intent: ProcessInstanceIntent) {
        self.event(
            instance.key,
            Intent::ProcessInstance(intent),
            RecordValue::ProcessInstance(instance.record.clone()),
        );
    }

    /// Completes an activated element: ELEMENT_COMPLETING, then [`Ctx::continue_completion`].
    pub(super) fn complete_element(&mut self, key: i64) {
        let Some(instance) = elements::get(&*self.kv, key) else { return };
        if instance.lifecycle != Lifecycle::Activated {
            return;
        }
        self.lifecycle_event(&instance, ProcessInstanceIntent::ElementCompleting);
        self.continue_completion(key);
    }

    /// Completion after ELEMENT_COMPLETING: outputs, the flows to take, and what ends with the element.
    pub(super) fn continue_completion(&mut self, key: i64) {
        let Some(instance) = elements::get(&*self.kv, key) else { return };
        let Some(model) = self.model(instance.record.process_definition_key) else { return };
        let Some(idx) = model.find(&instance.record.element_id) else { return };
        let element = model.element(idx);
        let flow_scope_key = instance.record.flow_scope_key;
        if !element.outputs.is_empty() {
            match self.evaluate_mappings(&element.outputs, key, flow_scope_key) {
                Ok(values) => self.merge_propagate(flow_scope_key, &values),
                Err(failure) => return self.raise_incident(&instance, failure, -1),
            }
        }
        let flows = match &element.kind {
            ElementKind::ExclusiveGateway { default_flow } => match self.choose_flow(&model, idx, *default_flow, key) {
                Ok(flow) => vec![flow],
                Err(failure) => return self.raise_incident(&instance, failure, -1),
            },
            _ => element.outgoing.clone(),
        };
        if let ElementKind::EndEvent { kind: EndKind::Error { error_code } } = &element.kind {
            if !self.throw_error(key, error_code, "", &Map::new()) {
                let failure = Failure::new(
                    ErrorType::UnhandledErrorEvent,
                    format!("Expected to throw an error event with the code '{error_code}', but it was not caught. No error events are available in the scope."),
                );
                self.raise_incident(&instance, failure, -1);
            }
            return;
        }
        if element.is_container() || idx == ProcessModel::ROOT {
            // Nothing of a finished scope survives it.
            for child in elements::children(&*self.kv, key) {
                self.terminate_element(child);
            }
        }
        let result_variables = (idx == ProcessModel::ROOT)
            .then(|| elements::awaited_result(&*self.kv, key))
            .flatten()
            .map(|fetch| ScopeView::new(&*self.kv, key, None).fetch(&fetch));
        self.lifecycle_event(&instance, ProcessInstanceIntent::ElementCompleted);
        if let Some(variables) = result_variables {
            let r = &instance.record;
            let created = ProcessInstanceCreated {
                process_definition_key: r.process_definition_key,
                bpmn_process_id: r.bpmn_process_id.clone(),
                version: r.version,
                process_instance_key: r.process_instance_key,
                tenant_id: r.tenant_id.clone(),
            };
            let variables = Json::Object(variables).to_string();
            self.out
                .finished_instances
                .push((key, CommandResult::ProcessInstanceCompleted { instance: created, variables }));
        }
        if idx == ProcessModel::ROOT {
            return;
        }
        if let ElementKind::EndEvent { kind: EndKind::Terminate } = &element.kind {
            for sibling in elements::children(&*self.kv, flow_scope_key) {
                self.terminate_element(sibling);
            }
            self.queue.push_back(Step::Complete { key: flow_scope_key });
            return;
        }
        for flow in &flows {
            self.take_flow(&model, *flow, &instance.record);
        }
        // Checked after the activations just queued have run, so their instances count.
        self.queue.push_back(Step::CompleteScopeIfDone { key: flow_scope_key });
    }

    fn take_flow(&mut self, model: &Arc<ProcessModel>, flow: usize, from: &ProcessInstanceRecord) {
        let f = model.flow(flow);
        let key = self.new_key();
        let record = ProcessInstanceRecord {
            element_id: f.id.clone(),
            bpmn_element_type: waggle_protocol::record::BpmnElementType::SequenceFlow,
            bpmn_event_type: waggle_protocol::record::BpmnEventType::Unspecified,
            ..from.clone()
        };
        self.event(
            key,
            Intent::ProcessInstance(ProcessInstanceIntent::SequenceFlowTaken),
            RecordValue::ProcessInstance(record),
        );
        if is_join(model, f.target) {
            let target = model.element(f.target);
            let ready = target
                .incoming
                .iter()
                .all(|&i| elements::taken_count(&*self.kv, from.flow_scope_key, &model.flow(i).id) > 0);
            if !ready {
                return;
            }
        }
        self.queue_activation(model, f.target, from.flow_scope_key, from);
    }

    /// A scope with no active children and no tokens waiting at joins has nothing left to do.
    pub(super) fn complete_scope_if_done(&mut self, scope_key: i64) {
        let Some(scope) = elements::get(&*self.kv, scope_key) else { return };
        if scope.lifecycle == Lifecycle::Activated && scope.active_children == 0 && scope.waiting_tokens == 0 {
            self.queue.push_back(Step::Complete { key: scope_key });
        }
    }

    fn choose_flow(
        &mut self,
        model: &ProcessModel,
        idx: ElementIdx,
        default_flow: Option<usize>,
        key: i64,
    ) -> Result<usize, Failure> {
        let element = model.element(idx);
        for &flow in &element.outgoing {
            if Some(flow) == default_flow {
                continue;
            }
            let f = model.flow(flow);
            let Some(condition) = &f.condition else { return Ok(flow) };
            match self.evaluate(condition, key, None) {
                Ok(v) if v.is_truthy() => return Ok(flow),
                Ok(Value::Bool(false)) | Ok(Value::Null) => {}
                Ok(other) => {
                    return Err(Failure::new(
                        ErrorType::ConditionError,
                        format!(
                            "Expected the condition '{}' of sequence flow '{}' to be a boolean, but it was {}",
                            condition.source(),
                            f.id,
                            other.type_name()
                        ),
                    ))
                }
                Err(e) => {
                    return Err(feel_failure(
                        ErrorType::ConditionError,
                        &format!("the condition of sequence flow '{}'", f.id),
                        condition.source(),
                        e,
                    ))
                }
            }
        }
        default_flow.ok_or_else(|| {
            Failure::new(
                ErrorType::ConditionError,
                format!("Expected at least one condition of exclusive gateway '{}' to evaluate to true, or to have a default flow, but none did", element.id),
            )
        })
    }

    /// Evaluates mappings in the context of `context_scope`; earlier results are visible to later ones.
    fn evaluate_mappings(
        &mut self,
        mappings: &[Mapping],
        context_scope: i64,
        target_scope: i64,
    ) -> Result<Map<String, Json>, Failure> {
        let mut values = Map::new();
        for mapping in mappings {
            let value = {
                let view = ScopeView::new(&*self.kv, context_scope, Some(&values));
                mapping
                    .source
                    .evaluate(&view, &crate::feel::Environment { now_millis: self.now, limits: self.limits.feel })
            };
            let value = value
                .map_err(|e| feel_failure(ErrorType::IoMappingError, "the mapping", mapping.source.source(), e))?;
            if let Some((root, _)) = mapping.target.split_once('.') {
                if !values.contains_key(root) {
                    let existing = ScopeView::new(&*self.kv, target_scope, None).fetch(&[root.to_string()]);
                    values.extend(existing);
                }
            }
            insert_path(&mut values, &mapping.target, value.to_json());
        }
        Ok(values)
    }

    /// The value of a static-or-FEEL attribute as a string.
    fn value_of(&self, value: &ValueExpr, scope_key: i64) -> Result<String, Failure> {
        match value {
            ValueExpr::Static(s) => Ok(s.clone()),
            ValueExpr::Feel(expression) => match self.evaluate(expression, scope_key, None) {
                Ok(Value::String(s)) => Ok(s),
                Ok(Value::Number(n)) => Ok(Value::Number(n).to_json().to_string()),
                Ok(other) => Err(Failure::new(
                    ErrorType::ExtractValueError,
                    format!(
                        "Expected '{}' to evaluate to a string or number, but it was {}",
                        expression.source(),
                        other.type_name()
                    ),
                )),
                Err(e) => Err(feel_failure(ErrorType::ExtractValueError, "the expression", expression.source(), e)),
            },
        }
    }

    fn subscription_of(&self, message: &MessageDefinition, scope_key: i64) -> Result<(String, String), Failure> {
        let name = self.value_of(&message.name, scope_key)?;
        let Some(expression) = &message.correlation_key else {
            return Err(Failure::new(ErrorType::ExtractValueError, format!("message '{name}' has no correlation key")));
        };
        let correlation_key = match self.evaluate(expression, scope_key, None) {
            Ok(Value::String(s)) => s,
            Ok(Value::Number(n)) => Value::Number(n).to_json().to_string(),
            Ok(other) => {
                return Err(Failure::new(
                    ErrorType::ExtractValueError,
                    format!("Failed to extract the correlation key for '{}': The value must be either a string or a number, but was {}.", expression.source(), other.type_name().to_uppercase()),
                ))
            }
            Err(e) => return Err(feel_failure(ErrorType::ExtractValueError, "the correlation key", expression.source(), e)),
        };
        Ok((name, correlation_key))
    }

    fn open_subscription(&mut self, instance: &ElementInstance, message_name: String, correlation_key: String) {
        let r = &instance.record;
        let message_partition = self.message_partition(&correlation_key);
        let record = ProcessMessageSubscriptionRecord {
            subscription_partition_id: message_partition,
            process_instance_key: r.process_instance_key,
            element_instance_key: instance.key,
            element_id: r.element_id.clone(),
            bpmn_process_id: r.bpmn_process_id.clone(),
            message_name: message_name.clone(),
            correlation_key: correlation_key.clone(),
            message_key: -1,
            variables: String::new(),
            interrupting: true,
            tenant_id: r.tenant_id.clone(),
        };
        self.event(
            instance.key,
            Intent::ProcessMessageSubscription(ProcessMessageSubscriptionIntent::Creating),
            RecordValue::ProcessMessageSubscription(record),
        );
        let subscription = MessageSubscriptionRecord {
            process_instance_key: r.process_instance_key,
            element_instance_key: instance.key,
            bpmn_process_id: r.bpmn_process_id.clone(),
            message_name,
            correlation_key,
            message_key: -1,
            variables: String::new(),
            interrupting: true,
            tenant_id: r.tenant_id.clone(),
        };
        self.send(
            message_partition,
            PartitionCommand::OpenMessageSubscription {
                record: subscription,
                instance_partition_id: self.partition_id,
            },
        );
    }

    /// Variables an element receives from outside (a job's result, a message, a caught error): kept
    /// local when the element maps outputs itself, else propagated to the enclosing scopes.
    pub(super) fn apply_payload(&mut self, model: &ProcessModel, key: i64, payload: &Map<String, Json>) {
        if payload.is_empty() {
            return;
        }
        let Some(instance) = elements::get(&*self.kv, key) else { return };
        let has_outputs = model.find(&instance.record.element_id).is_some_and(|i| !model.element(i).outputs.is_empty());
        if has_outputs {
            self.merge_local(key, payload);
        } else {
            self.merge_propagate(instance.record.flow_scope_key, payload);
        }
    }

    /// Terminates an element instance and everything inside it: jobs, subscriptions, incidents.
    pub(super) fn terminate_element(&mut self, key: i64) {
        let Some(instance) = elements::get(&*self.kv, key) else { return };
        if instance.lifecycle == Lifecycle::Terminating {
            return;
        }
        self.lifecycle_event(&instance, ProcessInstanceIntent::ElementTerminating);
        for child in elements::children(&*self.kv, key) {
            self.terminate_element(child);
        }
        if let Some(job) = (instance.job_key > 0).then(|| jobs::get(&*self.kv, instance.job_key)).flatten() {
            self.event(job.key, Intent::Job(JobIntent::Canceled), RecordValue::Job(job.record));
        }
        for subscription in subscriptions::of_element(&*self.kv, key) {
            let r = subscription.record;
            let message_partition = r.subscription_partition_id;
            let close = MessageSubscriptionRecord {
                process_instance_key: r.process_instance_key,
                element_instance_key: r.element_instance_key,
                bpmn_process_id: r.bpmn_process_id.clone(),
                message_name: r.message_name.clone(),
                correlation_key: r.correlation_key.clone(),
                message_key: -1,
                variables: String::new(),
                interrupting: r.interrupting,
                tenant_id: r.tenant_id.clone(),
            };
            self.event(
                key,
                Intent::ProcessMessageSubscription(ProcessMessageSubscriptionIntent::Deleted),
                RecordValue::ProcessMessageSubscription(r),
            );
            self.send(message_partition, PartitionCommand::CloseMessageSubscription { record: close });
        }
        self.resolve_incidents_of(key);
        self.lifecycle_event(&instance, ProcessInstanceIntent::ElementTerminated);
        if instance.record.flow_scope_key <= 0 && elements::awaited_result(&*self.kv, key).is_some() {
            self.out.finished_instances.push((
                key,
                CommandResult::Rejected {
                    kind: RejectionType::InvalidState,
                    reason: format!("The process instance '{key}' was terminated before it completed"),
                },
            ));
        }
    }

    /// Throws a BPMN error from an element instance outwards. Returns whether a boundary event caught it.
    pub(super) fn throw_error(
        &mut self,
        from_key: i64,
        error_code: &str,
        _message: &str,
        variables: &Map<String, Json>,
    ) -> bool {
        let mut current = from_key;
        while current > 0 {
            let Some(instance) = elements::get(&*self.kv, current) else { return false };
            let Some(model) = self.model(instance.record.process_definition_key) else { return false };
            let Some(idx) = model.find(&instance.record.element_id) else { return false };
            let catcher = model.element(idx).boundary_events.iter().copied().find(|&b| {
                matches!(&model.element(b).kind, ElementKind::BoundaryEvent { error_code: code, .. } if code.as_deref().is_none_or(|c| c == error_code))
            });
            if let Some(boundary) = catcher {
                self.terminate_element(current);
                let flow_scope_key = instance.record.flow_scope_key;
                let record = ProcessInstanceRecord {
                    element_id: model.element(boundary).id.clone(),
                    flow_scope_key,
                    bpmn_element_type: model.element(boundary).element_type(),
                    bpmn_event_type: model.element(boundary).event_type(),
                    ..instance.record.clone()
                };
                let key = self.new_key();
                self.event(
                    key,
                    Intent::ProcessInstance(ProcessInstanceIntent::ElementActivating),
                    RecordValue::ProcessInstance(record),
                );
                self.continue_activation(&model, key, Some(variables));
                return true;
            }
            current = instance.record.flow_scope_key;
        }
        false
    }

    /// Runs the step an element instance stopped at again (after its incident was resolved).
    pub(super) fn retry_element(&mut self, key: i64) {
        let Some(instance) = elements::get(&*self.kv, key) else { return };
        let Some(model) = self.model(instance.record.process_definition_key) else { return };
        match instance.lifecycle {
            Lifecycle::Activating => self.continue_activation(&model, key, None),
            // An activated element waits for its job or its message. An incident on it without a
            // job marks a command about it that failed (see the `incident` module); resolving the
            // incident leaves the element waiting.
            Lifecycle::Activated => {}
            Lifecycle::Completing => self.continue_completion(key),
            Lifecycle::Terminating => {}
        }
    }

    /// Starts a process instance at `start` (a none or message start event) with these variables.
    pub(super) fn start_instance(
        &mut self,
        model: &Arc<ProcessModel>,
        template: ProcessInstanceRecord,
        start: ElementIdx,
        variables: &Map<String, Json>,
    ) {
        let pi_key = template.process_instance_key;
        let root = model.element(ProcessModel::ROOT);
        let record = ProcessInstanceRecord {
            element_id: root.id.clone(),
            flow_scope_key: -1,
            bpmn_element_type: root.element_type(),
            bpmn_event_type: root.event_type(),
            ..template
        };
        self.event(
            pi_key,
            Intent::ProcessInstance(ProcessInstanceIntent::ElementActivating),
            RecordValue::ProcessInstance(record.clone()),
        );
        self.merge_local(pi_key, variables);
        let Some(instance) = elements::get(&*self.kv, pi_key) else { return };
        self.lifecycle_event(&instance, ProcessInstanceIntent::ElementActivated);
        self.queue_activation(model, start, pi_key, &record);
    }

    pub(super) fn is_root_instance(&self, key: i64) -> bool {
        key::partition_of(key) == Some(self.partition_id)
            && elements::get(&*self.kv, key).is_some_and(|i| i.record.flow_scope_key <= 0)
    }
}

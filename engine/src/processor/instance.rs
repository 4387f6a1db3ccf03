//! Process instance commands: create, cancel, set variables; and signal broadcasts.

use waggle_protocol::command::{CommandResult, CreateProcessInstance, ProcessInstanceCreated};
use waggle_protocol::record::{
    Intent, ProcessInstanceCreationIntent, ProcessInstanceCreationRecord, ProcessInstanceIntent, ProcessInstanceRecord,
    RecordValue, RejectionType, SignalIntent, SignalRecord, VariableDocumentIntent, VariableDocumentRecord,
    VariableUpdateSemantics,
};

use super::{parse_document, Ctx, Rejected};
use crate::model::ProcessModel;
use crate::state::tables::{elements, processes};

impl Ctx<'_> {
    fn find_definition(&self, create: &CreateProcessInstance) -> Result<i64, Rejected> {
        if create.process_definition_key > 0 {
            return processes::get(&*self.kv, create.process_definition_key)
                .map(|p| p.process_definition_key)
                .ok_or_else(|| {
                    (
                        RejectionType::NotFound,
                        format!(
                            "Expected to find process definition with key '{}', but none found",
                            create.process_definition_key
                        ),
                    )
                });
        }
        if create.bpmn_process_id.is_empty() {
            return Err((
                RejectionType::InvalidArgument,
                "Expected either a process definition key or a BPMN process id, but got neither".into(),
            ));
        }
        if create.version < 0 {
            processes::latest(&*self.kv, &create.tenant_id, &create.bpmn_process_id)
                .map(|l| l.process_definition_key)
                .ok_or_else(|| {
                    (
                        RejectionType::NotFound,
                        format!(
                            "Expected to find process definition with process ID '{}', but none found",
                            create.bpmn_process_id
                        ),
                    )
                })
        } else {
            processes::by_version(&*self.kv, &create.tenant_id, &create.bpmn_process_id, create.version).ok_or_else(
                || {
                    (
                        RejectionType::NotFound,
                        format!(
                            "Expected to find process definition with process ID '{}' and version '{}', but none found",
                            create.bpmn_process_id, create.version
                        ),
                    )
                },
            )
        }
    }

    pub(super) fn create_process_instance(&mut self, create: CreateProcessInstance) {
        let intent = Intent::ProcessInstanceCreation(ProcessInstanceCreationIntent::Create);
        let mut record = ProcessInstanceCreationRecord {
            bpmn_process_id: create.bpmn_process_id.clone(),
            version: create.version,
            process_definition_key: create.process_definition_key,
            process_instance_key: -1,
            variables: create.variables.clone(),
            await_result: create.await_result.is_some(),
            fetch_variables: create.await_result.as_ref().map(|a| a.fetch_variables.clone()).unwrap_or_default(),
            tenant_id: create.tenant_id.clone(),
        };
        self.command(-1, intent, RecordValue::ProcessInstanceCreation(record.clone()));
        let definition_key = match self.find_definition(&create) {
            Ok(k) => k,
            Err(rejection) => return self.reject(-1, intent, RecordValue::ProcessInstanceCreation(record), rejection),
        };
        let document = match parse_document(&create.variables) {
            Ok(d) => d,
            Err(rejection) => return self.reject(-1, intent, RecordValue::ProcessInstanceCreation(record), rejection),
        };
        let (Some(model), Some(process)) = (self.model(definition_key), processes::get(&*self.kv, definition_key))
        else {
            let reason = format!("Expected to find process definition with key '{definition_key}', but none found");
            return self.reject(
                -1,
                intent,
                RecordValue::ProcessInstanceCreation(record),
                (RejectionType::NotFound, reason),
            );
        };
        let Some(start) = model.none_start_of(ProcessModel::ROOT) else {
            let reason = format!(
                "Expected to create an instance of process '{}' with a none start event, but it has none (it may only start by message)",
                process.bpmn_process_id
            );
            return self.reject(
                -1,
                intent,
                RecordValue::ProcessInstanceCreation(record),
                (RejectionType::InvalidState, reason),
            );
        };
        let pi_key = self.new_key();
        record.bpmn_process_id = process.bpmn_process_id.clone();
        record.version = process.version;
        record.process_definition_key = definition_key;
        record.process_instance_key = pi_key;
        let template = ProcessInstanceRecord {
            bpmn_process_id: process.bpmn_process_id.clone(),
            version: process.version,
            process_definition_key: definition_key,
            process_instance_key: pi_key,
            parent_process_instance_key: -1,
            parent_element_instance_key: -1,
            tenant_id: process.tenant_id.clone(),
            ..Default::default()
        };
        self.start_instance(&model, template, start, &document);
        self.event(
            pi_key,
            Intent::ProcessInstanceCreation(ProcessInstanceCreationIntent::Created),
            RecordValue::ProcessInstanceCreation(record),
        );
        self.out.result = Some(CommandResult::ProcessInstanceCreated(ProcessInstanceCreated {
            process_definition_key: definition_key,
            bpmn_process_id: process.bpmn_process_id,
            version: process.version,
            process_instance_key: pi_key,
            tenant_id: process.tenant_id,
        }));
    }

    pub(super) fn cancel_process_instance(&mut self, key: i64) {
        let intent = Intent::ProcessInstance(ProcessInstanceIntent::Cancel);
        let instance = elements::get(&*self.kv, key);
        let record = instance.as_ref().map(|i| i.record.clone()).unwrap_or_default();
        self.command(key, intent, RecordValue::ProcessInstance(record.clone()));
        if !self.is_root_instance(key) {
            let reason = format!(
                "Expected to cancel a process instance with key '{key}', but no such process instance was found"
            );
            return self.reject(key, intent, RecordValue::ProcessInstance(record), (RejectionType::NotFound, reason));
        }
        self.terminate_element(key);
        self.out.result = Some(CommandResult::Done { key });
    }

    pub(super) fn set_variables(&mut self, scope_key: i64, variables: String, local: bool) {
        let intent = Intent::VariableDocument(VariableDocumentIntent::Update);
        let record = VariableDocumentRecord {
            scope_key,
            update_semantics: if local { VariableUpdateSemantics::Local } else { VariableUpdateSemantics::Propagate },
            variables,
        };
        let key = self.new_key();
        self.command(key, intent, RecordValue::VariableDocument(record.clone()));
        if elements::get(&*self.kv, scope_key).is_none() {
            let reason = format!(
                "Expected to update variables for element with key '{scope_key}', but no such element was found"
            );
            return self.reject(key, intent, RecordValue::VariableDocument(record), (RejectionType::NotFound, reason));
        }
        let document = match parse_document(&record.variables) {
            Ok(d) => d,
            Err(rejection) => return self.reject(key, intent, RecordValue::VariableDocument(record), rejection),
        };
        self.event(
            key,
            Intent::VariableDocument(VariableDocumentIntent::Updated),
            RecordValue::VariableDocument(record),
        );
        if local {
            self.merge_local(scope_key, &document);
        } else {
            self.merge_propagate(scope_key, &document);
        }
        self.out.result = Some(CommandResult::Done { key });
    }

    pub(super) fn broadcast_signal(&mut self, signal_name: String, variables: String, tenant_id: String) {
        let key = self.new_key();
        let record = SignalRecord { signal_name, variables, tenant_id };
        let intent = Intent::Signal(SignalIntent::Broadcast);
        self.command(key, intent, RecordValue::Signal(record.clone()));
        if let Err(rejection) = parse_document(&record.variables) {
            return self.reject(key, intent, RecordValue::Signal(record), rejection);
        }
        self.event(key, Intent::Signal(SignalIntent::Broadcasted), RecordValue::Signal(record));
        self.out.result = Some(CommandResult::Done { key });
    }
}

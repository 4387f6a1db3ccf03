//! Event appliers: the only code that changes a partition's state.
//!
//! Each event says what happened; its applier makes state say so too. Appliers never decide anything
//! and never fail on well-formed logs, so every replica that applies the same log holds the same state.

use waggle_protocol::key;
use waggle_protocol::record::{
    CommandDistributionIntent, IncidentIntent, Intent, JobBatchIntent, JobIntent, MessageIntent,
    MessageStartEventSubscriptionIntent, MessageSubscriptionIntent, ProcessInstanceCreationIntent,
    ProcessInstanceIntent, ProcessIntent, ProcessMessageSubscriptionIntent, Record, RecordType, RecordValue,
    VariableIntent,
};

use super::ModelCache;
use crate::model::{ElementKind, EndKind, ProcessModel};
use crate::state::tables::distribution::{self, Pending};
use crate::state::tables::elements::{ElementInstance, Lifecycle};
use crate::state::tables::held::{self, Held};
use crate::state::tables::jobs::{Job, JobState};
use crate::state::tables::subscriptions::{MessageSubscription, ProcessMessageSubscription, ProcessSubscriptionState};
use crate::state::tables::variables::Variable;
use crate::state::tables::{
    elements, follow_ups, incidents, jobs, messages, meta, processes, subscriptions, variables,
};
use crate::state::KvWrite;

pub(super) fn apply(kv: &mut dyn KvWrite, models: &mut ModelCache, partition_id: u32, record: &Record) {
    meta::set_last_position(kv, record.position);
    if key::partition_of(record.key) == Some(partition_id) {
        let counter = record.key - key::encode(partition_id, 0);
        if counter >= meta::next_key_counter(kv) {
            meta::set_next_key_counter(kv, counter + 1);
        }
    }
    if let (Intent::ProcessInstance(ProcessInstanceIntent::ActivateElement), RecordValue::ProcessInstance(pi)) =
        (&record.intent, &record.value)
    {
        match record.record_type {
            RecordType::Command => defer_activation(kv, record.key, pi),
            RecordType::CommandRejection => take_deferred_activation(kv, record.key),
            RecordType::Event => {}
        }
    }
    if record.record_type != RecordType::Event {
        return;
    }
    end_chain_on_wait(kv, record);
    match (&record.intent, &record.value) {
        (Intent::Process(ProcessIntent::Created), RecordValue::Process(p)) => processes::insert(kv, p),
        (Intent::ProcessInstance(intent), RecordValue::ProcessInstance(pi)) => {
            apply_element(kv, models, *intent, record.key, pi)
        }
        (
            Intent::ProcessInstanceCreation(ProcessInstanceCreationIntent::Created),
            RecordValue::ProcessInstanceCreation(c),
        ) if c.await_result => elements::set_awaited_result(kv, c.process_instance_key, &c.fetch_variables),
        (Intent::Job(intent), RecordValue::Job(job)) => apply_job(kv, *intent, record.key, job),
        (Intent::JobBatch(JobBatchIntent::Activated), RecordValue::JobBatch(batch)) => {
            for (job_key, activated) in batch.job_keys.iter().zip(&batch.jobs) {
                if let Some(mut job) = jobs::get(kv, *job_key) {
                    job.state = JobState::Activated;
                    job.record.deadline = activated.deadline;
                    job.record.worker = activated.worker.clone();
                    job.record.timeout = batch.timeout;
                    jobs::put(kv, &job);
                }
            }
        }
        (Intent::Variable(VariableIntent::Created | VariableIntent::Updated), RecordValue::Variable(v)) => {
            variables::put(kv, v.scope_key, &v.name, &Variable { key: record.key, value: v.value.clone() })
        }
        (Intent::Incident(IncidentIntent::Created), RecordValue::Incident(incident)) => {
            incidents::insert(kv, record.key, incident)
        }
        (Intent::Incident(IncidentIntent::Resolved), RecordValue::Incident(incident)) => {
            incidents::remove(kv, record.key);
            held::remove(kv, record.key);
            if let Some(mut job) = jobs::get(kv, incident.job_key) {
                if job.state == JobState::Failed {
                    job.state = JobState::Activatable;
                    job.record.deadline = -1;
                    jobs::put(kv, &job);
                }
            }
        }
        (Intent::Message(MessageIntent::Published), RecordValue::Message(m)) if m.time_to_live > 0 => {
            messages::insert(kv, record.key, m)
        }
        (Intent::Message(MessageIntent::Expired), RecordValue::Message(_)) => messages::remove(kv, record.key),
        (Intent::MessageSubscription(intent), RecordValue::MessageSubscription(s)) => match intent {
            MessageSubscriptionIntent::Created => {
                let instance_partition_id = key::partition_of(s.process_instance_key).unwrap_or(partition_id);
                subscriptions::put_message_side(
                    kv,
                    &MessageSubscription { record: s.clone(), instance_partition_id, correlating: false },
                );
            }
            MessageSubscriptionIntent::Correlating => {
                if let Some(mut sub) = subscriptions::get_message_side(
                    kv,
                    &s.tenant_id,
                    &s.message_name,
                    &s.correlation_key,
                    s.element_instance_key,
                ) {
                    sub.correlating = true;
                    sub.record.message_key = s.message_key;
                    subscriptions::put_message_side(kv, &sub);
                }
                messages::mark_correlated(kv, s.message_key, &s.bpmn_process_id);
            }
            MessageSubscriptionIntent::Correlated | MessageSubscriptionIntent::Deleted => {
                subscriptions::remove_message_side(kv, s)
            }
            MessageSubscriptionIntent::Rejected => {
                messages::unmark_correlated(kv, s.message_key, &s.bpmn_process_id);
                subscriptions::remove_message_side(kv, s);
            }
            _ => {}
        },
        (Intent::ProcessMessageSubscription(intent), RecordValue::ProcessMessageSubscription(s)) => match intent {
            ProcessMessageSubscriptionIntent::Creating => subscriptions::put_process_side(
                kv,
                &ProcessMessageSubscription { record: s.clone(), state: ProcessSubscriptionState::Creating },
            ),
            ProcessMessageSubscriptionIntent::Created => {
                if let Some(mut sub) = subscriptions::get_process_side(kv, s.element_instance_key, &s.message_name) {
                    sub.state = ProcessSubscriptionState::Created;
                    subscriptions::put_process_side(kv, &sub);
                }
            }
            ProcessMessageSubscriptionIntent::Correlated | ProcessMessageSubscriptionIntent::Deleted => {
                subscriptions::remove_process_side(kv, s.element_instance_key, &s.message_name)
            }
            _ => {}
        },
        (Intent::MessageStartEventSubscription(intent), RecordValue::MessageStartEventSubscription(s)) => {
            match intent {
                MessageStartEventSubscriptionIntent::Created => subscriptions::put_start(kv, s),
                MessageStartEventSubscriptionIntent::Deleted => subscriptions::remove_start(kv, s),
                MessageStartEventSubscriptionIntent::Correlated => {
                    messages::mark_correlated(kv, s.message_key, &s.bpmn_process_id)
                }
            }
        }
        (Intent::CommandDistribution(intent), RecordValue::CommandDistribution(d)) => match (intent, &d.command) {
            (CommandDistributionIntent::Distributing, Some(command)) => distribution::add_pending(
                kv,
                d.partition_id,
                d.sequence,
                &Pending { key: record.key, origin_key: d.origin_key, command: command.clone() },
            ),
            (CommandDistributionIntent::Acknowledged, _) => {
                distribution::remove_pending(kv, d.partition_id, d.sequence)
            }
            (CommandDistributionIntent::Received, _) => distribution::set_last_received(kv, d.partition_id, d.sequence),
            (CommandDistributionIntent::Held, Some(command)) => {
                held::insert(kv, d.origin_key, &Held { source_partition: d.partition_id, command: command.clone() })
            }
            _ => {}
        },
        _ => {}
    }
}

fn apply_element(
    kv: &mut dyn KvWrite,
    models: &mut ModelCache,
    intent: ProcessInstanceIntent,
    key: i64,
    pi: &waggle_protocol::record::ProcessInstanceRecord,
) {
    match intent {
        ProcessInstanceIntent::ElementActivating => {
            take_deferred_activation(kv, key);
            elements::insert(
                kv,
                &ElementInstance {
                    key,
                    lifecycle: Lifecycle::Activating,
                    record: pi.clone(),
                    active_children: 0,
                    waiting_tokens: 0,
                    job_key: -1,
                },
            );
            if let Some(model) = models.get(kv, pi.process_definition_key) {
                consume_join_tokens(kv, &model, pi);
            }
        }
        ProcessInstanceIntent::ElementActivated => set_lifecycle(kv, key, Lifecycle::Activated),
        ProcessInstanceIntent::ElementCompleting => set_lifecycle(kv, key, Lifecycle::Completing),
        ProcessInstanceIntent::ElementTerminating => set_lifecycle(kv, key, Lifecycle::Terminating),
        ProcessInstanceIntent::ElementCompleted | ProcessInstanceIntent::ElementTerminated => {
            if intent == ProcessInstanceIntent::ElementCompleted {
                if let Some(model) = models.get(kv, pi.process_definition_key) {
                    let ends_scope = model.find(&pi.element_id).is_some_and(|e| {
                        matches!(model.element(e).kind, ElementKind::EndEvent { kind: EndKind::Terminate })
                    });
                    if ends_scope {
                        clear_join_tokens(kv, &model, pi.flow_scope_key);
                    }
                }
            }
            variables::remove_scope(kv, key);
            elements::remove(kv, key);
            if pi.flow_scope_key <= 0 {
                elements::clear_awaited_result(kv, key);
            }
        }
        ProcessInstanceIntent::SequenceFlowTaken => {
            let Some(model) = models.get(kv, pi.process_definition_key) else { return };
            let Some(flow) = model.flows.iter().find(|f| f.id == pi.element_id) else { return };
            if is_join(&model, flow.target) {
                let count = elements::taken_count(kv, pi.flow_scope_key, &flow.id);
                elements::set_taken_count(kv, pi.flow_scope_key, &flow.id, count + 1);
                if let Some(mut scope) = elements::get(kv, pi.flow_scope_key) {
                    scope.waiting_tokens += 1;
                    elements::put(kv, &scope);
                }
            }
        }
        _ => {}
    }
}

/// An activation deferred to a later run waits as a token in its flow scope, so that the scope does
/// not complete before it.
fn defer_activation(kv: &mut dyn KvWrite, key: i64, pi: &waggle_protocol::record::ProcessInstanceRecord) {
    follow_ups::insert(kv, key, pi);
    if let Some(mut scope) = elements::get(kv, pi.flow_scope_key) {
        scope.waiting_tokens += 1;
        elements::put(kv, &scope);
    }
}

/// A deferred activation was taken up (its element instance is activating) or dropped.
fn take_deferred_activation(kv: &mut dyn KvWrite, key: i64) {
    let Some(pi) = follow_ups::get(kv, key) else { return };
    follow_ups::remove(kv, key);
    if let Some(mut scope) = elements::get(kv, pi.flow_scope_key) {
        scope.waiting_tokens = scope.waiting_tokens.saturating_sub(1);
        elements::put(kv, &scope);
    }
}

/// An instance that waits for something (a job, a message, a person) or ends is not looping: its
/// chain of deferred runs starts again.
fn end_chain_on_wait(kv: &mut dyn KvWrite, record: &Record) {
    let instance = match (&record.intent, &record.value) {
        (Intent::Job(JobIntent::Created), RecordValue::Job(job)) => job.process_instance_key,
        (Intent::Incident(IncidentIntent::Created), RecordValue::Incident(incident)) => incident.process_instance_key,
        (
            Intent::ProcessMessageSubscription(ProcessMessageSubscriptionIntent::Creating),
            RecordValue::ProcessMessageSubscription(s),
        ) => s.process_instance_key,
        (
            Intent::ProcessInstance(ProcessInstanceIntent::ElementCompleted | ProcessInstanceIntent::ElementTerminated),
            RecordValue::ProcessInstance(pi),
        ) if pi.flow_scope_key <= 0 => record.key,
        _ => return,
    };
    follow_ups::end_chain(kv, instance);
}

/// A parallel gateway with several incoming flows waits for a token on each.
pub(super) fn is_join(model: &ProcessModel, element: usize) -> bool {
    let e = model.element(element);
    matches!(e.kind, ElementKind::ParallelGateway) && e.incoming.len() > 1
}

fn consume_join_tokens(
    kv: &mut dyn KvWrite,
    model: &ProcessModel,
    pi: &waggle_protocol::record::ProcessInstanceRecord,
) {
    let Some(idx) = model.find(&pi.element_id) else { return };
    if !is_join(model, idx) {
        return;
    }
    let incoming = &model.element(idx).incoming;
    for &flow in incoming {
        let id = &model.flow(flow).id;
        let count = elements::taken_count(kv, pi.flow_scope_key, id);
        elements::set_taken_count(kv, pi.flow_scope_key, id, count.saturating_sub(1));
    }
    if let Some(mut scope) = elements::get(kv, pi.flow_scope_key) {
        scope.waiting_tokens = scope.waiting_tokens.saturating_sub(incoming.len() as u32);
        elements::put(kv, &scope);
    }
}

fn clear_join_tokens(kv: &mut dyn KvWrite, model: &ProcessModel, scope_key: i64) {
    for flow in &model.flows {
        if is_join(model, flow.target) {
            elements::set_taken_count(kv, scope_key, &flow.id, 0);
        }
    }
    if let Some(mut scope) = elements::get(kv, scope_key) {
        scope.waiting_tokens = 0;
        elements::put(kv, &scope);
    }
}

fn set_lifecycle(kv: &mut dyn KvWrite, key: i64, lifecycle: Lifecycle) {
    if let Some(mut instance) = elements::get(kv, key) {
        instance.lifecycle = lifecycle;
        elements::put(kv, &instance);
    }
}

fn apply_job(kv: &mut dyn KvWrite, intent: JobIntent, key: i64, job: &waggle_protocol::record::JobRecord) {
    match intent {
        JobIntent::Created => {
            jobs::put(kv, &Job { key, state: JobState::Activatable, record: job.clone() });
            if let Some(mut element) = elements::get(kv, job.element_instance_key) {
                element.job_key = key;
                elements::put(kv, &element);
            }
        }
        JobIntent::Completed | JobIntent::Canceled => {
            jobs::remove(kv, key);
            if let Some(mut element) = elements::get(kv, job.element_instance_key) {
                element.job_key = -1;
                elements::put(kv, &element);
            }
        }
        _ => {
            let Some(mut stored) = jobs::get(kv, key) else { return };
            match intent {
                JobIntent::Failed => {
                    stored.record.retries = job.retries;
                    stored.record.error_message = job.error_message.clone();
                    stored.record.retry_backoff = job.retry_backoff;
                    stored.record.recurring_time = job.recurring_time;
                    stored.record.deadline = -1;
                    stored.state = if job.retries <= 0 {
                        JobState::Failed
                    } else if job.retry_backoff > 0 {
                        JobState::BackingOff
                    } else {
                        JobState::Activatable
                    };
                }
                JobIntent::TimedOut | JobIntent::RecurredAfterBackoff => {
                    stored.state = JobState::Activatable;
                    stored.record.deadline = -1;
                }
                JobIntent::RetriesUpdated => stored.record.retries = job.retries,
                JobIntent::TimeoutUpdated => stored.record.deadline = job.deadline,
                JobIntent::ErrorThrown => {
                    stored.state = JobState::Failed;
                    stored.record.error_code = job.error_code.clone();
                    stored.record.error_message = job.error_message.clone();
                    stored.record.deadline = -1;
                }
                _ => return,
            }
            jobs::put(kv, &stored);
        }
    }
}

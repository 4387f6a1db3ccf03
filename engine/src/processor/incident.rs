//! Incidents: raised where an instance cannot go on without a person, resolved when they fixed it.
//!
//! Besides the failures the engine itself detects (a FEEL error, a job without retries, an endless
//! loop), there is the failure it cannot detect: a bug that makes processing a command panic. The
//! partition undoes that command's writes and rejects it (see the broker's partition driver), but an
//! instance it acted on would then sit silently, its job re-offered to the same fate. So the driver
//! notes what the command names ([`Involved::of`]) before processing it, and after the panic
//! [`Engine::record_processing_failure`] marks it: the job fails without retries and an incident holds
//! its element, or an incident is raised on the element itself, with the panic's message.
//!
//! A command from another partition has no client to reject it to, and its source sends it again
//! until it is acknowledged, while the receiver takes only the next number from each source: failing
//! for good, it would block every command behind it. So the partition counts it as received and
//! acknowledges it ([`Engine::hold_failed_partition_command`]), and an incident on the element
//! instance it is about keeps it: resolving the incident processes it again, which is what a message
//! correlation needs to go on. One about no element instance of this partition is rejected with the
//! failure. When it is about an element instance of another partition (the message side of a
//! subscription), that partition learns of the failure by a `ReportFailure` command and raises an
//! incident on the instance, so that it does not wait silently for what will never come.
//!
//! A tick has no single instance to mark, and it would fail again on the next tick, stalling every
//! time-driven piece of work with it. So after a failed tick the driver takes each piece of its work
//! up on its own ([`Engine::due_work`], [`Input::Due`]): the pieces that go through are done, and the
//! one that fails is marked like a failed command. A deferred activation that fails (the likely
//! culprit: it runs the element's whole activation, FEEL and all) is started and held by an
//! incident, as an endless loop is; a job whose time-out fails fails into an incident, which takes
//! it off the deadlines. What stays due (a message whose expiry fails) makes the partition's later
//! ticks wait longer, so that it costs little while the rest of the work still gets done.

use waggle_protocol::command::{ClientCommand, CommandResult};
use waggle_protocol::record::{ErrorType, IncidentIntent, IncidentRecord, Intent, RecordValue, RejectionType};

use super::element::Failure;
use super::{Ctx, Due, Engine, Input, Output, PartitionCommand};
use crate::state::tables::elements::{ElementInstance, Lifecycle};
use crate::state::tables::jobs::JobState;
use crate::state::tables::{elements, follow_ups, held, incidents, jobs};
use crate::state::KvWrite;

/// What a command acts on, for marking it when processing the command fails. Taken from the
/// command alone (a copy of a key, no state lookup), so naming it costs the hot path nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Involved {
    Job(i64),
    ElementInstance(i64),
    Incident(i64),
    /// A deferred activation, by the key of the element instance it creates.
    FollowUp(i64),
}

impl Involved {
    /// The job, element instance or incident an input names, if any.
    pub fn of(input: &Input) -> Option<Involved> {
        let command = match input {
            Input::Client(command) => command,
            Input::Due(Due::FollowUp(key)) => return Some(Involved::FollowUp(*key)),
            Input::Due(Due::JobTimeOut(key) | Due::JobBackoff(key)) => return Some(Involved::Job(*key)),
            Input::Due(Due::MessageExpiry(_) | Due::Resend) | Input::Partition(_) | Input::Tick => return None,
        };
        match command {
            ClientCommand::CompleteJob { job_key, .. }
            | ClientCommand::FailJob { job_key, .. }
            | ClientCommand::ThrowError { job_key, .. }
            | ClientCommand::UpdateJobRetries { job_key, .. }
            | ClientCommand::UpdateJobTimeout { job_key, .. } => Some(Involved::Job(*job_key)),
            ClientCommand::SetVariables { element_instance_key: key, .. }
            | ClientCommand::CancelProcessInstance { process_instance_key: key } => {
                Some(Involved::ElementInstance(*key))
            }
            ClientCommand::ResolveIncident { incident_key } => Some(Involved::Incident(*incident_key)),
            _ => None,
        }
    }
}

impl Engine {
    /// Takes command number `sequence` from `source_partition`, whose processing failed with
    /// `failure`, off its channel, so that the commands behind it go on: it counts as received and is
    /// acknowledged. An incident on the element instance of this partition that the command is
    /// about holds it, and resolving the incident processes it again. A command about nothing here
    /// is rejected with the failure.
    #[allow(clippy::too_many_arguments)]
    pub fn hold_failed_partition_command(
        &mut self,
        state: &mut dyn KvWrite,
        source_partition: u32,
        sequence: u64,
        command: PartitionCommand,
        failure: &str,
        now: i64,
    ) -> Output {
        let mut ctx = Ctx::new(self, state, now);
        ctx.hold_failed(source_partition, sequence, command, failure);
        ctx.out
    }

    /// Marks what a command acted on after processing it failed with `message`: an activated job
    /// fails without retries (which raises an incident on its element), anything else gets an
    /// incident on its element instance, unless one with the same message is already open there.
    pub fn record_processing_failure(
        &mut self,
        state: &mut dyn KvWrite,
        involved: Involved,
        message: String,
        now: i64,
    ) -> Output {
        let mut ctx = Ctx::new(self, state, now);
        if let Involved::FollowUp(key) = involved {
            if let Some(record) = follow_ups::get(&*ctx.kv, key) {
                ctx.hold_follow_up(key, record, message);
            }
            return ctx.out;
        }
        let involved = match involved {
            Involved::Incident(key) => match incidents::get(&*ctx.kv, key) {
                Some(incident) if incident.job_key > 0 => Involved::Job(incident.job_key),
                Some(incident) => Involved::ElementInstance(incident.element_instance_key),
                None => return ctx.out,
            },
            other => other,
        };
        let element_instance_key = match involved {
            Involved::Job(job_key) => match jobs::get(&*ctx.kv, job_key) {
                Some(job) if job.state == JobState::Activated => {
                    ctx.fail_job(job_key, 0, message, 0, String::new());
                    return ctx.out;
                }
                Some(job) => job.record.element_instance_key,
                None => return ctx.out,
            },
            Involved::ElementInstance(key) | Involved::Incident(key) | Involved::FollowUp(key) => key,
        };
        let Some(instance) = elements::get(&*ctx.kv, element_instance_key) else { return ctx.out };
        if instance.lifecycle == Lifecycle::Activated {
            ctx.raise_incident_once(&instance, message);
        }
        ctx.out
    }
}

impl Ctx<'_> {
    /// Raises an incident on an element instance (and the job that failed, if `job_key` > 0).
    pub(super) fn raise_incident(&mut self, instance: &ElementInstance, failure: Failure, job_key: i64) {
        self.open_incident(instance, failure, job_key);
    }

    /// [`Ctx::raise_incident`], returning the incident's key.
    pub(super) fn open_incident(&mut self, instance: &ElementInstance, failure: Failure, job_key: i64) -> i64 {
        let r = &instance.record;
        let incident = IncidentRecord {
            error_type: failure.error_type,
            error_message: failure.message,
            bpmn_process_id: r.bpmn_process_id.clone(),
            process_definition_key: r.process_definition_key,
            process_instance_key: r.process_instance_key,
            element_id: r.element_id.clone(),
            element_instance_key: instance.key,
            job_key,
            variable_scope_key: instance.key,
            tenant_id: r.tenant_id.clone(),
        };
        let key = self.new_key();
        self.event(key, Intent::Incident(IncidentIntent::Created), RecordValue::Incident(incident));
        key
    }

    /// Raises an incident with `message` on an element instance that a command failed for on
    /// another partition.
    pub(super) fn report_failure(&mut self, element_instance_key: i64, message: String) {
        if let Some(instance) = elements::get(&*self.kv, element_instance_key) {
            self.raise_incident_once(&instance, message);
        }
    }

    /// Raises an incident for a failed command, unless one with the same message is open there.
    fn raise_incident_once(&mut self, instance: &ElementInstance, message: String) {
        let already = incidents::of_element(&*self.kv, instance.key)
            .into_iter()
            .filter_map(|key| incidents::get(&*self.kv, key))
            .any(|open| open.error_message == message);
        if !already {
            self.raise_incident(instance, Failure { error_type: ErrorType::Unknown, message }, -1);
        }
    }

    /// Resolves the incidents of a terminated element instance: nobody can fix them any more.
    pub(super) fn resolve_incidents_of(&mut self, element_instance_key: i64) {
        for key in incidents::of_element(&*self.kv, element_instance_key) {
            if let Some(incident) = incidents::get(&*self.kv, key) {
                self.event(key, Intent::Incident(IncidentIntent::Resolved), RecordValue::Incident(incident));
            }
        }
    }

    pub(super) fn resolve_incident(&mut self, incident_key: i64) {
        let intent = Intent::Incident(IncidentIntent::Resolve);
        let Some(incident) = incidents::get(&*self.kv, incident_key) else {
            let reason =
                format!("Expected to resolve incident with key '{incident_key}', but no such incident was found");
            self.command(incident_key, intent, RecordValue::Incident(IncidentRecord::default()));
            return self.reject(
                incident_key,
                intent,
                RecordValue::Incident(IncidentRecord::default()),
                (RejectionType::NotFound, reason),
            );
        };
        self.command(incident_key, intent, RecordValue::Incident(incident.clone()));
        let held = held::get(&*self.kv, incident_key);
        let job = (incident.job_key > 0).then(|| jobs::get(&*self.kv, incident.job_key)).flatten();
        if let Some(job) = &job {
            if job.record.retries <= 0 && incident.error_type == waggle_protocol::record::ErrorType::JobNoRetries {
                let reason = format!(
                    "Expected to resolve incident with key '{incident_key}', but job '{}' has no retries left; update its retries first (UpdateJobRetries)",
                    job.key
                );
                return self.reject(
                    incident_key,
                    intent,
                    RecordValue::Incident(incident),
                    (RejectionType::InvalidState, reason),
                );
            }
        }
        self.event(incident_key, Intent::Incident(IncidentIntent::Resolved), RecordValue::Incident(incident.clone()));
        match (held, job) {
            (Some(held), _) => self.partition_command(held.command),
            (None, Some(job)) => self.out.jobs_available.push(job.record.job_type),
            (None, None) => self.retry_element(incident.element_instance_key),
        }
        self.out.result = Some(CommandResult::Done { key: incident_key });
    }
}

//! The deterministic processor: one command in, records and answers out.
//!
//! [`Engine::process`] runs on a partition's leader. It reads state, writes events (applying each at once
//! to the state it was given, so later steps see earlier ones) and returns them with the answer for the
//! client, the commands for other partitions and the job types that became activatable. The caller
//! appends the records to the log; only once they are committed does it answer anyone.
//!
//! [`Engine::apply`] runs on every replica for every committed record, and is the only code that
//! changes state. Processing and applying share it, so a follower's state equals the leader's.
//!
//! Inside one command, follow-up work (activating the next element, completing a scope) is queued and
//! run to the end before the command returns, so that one command's records form one atomic batch;
//! a run that grows too long defers its remaining activations to later runs ([`follow_up`]).

mod applier;
mod deployment;
mod distribution;
mod element;
mod follow_up;
mod incident;
mod instance;
mod job;
mod message;
mod variables;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use waggle_protocol::command::{ClientCommand, CommandResult};
use waggle_protocol::key;
pub use waggle_protocol::partition::{PartitionCommand, PartitionMessage};
use waggle_protocol::record::{
    Intent, ProcessInstanceRecord, Record, RecordType, RecordValue, Rejection, RejectionType,
};

pub use follow_up::ProcessingLimits;
pub use incident::Involved;

use crate::model::{ElementIdx, ProcessModel};
use crate::state::tables::{meta, processes};
use crate::state::{KvRead, KvWrite};

/// What the engine is asked to process.
#[derive(Clone, Debug)]
pub enum Input {
    Client(ClientCommand),
    /// A command from another partition, or its acknowledgement of ours.
    Partition(PartitionMessage),
    /// Time-driven work that is due: job time-outs, retry back-offs, message expiry, resending
    /// unacknowledged commands, and the activations earlier runs deferred.
    Tick,
    /// One piece of a tick's work, taken up on its own. The partition uses it to find which piece
    /// made a tick fail (see the `incident` module).
    Due(Due),
}

/// One piece of time-driven work ([`Engine::due_work`]), by the key of what it acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// A deferred activation, by the key of the element instance it creates.
    FollowUp(i64),
    /// An activated job whose deadline passed.
    JobTimeOut(i64),
    /// A failed job whose retry back-off is over.
    JobBackoff(i64),
    /// A buffered message whose time to live is over.
    MessageExpiry(i64),
    /// Resending the commands other partitions have not acknowledged yet.
    Resend,
}

impl Due {
    /// The name of this kind of work, for metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Due::FollowUp(_) => "FollowUp",
            Due::JobTimeOut(_) => "JobTimeOut",
            Due::JobBackoff(_) => "JobBackoff",
            Due::MessageExpiry(_) => "MessageExpiry",
            Due::Resend => "Resend",
        }
    }
}

/// How many due jobs or messages of each kind one tick handles; the rest wait for the next tick.
const TICK_LIMIT: usize = 256;

/// Ends every message about a failure that only a defect in Waggle can cause (a command that panicked
/// while being processed), so that users know to report it and what to include.
pub const REPORT_AS_BUG: &str = "This is a bug in Waggle: report it with this message";

/// What processing one input produced.
#[derive(Debug, Default)]
pub struct Output {
    pub records: Vec<Record>,
    /// The answer to a client command.
    pub result: Option<CommandResult>,
    /// Instances created with a result that completed (or ended otherwise), by process instance key.
    pub finished_instances: Vec<(i64, CommandResult)>,
    /// Messages for other partitions, to send once the records are committed.
    pub sends: Vec<(u32, PartitionMessage)>,
    /// A deployment that the other partitions have yet to receive: the answer may wait for it.
    pub distributing: Option<i64>,
    /// Deployments that every partition has received now.
    pub distributions_finished: Vec<i64>,
    /// Job types that have new activatable jobs.
    pub jobs_available: Vec<String>,
    /// Element activations this run deferred to a later one because it ran out of steps.
    pub deferred_activations: usize,
    /// Incidents raised on instances that ran too long without a wait state (likely endless loops).
    pub loop_incidents: usize,
}

impl Output {
    /// Adds what processing another input produced, keeping this output's answer.
    pub fn absorb(&mut self, other: Output) {
        let Output {
            mut records,
            result: _,
            mut finished_instances,
            mut sends,
            distributing,
            mut distributions_finished,
            mut jobs_available,
            deferred_activations,
            loop_incidents,
        } = other;
        self.records.append(&mut records);
        self.finished_instances.append(&mut finished_instances);
        self.sends.append(&mut sends);
        self.distributing = self.distributing.or(distributing);
        self.distributions_finished.append(&mut distributions_finished);
        self.jobs_available.append(&mut jobs_available);
        self.deferred_activations += deferred_activations;
        self.loop_incidents += loop_incidents;
    }
}

/// The processor of one partition. It holds nothing but a cache of parsed process models and when
/// it next resends unacknowledged commands to other partitions (unset in a new leader's engine, so
/// that it resends at once).
pub struct Engine {
    partition_id: u32,
    partition_count: u32,
    models: ModelCache,
    retry_at: Option<i64>,
    limits: ProcessingLimits,
}

#[derive(Default)]
struct ModelCache {
    parsed: HashMap<i64, Arc<ProcessModel>>,
}

impl ModelCache {
    /// The executable model of a deployed process definition, parsed at most once per process lifetime.
    fn get(&mut self, kv: &dyn KvRead, definition_key: i64) -> Option<Arc<ProcessModel>> {
        if let Some(model) = self.parsed.get(&definition_key) {
            return Some(model.clone());
        }
        let process = processes::get(kv, definition_key)?;
        let models = crate::bpmn::parse_processes(&process.resource_name, &process.resource)
            .expect("a deployed process always parses: it was validated when it was deployed");
        let model = models.into_iter().find(|m| m.bpmn_process_id == process.bpmn_process_id)?;
        let model = Arc::new(model);
        self.parsed.insert(definition_key, model.clone());
        Some(model)
    }

    fn insert(&mut self, definition_key: i64, model: Arc<ProcessModel>) {
        self.parsed.insert(definition_key, model);
    }
}

impl Engine {
    pub fn new(partition_id: u32, partition_count: u32) -> Self {
        assert!(partition_id >= 1 && partition_id <= partition_count, "partition ids start at 1");
        Self {
            partition_id,
            partition_count,
            models: ModelCache::default(),
            retry_at: None,
            limits: ProcessingLimits::default(),
        }
    }

    /// The same engine with other limits on processing runs and FEEL evaluations.
    pub fn with_limits(self, limits: ProcessingLimits) -> Self {
        Self { limits, ..self }
    }

    pub fn partition_id(&self) -> u32 {
        self.partition_id
    }

    pub fn partition_count(&self) -> u32 {
        self.partition_count
    }

    /// Processes one input at time `now` (epoch ms). The records are already applied to `state`.
    pub fn process(&mut self, state: &mut dyn KvWrite, input: Input, now: i64) -> Output {
        let mut ctx = Ctx::new(self, state, now);
        match input {
            Input::Client(command) => ctx.client_command(command),
            Input::Partition(message) => ctx.partition_message(message),
            Input::Tick => ctx.tick(),
            Input::Due(due) => ctx.due(due),
        }
        ctx.run_queue();
        ctx.out
    }

    /// Applies one committed record to state. Commands and rejections only advance the position.
    pub fn apply(&mut self, state: &mut dyn KvWrite, record: &Record) {
        applier::apply(state, &mut self.models, self.partition_id, record);
    }

    /// The pieces of work a tick at time `now` takes up, in the order it takes them up.
    pub fn due_work(&self, state: &dyn KvRead, now: i64) -> Vec<Due> {
        use crate::state::tables::{distribution, follow_ups, jobs, messages};
        let follow_ups = follow_ups::oldest(state, follow_up::FOLLOW_UPS_PER_TICK).into_iter().map(Due::FollowUp);
        let time_outs = jobs::timed_out(state, now, TICK_LIMIT).into_iter().map(Due::JobTimeOut);
        let backoffs = jobs::backoff_over(state, now, TICK_LIMIT).into_iter().map(Due::JobBackoff);
        let expiries = messages::expired(state, now, TICK_LIMIT).into_iter().map(Due::MessageExpiry);
        let resend = distribution::has_pending(state).then_some(Due::Resend);
        time_outs.chain(backoffs).chain(expiries).chain(resend).chain(follow_ups).collect()
    }

    /// When time-driven work is next due, if any: job and message deadlines, resending commands
    /// that other partitions have not acknowledged yet, and activations earlier runs deferred.
    pub fn next_due(&self, state: &dyn KvRead) -> Option<i64> {
        use crate::state::tables::{distribution, follow_ups, jobs, messages};
        let resend = distribution::has_pending(state).then_some(self.retry_at.unwrap_or(i64::MIN));
        let deferred = follow_ups::any(state).then_some(i64::MIN);
        [jobs::next_due(state), messages::next_deadline(state), resend, deferred].into_iter().flatten().min()
    }
}

/// Follow-up work within one command.
enum Step {
    Activate {
        model: Arc<ProcessModel>,
        element: ElementIdx,
        flow_scope_key: i64,
        template: ProcessInstanceRecord,
    },
    Complete {
        key: i64,
    },
    /// Completes a scope if nothing is left to do in it.
    CompleteScopeIfDone {
        key: i64,
    },
}

type Rejected = (RejectionType, String);

/// The state of one processing run.
struct Ctx<'a> {
    partition_id: u32,
    partition_count: u32,
    models: &'a mut ModelCache,
    retry_at: &'a mut Option<i64>,
    limits: ProcessingLimits,
    /// Follow-up steps taken in this run, against `limits.max_steps_per_run`.
    steps: u32,
    kv: &'a mut dyn KvWrite,
    now: i64,
    next_position: i64,
    next_key: i64,
    source_position: i64,
    queue: VecDeque<Step>,
    /// Partition commands addressed to this same partition, processed within this run.
    local: VecDeque<PartitionCommand>,
    out: Output,
}

impl<'a> Ctx<'a> {
    fn new(engine: &'a mut Engine, kv: &'a mut dyn KvWrite, now: i64) -> Self {
        let next_position = meta::last_position(kv) + 1;
        let next_key = meta::next_key_counter(kv);
        Ctx {
            partition_id: engine.partition_id,
            partition_count: engine.partition_count,
            models: &mut engine.models,
            retry_at: &mut engine.retry_at,
            limits: engine.limits,
            steps: 0,
            kv,
            now,
            next_position,
            next_key,
            source_position: -1,
            queue: VecDeque::new(),
            local: VecDeque::new(),
            out: Output::default(),
        }
    }

    fn new_key(&mut self) -> i64 {
        let k = key::encode(self.partition_id, self.next_key);
        self.next_key += 1;
        k
    }

    fn write(
        &mut self,
        record_type: RecordType,
        key: i64,
        intent: Intent,
        value: RecordValue,
        rejection: Option<Rejection>,
    ) -> i64 {
        let position = self.next_position;
        self.next_position += 1;
        let record = Record {
            position,
            source_position: self.source_position,
            key,
            timestamp: self.now,
            record_type,
            intent,
            rejection,
            value,
        };
        applier::apply(self.kv, self.models, self.partition_id, &record);
        self.out.records.push(record);
        position
    }

    /// Writes an event and applies it.
    fn event(&mut self, key: i64, intent: Intent, value: RecordValue) {
        self.write(RecordType::Event, key, intent, value, None);
    }

    /// Writes the command record that the following events result from.
    fn command(&mut self, key: i64, intent: Intent, value: RecordValue) {
        self.source_position = -1;
        self.source_position = self.write(RecordType::Command, key, intent, value, None);
    }

    fn reject(&mut self, key: i64, intent: Intent, value: RecordValue, (kind, reason): Rejected) {
        self.write(RecordType::CommandRejection, key, intent, value, Some(Rejection { kind, reason: reason.clone() }));
        self.out.result = Some(CommandResult::Rejected { kind, reason });
    }

    fn model(&mut self, definition_key: i64) -> Option<Arc<ProcessModel>> {
        self.models.get(&*self.kv, definition_key)
    }

    fn send(&mut self, partition_id: u32, command: PartitionCommand) {
        if partition_id == self.partition_id {
            self.local.push_back(command);
        } else {
            self.distribute(partition_id, command);
        }
    }

    fn message_partition(&self, correlation_key: &str) -> u32 {
        key::message_partition(correlation_key, self.partition_count)
    }

    fn client_command(&mut self, command: ClientCommand) {
        match command {
            ClientCommand::Deploy { resources, tenant_id } => self.deploy(resources, tenant_id),
            ClientCommand::CreateProcessInstance(create) => self.create_process_instance(create),
            ClientCommand::CancelProcessInstance { process_instance_key } => {
                self.cancel_process_instance(process_instance_key)
            }
            ClientCommand::ActivateJobs(activate) => self.activate_jobs(activate),
            ClientCommand::CompleteJob { job_key, variables } => self.complete_job(job_key, variables),
            ClientCommand::FailJob { job_key, retries, error_message, retry_backoff, variables } => {
                self.fail_job(job_key, retries, error_message, retry_backoff, variables)
            }
            ClientCommand::ThrowError { job_key, error_code, error_message, variables } => {
                self.throw_job_error(job_key, error_code, error_message, variables)
            }
            ClientCommand::UpdateJobRetries { job_key, retries } => self.update_job_retries(job_key, retries),
            ClientCommand::UpdateJobTimeout { job_key, timeout } => self.update_job_timeout(job_key, timeout),
            ClientCommand::PublishMessage(publish) => self.publish_message(publish),
            ClientCommand::BroadcastSignal { signal_name, variables, tenant_id } => {
                self.broadcast_signal(signal_name, variables, tenant_id)
            }
            ClientCommand::SetVariables { element_instance_key, variables, local } => {
                self.set_variables(element_instance_key, variables, local)
            }
            ClientCommand::ResolveIncident { incident_key } => self.resolve_incident(incident_key),
        }
    }

    fn partition_command(&mut self, command: PartitionCommand) {
        match command {
            PartitionCommand::OpenMessageSubscription { record, instance_partition_id } => {
                self.open_message_subscription(record, instance_partition_id)
            }
            PartitionCommand::ConfirmProcessSubscription { element_instance_key, message_name } => {
                self.confirm_process_subscription(element_instance_key, message_name)
            }
            PartitionCommand::CorrelateProcessSubscription { record } => self.correlate_process_subscription(record),
            PartitionCommand::AcknowledgeCorrelation { record } => self.acknowledge_correlation(record),
            PartitionCommand::RejectCorrelation { record } => self.reject_correlation(record),
            PartitionCommand::CloseMessageSubscription { record } => self.close_message_subscription(record),
            PartitionCommand::DistributeDeployment { deployment_key, record } => {
                self.receive_deployment(deployment_key, record)
            }
            PartitionCommand::ReportFailure { element_instance_key, message } => {
                self.report_failure(element_instance_key, message)
            }
        }
    }

    fn tick(&mut self) {
        self.time_out_jobs();
        self.recur_jobs_after_backoff();
        self.expire_messages();
        self.resend_pending();
        self.continue_follow_ups();
    }

    fn due(&mut self, due: Due) {
        match due {
            Due::FollowUp(key) => self.continue_follow_up(key),
            Due::JobTimeOut(key) => self.time_out_job(key),
            Due::JobBackoff(key) => self.recur_job_after_backoff(key),
            Due::MessageExpiry(key) => self.expire_message(key),
            Due::Resend => self.resend_pending(),
        }
    }

    /// Runs queued follow-up work and local partition commands until none is left.
    fn run_queue(&mut self) {
        loop {
            if let Some(step) = self.queue.pop_front() {
                if self.out_of_steps() && matches!(step, Step::Activate { .. }) {
                    self.defer(step);
                    continue;
                }
                self.steps = self.steps.saturating_add(1);
                match step {
                    Step::Activate { model, element, flow_scope_key, template } => {
                        self.activate_element(&model, element, flow_scope_key, &template)
                    }
                    Step::Complete { key } => self.complete_element(key),
                    Step::CompleteScopeIfDone { key } => self.complete_scope_if_done(key),
                }
            } else if let Some(command) = self.local.pop_front() {
                self.partition_command(command);
            } else {
                break;
            }
        }
    }
}

/// Parses a JSON object document as clients send it; empty means no variables.
fn parse_document(text: &str) -> Result<serde_json::Map<String, serde_json::Value>, Rejected> {
    if text.trim().is_empty() {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(other) => Err((
            RejectionType::InvalidArgument,
            format!("Expected variables to be a JSON object, but got a JSON {}", json_type(&other)),
        )),
        Err(e) => Err((
            RejectionType::InvalidArgument,
            format!("Expected variables to be a JSON object, but it is not valid JSON: {e}"),
        )),
    }
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests;

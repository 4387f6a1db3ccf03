//! The typed tables of a partition's state.
//!
//! Each table is a set of free functions over [`KvRead`]/[`KvWrite`] with its own key prefix. Values are
//! postcard-encoded structs whose fields are only ever appended (so older snapshots stay readable).
//! Only the event appliers ([`crate::applier`]) write through these functions; processors read.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use waggle_protocol::record::{
    IncidentRecord, JobRecord, MessageRecord, MessageStartEventSubscriptionRecord, MessageSubscriptionRecord,
    ProcessInstanceRecord, ProcessMessageSubscriptionRecord, ProcessRecord,
};

use super::{KvRead, KvWrite};

/// Table prefixes. Never reuse a retired value.
mod prefix {
    pub const META: u8 = 0x01;
    pub const PROCESS: u8 = 0x02;
    pub const PROCESS_VERSION: u8 = 0x03;
    pub const PROCESS_LATEST: u8 = 0x04;
    pub const ELEMENT_INSTANCE: u8 = 0x05;
    pub const ELEMENT_CHILD: u8 = 0x06;
    pub const VARIABLE: u8 = 0x07;
    pub const JOB: u8 = 0x08;
    pub const JOB_ACTIVATABLE: u8 = 0x09;
    pub const JOB_DEADLINE: u8 = 0x0A;
    pub const JOB_BACKOFF: u8 = 0x0B;
    pub const INCIDENT: u8 = 0x0C;
    pub const INCIDENT_BY_ELEMENT: u8 = 0x0D;
    pub const INCIDENT_BY_JOB: u8 = 0x0E;
    pub const MESSAGE: u8 = 0x0F;
    pub const MESSAGE_BY_CORRELATION: u8 = 0x10;
    pub const MESSAGE_ID: u8 = 0x11;
    pub const MESSAGE_DEADLINE: u8 = 0x12;
    pub const MESSAGE_CORRELATED: u8 = 0x13;
    pub const MESSAGE_SUBSCRIPTION: u8 = 0x14;
    pub const PROCESS_MESSAGE_SUBSCRIPTION: u8 = 0x15;
    pub const MESSAGE_START_SUBSCRIPTION: u8 = 0x16;
    pub const TAKEN_FLOW: u8 = 0x17;
    pub const AWAIT_RESULT: u8 = 0x18;
    pub const OUTBOX: u8 = 0x19;
    pub const OUTBOX_SEQUENCE: u8 = 0x1A;
    pub const INBOX: u8 = 0x1B;
    pub const FOLLOW_UP: u8 = 0x1C;
    pub const FOLLOW_UP_CHAIN: u8 = 0x1D;
    pub const HELD_COMMAND: u8 = 0x1E;
}

/// The tables used as queues: entries are inserted at one end (new keys, later due times) and
/// deleted at the other soon after, and they are read by scanning from their front. In an LSM tree
/// every delete leaves a tombstone that a scan from the front must step over until compaction drops
/// it, so a backend should start such scans where it last found a live entry (see
/// `waggle_broker::storage`). Every other table is read by exact keys or by short per-key prefixes.
pub const QUEUE_TABLES: [u8; 5] =
    [prefix::JOB_ACTIVATABLE, prefix::JOB_DEADLINE, prefix::JOB_BACKOFF, prefix::MESSAGE_DEADLINE, prefix::OUTBOX];

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("state values always serialize")
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> T {
    // State is only ever written by this crate; an undecodable value means corrupted storage, which
    // must stop the partition rather than be papered over.
    postcard::from_bytes(bytes).expect("state value is not decodable: storage is corrupted")
}

fn get<T: DeserializeOwned>(kv: &dyn KvRead, key: &[u8]) -> Option<T> {
    kv.get(key).map(|bytes| decode(&bytes))
}

/// A key builder: prefix byte, then components.
struct Key(Vec<u8>);

impl Key {
    fn new(prefix: u8) -> Self {
        let mut bytes = Vec::with_capacity(32);
        bytes.push(prefix);
        Key(bytes)
    }
    fn i64(mut self, value: i64) -> Self {
        // Flip the sign bit so negative numbers sort before positive ones.
        self.0.extend_from_slice(&((value as u64) ^ (1 << 63)).to_be_bytes());
        self
    }
    fn str(mut self, value: &str) -> Self {
        self.0.extend_from_slice(value.as_bytes());
        self.0.push(0);
        self
    }
    fn done(self) -> Vec<u8> {
        self.0
    }
}

fn read_i64(bytes: &[u8]) -> i64 {
    (u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")) ^ (1 << 63)) as i64
}

/// Collects the trailing i64 of every key under `prefix`, in key order, up to `limit`.
fn trailing_keys(kv: &dyn KvRead, prefix: &[u8], limit: usize) -> Vec<i64> {
    let mut keys = Vec::new();
    kv.scan_prefix(prefix, &mut |key, _| {
        keys.push(read_i64(&key[key.len() - 8..]));
        keys.len() < limit
    });
    keys
}

// ---------------------------------------------------------------------------------------------------
// Meta: key generator and log position.

pub mod meta {
    use super::*;

    fn key(name: &str) -> Vec<u8> {
        Key::new(prefix::META).str(name).done()
    }

    /// The next unused key counter (not the full key).
    pub fn next_key_counter(kv: &dyn KvRead) -> i64 {
        get(kv, &key("next_key")).unwrap_or(1)
    }

    pub fn set_next_key_counter(kv: &mut dyn KvWrite, counter: i64) {
        kv.put(&key("next_key"), &encode(&counter));
    }

    /// Position of the last record applied; 0 before any.
    pub fn last_position(kv: &dyn KvRead) -> i64 {
        get(kv, &key("last_position")).unwrap_or(0)
    }

    pub fn set_last_position(kv: &mut dyn KvWrite, position: i64) {
        kv.put(&key("last_position"), &encode(&position));
    }
}

// ---------------------------------------------------------------------------------------------------
// Deployed processes.

pub mod processes {
    use super::*;

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct Latest {
        pub version: i32,
        pub process_definition_key: i64,
    }

    pub fn get(kv: &dyn KvRead, definition_key: i64) -> Option<ProcessRecord> {
        super::get(kv, &Key::new(prefix::PROCESS).i64(definition_key).done())
    }

    pub fn latest(kv: &dyn KvRead, tenant: &str, bpmn_process_id: &str) -> Option<Latest> {
        super::get(kv, &Key::new(prefix::PROCESS_LATEST).str(tenant).str(bpmn_process_id).done())
    }

    pub fn by_version(kv: &dyn KvRead, tenant: &str, bpmn_process_id: &str, version: i32) -> Option<i64> {
        super::get(kv, &Key::new(prefix::PROCESS_VERSION).str(tenant).str(bpmn_process_id).i64(version as i64).done())
    }

    pub fn insert(kv: &mut dyn KvWrite, process: &ProcessRecord) {
        kv.put(&Key::new(prefix::PROCESS).i64(process.process_definition_key).done(), &encode(process));
        kv.put(
            &Key::new(prefix::PROCESS_VERSION)
                .str(&process.tenant_id)
                .str(&process.bpmn_process_id)
                .i64(process.version as i64)
                .done(),
            &encode(&process.process_definition_key),
        );
        let newer =
            latest(kv, &process.tenant_id, &process.bpmn_process_id).is_none_or(|l| l.version < process.version);
        if newer {
            kv.put(
                &Key::new(prefix::PROCESS_LATEST).str(&process.tenant_id).str(&process.bpmn_process_id).done(),
                &encode(&Latest { version: process.version, process_definition_key: process.process_definition_key }),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Element instances (including process instances), their children and taken join flows.

pub mod elements {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub enum Lifecycle {
        Activating,
        Activated,
        Completing,
        Terminating,
    }

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct ElementInstance {
        pub key: i64,
        pub lifecycle: Lifecycle,
        pub record: ProcessInstanceRecord,
        /// Child element instances that are still alive.
        pub active_children: u32,
        /// Sequence flows taken into joining parallel gateways of this scope and not yet consumed.
        pub waiting_tokens: u32,
        /// The job created for this element, or -1.
        pub job_key: i64,
    }

    fn key(element_instance_key: i64) -> Vec<u8> {
        Key::new(prefix::ELEMENT_INSTANCE).i64(element_instance_key).done()
    }

    pub fn get(kv: &dyn KvRead, element_instance_key: i64) -> Option<ElementInstance> {
        super::get(kv, &key(element_instance_key))
    }

    pub fn put(kv: &mut dyn KvWrite, instance: &ElementInstance) {
        kv.put(&key(instance.key), &encode(instance));
    }

    pub fn insert(kv: &mut dyn KvWrite, instance: &ElementInstance) {
        put(kv, instance);
        let parent = instance.record.flow_scope_key;
        if parent > 0 {
            kv.put(&Key::new(prefix::ELEMENT_CHILD).i64(parent).i64(instance.key).done(), &[]);
            if let Some(mut scope) = get(kv, parent) {
                scope.active_children += 1;
                put(kv, &scope);
            }
        }
    }

    pub fn remove(kv: &mut dyn KvWrite, element_instance_key: i64) {
        let Some(instance) = get(kv, element_instance_key) else { return };
        kv.delete(&key(element_instance_key));
        let parent = instance.record.flow_scope_key;
        if parent > 0 {
            kv.delete(&Key::new(prefix::ELEMENT_CHILD).i64(parent).i64(element_instance_key).done());
            if let Some(mut scope) = get(kv, parent) {
                scope.active_children = scope.active_children.saturating_sub(1);
                put(kv, &scope);
            }
        }
        let flows = Key::new(prefix::TAKEN_FLOW).i64(element_instance_key).done();
        let mut taken = Vec::new();
        kv.scan_prefix(&flows, &mut |k, _| {
            taken.push(k.to_vec());
            true
        });
        for k in taken {
            kv.delete(&k);
        }
    }

    pub fn children(kv: &dyn KvRead, scope_key: i64) -> Vec<i64> {
        trailing_keys(kv, &Key::new(prefix::ELEMENT_CHILD).i64(scope_key).done(), usize::MAX)
    }

    fn flow_key(scope_key: i64, flow_id: &str) -> Vec<u8> {
        Key::new(prefix::TAKEN_FLOW).i64(scope_key).str(flow_id).done()
    }

    /// How often the flow was taken into a join in this scope and not yet consumed.
    pub fn taken_count(kv: &dyn KvRead, scope_key: i64, flow_id: &str) -> u32 {
        super::get(kv, &flow_key(scope_key, flow_id)).unwrap_or(0)
    }

    pub fn set_taken_count(kv: &mut dyn KvWrite, scope_key: i64, flow_id: &str, count: u32) {
        if count == 0 {
            kv.delete(&flow_key(scope_key, flow_id));
        } else {
            kv.put(&flow_key(scope_key, flow_id), &encode(&count));
        }
    }

    fn await_key(process_instance_key: i64) -> Vec<u8> {
        Key::new(prefix::AWAIT_RESULT).i64(process_instance_key).done()
    }

    /// The variables a waiting client asked for, when the instance was created with a result.
    pub fn awaited_result(kv: &dyn KvRead, process_instance_key: i64) -> Option<Vec<String>> {
        super::get(kv, &await_key(process_instance_key))
    }

    pub fn set_awaited_result(kv: &mut dyn KvWrite, process_instance_key: i64, fetch: &[String]) {
        kv.put(&await_key(process_instance_key), &encode(&fetch));
    }

    pub fn clear_awaited_result(kv: &mut dyn KvWrite, process_instance_key: i64) {
        kv.delete(&await_key(process_instance_key));
    }
}

// ---------------------------------------------------------------------------------------------------
// Variables, per scope.

pub mod variables {
    use super::*;

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct Variable {
        pub key: i64,
        /// JSON text.
        pub value: String,
    }

    fn key(scope_key: i64, name: &str) -> Vec<u8> {
        Key::new(prefix::VARIABLE).i64(scope_key).str(name).done()
    }

    pub fn get(kv: &dyn KvRead, scope_key: i64, name: &str) -> Option<Variable> {
        super::get(kv, &key(scope_key, name))
    }

    pub fn put(kv: &mut dyn KvWrite, scope_key: i64, name: &str, variable: &Variable) {
        kv.put(&key(scope_key, name), &encode(variable));
    }

    /// All variables of one scope, in name order.
    pub fn of_scope(kv: &dyn KvRead, scope_key: i64) -> Vec<(String, Variable)> {
        let prefix = Key::new(prefix::VARIABLE).i64(scope_key).done();
        let mut found = Vec::new();
        kv.scan_prefix(&prefix, &mut |k, v| {
            let name = &k[prefix.len()..k.len() - 1];
            found.push((String::from_utf8_lossy(name).into_owned(), decode(v)));
            true
        });
        found
    }

    pub fn remove_scope(kv: &mut dyn KvWrite, scope_key: i64) {
        for (name, _) in of_scope(kv, scope_key) {
            kv.delete(&key(scope_key, &name));
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Jobs and their indexes: activatable by type, deadlines, retry back-offs.

pub mod jobs {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub enum JobState {
        Activatable,
        Activated,
        /// Failed with retries left, waiting for its back-off to pass.
        BackingOff,
        /// Failed without retries, or threw an error nobody caught: an incident holds it.
        Failed,
    }

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct Job {
        pub key: i64,
        pub state: JobState,
        pub record: JobRecord,
    }

    fn key(job_key: i64) -> Vec<u8> {
        Key::new(prefix::JOB).i64(job_key).done()
    }

    fn activatable_key(job_type: &str, job_key: i64) -> Vec<u8> {
        Key::new(prefix::JOB_ACTIVATABLE).str(job_type).i64(job_key).done()
    }

    pub fn get(kv: &dyn KvRead, job_key: i64) -> Option<Job> {
        super::get(kv, &key(job_key))
    }

    /// Stores the job and keeps every index in line with its state.
    pub fn put(kv: &mut dyn KvWrite, job: &Job) {
        unindex(kv, job.key);
        kv.put(&key(job.key), &encode(job));
        match job.state {
            JobState::Activatable => kv.put(&activatable_key(&job.record.job_type, job.key), &[]),
            JobState::Activated => {
                kv.put(&Key::new(prefix::JOB_DEADLINE).i64(job.record.deadline).i64(job.key).done(), &[])
            }
            JobState::BackingOff => {
                kv.put(&Key::new(prefix::JOB_BACKOFF).i64(job.record.recurring_time).i64(job.key).done(), &[])
            }
            JobState::Failed => {}
        }
    }

    pub fn remove(kv: &mut dyn KvWrite, job_key: i64) {
        unindex(kv, job_key);
        kv.delete(&key(job_key));
    }

    fn unindex(kv: &mut dyn KvWrite, job_key: i64) {
        if let Some(old) = get(kv, job_key) {
            match old.state {
                JobState::Activatable => kv.delete(&activatable_key(&old.record.job_type, job_key)),
                JobState::Activated => {
                    kv.delete(&Key::new(prefix::JOB_DEADLINE).i64(old.record.deadline).i64(job_key).done())
                }
                JobState::BackingOff => {
                    kv.delete(&Key::new(prefix::JOB_BACKOFF).i64(old.record.recurring_time).i64(job_key).done())
                }
                JobState::Failed => {}
            }
        }
    }

    /// Keys of activatable jobs of a type, oldest first.
    pub fn activatable(kv: &dyn KvRead, job_type: &str, limit: usize) -> Vec<i64> {
        trailing_keys(kv, &Key::new(prefix::JOB_ACTIVATABLE).str(job_type).done(), limit)
    }

    /// Activated jobs whose deadline is at or before `now`.
    pub fn timed_out(kv: &dyn KvRead, now: i64, limit: usize) -> Vec<i64> {
        due(kv, prefix::JOB_DEADLINE, now, limit)
    }

    /// Jobs whose retry back-off is over at `now`.
    pub fn backoff_over(kv: &dyn KvRead, now: i64, limit: usize) -> Vec<i64> {
        due(kv, prefix::JOB_BACKOFF, now, limit)
    }

    /// The earliest deadline or back-off end, if any job has one.
    pub fn next_due(kv: &dyn KvRead) -> Option<i64> {
        [prefix::JOB_DEADLINE, prefix::JOB_BACKOFF].into_iter().filter_map(|p| first_due(kv, p)).min()
    }
}

/// Keys from a `(due time, key)` index whose due time is at or before `now`.
fn due(kv: &dyn KvRead, table: u8, now: i64, limit: usize) -> Vec<i64> {
    let mut keys = Vec::new();
    kv.scan_prefix(&[table], &mut |k, _| {
        if read_i64(&k[1..9]) > now {
            return false;
        }
        keys.push(read_i64(&k[9..17]));
        keys.len() < limit
    });
    keys
}

fn first_due(kv: &dyn KvRead, table: u8) -> Option<i64> {
    let mut first = None;
    kv.scan_prefix(&[table], &mut |k, _| {
        first = Some(read_i64(&k[1..9]));
        false
    });
    first
}

// ---------------------------------------------------------------------------------------------------
// Incidents.

pub mod incidents {
    use super::*;

    fn key(incident_key: i64) -> Vec<u8> {
        Key::new(prefix::INCIDENT).i64(incident_key).done()
    }

    pub fn get(kv: &dyn KvRead, incident_key: i64) -> Option<IncidentRecord> {
        super::get(kv, &key(incident_key))
    }

    pub fn insert(kv: &mut dyn KvWrite, incident_key: i64, incident: &IncidentRecord) {
        kv.put(&key(incident_key), &encode(incident));
        kv.put(&Key::new(prefix::INCIDENT_BY_ELEMENT).i64(incident.element_instance_key).i64(incident_key).done(), &[]);
        if incident.job_key > 0 {
            kv.put(&Key::new(prefix::INCIDENT_BY_JOB).i64(incident.job_key).done(), &encode(&incident_key));
        }
    }

    pub fn remove(kv: &mut dyn KvWrite, incident_key: i64) {
        let Some(incident) = get(kv, incident_key) else { return };
        kv.delete(&key(incident_key));
        kv.delete(&Key::new(prefix::INCIDENT_BY_ELEMENT).i64(incident.element_instance_key).i64(incident_key).done());
        if incident.job_key > 0 {
            kv.delete(&Key::new(prefix::INCIDENT_BY_JOB).i64(incident.job_key).done());
        }
    }

    pub fn of_element(kv: &dyn KvRead, element_instance_key: i64) -> Vec<i64> {
        trailing_keys(kv, &Key::new(prefix::INCIDENT_BY_ELEMENT).i64(element_instance_key).done(), usize::MAX)
    }

    pub fn of_job(kv: &dyn KvRead, job_key: i64) -> Option<i64> {
        super::get(kv, &Key::new(prefix::INCIDENT_BY_JOB).i64(job_key).done())
    }
}

// ---------------------------------------------------------------------------------------------------
// Buffered messages.

pub mod messages {
    use super::*;

    fn key(message_key: i64) -> Vec<u8> {
        Key::new(prefix::MESSAGE).i64(message_key).done()
    }

    fn id_key(m: &MessageRecord) -> Vec<u8> {
        Key::new(prefix::MESSAGE_ID).str(&m.tenant_id).str(&m.name).str(&m.correlation_key).str(&m.message_id).done()
    }

    fn correlation_prefix(tenant: &str, name: &str, correlation_key: &str) -> Vec<u8> {
        Key::new(prefix::MESSAGE_BY_CORRELATION).str(tenant).str(name).str(correlation_key).done()
    }

    pub fn get(kv: &dyn KvRead, message_key: i64) -> Option<MessageRecord> {
        super::get(kv, &key(message_key))
    }

    /// Whether a live message with the same name, correlation key and id exists.
    pub fn id_exists(kv: &dyn KvRead, message: &MessageRecord) -> bool {
        !message.message_id.is_empty() && kv.get(&id_key(message)).is_some()
    }

    pub fn insert(kv: &mut dyn KvWrite, message_key: i64, message: &MessageRecord) {
        kv.put(&key(message_key), &encode(message));
        let mut by_correlation = correlation_prefix(&message.tenant_id, &message.name, &message.correlation_key);
        by_correlation.extend_from_slice(&Key::new(0).i64(message_key).done()[1..]);
        kv.put(&by_correlation, &[]);
        if !message.message_id.is_empty() {
            kv.put(&id_key(message), &encode(&message_key));
        }
        kv.put(&Key::new(prefix::MESSAGE_DEADLINE).i64(message.deadline).i64(message_key).done(), &[]);
    }

    pub fn remove(kv: &mut dyn KvWrite, message_key: i64) {
        let Some(message) = get(kv, message_key) else { return };
        kv.delete(&key(message_key));
        let mut by_correlation = correlation_prefix(&message.tenant_id, &message.name, &message.correlation_key);
        by_correlation.extend_from_slice(&Key::new(0).i64(message_key).done()[1..]);
        kv.delete(&by_correlation);
        if !message.message_id.is_empty() {
            kv.delete(&id_key(&message));
        }
        kv.delete(&Key::new(prefix::MESSAGE_DEADLINE).i64(message.deadline).i64(message_key).done());
        let correlated = Key::new(prefix::MESSAGE_CORRELATED).i64(message_key).done();
        let mut marks = Vec::new();
        kv.scan_prefix(&correlated, &mut |k, _| {
            marks.push(k.to_vec());
            true
        });
        for mark in marks {
            kv.delete(&mark);
        }
    }

    /// Buffered messages for a name and correlation key, oldest first.
    pub fn matching(kv: &dyn KvRead, tenant: &str, name: &str, correlation_key: &str) -> Vec<i64> {
        trailing_keys(kv, &correlation_prefix(tenant, name, correlation_key), usize::MAX)
    }

    pub fn expired(kv: &dyn KvRead, now: i64, limit: usize) -> Vec<i64> {
        due(kv, prefix::MESSAGE_DEADLINE, now, limit)
    }

    pub fn next_deadline(kv: &dyn KvRead) -> Option<i64> {
        first_due(kv, prefix::MESSAGE_DEADLINE)
    }

    fn correlated_key(message_key: i64, bpmn_process_id: &str) -> Vec<u8> {
        Key::new(prefix::MESSAGE_CORRELATED).i64(message_key).str(bpmn_process_id).done()
    }

    /// A message correlates at most once to instances of the same process.
    pub fn is_correlated_to(kv: &dyn KvRead, message_key: i64, bpmn_process_id: &str) -> bool {
        kv.get(&correlated_key(message_key, bpmn_process_id)).is_some()
    }

    pub fn mark_correlated(kv: &mut dyn KvWrite, message_key: i64, bpmn_process_id: &str) {
        kv.put(&correlated_key(message_key, bpmn_process_id), &[]);
    }

    pub fn unmark_correlated(kv: &mut dyn KvWrite, message_key: i64, bpmn_process_id: &str) {
        kv.delete(&correlated_key(message_key, bpmn_process_id));
    }
}

// ---------------------------------------------------------------------------------------------------
// Message subscriptions: the message side (by name and correlation key) and the instance side.

pub mod subscriptions {
    use super::*;

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct MessageSubscription {
        pub record: MessageSubscriptionRecord,
        /// The partition of the waiting instance.
        pub instance_partition_id: u32,
        /// A message is on its way to the instance; no other message may correlate meanwhile.
        pub correlating: bool,
    }

    fn message_key(tenant: &str, name: &str, correlation_key: &str, element_instance_key: i64) -> Vec<u8> {
        Key::new(prefix::MESSAGE_SUBSCRIPTION)
            .str(tenant)
            .str(name)
            .str(correlation_key)
            .i64(element_instance_key)
            .done()
    }

    pub fn get_message_side(
        kv: &dyn KvRead,
        tenant: &str,
        name: &str,
        correlation_key: &str,
        element_instance_key: i64,
    ) -> Option<MessageSubscription> {
        super::get(kv, &message_key(tenant, name, correlation_key, element_instance_key))
    }

    pub fn put_message_side(kv: &mut dyn KvWrite, subscription: &MessageSubscription) {
        let r = &subscription.record;
        kv.put(
            &message_key(&r.tenant_id, &r.message_name, &r.correlation_key, r.element_instance_key),
            &encode(subscription),
        );
    }

    pub fn remove_message_side(kv: &mut dyn KvWrite, r: &MessageSubscriptionRecord) {
        kv.delete(&message_key(&r.tenant_id, &r.message_name, &r.correlation_key, r.element_instance_key));
    }

    /// Message-side subscriptions waiting for a name and correlation key.
    pub fn waiting_for(kv: &dyn KvRead, tenant: &str, name: &str, correlation_key: &str) -> Vec<MessageSubscription> {
        let prefix = Key::new(prefix::MESSAGE_SUBSCRIPTION).str(tenant).str(name).str(correlation_key).done();
        let mut found = Vec::new();
        kv.scan_prefix(&prefix, &mut |k, v| {
            if k.len() == prefix.len() + 8 {
                found.push(decode(v));
            }
            true
        });
        found
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub enum ProcessSubscriptionState {
        /// Sent to the message partition, not yet confirmed.
        Creating,
        Created,
    }

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct ProcessMessageSubscription {
        pub record: ProcessMessageSubscriptionRecord,
        pub state: ProcessSubscriptionState,
    }

    fn process_key(element_instance_key: i64, name: &str) -> Vec<u8> {
        Key::new(prefix::PROCESS_MESSAGE_SUBSCRIPTION).i64(element_instance_key).str(name).done()
    }

    pub fn get_process_side(
        kv: &dyn KvRead,
        element_instance_key: i64,
        name: &str,
    ) -> Option<ProcessMessageSubscription> {
        super::get(kv, &process_key(element_instance_key, name))
    }

    pub fn put_process_side(kv: &mut dyn KvWrite, subscription: &ProcessMessageSubscription) {
        kv.put(
            &process_key(subscription.record.element_instance_key, &subscription.record.message_name),
            &encode(subscription),
        );
    }

    pub fn remove_process_side(kv: &mut dyn KvWrite, element_instance_key: i64, name: &str) {
        kv.delete(&process_key(element_instance_key, name));
    }

    pub fn of_element(kv: &dyn KvRead, element_instance_key: i64) -> Vec<ProcessMessageSubscription> {
        let prefix = Key::new(prefix::PROCESS_MESSAGE_SUBSCRIPTION).i64(element_instance_key).done();
        let mut found = Vec::new();
        kv.scan_prefix(&prefix, &mut |_, v| {
            found.push(decode(v));
            true
        });
        found
    }

    fn start_key(tenant: &str, name: &str, definition_key: i64) -> Vec<u8> {
        Key::new(prefix::MESSAGE_START_SUBSCRIPTION).str(tenant).str(name).i64(definition_key).done()
    }

    pub fn put_start(kv: &mut dyn KvWrite, r: &MessageStartEventSubscriptionRecord) {
        kv.put(&start_key(&r.tenant_id, &r.message_name, r.process_definition_key), &encode(r));
    }

    pub fn remove_start(kv: &mut dyn KvWrite, r: &MessageStartEventSubscriptionRecord) {
        kv.delete(&start_key(&r.tenant_id, &r.message_name, r.process_definition_key));
    }

    /// Message start event subscriptions for a message name.
    pub fn starts_for(kv: &dyn KvRead, tenant: &str, name: &str) -> Vec<MessageStartEventSubscriptionRecord> {
        let prefix = Key::new(prefix::MESSAGE_START_SUBSCRIPTION).str(tenant).str(name).done();
        let mut found = Vec::new();
        kv.scan_prefix(&prefix, &mut |k, v| {
            if k.len() == prefix.len() + 8 {
                found.push(decode(v));
            }
            true
        });
        found
    }
}

// ---------------------------------------------------------------------------------------------------
// The exactly-once channel between partitions (see `waggle_protocol::partition`).

pub mod distribution {
    use waggle_protocol::partition::PartitionCommand;

    use super::*;

    /// A command sent to another partition and not yet acknowledged by it.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct Pending {
        pub key: i64,
        pub origin_key: i64,
        pub command: PartitionCommand,
    }

    fn pending_key(target: u32, sequence: u64) -> Vec<u8> {
        Key::new(prefix::OUTBOX).i64(target as i64).i64(sequence as i64).done()
    }

    /// The number the next command to `target` gets; numbers start at 1.
    pub fn next_sequence(kv: &dyn KvRead, target: u32) -> u64 {
        super::get(kv, &Key::new(prefix::OUTBOX_SEQUENCE).i64(target as i64).done()).unwrap_or(1)
    }

    pub fn add_pending(kv: &mut dyn KvWrite, target: u32, sequence: u64, pending: &Pending) {
        kv.put(&pending_key(target, sequence), &encode(pending));
        if sequence >= next_sequence(kv, target) {
            kv.put(&Key::new(prefix::OUTBOX_SEQUENCE).i64(target as i64).done(), &encode(&(sequence + 1)));
        }
    }

    pub fn remove_pending(kv: &mut dyn KvWrite, target: u32, sequence: u64) {
        kv.delete(&pending_key(target, sequence));
    }

    /// Pending commands to `target` numbered up to `up_to`, in order.
    pub fn pending_to(kv: &dyn KvRead, target: u32, up_to: u64) -> Vec<(u64, Pending)> {
        let mut found = Vec::new();
        kv.scan_prefix(&Key::new(prefix::OUTBOX).i64(target as i64).done(), &mut |k, v| {
            let sequence = read_i64(&k[9..17]) as u64;
            if sequence > up_to {
                return false;
            }
            found.push((sequence, decode(v)));
            true
        });
        found
    }

    /// Up to `limit` pending commands per target, each target's in order: what a retry resends.
    pub fn all_pending(kv: &dyn KvRead, limit_per_target: usize) -> Vec<(u32, u64, Pending)> {
        let mut found: Vec<(u32, u64, Pending)> = Vec::new();
        let mut per_target = 0;
        kv.scan_prefix(&[prefix::OUTBOX], &mut |k, v| {
            let target = read_i64(&k[1..9]) as u32;
            if found.last().is_none_or(|(t, ..)| *t != target) {
                per_target = 0;
            }
            if per_target < limit_per_target {
                found.push((target, read_i64(&k[9..17]) as u64, decode(v)));
                per_target += 1;
            }
            true
        });
        found
    }

    pub fn has_pending(kv: &dyn KvRead) -> bool {
        let mut any = false;
        kv.scan_prefix(&[prefix::OUTBOX], &mut |_, _| {
            any = true;
            false
        });
        any
    }

    /// Whether any command about `origin_key` still waits for its acknowledgement.
    pub fn pending_for_origin(kv: &dyn KvRead, origin_key: i64) -> bool {
        let mut any = false;
        kv.scan_prefix(&[prefix::OUTBOX], &mut |_, v| {
            any = decode::<Pending>(v).origin_key == origin_key;
            !any
        });
        any
    }

    /// The last number processed from `source`; 0 before any.
    pub fn last_received(kv: &dyn KvRead, source: u32) -> u64 {
        super::get(kv, &Key::new(prefix::INBOX).i64(source as i64).done()).unwrap_or(0)
    }

    pub fn set_last_received(kv: &mut dyn KvWrite, source: u32, sequence: u64) {
        kv.put(&Key::new(prefix::INBOX).i64(source as i64).done(), &encode(&sequence));
    }
}

// ---------------------------------------------------------------------------------------------------
// Follow-ups: element activations deferred to a later processing run, and how many times in a row an
// instance was deferred without reaching a wait state.

pub mod follow_ups {
    use super::*;

    /// Deferred activations by their element instance key, in the order they were deferred.
    fn key(element_instance_key: i64) -> Vec<u8> {
        Key::new(prefix::FOLLOW_UP).i64(element_instance_key).done()
    }

    fn chain_key(process_instance_key: i64) -> Vec<u8> {
        Key::new(prefix::FOLLOW_UP_CHAIN).i64(process_instance_key).done()
    }

    pub fn insert(kv: &mut dyn KvWrite, element_instance_key: i64, record: &ProcessInstanceRecord) {
        kv.put(&key(element_instance_key), &encode(record));
        let chain = chain(kv, record.process_instance_key);
        kv.put(&chain_key(record.process_instance_key), &encode(&(chain + 1)));
    }

    pub fn get(kv: &dyn KvRead, element_instance_key: i64) -> Option<ProcessInstanceRecord> {
        super::get(kv, &key(element_instance_key))
    }

    pub fn remove(kv: &mut dyn KvWrite, element_instance_key: i64) {
        kv.delete(&key(element_instance_key));
    }

    /// The oldest deferred activations, up to `limit`.
    pub fn oldest(kv: &dyn KvRead, limit: usize) -> Vec<i64> {
        trailing_keys(kv, &[prefix::FOLLOW_UP], limit)
    }

    pub fn any(kv: &dyn KvRead) -> bool {
        !oldest(kv, 1).is_empty()
    }

    /// How many activations of the instance were deferred since it last waited.
    pub fn chain(kv: &dyn KvRead, process_instance_key: i64) -> u32 {
        super::get(kv, &chain_key(process_instance_key)).unwrap_or(0)
    }

    /// The instance reached a wait state (or ended): its chain starts again.
    pub fn end_chain(kv: &mut dyn KvWrite, process_instance_key: i64) {
        if kv.get(&chain_key(process_instance_key)).is_some() {
            kv.delete(&chain_key(process_instance_key));
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Held commands: commands from other partitions whose processing failed, each kept by the incident that
// holds it until a person resolves it (see the processor's `incident` module).

pub mod held {
    use waggle_protocol::partition::PartitionCommand;

    use super::*;

    /// A held command and the partition it came from.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct Held {
        pub source_partition: u32,
        pub command: PartitionCommand,
    }

    fn key(incident_key: i64) -> Vec<u8> {
        Key::new(prefix::HELD_COMMAND).i64(incident_key).done()
    }

    pub fn insert(kv: &mut dyn KvWrite, incident_key: i64, held: &Held) {
        kv.put(&key(incident_key), &encode(held));
    }

    pub fn get(kv: &dyn KvRead, incident_key: i64) -> Option<Held> {
        super::get(kv, &key(incident_key))
    }

    pub fn remove(kv: &mut dyn KvWrite, incident_key: i64) {
        if kv.get(&key(incident_key)).is_some() {
            kv.delete(&key(incident_key));
        }
    }
}

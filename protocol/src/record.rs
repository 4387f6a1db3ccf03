//! The record model: what a partition's log holds.
//!
//! Every change in Waggle is a record in a partition's log: a command (what someone asked for), an event
//! (what happened) or a rejection (why a command was refused). Followers rebuild state by applying
//! events; exporters ship every record out. The numeric codes of record types, value types and intents
//! are Zeebe's, so exported records read the same as Zeebe's.
//!
//! Records are stored in [`RecordBatch`]es, one per raft entry, which carry a format version: a broker
//! of version N+1 must still read batches written by version N, so fields are only ever appended and
//! old layouts stay decodable. postcard, the log's encoding, is not self-describing: a reader cannot
//! tell that a field is missing, so [`RecordBatch`] decodes by hand, reading the fields its version
//! says it has.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::command::RequestId;

/// The layout version of [`RecordBatch`] written by this build.
///
/// - 1: `version`, `records`.
/// - 2: adds `timestamp`, `remember_until` and `answers`.
pub const RECORD_FORMAT_VERSION: u16 = 2;

/// A group of records appended to the log atomically: one engine processing step.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordBatch {
    pub version: u16,
    pub records: Vec<Record>,
    /// The leader's clock when it processed the batch (epoch milliseconds). Replicas expire remembered
    /// answers by this time rather than by their own clocks, so they all expire the same ones. A
    /// version 1 batch reads as its last record's timestamp (0 without records).
    pub timestamp: i64,
    /// Until when (epoch milliseconds) the partition remembers this batch's `answers`.
    pub remember_until: i64,
    /// The answers to the client commands in this batch that carried a request id, so that a retry
    /// of one of them is answered the same instead of being applied again.
    pub answers: Vec<Answer>,
}

/// The answer given to one client request, as the partition remembers it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub request_id: RequestId,
    /// The postcard-encoded `CommandResult`, encoded once by the leader and stored as it is.
    pub result: Vec<u8>,
}

impl RecordBatch {
    /// A batch of records that answers no request with an id.
    pub fn new(records: Vec<Record>) -> Self {
        let timestamp = records.last().map_or(0, |r| r.timestamp);
        Self { version: RECORD_FORMAT_VERSION, records, timestamp, remember_until: timestamp, answers: Vec::new() }
    }

    /// A batch processed at `timestamp` whose `answers` are remembered until `remember_until`.
    pub fn with_answers(records: Vec<Record>, timestamp: i64, remember_until: i64, answers: Vec<Answer>) -> Self {
        Self { version: RECORD_FORMAT_VERSION, records, timestamp, remember_until, answers }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("record batches always serialize")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        // The version is read first on its own: postcard drops the message of an error raised
        // while decoding, and a too new batch deserves a clear one.
        let (version, _) = postcard::take_from_bytes::<u16>(bytes).map_err(|e| DecodeError(e.to_string()))?;
        if version > RECORD_FORMAT_VERSION {
            return Err(DecodeError(too_new(version)));
        }
        postcard::from_bytes(bytes).map_err(|e| DecodeError(e.to_string()))
    }
}

/// The batch's fields in order, as a tuple: postcard writes a tuple and a struct alike, and a tuple
/// lets the reader stop after the fields of an older version.
impl Serialize for RecordBatch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut fields = serializer.serialize_tuple(5)?;
        fields.serialize_element(&self.version)?;
        fields.serialize_element(&self.records)?;
        fields.serialize_element(&self.timestamp)?;
        fields.serialize_element(&self.remember_until)?;
        fields.serialize_element(&self.answers)?;
        fields.end()
    }
}

impl<'de> Deserialize<'de> for RecordBatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_tuple(5, BatchVisitor)
    }
}

fn too_new(version: u16) -> String {
    format!("record batch version {version} is newer than this broker understands ({RECORD_FORMAT_VERSION})")
}

struct BatchVisitor;

impl<'de> Visitor<'de> for BatchVisitor {
    type Value = RecordBatch;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a record batch")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut fields: A) -> Result<RecordBatch, A::Error> {
        let missing = |index| de::Error::invalid_length(index, &"the fields of the batch's version");
        let version: u16 = fields.next_element()?.ok_or_else(|| missing(0))?;
        if version > RECORD_FORMAT_VERSION {
            return Err(de::Error::custom(too_new(version)));
        }
        let records: Vec<Record> = fields.next_element()?.ok_or_else(|| missing(1))?;
        if version == 1 {
            return Ok(RecordBatch { version, ..RecordBatch::new(records) });
        }
        let timestamp = fields.next_element()?.ok_or_else(|| missing(2))?;
        let remember_until = fields.next_element()?.ok_or_else(|| missing(3))?;
        let answers = fields.next_element()?.ok_or_else(|| missing(4))?;
        Ok(RecordBatch { version, records, timestamp, remember_until, answers })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot decode record batch: {0}")]
pub struct DecodeError(pub String);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Strictly increasing per partition.
    pub position: i64,
    /// The position of the command this record results from, or -1.
    pub source_position: i64,
    /// The key of the entity the record is about, or -1.
    pub key: i64,
    /// Epoch milliseconds, taken by the leader when it processed the command.
    pub timestamp: i64,
    pub record_type: RecordType,
    pub intent: Intent,
    pub rejection: Option<Rejection>,
    pub value: RecordValue,
}

impl Record {
    pub fn value_type(&self) -> ValueType {
        self.intent.value_type()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordType {
    Event = 0,
    Command = 1,
    CommandRejection = 2,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    pub kind: RejectionType,
    pub reason: String,
}

/// Why a command was rejected; the gateway maps these onto gRPC status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectionType {
    InvalidArgument = 0,
    NotFound = 1,
    AlreadyExists = 2,
    InvalidState = 3,
    ProcessingError = 4,
    ExceededBatchRecordSize = 5,
}

/// Zeebe's value types, with their numeric codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ValueType {
    Job = 0,
    Deployment = 4,
    ProcessInstance = 5,
    Incident = 6,
    Message = 10,
    MessageSubscription = 11,
    ProcessMessageSubscription = 12,
    JobBatch = 14,
    Timer = 15,
    MessageStartEventSubscription = 16,
    Variable = 17,
    VariableDocument = 18,
    ProcessInstanceCreation = 19,
    Error = 20,
    ProcessInstanceResult = 21,
    Process = 22,
    SignalSubscription = 30,
    Signal = 31,
    CommandDistribution = 33,
}

macro_rules! intents {
    ($($(#[$doc:meta])* $name:ident { $($variant:ident = $code:expr),+ $(,)? })+) => {
        $(
            $(#[$doc])*
            #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
            pub enum $name { $($variant = $code),+ }
            impl $name {
                pub fn code(self) -> u8 { self as u8 }
            }
        )+
    };
}

intents! {
    DeploymentIntent { Create = 0, Created = 1 }
    ProcessIntent { Created = 0, Deleting = 1, Deleted = 2 }
    ProcessInstanceIntent {
        Cancel = 0, SequenceFlowTaken = 1, ElementActivating = 2, ElementActivated = 3,
        ElementCompleting = 4, ElementCompleted = 5, ElementTerminating = 6, ElementTerminated = 7,
        ActivateElement = 8, CompleteElement = 9, TerminateElement = 10,
    }
    ProcessInstanceCreationIntent { Create = 0, Created = 1 }
    ProcessInstanceResultIntent { Completed = 0 }
    JobIntent {
        Created = 0, Complete = 1, Completed = 2, TimeOut = 3, TimedOut = 4, Fail = 5, Failed = 6,
        UpdateRetries = 7, RetriesUpdated = 8, Cancel = 9, Canceled = 10, ThrowError = 11,
        ErrorThrown = 12, RecurAfterBackoff = 13, RecurredAfterBackoff = 14, UpdateTimeout = 17,
        TimeoutUpdated = 18,
    }
    JobBatchIntent { Activate = 0, Activated = 1 }
    VariableIntent { Created = 0, Updated = 1 }
    VariableDocumentIntent { Update = 0, Updated = 1 }
    IncidentIntent { Created = 0, Resolve = 1, Resolved = 2 }
    MessageIntent { Publish = 0, Published = 1, Expire = 2, Expired = 3 }
    MessageSubscriptionIntent {
        Create = 0, Created = 1, Correlating = 2, Correlate = 3, Correlated = 4, Reject = 5,
        Rejected = 6, Delete = 7, Deleted = 8,
    }
    ProcessMessageSubscriptionIntent {
        Creating = 0, Create = 1, Created = 2, Correlate = 3, Correlated = 4, Deleting = 5,
        Delete = 6, Deleted = 7,
    }
    MessageStartEventSubscriptionIntent { Created = 0, Correlated = 1, Deleted = 2 }
    TimerIntent { Created = 0, Trigger = 1, Triggered = 2, Cancel = 3, Canceled = 4 }
    SignalIntent { Broadcast = 0, Broadcasted = 1 }
    SignalSubscriptionIntent { Created = 0, Deleted = 1 }
    ErrorIntent { Created = 0 }
    /// Zeebe's codes for the sending side. `Received` and `Held` are Waggle's own: the receiving
    /// partition writes `Received` when it processes a distributed command, so that it knows which
    /// numbers it has seen, and `Held` when processing one failed and an incident (the record's
    /// `origin_key`) keeps the command until a person resolves it.
    CommandDistributionIntent {
        Distributing = 1, Acknowledge = 2, Acknowledged = 3, Finished = 4, Received = 64, Held = 65,
    }
}

/// An intent together with the value type it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Intent {
    Deployment(DeploymentIntent),
    Process(ProcessIntent),
    ProcessInstance(ProcessInstanceIntent),
    ProcessInstanceCreation(ProcessInstanceCreationIntent),
    ProcessInstanceResult(ProcessInstanceResultIntent),
    Job(JobIntent),
    JobBatch(JobBatchIntent),
    Variable(VariableIntent),
    VariableDocument(VariableDocumentIntent),
    Incident(IncidentIntent),
    Message(MessageIntent),
    MessageSubscription(MessageSubscriptionIntent),
    ProcessMessageSubscription(ProcessMessageSubscriptionIntent),
    MessageStartEventSubscription(MessageStartEventSubscriptionIntent),
    Timer(TimerIntent),
    Signal(SignalIntent),
    SignalSubscription(SignalSubscriptionIntent),
    Error(ErrorIntent),
    CommandDistribution(CommandDistributionIntent),
}

impl Intent {
    pub fn value_type(self) -> ValueType {
        match self {
            Intent::Deployment(_) => ValueType::Deployment,
            Intent::Process(_) => ValueType::Process,
            Intent::ProcessInstance(_) => ValueType::ProcessInstance,
            Intent::ProcessInstanceCreation(_) => ValueType::ProcessInstanceCreation,
            Intent::ProcessInstanceResult(_) => ValueType::ProcessInstanceResult,
            Intent::Job(_) => ValueType::Job,
            Intent::JobBatch(_) => ValueType::JobBatch,
            Intent::Variable(_) => ValueType::Variable,
            Intent::VariableDocument(_) => ValueType::VariableDocument,
            Intent::Incident(_) => ValueType::Incident,
            Intent::Message(_) => ValueType::Message,
            Intent::MessageSubscription(_) => ValueType::MessageSubscription,
            Intent::ProcessMessageSubscription(_) => ValueType::ProcessMessageSubscription,
            Intent::MessageStartEventSubscription(_) => ValueType::MessageStartEventSubscription,
            Intent::Timer(_) => ValueType::Timer,
            Intent::Signal(_) => ValueType::Signal,
            Intent::SignalSubscription(_) => ValueType::SignalSubscription,
            Intent::Error(_) => ValueType::Error,
            Intent::CommandDistribution(_) => ValueType::CommandDistribution,
        }
    }

    /// Zeebe's numeric code of the intent within its value type.
    pub fn code(self) -> u8 {
        match self {
            Intent::Deployment(i) => i.code(),
            Intent::Process(i) => i.code(),
            Intent::ProcessInstance(i) => i.code(),
            Intent::ProcessInstanceCreation(i) => i.code(),
            Intent::ProcessInstanceResult(i) => i.code(),
            Intent::Job(i) => i.code(),
            Intent::JobBatch(i) => i.code(),
            Intent::Variable(i) => i.code(),
            Intent::VariableDocument(i) => i.code(),
            Intent::Incident(i) => i.code(),
            Intent::Message(i) => i.code(),
            Intent::MessageSubscription(i) => i.code(),
            Intent::ProcessMessageSubscription(i) => i.code(),
            Intent::MessageStartEventSubscription(i) => i.code(),
            Intent::Timer(i) => i.code(),
            Intent::Signal(i) => i.code(),
            Intent::SignalSubscription(i) => i.code(),
            Intent::Error(i) => i.code(),
            Intent::CommandDistribution(i) => i.code(),
        }
    }
}

/// The typed value of a record. Variables and custom headers are JSON documents kept as text: the
/// engine parses them where it needs them, and the log never depends on a JSON library's binary form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RecordValue {
    Deployment(DeploymentRecord),
    Process(ProcessRecord),
    ProcessInstance(ProcessInstanceRecord),
    ProcessInstanceCreation(ProcessInstanceCreationRecord),
    ProcessInstanceResult(ProcessInstanceResultRecord),
    Job(JobRecord),
    JobBatch(JobBatchRecord),
    Variable(VariableRecord),
    VariableDocument(VariableDocumentRecord),
    Incident(IncidentRecord),
    Message(MessageRecord),
    MessageSubscription(MessageSubscriptionRecord),
    ProcessMessageSubscription(ProcessMessageSubscriptionRecord),
    MessageStartEventSubscription(MessageStartEventSubscriptionRecord),
    Timer(TimerRecord),
    Signal(SignalRecord),
    SignalSubscription(SignalSubscriptionRecord),
    CommandDistribution(CommandDistributionRecord),
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeploymentResource {
    pub name: String,
    pub content: Vec<u8>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessMetadata {
    pub bpmn_process_id: String,
    pub version: i32,
    pub process_definition_key: i64,
    pub resource_name: String,
    pub checksum: Vec<u8>,
    /// True when an identical resource was deployed before and no new version was created.
    pub duplicate: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub resources: Vec<DeploymentResource>,
    pub processes: Vec<ProcessMetadata>,
    pub tenant_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub bpmn_process_id: String,
    pub version: i32,
    pub process_definition_key: i64,
    pub resource_name: String,
    pub checksum: Vec<u8>,
    pub resource: Vec<u8>,
    pub tenant_id: String,
}

/// BPMN element types as Zeebe names them in records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BpmnElementType {
    #[default]
    Unspecified,
    Process,
    SubProcess,
    EventSubProcess,
    StartEvent,
    IntermediateCatchEvent,
    IntermediateThrowEvent,
    BoundaryEvent,
    EndEvent,
    ServiceTask,
    ReceiveTask,
    UserTask,
    ManualTask,
    Task,
    ExclusiveGateway,
    ParallelGateway,
    EventBasedGateway,
    InclusiveGateway,
    SequenceFlow,
    MultiInstanceBody,
    CallActivity,
    BusinessRuleTask,
    ScriptTask,
    SendTask,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BpmnEventType {
    #[default]
    Unspecified,
    None,
    Message,
    Timer,
    Error,
    Signal,
    Terminate,
    Escalation,
    Link,
    Compensation,
    Conditional,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessInstanceRecord {
    pub bpmn_process_id: String,
    pub version: i32,
    pub process_definition_key: i64,
    pub process_instance_key: i64,
    pub element_id: String,
    pub flow_scope_key: i64,
    pub bpmn_element_type: BpmnElementType,
    pub bpmn_event_type: BpmnEventType,
    pub parent_process_instance_key: i64,
    pub parent_element_instance_key: i64,
    pub tenant_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessInstanceCreationRecord {
    pub bpmn_process_id: String,
    pub version: i32,
    pub process_definition_key: i64,
    pub process_instance_key: i64,
    pub variables: String,
    /// The client waits for the instance to complete (CreateProcessInstanceWithResult).
    pub await_result: bool,
    /// With `await_result`: the root variables to return; all of them when empty.
    pub fetch_variables: Vec<String>,
    pub tenant_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessInstanceResultRecord {
    pub bpmn_process_id: String,
    pub version: i32,
    pub process_definition_key: i64,
    pub process_instance_key: i64,
    pub variables: String,
    pub tenant_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_type: String,
    pub worker: String,
    pub retries: i32,
    pub retry_backoff: i64,
    pub recurring_time: i64,
    /// Epoch ms when an activated job times out; -1 when not activated.
    pub deadline: i64,
    pub timeout: i64,
    /// JSON object of the task headers.
    pub custom_headers: String,
    /// JSON object: the job's variables (when activated) or the variables sent with the command.
    pub variables: String,
    pub error_message: String,
    pub error_code: String,
    pub element_id: String,
    pub element_instance_key: i64,
    pub process_instance_key: i64,
    pub bpmn_process_id: String,
    pub process_definition_version: i32,
    pub process_definition_key: i64,
    pub tenant_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobBatchRecord {
    pub job_type: String,
    pub worker: String,
    pub timeout: i64,
    pub max_jobs_to_activate: i32,
    pub fetch_variables: Vec<String>,
    pub job_keys: Vec<i64>,
    pub jobs: Vec<JobRecord>,
    pub truncated: bool,
    pub tenant_ids: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VariableRecord {
    pub name: String,
    /// The value as JSON text.
    pub value: String,
    pub scope_key: i64,
    pub process_instance_key: i64,
    pub process_definition_key: i64,
    pub bpmn_process_id: String,
    pub tenant_id: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum VariableUpdateSemantics {
    #[default]
    Propagate,
    Local,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VariableDocumentRecord {
    pub scope_key: i64,
    pub update_semantics: VariableUpdateSemantics,
    pub variables: String,
}

/// Zeebe's incident error types.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorType {
    #[default]
    Unknown,
    IoMappingError,
    JobNoRetries,
    ConditionError,
    ExtractValueError,
    CalledElementError,
    UnhandledErrorEvent,
    MessageSizeExceeded,
    CalledDecisionError,
    DecisionEvaluationError,
    FormNotFound,
    ResourceNotFound,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Unknown => "UNKNOWN",
            ErrorType::IoMappingError => "IO_MAPPING_ERROR",
            ErrorType::JobNoRetries => "JOB_NO_RETRIES",
            ErrorType::ConditionError => "CONDITION_ERROR",
            ErrorType::ExtractValueError => "EXTRACT_VALUE_ERROR",
            ErrorType::CalledElementError => "CALLED_ELEMENT_ERROR",
            ErrorType::UnhandledErrorEvent => "UNHANDLED_ERROR_EVENT",
            ErrorType::MessageSizeExceeded => "MESSAGE_SIZE_EXCEEDED",
            ErrorType::CalledDecisionError => "CALLED_DECISION_ERROR",
            ErrorType::DecisionEvaluationError => "DECISION_EVALUATION_ERROR",
            ErrorType::FormNotFound => "FORM_NOT_FOUND",
            ErrorType::ResourceNotFound => "RESOURCE_NOT_FOUND",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IncidentRecord {
    pub error_type: ErrorType,
    pub error_message: String,
    pub bpmn_process_id: String,
    pub process_definition_key: i64,
    pub process_instance_key: i64,
    pub element_id: String,
    pub element_instance_key: i64,
    /// The job whose failure raised the incident, or -1.
    pub job_key: i64,
    pub variable_scope_key: i64,
    pub tenant_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub name: String,
    pub correlation_key: String,
    pub time_to_live: i64,
    pub message_id: String,
    pub variables: String,
    /// Epoch ms after which a buffered message expires.
    pub deadline: i64,
    pub tenant_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageSubscriptionRecord {
    pub process_instance_key: i64,
    pub element_instance_key: i64,
    pub bpmn_process_id: String,
    pub message_name: String,
    pub correlation_key: String,
    pub message_key: i64,
    pub variables: String,
    pub interrupting: bool,
    pub tenant_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessMessageSubscriptionRecord {
    /// The partition holding the message side of the subscription.
    pub subscription_partition_id: u32,
    pub process_instance_key: i64,
    pub element_instance_key: i64,
    pub element_id: String,
    pub bpmn_process_id: String,
    pub message_name: String,
    pub correlation_key: String,
    pub message_key: i64,
    pub variables: String,
    pub interrupting: bool,
    pub tenant_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageStartEventSubscriptionRecord {
    pub process_definition_key: i64,
    pub bpmn_process_id: String,
    pub start_event_id: String,
    pub message_name: String,
    pub message_key: i64,
    pub correlation_key: String,
    pub variables: String,
    pub process_instance_key: i64,
    pub tenant_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TimerRecord {
    pub element_instance_key: i64,
    pub process_instance_key: i64,
    pub process_definition_key: i64,
    pub due_date: i64,
    pub target_element_id: String,
    pub repetitions: i32,
    pub tenant_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SignalRecord {
    pub signal_name: String,
    pub variables: String,
    pub tenant_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SignalSubscriptionRecord {
    pub process_definition_key: i64,
    pub bpmn_process_id: String,
    pub catch_event_id: String,
    pub catch_event_instance_key: i64,
    pub signal_name: String,
    pub tenant_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intent_codes_are_zeebes() {
        assert_eq!(Intent::ProcessInstance(ProcessInstanceIntent::ElementActivated).code(), 3);
        assert_eq!(Intent::Job(JobIntent::TimeoutUpdated).code(), 18);
        assert_eq!(Intent::Message(MessageIntent::Expired).code(), 3);
        assert_eq!(Intent::Incident(IncidentIntent::Resolved).value_type() as u8, 6);
        assert_eq!(ValueType::ProcessInstanceCreation as u8, 19);
    }

    fn job_created(position: i64, timestamp: i64) -> Record {
        Record {
            position,
            source_position: -1,
            key: 7,
            timestamp,
            record_type: RecordType::Event,
            intent: Intent::Job(JobIntent::Created),
            rejection: None,
            value: RecordValue::Job(JobRecord { job_type: "pay".into(), ..Default::default() }),
        }
    }

    #[test]
    fn batch_round_trips_and_rejects_future_versions() {
        let answers = vec![Answer { request_id: u64::MAX, result: vec![1, 2, 3] }];
        let batch = RecordBatch::with_answers(vec![job_created(1, 1000)], 1000, 301_000, answers);
        assert_eq!(RecordBatch::decode(&batch.encode()).unwrap(), batch);
        let future = RecordBatch { version: RECORD_FORMAT_VERSION + 1, ..RecordBatch::new(vec![]) };
        let error = RecordBatch::decode(&future.encode()).unwrap_err().to_string();
        assert!(error.contains("newer than this broker understands"), "{error}");
    }

    /// The layout of version 1, as brokers before request ids wrote it.
    #[derive(Serialize)]
    struct BatchV1 {
        version: u16,
        records: Vec<Record>,
    }

    #[test]
    fn a_version_1_batch_still_decodes_without_reading_past_its_end() {
        let old = BatchV1 { version: 1, records: vec![job_created(1, 900), job_created(2, 1000)] };
        // In the raft log a batch is followed by other data; decoding must stop where it ends.
        let bytes = postcard::to_stdvec(&(&old, 42u32)).unwrap();
        let (batch, after): (RecordBatch, u32) = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(after, 42);
        assert_eq!(batch.version, 1);
        assert_eq!(batch.records, old.records);
        assert_eq!(batch.timestamp, 1000, "an old batch's time is its last record's");
        assert!(batch.answers.is_empty());
    }
}

/// One command on the channel between two partitions (see [`crate::partition`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandDistributionRecord {
    /// The other partition: the target on the sending side, the source on the receiving side.
    pub partition_id: u32,
    /// The command's number on the channel from source to target.
    pub sequence: u64,
    /// The entity the command is about (the deployment key for a distributed deployment).
    pub origin_key: i64,
    /// The command itself, on the `Distributing` event; `None` elsewhere.
    pub command: Option<crate::partition::PartitionCommand>,
}

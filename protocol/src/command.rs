//! Commands that a gateway sends to one partition, and what the partition answers.
//!
//! The gateway translates each gRPC or REST request into a [`ClientCommand`] for the partition that owns
//! it; the broker hands it to the engine on that partition's leader and answers with a [`BrokerReply`].
//! These travel postcard-encoded inside the broker-internal gRPC envelope, so that the engine's types are
//! defined once, here, and not mirrored in protobuf.

use serde::{Deserialize, Serialize};

use crate::record::{DeploymentResource, ProcessMetadata, RejectionType};

/// Default tenant, as Zeebe names it.
pub const DEFAULT_TENANT: &str = "<default>";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClientCommand {
    Deploy { resources: Vec<DeploymentResource>, tenant_id: String },
    CreateProcessInstance(CreateProcessInstance),
    CancelProcessInstance { process_instance_key: i64 },
    ActivateJobs(ActivateJobs),
    CompleteJob { job_key: i64, variables: String },
    FailJob { job_key: i64, retries: i32, error_message: String, retry_backoff: i64, variables: String },
    ThrowError { job_key: i64, error_code: String, error_message: String, variables: String },
    UpdateJobRetries { job_key: i64, retries: i32 },
    UpdateJobTimeout { job_key: i64, timeout: i64 },
    PublishMessage(PublishMessage),
    BroadcastSignal { signal_name: String, variables: String, tenant_id: String },
    SetVariables { element_instance_key: i64, variables: String, local: bool },
    ResolveIncident { incident_key: i64 },
}

impl ClientCommand {
    /// The RPC-style name of the command, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            ClientCommand::Deploy { .. } => "Deploy",
            ClientCommand::CreateProcessInstance(c) if c.await_result.is_some() => "CreateProcessInstanceWithResult",
            ClientCommand::CreateProcessInstance(_) => "CreateProcessInstance",
            ClientCommand::CancelProcessInstance { .. } => "CancelProcessInstance",
            ClientCommand::ActivateJobs(_) => "ActivateJobs",
            ClientCommand::CompleteJob { .. } => "CompleteJob",
            ClientCommand::FailJob { .. } => "FailJob",
            ClientCommand::ThrowError { .. } => "ThrowError",
            ClientCommand::UpdateJobRetries { .. } => "UpdateJobRetries",
            ClientCommand::UpdateJobTimeout { .. } => "UpdateJobTimeout",
            ClientCommand::PublishMessage(_) => "PublishMessage",
            ClientCommand::BroadcastSignal { .. } => "BroadcastSignal",
            ClientCommand::SetVariables { .. } => "SetVariables",
            ClientCommand::ResolveIncident { .. } => "ResolveIncident",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreateProcessInstance {
    /// Preferred when > 0; otherwise `bpmn_process_id` and `version` select the definition.
    pub process_definition_key: i64,
    pub bpmn_process_id: String,
    /// -1 selects the latest version.
    pub version: i32,
    pub variables: String,
    pub tenant_id: String,
    /// Present when the client waits for the instance to complete.
    pub await_result: Option<AwaitResult>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AwaitResult {
    /// Only these root variables are returned; all of them when empty.
    pub fetch_variables: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActivateJobs {
    pub job_type: String,
    pub worker: String,
    /// Lock time in ms.
    pub timeout: i64,
    pub max_jobs_to_activate: i32,
    pub fetch_variables: Vec<String>,
    pub tenant_ids: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublishMessage {
    pub name: String,
    pub correlation_key: String,
    pub time_to_live: i64,
    pub message_id: String,
    pub variables: String,
    pub tenant_id: String,
}

/// What a partition answers to a command that reached its engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CommandResult {
    Rejected {
        kind: RejectionType,
        reason: String,
    },
    Deployed {
        key: i64,
        processes: Vec<ProcessMetadata>,
        tenant_id: String,
    },
    ProcessInstanceCreated(ProcessInstanceCreated),
    ProcessInstanceCompleted {
        instance: ProcessInstanceCreated,
        variables: String,
    },
    JobsActivated {
        jobs: Vec<ActivatedJob>,
    },
    /// The command was applied to the entity with this key.
    Done {
        key: i64,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessInstanceCreated {
    pub process_definition_key: i64,
    pub bpmn_process_id: String,
    pub version: i32,
    pub process_instance_key: i64,
    pub tenant_id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActivatedJob {
    pub key: i64,
    pub job_type: String,
    pub process_instance_key: i64,
    pub bpmn_process_id: String,
    pub process_definition_version: i32,
    pub process_definition_key: i64,
    pub element_id: String,
    pub element_instance_key: i64,
    pub custom_headers: String,
    pub worker: String,
    pub retries: i32,
    pub deadline: i64,
    pub variables: String,
    pub tenant_id: String,
}

/// Why a broker could not hand a command to an engine at all.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum BrokerError {
    #[error("partition {partition_id} is not led by this broker")]
    NotLeader { partition_id: u32, leader: Option<u64> },
    #[error("partition {partition_id} does not exist on this broker")]
    PartitionNotFound { partition_id: u32 },
    #[error("partition {partition_id} is busy: too many commands are waiting; retry later")]
    Backpressure { partition_id: u32 },
    #[error("the request timed out after {millis} ms")]
    Timeout { millis: u64 },
    #[error("the broker is shutting down")]
    ShuttingDown,
    #[error("internal broker error: {0}")]
    Internal(String),
    #[error("cannot decode the command: {0}")]
    Malformed(String),
    #[error(
        "the broker takes no new commands: its data directory's disk has {free_bytes} bytes free, below the \
         min_free_disk_bytes watermark of {watermark_bytes}; free disk space or grow the volume, and it resumes"
    )]
    DiskSpaceLow { free_bytes: u64, watermark_bytes: u64 },
    #[error(
        "the broker writes nothing to its log: its data directory's disk has {free_bytes} bytes free, below the \
         replication_min_free_disk_bytes watermark of {watermark_bytes}; free disk space or grow the volume, and it \
         resumes"
    )]
    LogSpaceLow { free_bytes: u64, watermark_bytes: u64 },
}

/// Names one client request across the gateway's retries of it, so that a partition can recognise
/// a command it has already applied and answer it with the first answer (see the broker's `dedup`
/// module). The gateway never hands out 0: on the wire, 0 means that the command has no id.
pub type RequestId = u64;

/// The payload of a broker's answer to a command.
pub type BrokerReply = Result<CommandResult, BrokerError>;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("commands always serialize")
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, BrokerError> {
    postcard::from_bytes(bytes).map_err(|e| BrokerError::Malformed(e.to_string()))
}

//! What partitions say to each other.
//!
//! A message lives on the partition of its correlation key and a waiting instance on the partition of
//! its key, and a deployment is made on one partition but must be startable on all; so partitions send
//! each other commands. Those commands must arrive exactly once even though brokers die, leaders move
//! and sends get lost. The channel that guarantees this works like TCP over the log:
//!
//! - the sender numbers its commands per target partition and keeps each one in its state (an outbox)
//!   until the target acknowledges it; it resends what is pending until then;
//! - the target remembers, per source partition, the last sequence number it processed; it processes
//!   only the next one, acknowledges duplicates again without processing them, and drops anything
//!   after a gap (the sender resends in order).
//!
//! Both the outbox and the last-processed numbers are partition state, changed only by committed
//! records, so they survive failover. Acknowledgements need no outbox of their own: a lost one makes
//! the sender resend, which the target answers with another acknowledgement.

use serde::{Deserialize, Serialize};

use crate::record::{DeploymentRecord, MessageSubscriptionRecord, ProcessMessageSubscriptionRecord};

/// A command one partition sends another.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PartitionCommand {
    /// To the message partition: an instance waits for a message.
    OpenMessageSubscription { record: MessageSubscriptionRecord, instance_partition_id: u32 },
    /// To the instance partition: the message partition holds the subscription now.
    ConfirmProcessSubscription { element_instance_key: i64, message_name: String },
    /// To the instance partition: a message arrived for a waiting element.
    CorrelateProcessSubscription { record: ProcessMessageSubscriptionRecord },
    /// To the message partition: the instance took the message.
    AcknowledgeCorrelation { record: MessageSubscriptionRecord },
    /// To the message partition: the instance no longer waits, the message is free again.
    RejectCorrelation { record: MessageSubscriptionRecord },
    /// To the message partition: the instance stopped waiting.
    CloseMessageSubscription { record: MessageSubscriptionRecord },
    /// From the deployment partition to every other: these process versions exist now, with these
    /// keys, so that instances can start on every partition.
    DistributeDeployment { deployment_key: i64, record: DeploymentRecord },
    /// To the instance partition: a command about one of its element instances failed where it was
    /// sent and was rejected there; the element instance gets an incident with this message.
    ReportFailure { element_instance_key: i64, message: String },
}

impl PartitionCommand {
    pub fn name(&self) -> &'static str {
        match self {
            PartitionCommand::OpenMessageSubscription { .. } => "OpenMessageSubscription",
            PartitionCommand::ConfirmProcessSubscription { .. } => "ConfirmProcessSubscription",
            PartitionCommand::CorrelateProcessSubscription { .. } => "CorrelateProcessSubscription",
            PartitionCommand::AcknowledgeCorrelation { .. } => "AcknowledgeCorrelation",
            PartitionCommand::RejectCorrelation { .. } => "RejectCorrelation",
            PartitionCommand::CloseMessageSubscription { .. } => "CloseMessageSubscription",
            PartitionCommand::DistributeDeployment { .. } => "DistributeDeployment",
            PartitionCommand::ReportFailure { .. } => "ReportFailure",
        }
    }

    /// The element instance the command is about, on whichever partition it lives.
    pub fn element_instance_key(&self) -> Option<i64> {
        match self {
            PartitionCommand::ConfirmProcessSubscription { element_instance_key, .. }
            | PartitionCommand::ReportFailure { element_instance_key, .. } => Some(*element_instance_key),
            PartitionCommand::CorrelateProcessSubscription { record } => Some(record.element_instance_key),
            PartitionCommand::OpenMessageSubscription { record, .. }
            | PartitionCommand::AcknowledgeCorrelation { record }
            | PartitionCommand::RejectCorrelation { record }
            | PartitionCommand::CloseMessageSubscription { record } => Some(record.element_instance_key),
            PartitionCommand::DistributeDeployment { .. } => None,
        }
    }
}

/// What travels between partitions: a numbered command, or the acknowledgement of commands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PartitionMessage {
    /// Command number `sequence` from `source_partition` to the receiving partition.
    Command { source_partition: u32, sequence: u64, command: PartitionCommand },
    /// `source_partition` processed every command the receiver sent it up to and including `sequence`.
    Acknowledge { source_partition: u32, sequence: u64 },
}

impl PartitionMessage {
    pub fn name(&self) -> &'static str {
        match self {
            PartitionMessage::Command { command, .. } => command.name(),
            PartitionMessage::Acknowledge { .. } => "AcknowledgeDistribution",
        }
    }
}

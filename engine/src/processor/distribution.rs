//! Both ends of the exactly-once channel between partitions (see [`waggle_protocol::partition`]).
//!
//! Sending writes a `Distributing` event, which puts the command in the outbox, and hands it to the
//! broker to deliver. The leader resends whatever is still pending every [`RETRY_INTERVAL_MS`] and at
//! once after it starts leading, so a command survives lost sends, dead brokers and leader changes.
//! Receiving processes a command only if it is the next in sequence from its source, writing a
//! `Received` event that remembers the number, and acknowledges it after commit.

use waggle_protocol::key;
use waggle_protocol::partition::{PartitionCommand, PartitionMessage};
use waggle_protocol::record::{
    CommandDistributionIntent, CommandDistributionRecord, ErrorType, Intent, RecordType, RecordValue, Rejection,
    RejectionType,
};

use super::element::Failure;
use super::{Ctx, REPORT_AS_BUG};
use crate::state::tables::{distribution, elements};

/// How long an unacknowledged command waits before it is sent again.
pub(super) const RETRY_INTERVAL_MS: i64 = 2_000;
/// How many pending commands per target one retry resends.
const RETRY_BATCH: usize = 128;

fn record(partition_id: u32, sequence: u64, origin_key: i64, command: Option<PartitionCommand>) -> RecordValue {
    RecordValue::CommandDistribution(CommandDistributionRecord { partition_id, sequence, origin_key, command })
}

impl Ctx<'_> {
    /// Sends a command to another partition through the outbox.
    pub(super) fn distribute(&mut self, target: u32, command: PartitionCommand) {
        let sequence = distribution::next_sequence(&*self.kv, target);
        let origin_key = match &command {
            PartitionCommand::DistributeDeployment { deployment_key, .. } => *deployment_key,
            _ => -1,
        };
        let key = self.new_key();
        self.event(
            key,
            Intent::CommandDistribution(CommandDistributionIntent::Distributing),
            record(target, sequence, origin_key, Some(command.clone())),
        );
        self.out
            .sends
            .push((target, PartitionMessage::Command { source_partition: self.partition_id, sequence, command }));
        if self.retry_at.is_none() {
            *self.retry_at = Some(self.now + RETRY_INTERVAL_MS);
        }
    }

    pub(super) fn partition_message(&mut self, message: PartitionMessage) {
        match message {
            PartitionMessage::Command { source_partition, sequence, command } => {
                self.receive(source_partition, sequence, command)
            }
            PartitionMessage::Acknowledge { source_partition, sequence } => {
                self.acknowledged(source_partition, sequence)
            }
        }
    }

    fn receive(&mut self, source: u32, sequence: u64, command: PartitionCommand) {
        let last = distribution::last_received(&*self.kv, source);
        if sequence > last + 1 {
            // An earlier command got lost; the sender resends everything from it on, in order.
            return;
        }
        if sequence == last + 1 {
            self.event(
                -1,
                Intent::CommandDistribution(CommandDistributionIntent::Received),
                record(source, sequence, -1, None),
            );
            self.partition_command(command);
        }
        let acknowledged = sequence.max(last);
        self.out.sends.push((
            source,
            PartitionMessage::Acknowledge { source_partition: self.partition_id, sequence: acknowledged },
        ));
    }

    /// See [`super::Engine::hold_failed_partition_command`].
    pub(super) fn hold_failed(&mut self, source: u32, sequence: u64, command: PartitionCommand, failure: &str) {
        // Only the next command in sequence is processed, so only that one can have failed.
        if sequence != distribution::last_received(&*self.kv, source) + 1 {
            return;
        }
        self.event(
            -1,
            Intent::CommandDistribution(CommandDistributionIntent::Received),
            record(source, sequence, -1, None),
        );
        let about = command.element_instance_key();
        let holder = about
            .filter(|key| key::partition_of(*key) == Some(self.partition_id))
            .and_then(|key| elements::get(&*self.kv, key));
        match holder {
            Some(instance) => {
                let message = format!(
                    "{failure}; it changed nothing and this incident holds it: resolving the incident processes it \
                     again. {REPORT_AS_BUG}"
                );
                let failure = Failure { error_type: ErrorType::Unknown, message };
                let incident_key = self.open_incident(&instance, failure, -1);
                self.event(
                    incident_key,
                    Intent::CommandDistribution(CommandDistributionIntent::Held),
                    record(source, sequence, incident_key, Some(command)),
                );
            }
            None => {
                let reason = format!("{failure}; it was rejected and changed nothing. {REPORT_AS_BUG}");
                self.write(
                    RecordType::CommandRejection,
                    -1,
                    Intent::CommandDistribution(CommandDistributionIntent::Received),
                    record(source, sequence, -1, Some(command)),
                    Some(Rejection { kind: RejectionType::ProcessingError, reason }),
                );
                // The element instance it is about lives on another partition: it gets the incident.
                let elsewhere = about.and_then(|key| key::partition_of(key).map(|partition| (key, partition)));
                if let Some((element_instance_key, partition)) =
                    elsewhere.filter(|(_, partition)| *partition != self.partition_id)
                {
                    let message = format!(
                        "{failure} on partition {}; it was rejected there and changed nothing, so this element \
                         instance will not get what it waits for: cancel its process instance to end it. \
                         {REPORT_AS_BUG}",
                        self.partition_id
                    );
                    self.distribute(partition, PartitionCommand::ReportFailure { element_instance_key, message });
                }
            }
        }
        self.out.sends.push((source, PartitionMessage::Acknowledge { source_partition: self.partition_id, sequence }));
    }

    fn acknowledged(&mut self, target: u32, up_to: u64) {
        let settled = distribution::pending_to(&*self.kv, target, up_to);
        if settled.is_empty() {
            return;
        }
        self.command(
            -1,
            Intent::CommandDistribution(CommandDistributionIntent::Acknowledge),
            record(target, up_to, -1, None),
        );
        for (sequence, pending) in settled {
            self.event(
                pending.key,
                Intent::CommandDistribution(CommandDistributionIntent::Acknowledged),
                record(target, sequence, pending.origin_key, None),
            );
            let deployment = matches!(pending.command, PartitionCommand::DistributeDeployment { .. });
            if deployment && !distribution::pending_for_origin(&*self.kv, pending.origin_key) {
                self.event(
                    pending.origin_key,
                    Intent::CommandDistribution(CommandDistributionIntent::Finished),
                    record(target, sequence, pending.origin_key, None),
                );
                self.out.distributions_finished.push(pending.origin_key);
            }
        }
        if !distribution::has_pending(&*self.kv) {
            *self.retry_at = None;
        }
    }

    /// Resends what is pending when its retry is due.
    pub(super) fn resend_pending(&mut self) {
        if !distribution::has_pending(&*self.kv) {
            *self.retry_at = None;
            return;
        }
        if self.retry_at.is_some_and(|at| self.now < at) {
            return;
        }
        for (target, sequence, pending) in distribution::all_pending(&*self.kv, RETRY_BATCH) {
            self.out.sends.push((
                target,
                PartitionMessage::Command { source_partition: self.partition_id, sequence, command: pending.command },
            ));
        }
        *self.retry_at = Some(self.now + RETRY_INTERVAL_MS);
    }
}

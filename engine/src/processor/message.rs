//! Messages: publishing, buffering with a time to live, and correlation to waiting instances.
//!
//! A message lives on the partition its correlation key hashes to; a waiting element lives on its
//! instance's partition. The two sides talk through [`PartitionCommand`]s (which stay inside the
//! partition when both sides are the same one). A message correlates at most once per process id.

use serde_json::Value as Json;
use waggle_protocol::command::{CommandResult, PublishMessage};
use waggle_protocol::record::{
    Intent, MessageIntent, MessageRecord, MessageStartEventSubscriptionIntent, MessageSubscriptionIntent,
    MessageSubscriptionRecord, ProcessInstanceRecord, ProcessMessageSubscriptionIntent,
    ProcessMessageSubscriptionRecord, RecordValue, RejectionType,
};

use super::{parse_document, Ctx, PartitionCommand, Step, TICK_LIMIT};
use crate::state::tables::{elements, messages, processes, subscriptions};

impl Ctx<'_> {
    pub(super) fn publish_message(&mut self, publish: PublishMessage) {
        let key = self.new_key();
        let message = MessageRecord {
            name: publish.name,
            correlation_key: publish.correlation_key,
            time_to_live: publish.time_to_live,
            message_id: publish.message_id,
            variables: publish.variables,
            deadline: self.now.saturating_add(publish.time_to_live.max(0)),
            tenant_id: publish.tenant_id,
        };
        let intent = Intent::Message(MessageIntent::Publish);
        self.command(key, intent, RecordValue::Message(message.clone()));
        if message.time_to_live < 0 {
            let reason = format!(
                "Expected the time to live of message '{}' to be zero or positive, but it was {} ms",
                message.name, message.time_to_live
            );
            return self.reject(key, intent, RecordValue::Message(message), (RejectionType::InvalidArgument, reason));
        }
        let document = match parse_document(&message.variables) {
            Ok(d) => d,
            Err(rejection) => return self.reject(key, intent, RecordValue::Message(message), rejection),
        };
        if messages::id_exists(&*self.kv, &message) {
            let reason = format!(
                "Expected to publish a new message with id '{}', but a message with that id was already published",
                message.message_id
            );
            return self.reject(key, intent, RecordValue::Message(message), (RejectionType::AlreadyExists, reason));
        }
        self.event(key, Intent::Message(MessageIntent::Published), RecordValue::Message(message.clone()));

        for start in subscriptions::starts_for(&*self.kv, &message.tenant_id, &message.name) {
            if messages::is_correlated_to(&*self.kv, key, &start.bpmn_process_id) {
                continue;
            }
            let Some(model) = self.model(start.process_definition_key) else { continue };
            let Some(start_event) = model.find(&start.start_event_id) else { continue };
            let Some(process) = processes::get(&*self.kv, start.process_definition_key) else { continue };
            let pi_key = self.new_key();
            let correlated = waggle_protocol::record::MessageStartEventSubscriptionRecord {
                message_key: key,
                correlation_key: message.correlation_key.clone(),
                variables: message.variables.clone(),
                process_instance_key: pi_key,
                ..start.clone()
            };
            self.event(
                start.process_definition_key,
                Intent::MessageStartEventSubscription(MessageStartEventSubscriptionIntent::Correlated),
                RecordValue::MessageStartEventSubscription(correlated),
            );
            let template = ProcessInstanceRecord {
                bpmn_process_id: process.bpmn_process_id.clone(),
                version: process.version,
                process_definition_key: process.process_definition_key,
                process_instance_key: pi_key,
                parent_process_instance_key: -1,
                parent_element_instance_key: -1,
                tenant_id: process.tenant_id.clone(),
                ..Default::default()
            };
            self.start_instance(&model, template, start_event, &document);
        }

        for subscription in
            subscriptions::waiting_for(&*self.kv, &message.tenant_id, &message.name, &message.correlation_key)
        {
            if subscription.correlating
                || messages::is_correlated_to(&*self.kv, key, &subscription.record.bpmn_process_id)
            {
                continue;
            }
            self.start_correlation(subscription.record, subscription.instance_partition_id, key, &message.variables);
        }

        if message.time_to_live == 0 {
            self.event(key, Intent::Message(MessageIntent::Expired), RecordValue::Message(message));
        }
        self.out.result = Some(CommandResult::Done { key });
    }

    fn start_correlation(
        &mut self,
        record: MessageSubscriptionRecord,
        instance_partition_id: u32,
        message_key: i64,
        variables: &str,
    ) {
        let correlating = MessageSubscriptionRecord { message_key, variables: variables.to_string(), ..record };
        self.event(
            correlating.element_instance_key,
            Intent::MessageSubscription(MessageSubscriptionIntent::Correlating),
            RecordValue::MessageSubscription(correlating.clone()),
        );
        let r = correlating;
        let command = PartitionCommand::CorrelateProcessSubscription {
            record: ProcessMessageSubscriptionRecord {
                subscription_partition_id: self.partition_id,
                process_instance_key: r.process_instance_key,
                element_instance_key: r.element_instance_key,
                element_id: String::new(),
                bpmn_process_id: r.bpmn_process_id,
                message_name: r.message_name,
                correlation_key: r.correlation_key,
                message_key,
                variables: r.variables,
                interrupting: r.interrupting,
                tenant_id: r.tenant_id,
            },
        };
        self.send(instance_partition_id, command);
    }

    pub(super) fn open_message_subscription(&mut self, record: MessageSubscriptionRecord, instance_partition_id: u32) {
        let key = record.element_instance_key;
        self.command(
            key,
            Intent::MessageSubscription(MessageSubscriptionIntent::Create),
            RecordValue::MessageSubscription(record.clone()),
        );
        self.event(
            key,
            Intent::MessageSubscription(MessageSubscriptionIntent::Created),
            RecordValue::MessageSubscription(record.clone()),
        );
        self.send(
            instance_partition_id,
            PartitionCommand::ConfirmProcessSubscription {
                element_instance_key: key,
                message_name: record.message_name.clone(),
            },
        );
        let buffered = messages::matching(&*self.kv, &record.tenant_id, &record.message_name, &record.correlation_key);
        for message_key in buffered {
            let Some(message) = messages::get(&*self.kv, message_key) else { continue };
            if message.deadline <= self.now
                || messages::is_correlated_to(&*self.kv, message_key, &record.bpmn_process_id)
            {
                continue;
            }
            self.start_correlation(record, instance_partition_id, message_key, &message.variables);
            return;
        }
    }

    pub(super) fn confirm_process_subscription(&mut self, element_instance_key: i64, message_name: String) {
        let Some(subscription) = subscriptions::get_process_side(&*self.kv, element_instance_key, &message_name) else {
            return;
        };
        let intent = ProcessMessageSubscriptionIntent::Create;
        self.command(
            element_instance_key,
            Intent::ProcessMessageSubscription(intent),
            RecordValue::ProcessMessageSubscription(subscription.record.clone()),
        );
        self.event(
            element_instance_key,
            Intent::ProcessMessageSubscription(ProcessMessageSubscriptionIntent::Created),
            RecordValue::ProcessMessageSubscription(subscription.record),
        );
    }

    pub(super) fn correlate_process_subscription(&mut self, record: ProcessMessageSubscriptionRecord) {
        let key = record.element_instance_key;
        let intent = Intent::ProcessMessageSubscription(ProcessMessageSubscriptionIntent::Correlate);
        self.command(key, intent, RecordValue::ProcessMessageSubscription(record.clone()));
        let waiting = subscriptions::get_process_side(&*self.kv, key, &record.message_name)
            .filter(|_| elements::get(&*self.kv, key).is_some());
        let answer = MessageSubscriptionRecord {
            process_instance_key: record.process_instance_key,
            element_instance_key: key,
            bpmn_process_id: record.bpmn_process_id.clone(),
            message_name: record.message_name.clone(),
            correlation_key: record.correlation_key.clone(),
            message_key: record.message_key,
            variables: String::new(),
            interrupting: record.interrupting,
            tenant_id: record.tenant_id.clone(),
        };
        let Some(subscription) = waiting else {
            let reason = format!(
                "Expected element instance '{key}' to wait for message '{}', but it does not",
                record.message_name
            );
            self.write(
                waggle_protocol::record::RecordType::CommandRejection,
                key,
                intent,
                RecordValue::ProcessMessageSubscription(record.clone()),
                Some(waggle_protocol::record::Rejection { kind: RejectionType::InvalidState, reason }),
            );
            self.send(record.subscription_partition_id, PartitionCommand::RejectCorrelation { record: answer });
            return;
        };
        let correlated = ProcessMessageSubscriptionRecord {
            message_key: record.message_key,
            variables: record.variables.clone(),
            ..subscription.record
        };
        self.event(
            key,
            Intent::ProcessMessageSubscription(ProcessMessageSubscriptionIntent::Correlated),
            RecordValue::ProcessMessageSubscription(correlated),
        );
        let document = match serde_json::from_str::<Json>(&record.variables) {
            Ok(Json::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        if let Some(instance) = elements::get(&*self.kv, key) {
            if let Some(model) = self.model(instance.record.process_definition_key) {
                self.apply_payload(&model, key, &document);
            }
        }
        self.queue.push_back(Step::Complete { key });
        self.send(record.subscription_partition_id, PartitionCommand::AcknowledgeCorrelation { record: answer });
    }

    pub(super) fn acknowledge_correlation(&mut self, record: MessageSubscriptionRecord) {
        let key = record.element_instance_key;
        self.command(
            key,
            Intent::MessageSubscription(MessageSubscriptionIntent::Correlate),
            RecordValue::MessageSubscription(record.clone()),
        );
        self.event(
            key,
            Intent::MessageSubscription(MessageSubscriptionIntent::Correlated),
            RecordValue::MessageSubscription(record),
        );
    }

    pub(super) fn reject_correlation(&mut self, record: MessageSubscriptionRecord) {
        let key = record.element_instance_key;
        self.command(
            key,
            Intent::MessageSubscription(MessageSubscriptionIntent::Reject),
            RecordValue::MessageSubscription(record.clone()),
        );
        self.event(
            key,
            Intent::MessageSubscription(MessageSubscriptionIntent::Rejected),
            RecordValue::MessageSubscription(record),
        );
    }

    pub(super) fn close_message_subscription(&mut self, record: MessageSubscriptionRecord) {
        let key = record.element_instance_key;
        let intent = Intent::MessageSubscription(MessageSubscriptionIntent::Delete);
        self.command(key, intent, RecordValue::MessageSubscription(record.clone()));
        let exists = subscriptions::get_message_side(
            &*self.kv,
            &record.tenant_id,
            &record.message_name,
            &record.correlation_key,
            key,
        )
        .is_some();
        if exists {
            self.event(
                key,
                Intent::MessageSubscription(MessageSubscriptionIntent::Deleted),
                RecordValue::MessageSubscription(record),
            );
        }
    }

    pub(super) fn expire_messages(&mut self) {
        for message_key in messages::expired(&*self.kv, self.now, TICK_LIMIT) {
            self.expire_message(message_key);
        }
    }

    pub(super) fn expire_message(&mut self, message_key: i64) {
        let Some(message) = messages::get(&*self.kv, message_key) else { return };
        self.command(message_key, Intent::Message(MessageIntent::Expire), RecordValue::Message(message.clone()));
        self.event(message_key, Intent::Message(MessageIntent::Expired), RecordValue::Message(message));
    }
}

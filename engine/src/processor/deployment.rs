//! Deployments: validate every resource, then version each process atomically.
//!
//! A deployment is all or nothing: one invalid resource rejects the whole deployment with every problem
//! found. Re-deploying a resource unchanged creates no new version (Zeebe's duplicate detection).

use std::sync::Arc;

use waggle_protocol::command::CommandResult;
use waggle_protocol::record::{
    DeploymentIntent, DeploymentRecord, DeploymentResource, Intent, MessageStartEventSubscriptionIntent,
    MessageStartEventSubscriptionRecord, ProcessIntent, ProcessMetadata, ProcessRecord, RecordValue, RejectionType,
};

use super::{Ctx, PartitionCommand};
use crate::model::{ProcessModel, ValueExpr};
use crate::state::tables::{processes, subscriptions};

/// FNV-1a, 64 bit: a stable content checksum (not a security measure).
fn checksum(bytes: &[u8]) -> Vec<u8> {
    let hash = bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    hash.to_be_bytes().to_vec()
}

impl Ctx<'_> {
    pub(super) fn deploy(&mut self, resources: Vec<DeploymentResource>, tenant_id: String) {
        let key = self.new_key();
        let intent = Intent::Deployment(DeploymentIntent::Create);
        let mut record = DeploymentRecord { resources, processes: vec![], tenant_id: tenant_id.clone() };
        self.command(key, intent, RecordValue::Deployment(record.clone()));

        let mut problems = Vec::new();
        let mut parsed: Vec<(usize, ProcessModel)> = Vec::new();
        if record.resources.is_empty() {
            problems.push("the deployment contains no resources".to_string());
        }
        for (i, resource) in record.resources.iter().enumerate() {
            let lower = resource.name.to_ascii_lowercase();
            if lower.ends_with(".dmn") {
                problems
                    .push(format!("'{}': DMN decision resources are not supported by this engine yet", resource.name));
            } else if lower.ends_with(".form") {
                problems.push(format!("'{}': form resources are not supported by this engine yet", resource.name));
            } else if !(lower.ends_with(".bpmn") || lower.ends_with(".xml")) {
                problems.push(format!("'{}': expected a BPMN resource ending in '.bpmn' or '.xml'", resource.name));
            } else {
                match crate::bpmn::parse_processes(&resource.name, &resource.content) {
                    Ok(models) => parsed.extend(models.into_iter().map(|m| (i, m))),
                    Err(e) => problems.push(e.to_string()),
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, model) in &parsed {
            if !seen.insert(model.bpmn_process_id.as_str()) {
                problems.push(format!(
                    "'{}': process id '{}' is defined more than once in this deployment",
                    record.resources[*i].name, model.bpmn_process_id
                ));
            }
        }
        if !problems.is_empty() {
            let reason = format!(
                "Expected to deploy new resources, but encountered the following errors:\n{}",
                problems.join("\n")
            );
            return self.reject(key, intent, RecordValue::Deployment(record), (RejectionType::InvalidArgument, reason));
        }

        for (i, model) in parsed {
            let resource = &record.resources[i];
            let sum = checksum(&resource.content);
            let latest = processes::latest(&*self.kv, &tenant_id, &model.bpmn_process_id);
            let unchanged = latest
                .as_ref()
                .and_then(|l| processes::get(&*self.kv, l.process_definition_key))
                .filter(|p| p.resource == resource.content);
            if let Some(previous) = unchanged {
                record.processes.push(ProcessMetadata {
                    bpmn_process_id: previous.bpmn_process_id,
                    version: previous.version,
                    process_definition_key: previous.process_definition_key,
                    resource_name: previous.resource_name,
                    checksum: previous.checksum,
                    duplicate: true,
                });
                continue;
            }
            let definition_key = self.new_key();
            let version = latest.as_ref().map_or(1, |l| l.version + 1);
            let process = ProcessRecord {
                bpmn_process_id: model.bpmn_process_id.clone(),
                version,
                process_definition_key: definition_key,
                resource_name: resource.name.clone(),
                checksum: sum.clone(),
                resource: resource.content.clone(),
                tenant_id: tenant_id.clone(),
            };
            record.processes.push(ProcessMetadata {
                bpmn_process_id: model.bpmn_process_id.clone(),
                version,
                process_definition_key: definition_key,
                resource_name: resource.name.clone(),
                checksum: sum,
                duplicate: false,
            });
            self.create_process(process, Some(Arc::new(model)));
        }
        let processes = record.processes.clone();
        let new_versions = processes.iter().any(|p| !p.duplicate);
        if new_versions && self.partition_count > 1 {
            let this = self.partition_id;
            for partition in (1..=self.partition_count).filter(|p| *p != this) {
                let command = PartitionCommand::DistributeDeployment { deployment_key: key, record: record.clone() };
                self.send(partition, command);
            }
            self.out.distributing = Some(key);
        }
        self.event(key, Intent::Deployment(DeploymentIntent::Created), RecordValue::Deployment(record));
        self.out.result = Some(CommandResult::Deployed { key, processes, tenant_id });
    }

    /// Creates one process version: its event, its model in the cache, and the message start
    /// subscriptions that move from the previous version to it.
    fn create_process(&mut self, process: ProcessRecord, model: Option<Arc<ProcessModel>>) {
        let definition_key = process.process_definition_key;
        let previous = processes::latest(&*self.kv, &process.tenant_id, &process.bpmn_process_id)
            .filter(|latest| latest.version < process.version);
        self.event(definition_key, Intent::Process(ProcessIntent::Created), RecordValue::Process(process));
        let model = match model {
            Some(model) => {
                self.models.insert(definition_key, model.clone());
                model
            }
            None => match self.model(definition_key) {
                Some(model) => model,
                None => return,
            },
        };
        if let Some(previous) = previous {
            self.close_start_subscriptions(previous.process_definition_key);
        }
        self.open_start_subscriptions(&model, definition_key);
    }

    /// On every partition but the deployment partition: the process versions a deployment created
    /// there, with the same keys and versions. Receiving the same deployment again changes nothing.
    pub(super) fn receive_deployment(&mut self, deployment_key: i64, record: DeploymentRecord) {
        self.command(
            deployment_key,
            Intent::Deployment(DeploymentIntent::Create),
            RecordValue::Deployment(record.clone()),
        );
        for metadata in record.processes.iter().filter(|p| !p.duplicate) {
            if processes::get(&*self.kv, metadata.process_definition_key).is_some() {
                continue;
            }
            let Some(resource) = record.resources.iter().find(|r| r.name == metadata.resource_name) else { continue };
            self.create_process(
                ProcessRecord {
                    bpmn_process_id: metadata.bpmn_process_id.clone(),
                    version: metadata.version,
                    process_definition_key: metadata.process_definition_key,
                    resource_name: metadata.resource_name.clone(),
                    checksum: metadata.checksum.clone(),
                    resource: resource.content.clone(),
                    tenant_id: record.tenant_id.clone(),
                },
                None,
            );
        }
        self.event(deployment_key, Intent::Deployment(DeploymentIntent::Created), RecordValue::Deployment(record));
    }

    fn start_subscriptions(&mut self, definition_key: i64) -> Vec<MessageStartEventSubscriptionRecord> {
        let Some(model) = self.model(definition_key) else { return vec![] };
        let Some(process) = processes::get(&*self.kv, definition_key) else { return vec![] };
        model
            .message_start_events()
            .filter_map(|(idx, message)| match &message.name {
                ValueExpr::Static(name) => Some(MessageStartEventSubscriptionRecord {
                    process_definition_key: definition_key,
                    bpmn_process_id: process.bpmn_process_id.clone(),
                    start_event_id: model.element(idx).id.clone(),
                    message_name: name.clone(),
                    message_key: -1,
                    correlation_key: String::new(),
                    variables: String::new(),
                    process_instance_key: -1,
                    tenant_id: process.tenant_id.clone(),
                }),
                ValueExpr::Feel(_) => None,
            })
            .collect()
    }

    fn open_start_subscriptions(&mut self, model: &ProcessModel, definition_key: i64) {
        if model.message_start_events().next().is_none() {
            return;
        }
        for subscription in self.start_subscriptions(definition_key) {
            self.event(
                definition_key,
                Intent::MessageStartEventSubscription(MessageStartEventSubscriptionIntent::Created),
                RecordValue::MessageStartEventSubscription(subscription),
            );
        }
    }

    fn close_start_subscriptions(&mut self, definition_key: i64) {
        for subscription in self.start_subscriptions(definition_key) {
            let stored = subscriptions::starts_for(&*self.kv, &subscription.tenant_id, &subscription.message_name)
                .into_iter()
                .any(|s| s.process_definition_key == definition_key);
            if stored {
                self.event(
                    definition_key,
                    Intent::MessageStartEventSubscription(MessageStartEventSubscriptionIntent::Deleted),
                    RecordValue::MessageStartEventSubscription(subscription),
                );
            }
        }
    }
}

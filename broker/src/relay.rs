//! Carries messages between partitions to whichever broker leads the receiving partition.
//!
//! The engine guarantees exactly-once processing by itself (numbered commands, an outbox, resends;
//! see `waggle_protocol::partition`), so the relay may lose messages: it does its best, fast. Each
//! receiving partition has a queue and a task that sends what queued up as one batch, to the local
//! replica if it leads, else to the broker it believes leads, following "not the leader" hints and
//! trying the other replicas when a broker does not answer. A full queue drops the message.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use waggle_protocol::broker_rpc::broker_client::BrokerClient;
use waggle_protocol::broker_rpc::DeliveryEnvelope;
use waggle_protocol::command::{self, BrokerError};
use waggle_protocol::partition::PartitionMessage;

use crate::config::BrokerConfig;
use crate::partition::Partition;
use crate::raft::network::Peers;

/// Messages one delivery carries at most.
const MAX_BATCH: usize = 256;
/// Messages waiting per receiving partition before new ones are dropped.
const QUEUE_CAPACITY: usize = 8192;
/// How long a broker gets to take a delivery.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(2);

/// This broker's partition replicas, known once they are all started.
pub type LocalPartitions = Arc<OnceLock<Arc<HashMap<u32, Arc<Partition>>>>>;

pub struct Relay {
    queues: HashMap<u32, mpsc::Sender<PartitionMessage>>,
}

impl Relay {
    /// Starts one delivery task per partition of the cluster; they stop with `shutdown`.
    pub fn start(
        config: &BrokerConfig,
        addresses: Arc<Vec<String>>,
        local: LocalPartitions,
        peers: Peers,
        shutdown: CancellationToken,
    ) -> Self {
        let mut queues = HashMap::new();
        for partition_id in 1..=config.partitions {
            let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
            let courier = Courier {
                partition_id,
                node_id: config.node_id,
                replicas: config.replicas_of(partition_id),
                addresses: addresses.clone(),
                local: local.clone(),
                peers: peers.clone(),
                leader: None,
            };
            tokio::spawn(courier.run(receiver, shutdown.clone()));
            queues.insert(partition_id, sender);
        }
        Relay { queues }
    }

    /// Queues a message for partition `partition_id`; drops it when the queue is full.
    pub fn send(&self, partition_id: u32, message: PartitionMessage) {
        match self.queues.get(&partition_id) {
            Some(queue) => {
                if queue.try_send(message).is_err() {
                    tracing::debug!(partition = partition_id, "relay queue full; the sender will resend");
                }
            }
            None => tracing::warn!(partition = partition_id, "a message for a partition that does not exist"),
        }
    }
}

/// Delivers the messages for one receiving partition.
struct Courier {
    partition_id: u32,
    node_id: u32,
    replicas: Vec<u32>,
    addresses: Arc<Vec<String>>,
    local: LocalPartitions,
    peers: Peers,
    /// The broker believed to lead the partition.
    leader: Option<u32>,
}

impl Courier {
    async fn run(mut self, mut receiver: mpsc::Receiver<PartitionMessage>, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                received = receiver.recv_many(&mut batch, MAX_BATCH) => if received == 0 { return },
            }
            self.deliver(&batch).await;
            batch.clear();
        }
    }

    /// Tries the believed leader, then every replica once; gives up quietly after that.
    async fn deliver(&mut self, batch: &[PartitionMessage]) {
        let mut tried = Vec::with_capacity(self.replicas.len());
        while tried.len() < self.replicas.len() {
            let node = match self.leader.filter(|l| !tried.contains(l)) {
                Some(node) => node,
                None => match self.replicas.iter().find(|n| !tried.contains(*n)) {
                    Some(node) => *node,
                    None => break,
                },
            };
            tried.push(node);
            let outcome =
                if node == self.node_id { self.deliver_locally(batch) } else { self.deliver_to(node, batch).await };
            match outcome {
                Ok(()) => {
                    self.leader = Some(node);
                    return;
                }
                Err(BrokerError::NotLeader { leader, .. }) => self.leader = leader.map(|l| l as u32),
                Err(e) => {
                    tracing::debug!(partition = self.partition_id, node, error = %e, "delivery failed");
                    self.leader = None;
                }
            }
        }
        tracing::debug!(partition = self.partition_id, "no replica took the delivery; the sender will resend");
    }

    fn deliver_locally(&self, batch: &[PartitionMessage]) -> Result<(), BrokerError> {
        let partition = self
            .local
            .get()
            .and_then(|partitions| partitions.get(&self.partition_id).cloned())
            .ok_or(BrokerError::PartitionNotFound { partition_id: self.partition_id })?;
        batch.iter().try_for_each(|message| partition.deliver(message.clone()))
    }

    async fn deliver_to(&self, node: u32, batch: &[PartitionMessage]) -> Result<(), BrokerError> {
        let addr = &self.addresses[node as usize];
        let channel = self.peers.channel(addr).map_err(|e| BrokerError::Internal(e.to_string()))?;
        let mut request =
            tonic::Request::new(DeliveryEnvelope { partition_id: self.partition_id, payload: command::encode(&batch) });
        request.set_timeout(DELIVERY_TIMEOUT);
        let receipt = BrokerClient::new(channel)
            .deliver(request)
            .await
            .map_err(|status| BrokerError::Internal(status.message().to_string()))?;
        command::decode::<Result<(), BrokerError>>(&receipt.into_inner().payload)?
    }
}

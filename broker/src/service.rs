//! The broker-internal gRPC service: commands from gateways, raft traffic from peers, topology and
//! job availability.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use openraft::raft::AppendEntriesRequest;
use tokio::sync::broadcast;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};
use waggle_protocol::broker_rpc::broker_server::Broker;
use waggle_protocol::broker_rpc::{
    BrokerTopology, CommandEnvelope, DeliveryEnvelope, DeliveryReceipt, JobAvailabilityQuery,
    JobAvailable as JobAvailableMessage, RaftEnvelope, ResultEnvelope, TopologyQuery,
};
use waggle_protocol::command::{self, BrokerError, BrokerReply, ClientCommand};
use waggle_protocol::partition::PartitionMessage;
use waggle_protocol::topology::BrokerInfo;

use crate::config::BrokerConfig;
use crate::metrics::Metrics;
use crate::partition::{JobAvailable, Partition};
use crate::raft::network::RaftKind;
use crate::raft::{encode, TypeConfig};

pub struct BrokerService {
    pub config: BrokerConfig,
    pub partitions: Arc<HashMap<u32, Arc<Partition>>>,
    pub jobs: broadcast::Sender<JobAvailable>,
    pub metrics: Arc<Metrics>,
}

impl BrokerService {
    pub fn info(&self) -> BrokerInfo {
        let mut partitions: Vec<_> = self.partitions.values().map(|p| p.info()).collect();
        partitions.sort_by_key(|p| p.partition_id);
        BrokerInfo {
            node_id: self.config.node_id,
            command_addr: self.config.advertised_command_addr(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            cluster_size: self.config.cluster_size,
            partitions_count: self.config.partitions,
            replication_factor: self.config.replication_factor,
            partitions,
        }
    }

    /// Copies each partition's raft state into the gauges, at scrape time.
    pub fn refresh_raft_metrics(&self) {
        for partition in self.partitions.values() {
            let label = partition.id.to_string();
            let m = partition.raft().metrics().borrow().clone();
            let role = match m.state {
                openraft::ServerState::Follower => 0,
                openraft::ServerState::Candidate => 1,
                openraft::ServerState::Leader => 2,
                openraft::ServerState::Learner => 3,
                openraft::ServerState::Shutdown => 4,
            };
            self.metrics.raft_role.with_label_values(&[&label]).set(role);
            self.metrics.raft_term.with_label_values(&[&label]).set(m.current_term as i64);
            let index = |id: Option<openraft::LogId<u64>>| id.map_or(0, |l| l.index as i64);
            self.metrics.raft_last_log_index.with_label_values(&[&label]).set(m.last_log_index.map_or(0, |i| i as i64));
            self.metrics.raft_applied_index.with_label_values(&[&label]).set(index(m.last_applied));
            self.metrics.raft_commit_index.with_label_values(&[&label]).set(partition.committed_index() as i64);
            self.metrics.raft_snapshot_index.with_label_values(&[&label]).set(index(m.snapshot));
            self.metrics.raft_purged_index.with_label_values(&[&label]).set(index(m.purged));
        }
    }

    fn partition(&self, partition_id: u32) -> Result<&Arc<Partition>, Status> {
        self.partitions
            .get(&partition_id)
            .ok_or_else(|| Status::not_found(format!("partition {partition_id} has no replica on this broker")))
    }
}

type JobStream = Pin<Box<dyn Stream<Item = Result<JobAvailableMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Broker for BrokerService {
    async fn execute(&self, request: Request<CommandEnvelope>) -> Result<Response<ResultEnvelope>, Status> {
        let envelope = request.into_inner();
        let reply: BrokerReply = match command::decode::<ClientCommand>(&envelope.payload) {
            Err(e) => Err(e),
            Ok(command) => match self.partitions.get(&envelope.partition_id) {
                None => Err(BrokerError::PartitionNotFound { partition_id: envelope.partition_id }),
                Some(partition) => {
                    let request = Some(envelope.request_id).filter(|id| *id != 0);
                    let reply = partition.execute(command, request).await;
                    if let Err(BrokerError::Backpressure { partition_id }) = &reply {
                        self.metrics.backpressure.with_label_values(&[&partition_id.to_string()]).inc();
                    }
                    reply
                }
            },
        };
        Ok(Response::new(ResultEnvelope { payload: command::encode(&reply) }))
    }

    async fn raft(&self, request: Request<RaftEnvelope>) -> Result<Response<RaftEnvelope>, Status> {
        let envelope = request.into_inner();
        let partition = self.partition(envelope.partition_id)?;
        let malformed = |e: postcard::Error| Status::invalid_argument(format!("malformed raft message: {e}"));
        let kind = RaftKind::from_code(envelope.kind)
            .ok_or_else(|| Status::invalid_argument(format!("unknown raft message kind {}", envelope.kind)))?;
        // Below the replication watermark this replica takes no entries and no snapshots; the leader
        // retries them on its next heartbeat. Heartbeats and votes still go through, and refused
        // entries still count as word from the leader (they are applied without their entries),
        // so this replica does not start elections it cannot win.
        let log_space = || partition.log_space().map_err(|e| Status::resource_exhausted(e.to_string()));
        let payload = match kind {
            RaftKind::AppendEntries => {
                let request: AppendEntriesRequest<TypeConfig> =
                    postcard::from_bytes(&envelope.payload).map_err(malformed)?;
                if let (false, Err(refusal)) = (request.entries.is_empty(), log_space()) {
                    let heartbeat = AppendEntriesRequest { entries: Vec::new(), ..request };
                    let _ = partition.raft().append_entries(heartbeat).await;
                    return Err(refusal);
                }
                encode(&partition.raft().append_entries(request).await)
            }
            RaftKind::Vote => {
                encode(&partition.raft().vote(postcard::from_bytes(&envelope.payload).map_err(malformed)?).await)
            }
            RaftKind::InstallSnapshot => {
                log_space()?;
                encode(
                    &partition
                        .raft()
                        .install_snapshot(postcard::from_bytes(&envelope.payload).map_err(malformed)?)
                        .await,
                )
            }
        };
        Ok(Response::new(RaftEnvelope { partition_id: envelope.partition_id, kind: envelope.kind, payload }))
    }

    async fn topology(&self, _request: Request<TopologyQuery>) -> Result<Response<BrokerTopology>, Status> {
        Ok(Response::new(BrokerTopology { payload: command::encode(&self.info()) }))
    }

    async fn deliver(&self, request: Request<DeliveryEnvelope>) -> Result<Response<DeliveryReceipt>, Status> {
        let envelope = request.into_inner();
        let outcome = match command::decode::<Vec<PartitionMessage>>(&envelope.payload) {
            Err(e) => Err(e),
            Ok(messages) => match self.partitions.get(&envelope.partition_id) {
                None => Err(BrokerError::PartitionNotFound { partition_id: envelope.partition_id }),
                Some(partition) => messages.into_iter().try_for_each(|message| partition.deliver(message)),
            },
        };
        Ok(Response::new(DeliveryReceipt { payload: command::encode(&outcome) }))
    }

    type JobAvailabilityStream = JobStream;

    async fn job_availability(&self, _request: Request<JobAvailabilityQuery>) -> Result<Response<JobStream>, Status> {
        let stream = BroadcastStream::new(self.jobs.subscribe()).filter_map(|item| match item {
            Ok(available) => {
                Some(Ok(JobAvailableMessage { job_type: available.job_type, partition_id: available.partition_id }))
            }
            // A slow listener missed notifications; it re-polls anyway, so skipping is safe.
            Err(BroadcastStreamRecvError::Lagged(_)) => None,
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

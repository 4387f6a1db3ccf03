//! Waggle's broker: hosts partition replicas and runs the engine on the partitions it leads.
//!
//! A broker opens one RocksDB database and one openraft group per local partition, serves the
//! broker-internal gRPC service (commands from gateways, raft traffic from peers) and the management
//! HTTP API (health, metrics). Everything stops when the shutdown token is cancelled.

pub mod config;
mod dedup;
mod disk;
mod management;
mod metrics;
mod partition;
mod raft;
mod relay;
mod service;

pub use service::BrokerService;
mod storage;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use waggle_protocol::broker_rpc::broker_server::BrokerServer;

pub use config::{BrokerConfig, ConfigError};

/// The wall clock in epoch milliseconds, as the engine and the log count time.
fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
pub use config::DEFAULT_SNAPSHOT_PERIOD;
pub use dedup::DEFAULT_WINDOW as DEFAULT_DEDUP_WINDOW;
pub use waggle_engine::processor::ProcessingLimits;

use crate::metrics::Metrics;
use crate::partition::{Partition, PartitionError, PartitionSetup};
use crate::raft::network::Peers;

#[derive(Debug, thiserror::Error)]
pub enum BrokerStartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: std::path::PathBuf, source: std::io::Error },
    #[error(transparent)]
    Partition(#[from] PartitionError),
}

/// A started broker: where it listens, and a handle that ends when it stopped.
pub struct RunningBroker {
    pub command_addr: SocketAddr,
    /// The command service itself, for a gateway in the same process (`waggle dev`) to call
    /// without a socket.
    pub commands: BrokerServer<BrokerService>,
    pub internal_addr: SocketAddr,
    pub management_addr: SocketAddr,
    pub stopped: tokio::task::JoinHandle<()>,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, BrokerStartError> {
    TcpListener::bind(addr).await.map_err(|source| BrokerStartError::Bind { what, addr, source })
}

/// Starts a broker; it runs until `shutdown` is cancelled.
pub async fn start(config: BrokerConfig, shutdown: CancellationToken) -> Result<RunningBroker, BrokerStartError> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| BrokerStartError::DataDir { path: config.data_dir.clone(), source })?;
    let command_listener = bind("command", config.command_addr).await?;
    let command_addr = command_listener.local_addr().map_err(|source| BrokerStartError::Bind {
        what: "command",
        addr: config.command_addr,
        source,
    })?;
    let internal_listener = if config.internal_addr == config.command_addr {
        None
    } else {
        Some(bind("internal", config.internal_addr).await?)
    };
    let internal_addr = match &internal_listener {
        Some(l) => l.local_addr().map_err(|source| BrokerStartError::Bind {
            what: "internal",
            addr: config.internal_addr,
            source,
        })?,
        None => command_addr,
    };
    let management_listener = bind("management", config.management_addr).await?;
    let management_addr = management_listener.local_addr().map_err(|source| BrokerStartError::Bind {
        what: "management",
        addr: config.management_addr,
        source,
    })?;

    let mut config = config;
    if config.peers.is_empty() {
        config.peers = vec![internal_addr.to_string()];
    }
    if config.advertised_command_addr.is_none() {
        config.advertised_command_addr = Some(command_addr.to_string());
    }

    let metrics = Arc::new(Metrics::new());
    let (jobs, _) = broadcast::channel(1024);
    let peers = Peers::default();
    let local: relay::LocalPartitions = Arc::new(std::sync::OnceLock::new());
    let addresses: Arc<Vec<String>> = Arc::new((0..config.cluster_size).map(|n| config.peer_addr(n)).collect());
    let relay =
        Arc::new(relay::Relay::start(&config, addresses.clone(), local.clone(), peers.clone(), shutdown.clone()));
    let watermarks =
        disk::Watermarks { commands: config.min_free_disk_bytes, replication: config.replication_min_free_disk_bytes };
    let disk = disk::DiskWatch::start(config.data_dir.clone(), watermarks, metrics.clone(), shutdown.clone());
    let mut partitions = HashMap::new();
    for partition_id in config.local_partitions() {
        let members: BTreeMap<u64, String> =
            config.replicas_of(partition_id).into_iter().map(|node| (node as u64, config.peer_addr(node))).collect();
        let partition = Partition::start(PartitionSetup {
            partition_id,
            partition_count: config.partitions,
            node_id: config.node_id as u64,
            members,
            preferred_leader: config.replicas_of(partition_id).first() == Some(&config.node_id),
            data_dir: config.data_dir.clone(),
            peers: peers.clone(),
            addresses: addresses.clone(),
            queue_capacity: config.queue_capacity,
            snapshot_interval: config.snapshot_interval,
            snapshot_period: config.snapshot_period,
            processing: config.processing,
            stall_timeout: config.stall_timeout,
            dedup_window: config.dedup_window,
            disk: disk.clone(),
            metrics: metrics.clone(),
            jobs: jobs.clone(),
            relay: relay.clone(),
            shutdown: shutdown.clone(),
        })
        .await?;
        partitions.insert(partition_id, partition);
    }
    let partitions = Arc::new(partitions);
    let _ = local.set(partitions.clone());

    let service = Arc::new(BrokerService { config: config.clone(), partitions: partitions.clone(), jobs, metrics });
    tracing::info!(
        node_id = config.node_id,
        partitions = ?config.local_partitions(),
        data_dir = %config.data_dir.display(),
        "broker listening: commands on {command_addr}, internal on {internal_addr}, management on http://{management_addr}"
    );

    let commands = BrokerServer::from_arc(service.clone())
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    let grpc = |listener: TcpListener| {
        let server = commands.clone();
        let shutdown = shutdown.clone();
        async move {
            // Accepted sockets need TCP_NODELAY set here: the builder's setting only applies to
            // listeners it binds itself, and Nagle plus delayed ACKs add ~40 ms to each answer.
            let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            if let Err(e) = tonic::transport::Server::builder()
                .add_service(server)
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
                .await
            {
                tracing::error!(error = %e, "broker gRPC server failed");
            }
        }
    };
    let command_server = tokio::spawn(grpc(command_listener));
    let internal_server = internal_listener.map(|l| tokio::spawn(grpc(l)));
    let management = tokio::spawn(management::serve(management_listener, service.clone(), shutdown.clone()));

    let stopped = tokio::spawn(async move {
        shutdown.cancelled().await;
        let _ = command_server.await;
        if let Some(server) = internal_server {
            let _ = server.await;
        }
        let _ = management.await;
        for partition in partitions.values() {
            partition.stop().await;
        }
        tracing::info!("broker stopped");
    });
    Ok(RunningBroker { command_addr, commands, internal_addr, management_addr, stopped })
}

//! Waggle's gateway: the stateless front door that Zeebe clients talk to.
//!
//! A gateway owns no data. It serves `gateway_protocol.Gateway` (and `grpc.health.v1.Health`) to
//! clients, turns every request into a [`ClientCommand`](waggle_protocol::command::ClientCommand) for
//! the partition that owns it, and sends that to the broker currently leading the partition over
//! the broker-internal `Broker` service. Because it is stateless, any number of gateways can run
//! side by side and a client may use any of them.
//!
//! The parts:
//! - [`cluster`] keeps the routing table (who leads which partition) current by polling every
//!   configured broker's `Topology`, and holds one multiplexed HTTP/2 channel per broker.
//! - [`dispatch`] sends one command to one partition and retries on the new leader when
//!   leadership moves, until the request's deadline.
//! - [`translate`] validates client requests and converts them to commands and results back to
//!   responses, field for field.
//! - [`jobs`] implements long-polling `ActivateJobs` and push-style `StreamActivatedJobs`, woken by
//!   the brokers' `JobAvailability` notifications.
//! - [`error`] is the single place where errors become gRPC status codes.
//! - [`service`] ties these together as the `Gateway` gRPC service.

pub mod cluster;
pub mod dispatch;
pub mod error;
pub mod jobs;
mod management;
pub mod service;
pub mod translate;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use waggle_protocol::gateway::gateway_server::GatewayServer;

pub use crate::cluster::LocalBroker;
use crate::{cluster::Cluster, jobs::JobSignals, service::GatewayService};

/// The gRPC service name clients check health for.
pub const GATEWAY_SERVICE_NAME: &str = "gateway_protocol.Gateway";

/// How a gateway is set up. Built by the `waggle` binary from its layered configuration.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Where clients reach the gRPC API (Zeebe's default port is 26500).
    pub grpc_addr: SocketAddr,
    /// Command addresses (`host:port`) of the brokers; the gateway must know every broker it may
    /// have to route to.
    pub brokers: Vec<String>,
    /// How long `ActivateJobs` waits for jobs when the client asks for the default (`requestTimeout` 0).
    pub default_long_poll: Duration,
    /// Largest request a client may send, in bytes.
    pub max_message_size: usize,
    /// Reported as `gatewayVersion` by the Topology RPC.
    pub version: String,
    /// Where health probes and metrics are served; `None` for none (the embedded gateway of
    /// `waggle dev` shares the broker's management server).
    pub management_addr: Option<SocketAddr>,
}

/// Why a gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("invalid gateway configuration: `{key}` {reason}")]
    InvalidConfig { key: &'static str, reason: String },
    #[error("cannot listen for gRPC clients on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("the gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

impl GatewayConfig {
    /// The smallest message limit that still leaves room for an ordinary request.
    const MIN_MESSAGE_SIZE: usize = 4 * 1024;

    /// Checks the configuration once, before anything starts, naming the offending key.
    pub fn validate(&self) -> Result<(), GatewayError> {
        let invalid = |key, reason: String| Err(GatewayError::InvalidConfig { key, reason });
        if self.brokers.is_empty() {
            return invalid("brokers", "is empty: list the command address (host:port) of every broker".into());
        }
        for addr in &self.brokers {
            if let Err(reason) = cluster::split_host_port(addr) {
                return invalid("brokers", format!("contains `{addr}`, which {reason}"));
            }
        }
        if self.default_long_poll.is_zero() {
            return invalid(
                "default_long_poll",
                "must be longer than zero (it is how long ActivateJobs waits for jobs by default)".into(),
            );
        }
        if self.max_message_size < Self::MIN_MESSAGE_SIZE {
            return invalid(
                "max_message_size",
                format!("is {} bytes; it must be at least {} bytes", self.max_message_size, Self::MIN_MESSAGE_SIZE),
            );
        }
        Ok(())
    }
}

/// Validates the configuration, binds the gRPC port and serves until `shutdown` is cancelled.
pub async fn serve(config: GatewayConfig, shutdown: CancellationToken) -> Result<(), GatewayError> {
    serve_with(config, None, shutdown).await
}

/// Serves like [`serve`], reaching the broker at `local.addr` in this process instead of over gRPC.
pub async fn serve_with(
    config: GatewayConfig,
    local: Option<LocalBroker>,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    let (_, server) = bind_with(config, local, shutdown).await?;
    server.await
}

/// Validates the configuration and binds the gRPC port, returning the bound address (useful with
/// port 0) and the future that serves until `shutdown` is cancelled. Nothing runs until the future
/// is polled.
pub async fn bind(
    config: GatewayConfig,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, impl Future<Output = Result<(), GatewayError>> + Send + 'static), GatewayError> {
    bind_with(config, None, shutdown).await
}

/// Binds like [`bind`], reaching the broker at `local.addr` in this process instead of over gRPC.
pub async fn bind_with(
    config: GatewayConfig,
    local: Option<LocalBroker>,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, impl Future<Output = Result<(), GatewayError>> + Send + 'static), GatewayError> {
    config.validate()?;
    let listener = TcpListener::bind(config.grpc_addr)
        .await
        .map_err(|source| GatewayError::Bind { addr: config.grpc_addr, source })?;
    let local_addr = listener.local_addr().map_err(|source| GatewayError::Bind { addr: config.grpc_addr, source })?;
    let cluster = Cluster::new(&config.brokers, local)
        .map_err(|e| GatewayError::InvalidConfig { key: "brokers", reason: e.to_string() })?;
    if let Some(addr) = config.management_addr {
        let management = TcpListener::bind(addr).await.map_err(|source| GatewayError::Bind { addr, source })?;
        tracing::info!("gateway management (health, metrics) on http://{addr}");
        let (cluster, shutdown) = (cluster.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = management::serve(management, cluster, shutdown).await {
                tracing::error!(error = %e, "gateway management server failed");
            }
        });
    }
    Ok((local_addr, run(config, cluster, listener, local_addr, shutdown)))
}

async fn run(
    config: GatewayConfig,
    cluster: Arc<Cluster>,
    listener: TcpListener,
    local_addr: SocketAddr,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    // Background tasks stop with the server, whether it stops by request or by failure.
    let background = shutdown.child_token();
    let signals = Arc::new(JobSignals::default());
    tokio::spawn(cluster.clone().run(background.clone()));
    jobs::spawn_availability_listeners(&cluster, &signals, &background);

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::Serving).await;
    health.set_service_status(GATEWAY_SERVICE_NAME, ServingStatus::Serving).await;

    let max_message_size = config.max_message_size;
    let gateway = GatewayServer::new(GatewayService::new(config, cluster, signals, background.clone()))
        .max_decoding_message_size(max_message_size)
        // @camunda8/sdk compresses every request with gzip; Zeebe's gateway accepts it, so must we.
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));

    tracing::info!(addr = %local_addr, "gateway listening on {local_addr}");
    let stopping = shutdown.clone();
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .layer(tower::util::MapResponseLayer::new(error::client_error_status as fn(_) -> _))
        .add_service(health_service)
        .add_service(gateway)
        .serve_with_incoming_shutdown(incoming, async move {
            stopping.cancelled().await;
            health.set_service_status("", ServingStatus::NotServing).await;
            health.set_service_status(GATEWAY_SERVICE_NAME, ServingStatus::NotServing).await;
        })
        .await;
    background.cancel();
    result?;
    tracing::info!(addr = %local_addr, "gateway stopped");
    Ok(())
}

//! The gateway's picture of the cluster: which broker leads which partition.
//!
//! Gateways hold no state of their own, so they learn the topology from the brokers: every
//! configured broker is asked for its `Topology` when the gateway starts, then every
//! [`REFRESH_INTERVAL`], and at once when a request finds that leadership moved. The merged answer is
//! published as an immutable [`ClusterView`] through a `watch` channel, so the request path reads
//! the routing table without locks and never waits on a refresh in progress.
//!
//! Each broker gets one lazily connected tonic [`Channel`]: HTTP/2 multiplexes every request to
//! that broker over it, and it reconnects by itself after the broker restarts. A broker that runs in
//! the gateway's own process (`waggle dev`) is a [`LocalBroker`]: requests go straight to its gRPC
//! service, with no socket, no HTTP/2 framing and no extra task hops in between, which on a small
//! machine is a large share of what a command costs.

use std::{sync::Arc, time::Duration};

use futures::future::join_all;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tonic::codegen::http;
use tonic::transport::Endpoint;
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;
use waggle_protocol::{
    broker_rpc::{broker_client::BrokerClient, TopologyQuery},
    command::decode,
    topology::{BrokerInfo, PartitionRole},
};

/// How often the topology is refreshed when nothing prompts it.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// How long one broker may take to answer a topology query before it counts as unreachable.
const TOPOLOGY_TIMEOUT: Duration = Duration::from_millis(800);
/// How long connecting to a broker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Brokers are trusted peers; their answers (e.g. activated jobs with their variables) may be far
/// larger than a single client request.
const BROKER_MESSAGE_LIMIT: usize = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("broker address `{addr}` is not usable: {reason}")]
    BadAddress { addr: String, reason: String },
}

/// How the gateway reaches a broker: a gRPC channel, or the broker's own service in this process.
pub type BrokerTransport =
    BoxCloneSyncService<http::Request<tonic::body::Body>, http::Response<tonic::body::Body>, TransportError>;

/// A failure of a broker transport (connection refused, reset, ...). A concrete type rather than a
/// bare `BoxError`: tonic's client converts its transport's error into a `BoxError`, and that
/// identity conversion defeats the compiler's `Send` proof for the gateway's spawned futures.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct TransportError(tower::BoxError);

/// A broker in the gateway's own process, reached through its gRPC service without a socket.
#[derive(Clone)]
pub struct LocalBroker {
    /// The configured broker address this broker answers for.
    pub addr: String,
    transport: BrokerTransport,
}

impl LocalBroker {
    pub fn new<S>(addr: String, service: S) -> LocalBroker
    where
        S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Error: Into<tower::BoxError>,
        S::Future: Send + 'static,
    {
        LocalBroker { addr, transport: BoxCloneSyncService::new(service.map_err(boxed::<S::Error>)) }
    }
}

impl std::fmt::Debug for LocalBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBroker").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// One configured broker and the client that reaches it.
pub struct BrokerConn {
    /// The address as configured.
    pub addr: String,
    pub client: BrokerClient<BrokerTransport>,
}

impl std::fmt::Debug for BrokerConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConn").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// What one configured broker last told the gateway about itself.
#[derive(Clone, Debug)]
pub struct BrokerState {
    pub info: BrokerInfo,
    /// False when the last topology query failed; `info` is then what the broker said before.
    pub reachable: bool,
}

/// An immutable snapshot of the cluster, replaced as a whole on every refresh.
#[derive(Clone, Debug, Default)]
pub struct ClusterView {
    /// Counts refreshes, so waiters can tell a new view from the one they already saw.
    pub generation: u64,
    /// Indexed like the configured brokers.
    pub brokers: Vec<Option<BrokerState>>,
    /// `leaders[p - 1]` is the index of the broker leading partition `p`.
    leaders: Vec<Option<usize>>,
    pub partitions_count: u32,
    pub cluster_size: u32,
    pub replication_factor: u32,
}

impl ClusterView {
    /// Merges the brokers' answers. A partition is led by the reachable broker that claims
    /// leadership with the highest raft term, so a deposed leader that has not noticed yet loses.
    fn build(generation: u64, brokers: Vec<Option<BrokerState>>) -> ClusterView {
        // The cluster's shape is configuration, so what an unreachable broker said still holds.
        let known = || brokers.iter().flatten();
        let partitions_count = known().map(|b| b.info.partitions_count).max().unwrap_or(0);
        let cluster_size = known().map(|b| b.info.cluster_size).max().unwrap_or(0);
        let replication_factor = known().map(|b| b.info.replication_factor).max().unwrap_or(0);
        let mut claims: Vec<Option<(u64, usize)>> = vec![None; partitions_count as usize];
        for (index, state) in brokers.iter().enumerate() {
            let Some(state) = state.as_ref().filter(|s| s.reachable) else {
                continue;
            };
            for partition in &state.info.partitions {
                let slot = match (partition.partition_id as usize).checked_sub(1) {
                    Some(slot) if slot < claims.len() => slot,
                    _ => continue,
                };
                if partition.role == PartitionRole::Leader && claims[slot].is_none_or(|(term, _)| partition.term > term)
                {
                    claims[slot] = Some((partition.term, index));
                }
            }
        }
        ClusterView {
            generation,
            brokers,
            leaders: claims.into_iter().map(|c| c.map(|(_, index)| index)).collect(),
            partitions_count,
            cluster_size,
            replication_factor,
        }
    }

    /// The index of the broker leading `partition`, if one is known.
    pub fn leader(&self, partition: u32) -> Option<usize> {
        let slot = (partition as usize).checked_sub(1)?;
        self.leaders.get(slot).copied().flatten()
    }
}

/// The configured brokers, their channels and the current view.
#[derive(Debug)]
pub struct Cluster {
    brokers: Vec<BrokerConn>,
    view: watch::Sender<Arc<ClusterView>>,
    refresh_requested: Notify,
}

impl Cluster {
    /// Prepares a channel to every broker but `local`; nothing connects until the first request.
    pub fn new(addrs: &[String], local: Option<LocalBroker>) -> Result<Arc<Cluster>, ClusterError> {
        let brokers = addrs
            .iter()
            .map(|addr| {
                let bad = |reason: String| ClusterError::BadAddress { addr: addr.clone(), reason };
                split_host_port(addr).map_err(|r| bad(r.to_string()))?;
                let transport = match local.as_ref().filter(|l| &l.addr == addr) {
                    Some(local) => local.transport.clone(),
                    None => remote(addr).map_err(bad)?,
                };
                let client = BrokerClient::new(transport)
                    .max_decoding_message_size(BROKER_MESSAGE_LIMIT)
                    .max_encoding_message_size(BROKER_MESSAGE_LIMIT);
                Ok(BrokerConn { addr: addr.clone(), client })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (view, _) =
            watch::channel(Arc::new(ClusterView { brokers: vec![None; brokers.len()], ..ClusterView::default() }));
        Ok(Arc::new(Cluster { brokers, view, refresh_requested: Notify::new() }))
    }

    pub fn broker(&self, index: usize) -> &BrokerConn {
        &self.brokers[index]
    }

    pub fn brokers(&self) -> &[BrokerConn] {
        &self.brokers
    }

    /// The current view (cheap: one reference count).
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.borrow().clone()
    }

    /// A receiver that wakes whenever a new view is published.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.view.subscribe()
    }

    /// Asks for a refresh as soon as possible; requests made while one runs are merged.
    pub fn request_refresh(&self) {
        self.refresh_requested.notify_one();
    }

    /// Refreshes the view at start, periodically and on request, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            self.refresh().await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(REFRESH_INTERVAL) => {}
                _ = self.refresh_requested.notified() => {}
            }
        }
    }

    /// Queries every broker at once and publishes the merged view.
    async fn refresh(&self) {
        let answers = join_all(self.brokers.iter().map(query_topology)).await;
        let previous = self.view();
        let brokers = answers
            .into_iter()
            .zip(previous.brokers.iter())
            .map(|(answer, before)| match answer {
                Some(info) => Some(BrokerState { info, reachable: true }),
                None => before.clone().map(|state| BrokerState { reachable: false, ..state }),
            })
            .collect();
        let view = ClusterView::build(previous.generation + 1, brokers);
        if view.leaders != previous.leaders {
            tracing::debug!(leaders = ?view.leaders, "partition leadership changed");
        }
        self.view.send_replace(Arc::new(view));
    }
}

async fn query_topology(broker: &BrokerConn) -> Option<BrokerInfo> {
    let mut request = tonic::Request::new(TopologyQuery {});
    request.set_timeout(TOPOLOGY_TIMEOUT);
    let mut client = broker.client.clone();
    let answer = tokio::time::timeout(TOPOLOGY_TIMEOUT, client.topology(request)).await;
    match answer {
        Ok(Ok(response)) => match decode::<BrokerInfo>(&response.into_inner().payload) {
            Ok(info) => Some(info),
            Err(e) => {
                tracing::warn!(broker = %broker.addr, error = %e, "broker sent an unreadable topology");
                None
            }
        },
        Ok(Err(status)) => {
            tracing::debug!(broker = %broker.addr, %status, "broker did not answer the topology query");
            None
        }
        Err(_) => {
            tracing::debug!(broker = %broker.addr, "topology query timed out");
            None
        }
    }
}

/// Splits `host:port` (IPv6 hosts in brackets), or says why the address is not of that form.
fn boxed<E: Into<tower::BoxError>>(error: E) -> TransportError {
    TransportError(error.into())
}

/// A lazily connected gRPC channel to a broker in another process.
fn remote(addr: &str) -> Result<BrokerTransport, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    Ok(BoxCloneSyncService::new(endpoint.connect_lazy().map_err(boxed::<tonic::transport::Error>)))
}

pub fn split_host_port(addr: &str) -> Result<(&str, u16), &'static str> {
    let (host, port) = addr.rsplit_once(':').ok_or("has no port (expected host:port)")?;
    let port: u16 = port.parse().map_err(|_| "has a port that is not a number from 0 to 65535")?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() {
        return Err("has no host (expected host:port)");
    }
    if host.contains('/') {
        return Err("must be host:port without a scheme or path");
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use waggle_protocol::topology::{PartitionHealth, PartitionInfo};

    use super::*;

    fn broker(node_id: u32, partitions: &[(u32, PartitionRole, u64)]) -> BrokerInfo {
        BrokerInfo {
            node_id,
            command_addr: format!("10.0.0.{node_id}:26501"),
            version: "0.1.0".into(),
            cluster_size: 3,
            partitions_count: 3,
            replication_factor: 3,
            partitions: partitions
                .iter()
                .map(|&(partition_id, role, term)| PartitionInfo {
                    partition_id,
                    role,
                    health: PartitionHealth::Healthy,
                    problem: None,
                    leader: None,
                    term,
                })
                .collect(),
        }
    }

    fn state(info: BrokerInfo, reachable: bool) -> Option<BrokerState> {
        Some(BrokerState { info, reachable })
    }

    #[test]
    fn leader_with_highest_term_wins_when_two_brokers_claim_a_partition() {
        use PartitionRole::*;
        let view = ClusterView::build(
            1,
            vec![
                state(broker(0, &[(1, Leader, 3), (2, Follower, 5)]), true),
                state(broker(1, &[(1, Leader, 4), (2, Leader, 5)]), true),
            ],
        );
        assert_eq!(view.leader(1), Some(1));
        assert_eq!(view.leader(2), Some(1));
        assert_eq!(view.leader(3), None);
        assert_eq!(view.leader(0), None);
        assert_eq!(view.partitions_count, 3);
    }

    #[test]
    fn unreachable_broker_leads_nothing() {
        use PartitionRole::*;
        let view = ClusterView::build(
            1,
            vec![state(broker(0, &[(1, Leader, 9)]), false), state(broker(1, &[(1, Follower, 9)]), true)],
        );
        assert_eq!(view.leader(1), None);
    }

    #[test]
    fn host_and_port_are_split_including_ipv6() {
        assert_eq!(split_host_port("broker-0.waggle:26501"), Ok(("broker-0.waggle", 26501)));
        assert_eq!(split_host_port("[::1]:26501"), Ok(("::1", 26501)));
        assert!(split_host_port("broker-0").is_err());
        assert!(split_host_port(":26501").is_err());
        assert!(split_host_port("broker:http").is_err());
        assert!(split_host_port("http://broker:26501").is_err());
    }
}

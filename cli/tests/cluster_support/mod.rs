//! A three-broker cluster of real `waggle` processes plus one standalone gateway, for failover tests.
//!
//! Failover is only believable when brokers are separate processes that die the way processes die:
//! `SIGKILL` leaves no chance to flush or say goodbye, and a restart must recover from the data
//! directory alone. So the harness runs the `waggle` binary, gives every broker its own temporary
//! data directory and fixed loopback ports (a restarted broker comes back at the same addresses, as a
//! pod does behind a stable DNS name), and talks to the cluster only from outside: the Zeebe gRPC API
//! of the gateway and the brokers' management HTTP API.
//!
//! Besides killing and restarting brokers, the harness can stop a broker without killing it
//! (`SIGSTOP`, as a long GC pause or a frozen VM would), cut it off from its peers (with
//! [`Network::Proxied`]), and kill and restart the gateway. Brokers can be given extra flags each
//! ([`ClusterOptions`]), for instance their own disk watermarks.
//!
//! Every process writes its log to a file; when a test panics, the harness prints the tail of the
//! latest logs and keeps the directory. Dropping the cluster kills every process, so a failing test
//! leaves nothing running.

pub mod checks;
pub mod management;
pub mod proxy;
pub mod workload;

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use waggle_protocol::gateway::gateway_client::GatewayClient;
use waggle_protocol::gateway::partition::PartitionBrokerRole;
use waggle_protocol::gateway::TopologyRequest;

use management::RaftGauges;
use proxy::Proxies;

pub const BROKERS: usize = 3;
pub const PARTITIONS: u32 = 3;
/// Raft entries between two snapshots: small, so that snapshots and log compaction happen within
/// seconds of load and a broker that is down for a while has to catch up from a snapshot.
pub const SNAPSHOT_INTERVAL: u64 = 200;
/// Brokers log at info, plus openraft's own info lines on leadership changes, log purging and
/// snapshots (built, sent, installed), which tell how a lagging replica caught up.
const BROKER_LOG_FILTER: &str = "info,openraft=warn,openraft::engine::handler::server_state_handler=info,\
                                 openraft::engine::handler::log_handler=info,openraft::core::sm::worker=info";
const LOG_TAIL_LINES: usize = 40;
/// Logs per process whose tail a failing test prints: a broker restarted many times has many.
const LOGS_SHOWN_PER_PROCESS: usize = 2;

/// How the brokers reach each other.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Directly, at each other's internal addresses.
    Direct,
    /// Through a [`Proxies`] path per ordered pair, so that a broker can be isolated.
    Proxied,
}

/// How to start a cluster: the network between brokers and extra flags per broker.
pub struct ClusterOptions {
    pub network: Network,
    /// Appended to broker `node`'s command line, by node id.
    pub broker_args: BTreeMap<usize, Vec<String>>,
}

impl ClusterOptions {
    pub fn new(network: Network) -> ClusterOptions {
        ClusterOptions { network, broker_args: BTreeMap::new() }
    }

    /// Adds flags to broker `node`'s command line.
    pub fn broker_args(mut self, node: usize, args: &[&str]) -> ClusterOptions {
        self.broker_args.entry(node).or_default().extend(args.iter().map(|a| a.to_string()));
        self
    }
}

/// The test's clock: every line the harness and the tests print carries the time since start.
#[derive(Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn note(&self, message: impl std::fmt::Display) {
        eprintln!("[{:>6.2}s] {message}", self.0.elapsed().as_secs_f64());
    }
}

struct Broker {
    args: Vec<String>,
    management_addr: SocketAddr,
    dir: PathBuf,
    /// One log file per start, so that what a restarted broker logged can be told apart.
    logs: Vec<PathBuf>,
    process: Option<Child>,
}

pub struct Cluster {
    pub clock: Clock,
    root: Option<tempfile::TempDir>,
    /// The `waggle` binary every process runs; see [`keep_binary`].
    binary: PathBuf,
    brokers: Vec<Broker>,
    gateway: Option<Child>,
    gateway_args: Vec<String>,
    /// One log file per start, as for brokers.
    gateway_logs: Vec<PathBuf>,
    gateway_addr: SocketAddr,
    gateway_management_addr: SocketAddr,
    /// Connects lazily and reconnects by itself, so it outlives a gateway that is not up yet.
    client: GatewayClient<Channel>,
    proxies: Option<Proxies>,
}

/// Free loopback addresses. The listeners stay bound until the caller drops them, so that nothing
/// else (including the proxies) can take one of these ports before the process that will use it.
fn reserve_addrs(count: usize) -> Vec<TcpListener> {
    (0..count).map(|_| TcpListener::bind("127.0.0.1:0").expect("a loopback port is free")).collect()
}

/// Keeps the `waggle` binary as it is now in the cluster's directory, so that every start and
/// restart runs the same build: cargo replaces the file at `CARGO_BIN_EXE_waggle` whenever any
/// checkout sharing the target directory is built, which may happen while a long test runs.
fn keep_binary(dir: &Path) -> PathBuf {
    let built = Path::new(env!("CARGO_BIN_EXE_waggle"));
    let kept = dir.join("waggle");
    // Cargo replaces the file by unlinking it, so a hard link keeps the old build; a copy does too.
    if std::fs::hard_link(built, &kept).is_err() {
        std::fs::copy(built, &kept).unwrap_or_else(|e| panic!("cannot copy {}: {e}", built.display()));
    }
    kept
}

fn spawn(binary: &Path, args: &[String], log: &Path, filter: &str) -> Child {
    let file = File::create(log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
    Command::new(binary)
        .args(args)
        .env("WAGGLE_LOG", filter)
        .env("WAGGLE_LOG_FORMAT", "human")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("a log file handle can be duplicated"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()))
}

/// The last lines of a log file, for failure reports.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(unreadable: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

impl Cluster {
    /// Starts three brokers and a gateway and waits until every partition has a leader.
    pub async fn start(network: Network) -> Cluster {
        Cluster::start_with(ClusterOptions::new(network)).await
    }

    /// [`Cluster::start`] with extra flags per broker.
    pub async fn start_with(options: ClusterOptions) -> Cluster {
        let ClusterOptions { network, mut broker_args } = options;
        let clock = Clock(Instant::now());
        let root = tempfile::Builder::new().prefix("waggle-cluster-").tempdir().expect("a temp dir can be created");
        let reserved = reserve_addrs(BROKERS * 3 + 2);
        let addrs: Vec<SocketAddr> = reserved.iter().map(|l| l.local_addr().expect("bound")).collect();
        let internal = &addrs[0..BROKERS];
        let command = &addrs[BROKERS..2 * BROKERS];
        let management = &addrs[2 * BROKERS..3 * BROKERS];
        let (gateway_addr, gateway_management) = (addrs[3 * BROKERS], addrs[3 * BROKERS + 1]);
        let proxies = match network {
            Network::Direct => None,
            Network::Proxied => Some(Proxies::start(internal).await),
        };
        let mut brokers = Vec::new();
        for node in 0..BROKERS {
            let peers: Vec<String> = (0..BROKERS)
                .map(|peer| match &proxies {
                    Some(proxies) if peer != node => proxies.addr(node, peer).to_string(),
                    _ => internal[peer].to_string(),
                })
                .collect();
            let dir = root.path().join(format!("broker-{node}"));
            let mut args = [
                "broker",
                "--node-id",
                &node.to_string(),
                "--cluster-size",
                &BROKERS.to_string(),
                "--partitions",
                &PARTITIONS.to_string(),
                "--replication-factor",
                &BROKERS.to_string(),
                "--peers",
                &peers.join(","),
                "--data-dir",
                &dir.join("data").display().to_string(),
                "--internal-addr",
                &internal[node].to_string(),
                "--command-addr",
                &command[node].to_string(),
                "--management-addr",
                &management[node].to_string(),
                "--snapshot-interval",
                &SNAPSHOT_INTERVAL.to_string(),
                "--snapshot-period",
                "0",
            ]
            .map(String::from)
            .to_vec();
            args.extend(broker_args.remove(&node).unwrap_or_default());
            std::fs::create_dir_all(&dir).expect("a broker directory can be created");
            brokers.push(Broker { args, management_addr: management[node], dir, logs: Vec::new(), process: None });
        }
        let gateway_args = [
            "gateway",
            "--brokers",
            &command.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(","),
            "--grpc-addr",
            &gateway_addr.to_string(),
            "--management-addr",
            &gateway_management.to_string(),
        ]
        .map(String::from)
        .to_vec();
        let endpoint = Endpoint::from_shared(format!("http://{gateway_addr}")).expect("a valid URI");
        // From here on, dropping the cluster (a panic included) kills whatever was started.
        let mut cluster = Cluster {
            clock,
            binary: keep_binary(root.path()),
            root: Some(root),
            brokers,
            gateway: None,
            gateway_args,
            gateway_logs: Vec::new(),
            gateway_addr,
            gateway_management_addr: gateway_management,
            client: GatewayClient::new(endpoint.connect_lazy()),
            proxies,
        };
        drop(reserved);
        for (node, broker) in cluster.brokers.iter_mut().enumerate() {
            start_broker(&cluster.binary, broker, node);
        }
        cluster.start_gateway();
        for node in 0..BROKERS {
            cluster.wait_until_ready(node, Duration::from_secs(30)).await;
        }
        cluster.wait_for_leaders(None, Duration::from_secs(30)).await;
        cluster.clock.note(format!("cluster of {BROKERS} brokers is up, gateway at {}", cluster.gateway_addr));
        cluster
    }

    /// A client of the gateway's Zeebe API.
    pub fn client(&self) -> GatewayClient<Channel> {
        self.client.clone()
    }

    /// Kills broker `node` with SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self, node: usize) {
        let mut process = self.brokers[node].process.take().unwrap_or_else(|| panic!("broker {node} is not running"));
        process.kill().expect("SIGKILL can be sent to a child");
        process.wait().expect("a killed child can be reaped");
        self.clock.note(format!("killed broker {node} (SIGKILL)"));
    }

    /// Starts broker `node` again on the same data directory and addresses, and waits until it is
    /// ready.
    pub async fn restart(&mut self, node: usize) {
        assert!(self.brokers[node].process.is_none(), "broker {node} is still running");
        start_broker(&self.binary, &mut self.brokers[node], node);
        self.clock.note(format!("restarted broker {node}"));
        self.wait_until_ready(node, Duration::from_secs(30)).await;
        self.clock.note(format!("broker {node} is ready again"));
    }

    /// Starts brokers `nodes` again, all at once (a single one may need the others for a quorum
    /// before it is ready), and waits until each is ready.
    pub async fn restart_all(&mut self, nodes: &[usize]) {
        for &node in nodes {
            assert!(self.brokers[node].process.is_none(), "broker {node} is still running");
            start_broker(&self.binary, &mut self.brokers[node], node);
            self.clock.note(format!("restarted broker {node}"));
        }
        for &node in nodes {
            self.wait_until_ready(node, Duration::from_secs(30)).await;
            self.clock.note(format!("broker {node} is ready again"));
        }
    }

    /// Stops broker `node` with SIGSTOP: it keeps its sockets and its state but does nothing, as a
    /// process in a long pause would, until [`Cluster::resume`].
    pub fn pause(&self, node: usize) {
        self.signal(node, libc::SIGSTOP);
        self.clock.note(format!("paused broker {node} (SIGSTOP)"));
    }

    /// Lets a paused broker `node` go on (SIGCONT).
    pub fn resume(&self, node: usize) {
        self.signal(node, libc::SIGCONT);
        self.clock.note(format!("resumed broker {node} (SIGCONT)"));
    }

    fn signal(&self, node: usize, signal: libc::c_int) {
        let process = self.brokers[node].process.as_ref().unwrap_or_else(|| panic!("broker {node} is not running"));
        let pid = libc::pid_t::try_from(process.id()).expect("a pid fits in pid_t");
        // SAFETY: kill(2) takes plain integers; the pid is our own child, not yet reaped, so it
        // cannot name another process.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "signal {signal} to broker {node}: {}", std::io::Error::last_os_error());
    }

    /// Kills the gateway with SIGKILL.
    pub fn kill_gateway(&mut self) {
        let mut process = self.gateway.take().expect("the gateway is running");
        process.kill().expect("SIGKILL can be sent to a child");
        process.wait().expect("a killed child can be reaped");
        self.clock.note("killed the gateway (SIGKILL)");
    }

    /// Starts the gateway again at the same addresses and waits until it knows a leader for every
    /// partition. The client reconnects by itself.
    pub async fn restart_gateway(&mut self) {
        assert!(self.gateway.is_none(), "the gateway is still running");
        self.start_gateway();
        self.clock.note("restarted the gateway");
        let limit = Duration::from_secs(30);
        let deadline = Instant::now() + limit;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.gateway.as_mut().map(Child::try_wait) {
                panic!("the gateway exited with {status} while starting");
            }
            match management::get(self.gateway_management_addr, "/health/ready").await {
                Ok((200, _)) => {
                    self.clock.note("the gateway is ready again");
                    return;
                }
                Ok((status, body)) => last = format!("{status}: {body}"),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the gateway is not ready after {limit:?}; last answer: {last}");
    }

    fn start_gateway(&mut self) {
        let root = self.root.as_ref().expect("the cluster's directory exists while it runs").path();
        let log = root.join(format!("gateway.{}.log", self.gateway_logs.len()));
        self.gateway = Some(spawn(&self.binary, &self.gateway_args, &log, "info"));
        self.gateway_logs.push(log);
    }

    /// The cluster's temporary directory: every broker's data directory is below it.
    pub fn dir(&self) -> &Path {
        self.root.as_ref().expect("the cluster's directory exists while it runs").path()
    }

    /// Cuts broker `node` off from its peers (not from the gateway). Needs [`Network::Proxied`].
    pub fn isolate(&self, node: usize) {
        self.proxies.as_ref().expect("isolation needs Network::Proxied").isolate(node);
        self.clock.note(format!("isolated broker {node} from its peers"));
    }

    /// Restores every path between brokers.
    pub fn heal(&self) {
        self.proxies.as_ref().expect("healing needs Network::Proxied").heal();
        self.clock.note("healed the network");
    }

    /// Brokers that were started and have exited since, with how they exited.
    pub fn exited_brokers(&mut self) -> Vec<(usize, String)> {
        let mut exited = Vec::new();
        for (node, broker) in self.brokers.iter_mut().enumerate() {
            if let Some(Ok(Some(status))) = broker.process.as_mut().map(Child::try_wait) {
                exited.push((node, status.to_string()));
            }
        }
        exited
    }

    /// How the gateway exited, if it was started and has exited since.
    pub fn gateway_exit(&mut self) -> Option<String> {
        match self.gateway.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => Some(status.to_string()),
            _ => None,
        }
    }

    /// Broker `node`'s answer to its liveness probe: status code and body.
    pub async fn liveness(&self, node: usize) -> Result<(u16, String), String> {
        management::get(self.brokers[node].management_addr, "/health/live").await
    }

    /// Broker `node`'s metrics in Prometheus' text format.
    pub async fn metrics(&self, node: usize) -> Result<String, String> {
        match management::get(self.brokers[node].management_addr, "/metrics").await? {
            (200, body) => Ok(body),
            (status, body) => Err(format!("/metrics answered {status}: {body}")),
        }
    }

    /// The raft gauges of broker `node`, by partition.
    pub async fn raft_gauges(&self, node: usize) -> Result<BTreeMap<u32, RaftGauges>, String> {
        management::raft_gauges(self.brokers[node].management_addr).await
    }

    /// The raft gauges of every broker that answers, by node id.
    pub async fn raft_gauges_of_all(&self) -> BTreeMap<usize, BTreeMap<u32, RaftGauges>> {
        let mut all = BTreeMap::new();
        for node in 0..BROKERS {
            if let Ok(gauges) = self.raft_gauges(node).await {
                all.insert(node, gauges);
            }
        }
        all
    }

    /// Everything broker `node` has logged since it was last started.
    pub fn current_log(&self, node: usize) -> String {
        let log = self.brokers[node].logs.last().expect("a started broker has a log");
        std::fs::read_to_string(log).unwrap_or_else(|e| panic!("cannot read {}: {e}", log.display()))
    }

    /// The brokers that the gateway's Topology names leader of each partition: more than one while
    /// a deposed leader has not noticed yet.
    pub async fn leader_claims(&self) -> Result<BTreeMap<u32, Vec<usize>>, String> {
        let mut request = tonic::Request::new(TopologyRequest {});
        request.set_timeout(Duration::from_secs(3));
        let topology = self.client().topology(request).await.map_err(|s| format!("Topology failed: {s}"))?;
        let mut claims: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for broker in &topology.get_ref().brokers {
            for partition in &broker.partitions {
                if partition.role == PartitionBrokerRole::Leader as i32 {
                    claims.entry(partition.partition_id as u32).or_default().push(broker.node_id as usize);
                }
            }
        }
        Ok(claims)
    }

    /// The broker leading each partition, as the gateway's Topology reports it. When two brokers
    /// claim the same partition, the one with the higher raft term wins, as it does in the gateway's
    /// routing.
    async fn leaders(&self) -> Result<BTreeMap<u32, usize>, String> {
        let claims = self.leader_claims().await?;
        let mut leaders = BTreeMap::new();
        for (partition, claimants) in claims {
            let mut best: Option<(i64, usize)> = None;
            for node in claimants {
                let term = match self.raft_gauges(node).await {
                    Ok(gauges) => gauges.get(&partition).map_or(0, |g| g.term),
                    Err(_) => continue,
                };
                if best.is_none_or(|(highest, _)| term > highest) {
                    best = Some((term, node));
                }
            }
            if let Some((_, node)) = best {
                leaders.insert(partition, node);
            }
        }
        Ok(leaders)
    }

    /// Waits until the Topology shows a leader for every partition, none of them `excluded`, and
    /// returns the leaders.
    pub async fn wait_for_leaders(&self, excluded: Option<usize>, limit: Duration) -> BTreeMap<u32, usize> {
        let deadline = Instant::now() + limit;
        let mut last = Err("no Topology answer yet".to_string());
        while Instant::now() < deadline {
            last = self.leaders().await;
            if let Ok(leaders) = &last {
                let complete = (1..=PARTITIONS).all(|p| leaders.get(&p).is_some_and(|node| Some(*node) != excluded));
                if complete {
                    return leaders.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "no leader for every partition{} within {limit:?}; last Topology: {last:?}",
            excluded.map(|n| format!(" (other than broker {n})")).unwrap_or_default()
        );
    }

    /// Waits until broker `node` answers its readiness probe with 200.
    async fn wait_until_ready(&mut self, node: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        let addr = self.brokers[node].management_addr;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.brokers[node].process.as_mut().map(Child::try_wait) {
                panic!("broker {node} exited with {status} while starting");
            }
            match management::get(addr, "/health/ready").await {
                Ok((200, _)) => return,
                Ok((status, body)) => last = format!("{status}: {body}"),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("broker {node} is not ready after {limit:?}; last answer from http://{addr}/health/ready: {last}");
    }
}

fn start_broker(binary: &Path, broker: &mut Broker, node: usize) {
    let log = broker.dir.join(format!("broker-{node}.{}.log", broker.logs.len()));
    broker.process = Some(spawn(binary, &broker.args, &log, BROKER_LOG_FILTER));
    broker.logs.push(log);
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let processes = self.brokers.iter_mut().map(|b| &mut b.process).chain([&mut self.gateway]);
        for mut process in processes.filter_map(Option::take) {
            let _ = process.kill();
            let _ = process.wait();
        }
        if !std::thread::panicking() {
            return;
        }
        let latest =
            |logs: &[PathBuf]| -> Vec<PathBuf> { logs[logs.len().saturating_sub(LOGS_SHOWN_PER_PROCESS)..].to_vec() };
        let logs: Vec<PathBuf> =
            self.brokers.iter().flat_map(|b| latest(&b.logs)).chain(latest(&self.gateway_logs)).collect();
        for log in &logs {
            eprintln!("===== last {LOG_TAIL_LINES} lines of {} =====\n{}", log.display(), tail(log));
        }
        if let Some(root) = self.root.take() {
            eprintln!("===== the cluster's data and logs are kept in {} =====", root.keep().display());
        }
    }
}

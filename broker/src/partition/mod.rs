//! A partition replica on this broker: its raft group, the engine's driver while it leads, and the
//! supervision that brings both back when raft stops.
//!
//! openraft stops a group for good on a storage error: a write that hit a full disk, say. Leaving it
//! stopped would leave the partition a replica short (or without a leader) until a person restarted
//! the broker, and a restart of the whole process would not help as long as the disk stays full.
//! So each partition has a supervisor that notices a stopped raft (or a driver that ended), waits
//! until the disk has room above the replication watermark, and then restarts the replica in place:
//! it closes the database, opens it again and starts a new raft group member on it, which catches
//! up from its log and its peers like a broker after a restart. Commands that were in flight on the
//! old replica are answered NOT_LEADER, so the gateway retries them, and the request-id memory
//! ([`crate::dedup`]) keeps those retries from applying a command twice.
//!
//! Health reports the recovery: a replica waiting for disk space or being restarted is unhealthy;
//! one whose restarts keep failing is dead, which liveness reports so that Kubernetes restarts the
//! broker (see [`crate::management`]).

mod driver;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use openraft::BasicNode;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use waggle_engine::processor::{Engine, Input, PartitionMessage, ProcessingLimits};
use waggle_protocol::command::{BrokerError, BrokerReply, ClientCommand, RequestId};
use waggle_protocol::topology::{PartitionHealth, PartitionInfo, PartitionRole};

use self::driver::{Driver, Submission};
use crate::disk::DiskWatch;
use crate::metrics::Metrics;
use crate::raft::handoff::Handoff;
use crate::raft::log_store::LogStore;
use crate::raft::network::{NetworkFactory, Peers};
use crate::raft::snapshot::SnapshotStore;
use crate::raft::state_machine::StateMachine;
use crate::raft::Raft;
use crate::relay::Relay;
use crate::storage;
use crate::{dedup, now_millis};

/// How long a leader may go without hearing from a quorum before it reports itself unhealthy.
const QUORUM_LOST_AFTER_MS: u64 = 3_000;
/// How long a leader may go without hearing from a quorum before it stops acting as leader: about
/// the election timeout, after which the others have elected a new leader if they can reach each
/// other. openraft 0.9 has no check-quorum of its own; without this a leader cut off from its peers
/// would keep accepting commands it can never commit, and keep telling gateways that it leads.
const STEP_DOWN_AFTER_MS: u64 = 1_000;
/// How often the supervisor looks at its replica.
const SUPERVISE_EVERY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts to restart a replica whose restarts fail.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Failed restarts in a row after which the partition counts as dead (see the module docs).
const RESTART_FAILURES_BEFORE_DEAD: u32 = 3;
/// Free bytes a replica needs at least to open its database again (a new write-ahead log and
/// manifest), even where the replication watermark is set lower: a restart on a full disk fails.
const RESTART_MIN_FREE_BYTES: u64 = 8 * 1024 * 1024;

/// Whether this replica leads by raft's word but has not heard from a quorum for too long.
fn leads_without_quorum(metrics: &openraft::RaftMetrics<u64, BasicNode>) -> bool {
    metrics.state == openraft::ServerState::Leader
        && metrics.millis_since_quorum_ack.is_some_and(|ms| ms > STEP_DOWN_AFTER_MS)
}

/// How often [`schedule_snapshots`] looks again once a period is over but the log is still short.
const SNAPSHOT_CHECK_EVERY: Duration = Duration::from_millis(100);

/// Asks raft for a snapshot whenever at least `period` has passed since the last one asked for (or
/// since the start) and at least `interval` entries were applied since the last snapshot, until
/// `stop`. openraft's own policy only counts entries; a busy partition fills an interval within
/// seconds, and each snapshot flushes every memtable and holds writes for a moment.
async fn schedule_snapshots(raft: Raft, interval: u64, period: Duration, stop: CancellationToken) {
    let mut due = tokio::time::Instant::now() + period;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(due) => {}
        }
        let since_last = {
            let metrics = raft.metrics();
            let metrics = metrics.borrow();
            let index = |id: Option<openraft::LogId<u64>>| id.map_or(0, |id| id.index);
            index(metrics.last_applied).saturating_sub(index(metrics.snapshot))
        };
        if since_last < interval {
            due = tokio::time::Instant::now() + SNAPSHOT_CHECK_EVERY;
            continue;
        }
        if let Err(e) = raft.trigger().snapshot().await {
            tracing::debug!(error = %e, "could not ask for a snapshot");
        }
        due = tokio::time::Instant::now() + period;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error("cannot start raft for partition {partition_id}: {message}")]
    Raft { partition_id: u32, message: String },
}

/// A job type that has activatable jobs on a partition.
#[derive(Clone, Debug)]
pub struct JobAvailable {
    pub job_type: String,
    pub partition_id: u32,
}

pub struct PartitionSetup {
    pub partition_id: u32,
    pub partition_count: u32,
    pub node_id: u64,
    /// Node id → internal address of every replica of this partition.
    pub members: BTreeMap<u64, String>,
    /// Whether this broker is the first of the partition's replicas, which leads it by preference
    /// so that leadership starts out spread over the brokers.
    pub preferred_leader: bool,
    pub data_dir: PathBuf,
    pub peers: Peers,
    /// Internal address of every broker, by node id.
    pub addresses: Arc<Vec<String>>,
    pub queue_capacity: usize,
    pub snapshot_interval: u64,
    pub snapshot_period: Duration,
    pub processing: ProcessingLimits,
    pub stall_timeout: Duration,
    /// How long the partition remembers the answer to a request with an id.
    pub dedup_window: Duration,
    pub disk: Arc<DiskWatch>,
    pub metrics: Arc<Metrics>,
    pub jobs: broadcast::Sender<JobAvailable>,
    pub relay: Arc<Relay>,
    pub shutdown: CancellationToken,
}

/// One running incarnation of the replica: a raft group member over the opened database, and its
/// driver. The supervisor replaces it wholesale when raft stops.
struct Replica {
    raft: Raft,
    /// The last committed raft log index.
    committed: Arc<AtomicU64>,
    queue: mpsc::Sender<Submission>,
    driver: Mutex<Option<JoinHandle<()>>>,
    /// Stops this incarnation's driver alone.
    stop_driver: CancellationToken,
    db_closed: tokio::sync::watch::Receiver<bool>,
    /// When the driver last went round its loop (ms since the epoch). The loop turns at least once
    /// per [`driver::IDLE_TICK`] (or [`driver::FOLLOWER_POLL`]), so a stale beat means the driver is
    /// stuck: in the engine, or waiting for raft to commit.
    driver_beat: Arc<AtomicU64>,
}

impl Replica {
    async fn start(setup: &PartitionSetup) -> Result<Replica, PartitionError> {
        let id = setup.partition_id;
        let dir = setup.data_dir.join(format!("partition-{id}"));
        let db = storage::open(&dir)?;
        dedup::migrate(&db).map_err(storage::StorageError::from)?;
        let raft_error = |e: &dyn std::fmt::Display| PartitionError::Raft { partition_id: id, message: e.to_string() };
        let config = openraft::Config {
            cluster_name: format!("waggle-partition-{id}"),
            heartbeat_interval: 100,
            election_timeout_min: 400,
            election_timeout_max: 800,
            // With a period, [`schedule_snapshots`] decides when instead of openraft.
            snapshot_policy: if setup.snapshot_period.is_zero() {
                openraft::SnapshotPolicy::LogsSinceLast(setup.snapshot_interval)
            } else {
                openraft::SnapshotPolicy::Never
            },
            // Keep a tenth of an interval below the snapshot, so that a briefly lagging follower
            // catches up from the log instead of needing the whole snapshot.
            max_in_snapshot_log_to_keep: setup.snapshot_interval / 10,
            ..Default::default()
        }
        .validate()
        .map_err(|e| raft_error(&e))?;
        let applied_metric = setup.metrics.applied_position.with_label_values(&[&id.to_string()]);
        let handoff = Arc::new(Handoff::default());
        let state_machine = StateMachine::new(
            db.clone(),
            Engine::new(id, setup.partition_count),
            handoff.clone(),
            SnapshotStore::new(&dir),
            Arc::new(move |position| applied_metric.set(position)),
        );
        let network =
            NetworkFactory { partition_id: id, peers: setup.peers.clone(), addresses: setup.addresses.clone() };
        let committed = Arc::new(AtomicU64::new(0));
        let fsyncs = setup.metrics.log_fsyncs.with_label_values(&[&id.to_string()]);
        let log_store = LogStore::new(db.clone(), committed.clone(), fsyncs);
        let raft = Raft::new(setup.node_id, Arc::new(config), network, log_store, state_machine)
            .await
            .map_err(|e| raft_error(&e))?;
        if !raft.is_initialized().await.map_err(|e| raft_error(&e))? {
            let members: BTreeMap<u64, BasicNode> =
                setup.members.iter().map(|(node, addr)| (*node, BasicNode { addr: addr.clone() })).collect();
            if let Err(e) = raft.initialize(members).await {
                // Another replica may have initialised the group first; that is the same outcome.
                tracing::debug!(partition = id, error = %e, "raft group already initialised");
            }
        }
        if setup.preferred_leader && raft.metrics().borrow().current_leader.is_none() {
            // Stand for election at once instead of after a random timeout; without a leader
            // lease in the way this wins unless another replica's log is ahead.
            if let Err(e) = raft.trigger().elect().await {
                tracing::debug!(partition = id, error = %e, "could not stand for election");
            }
        }
        let stop_driver = setup.shutdown.child_token();
        if !setup.snapshot_period.is_zero() {
            let (interval, period) = (setup.snapshot_interval, setup.snapshot_period);
            tokio::spawn(schedule_snapshots(raft.clone(), interval, period, stop_driver.clone()));
        }
        let (queue, receiver) = mpsc::channel(setup.queue_capacity);
        let db_closed = db.closed();
        let driver_beat = Arc::new(AtomicU64::new(now_millis() as u64));
        let driver = Driver::new(setup, raft.clone(), db, handoff, receiver, driver_beat.clone());
        let driver = tokio::spawn(driver.run(stop_driver.clone()));
        Ok(Replica { raft, committed, queue, driver: Mutex::new(Some(driver)), stop_driver, db_closed, driver_beat })
    }

    /// Why this incarnation no longer works, if it does not: raft stopped, or the driver ended.
    fn failure(&self) -> Option<String> {
        let metrics = self.raft.metrics().borrow().clone();
        if let Err(fatal) = &metrics.running_state {
            return Some(format!("raft stopped: {fatal}"));
        }
        if metrics.state == openraft::ServerState::Shutdown {
            return Some("raft is shut down".to_string());
        }
        let driver = self.driver.lock().expect("the driver handle lock is never poisoned");
        driver.as_ref().is_none_or(JoinHandle::is_finished).then(|| "the partition driver stopped".to_string())
    }

    /// Stops raft and the driver, then waits until the database is closed, so that the same data
    /// directory can be opened again at once.
    async fn stop(&self, partition_id: u32) {
        self.stop_driver.cancel();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(partition = partition_id, error = %e, "raft did not shut down cleanly");
        }
        let driver = self.driver.lock().expect("the driver handle lock is never poisoned").take();
        if let Some(driver) = driver {
            let _ = driver.await;
        }
        let mut closed = self.db_closed.clone();
        if tokio::time::timeout(Duration::from_secs(10), closed.wait_for(|closed| *closed)).await.is_err() {
            tracing::warn!(partition = partition_id, "the partition database is still open after shutdown");
        }
    }
}

/// Why a replica is being recovered, for health reports.
#[derive(Clone, Debug)]
struct Recovery {
    cause: String,
    waiting_for_disk: bool,
    failed_restarts: u32,
    last_error: Option<String>,
}

impl Recovery {
    fn health(self) -> (PartitionHealth, Option<String>) {
        let Recovery { cause, waiting_for_disk, failed_restarts, last_error } = self;
        if waiting_for_disk {
            let problem = format!(
                "{cause}; the replica restarts once the disk has room above the replication watermark (and at \
                 least {} MiB)",
                RESTART_MIN_FREE_BYTES / (1024 * 1024)
            );
            return (PartitionHealth::Unhealthy, Some(problem));
        }
        let health = if failed_restarts >= RESTART_FAILURES_BEFORE_DEAD {
            PartitionHealth::Dead
        } else {
            PartitionHealth::Unhealthy
        };
        let problem = match last_error {
            Some(error) => format!("{cause}; restarting the replica failed {failed_restarts} times, last: {error}"),
            None => format!("{cause}; restarting the replica"),
        };
        (health, Some(problem))
    }
}

pub struct Partition {
    pub id: u32,
    node_id: u64,
    replica: RwLock<Arc<Replica>>,
    /// Set while the supervisor recovers the replica.
    recovery: Mutex<Option<Recovery>>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
    /// How stale the driver's beat may get before the partition counts as stuck.
    stall_timeout: Duration,
    disk: Arc<DiskWatch>,
}

impl Partition {
    pub async fn start(setup: PartitionSetup) -> Result<Arc<Partition>, PartitionError> {
        let replica = Replica::start(&setup).await?;
        let partition = Arc::new(Partition {
            id: setup.partition_id,
            node_id: setup.node_id,
            replica: RwLock::new(Arc::new(replica)),
            recovery: Mutex::new(None),
            supervisor: Mutex::new(None),
            stall_timeout: setup.stall_timeout,
            disk: setup.disk.clone(),
        });
        let supervisor = tokio::spawn(partition.clone().supervise(setup));
        *partition.supervisor.lock().expect("the supervisor handle lock is never poisoned") = Some(supervisor);
        Ok(partition)
    }

    fn replica(&self) -> Arc<Replica> {
        self.replica.read().expect("the replica is replaced in one step").clone()
    }

    /// The raft group member of the current incarnation.
    pub fn raft(&self) -> Raft {
        self.replica().raft.clone()
    }

    fn note_recovery(&self, update: impl FnOnce(&mut Option<Recovery>)) {
        update(&mut self.recovery.lock().expect("the recovery note is never left half-written"));
    }

    /// Restarts the replica in place whenever it stops working, once the disk has room (see the
    /// module docs); ends with the broker's shutdown.
    async fn supervise(self: Arc<Self>, setup: PartitionSetup) {
        let mut wait = SUPERVISE_EVERY;
        loop {
            tokio::select! {
                _ = setup.shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let replica = self.replica();
            let Some(cause) = replica.failure() else { continue };
            if setup.shutdown.is_cancelled() {
                return;
            }
            let waiting_for_disk = self.disk.check_restart(RESTART_MIN_FREE_BYTES).is_err();
            self.note_recovery(|recovery| {
                let recovery = recovery.get_or_insert_with(|| {
                    tracing::error!(partition = self.id, %cause, "the partition replica stopped working");
                    Recovery { cause, waiting_for_disk, failed_restarts: 0, last_error: None }
                });
                recovery.waiting_for_disk = waiting_for_disk;
            });
            if waiting_for_disk {
                continue;
            }
            tracing::warn!(partition = self.id, "restarting the partition replica in place");
            let started = Instant::now();
            replica.stop(self.id).await;
            match Replica::start(&setup).await {
                Ok(restarted) => {
                    *self.replica.write().expect("the replica is replaced in one step") = Arc::new(restarted);
                    self.note_recovery(|recovery| *recovery = None);
                    setup.metrics.replica_restarts.with_label_values(&[&self.id.to_string()]).inc();
                    tracing::info!(partition = self.id, took = ?started.elapsed(), "the partition replica restarted");
                    wait = SUPERVISE_EVERY;
                }
                Err(e) => {
                    tracing::error!(partition = self.id, error = %e, "restarting the partition replica failed");
                    self.note_recovery(|recovery| {
                        if let Some(recovery) = recovery {
                            recovery.failed_restarts += 1;
                            recovery.last_error = Some(e.to_string());
                        }
                    });
                    wait = (wait * 2).min(RESTART_BACKOFF_MAX);
                }
            }
        }
    }

    /// Stops the supervisor, then raft and the driver, and waits until the database is closed, so
    /// that the same data directory can be opened again at once. Called once the broker's shutdown
    /// token is cancelled.
    pub async fn stop(&self) {
        let supervisor = self.supervisor.lock().expect("the supervisor handle lock is never poisoned").take();
        if let Some(supervisor) = supervisor {
            let _ = supervisor.await;
        }
        self.replica().stop(self.id).await;
    }

    /// Runs a client command on this partition if it leads, and waits for the answer. A command
    /// with a `request` id that the partition still remembers gets the answer it got before.
    pub async fn execute(&self, command: ClientCommand, request: Option<RequestId>) -> BrokerReply {
        let (reply, answer) = oneshot::channel();
        self.submit(Input::Client(command), Some(reply), request)?;
        answer
            .await
            .map_err(|_| BrokerError::NotLeader { partition_id: self.id, leader: self.leader().map(u64::from) })?
    }

    /// Queues a message from another partition; it needs no answer.
    pub fn deliver(&self, message: PartitionMessage) -> Result<(), BrokerError> {
        self.submit(Input::Partition(message), None, None)
    }

    fn submit(
        &self,
        input: Input,
        reply: Option<oneshot::Sender<BrokerReply>>,
        request: Option<RequestId>,
    ) -> Result<(), BrokerError> {
        if leads_without_quorum(&self.replica().raft.metrics().borrow()) {
            return Err(BrokerError::NotLeader { partition_id: self.id, leader: None });
        }
        if self.leader() != Some(self.node_id as u32) {
            return Err(BrokerError::NotLeader { partition_id: self.id, leader: self.leader().map(u64::from) });
        }
        if let (Input::Client(_), Err((free_bytes, watermark_bytes))) = (&input, self.disk.check()) {
            return Err(BrokerError::DiskSpaceLow { free_bytes, watermark_bytes });
        }
        let submission = Submission { input, reply, request, received: Instant::now() };
        self.replica().queue.try_send(submission).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => BrokerError::Backpressure { partition_id: self.id },
            mpsc::error::TrySendError::Closed(_) => BrokerError::ShuttingDown,
        })
    }

    /// Whether this replica may write to its log now: not while its disk is below the replication
    /// watermark (see [`crate::disk`]).
    pub fn log_space(&self) -> Result<(), BrokerError> {
        self.disk
            .check_replication()
            .map_err(|(free_bytes, watermark_bytes)| BrokerError::LogSpaceLow { free_bytes, watermark_bytes })
    }

    pub fn leader(&self) -> Option<u32> {
        self.replica().raft.metrics().borrow().current_leader.map(|l| l as u32)
    }

    pub fn committed_index(&self) -> u64 {
        self.replica().committed.load(Ordering::Relaxed)
    }

    pub fn info(&self) -> PartitionInfo {
        let replica = self.replica();
        let metrics = replica.raft.metrics().borrow().clone();
        let cut_off = leads_without_quorum(&metrics);
        let role = match metrics.state {
            openraft::ServerState::Leader if cut_off => PartitionRole::Follower,
            openraft::ServerState::Leader => PartitionRole::Leader,
            openraft::ServerState::Follower | openraft::ServerState::Candidate | openraft::ServerState::Learner => {
                PartitionRole::Follower
            }
            openraft::ServerState::Shutdown => PartitionRole::Inactive,
        };
        let stalled_ms = (now_millis() as u64).saturating_sub(replica.driver_beat.load(Ordering::Relaxed));
        let recovery = self.recovery.lock().expect("the recovery note is never left half-written").clone();
        let (health, problem) = match (&metrics.running_state, metrics.state, metrics.current_leader) {
            _ if recovery.is_some() => recovery.map_or((PartitionHealth::Healthy, None), Recovery::health),
            // The supervisor notices within a second and takes over the report.
            (Err(fatal), ..) => (PartitionHealth::Unhealthy, Some(format!("raft stopped: {fatal}"))),
            (_, openraft::ServerState::Shutdown, _) => {
                (PartitionHealth::Unhealthy, Some("raft is shut down".to_string()))
            }
            _ if stalled_ms > self.stall_timeout.as_millis() as u64 => (
                PartitionHealth::Dead,
                Some(format!(
                    "stuck: the partition has made no progress for {stalled_ms} ms (stall-timeout is {} ms)",
                    self.stall_timeout.as_millis()
                )),
            ),
            (_, _, None) => (
                PartitionHealth::Unhealthy,
                Some("no leader is known (an election is running, or too few replicas are reachable)".to_string()),
            ),
            (_, openraft::ServerState::Leader, _)
                if metrics.millis_since_quorum_ack.is_none_or(|ms| ms > QUORUM_LOST_AFTER_MS) =>
            {
                let since = metrics.millis_since_quorum_ack.map_or("ever".to_string(), |ms| format!("{ms} ms"));
                (
                    PartitionHealth::Unhealthy,
                    Some(format!("leading, but no quorum of replicas has answered for {since}: it cannot commit")),
                )
            }
            _ => (PartitionHealth::Healthy, None),
        };
        PartitionInfo {
            partition_id: self.id,
            role,
            health,
            problem,
            leader: if cut_off { None } else { metrics.current_leader.map(|l| l as u32) },
            term: metrics.current_term,
        }
    }
}

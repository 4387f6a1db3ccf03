//! A seeded fault campaign: round after round of randomly chosen faults against a three-broker
//! cluster under load, closed by the ledger check of the failover tests.
//!
//! The failover tests in `cluster.rs` each inject one fault, chosen by hand. Faults in production
//! come in any order and hit whatever state the previous one left: a broker that is still catching
//! up, a leader elected a second ago, a gateway that just lost every connection. The campaign draws
//! faults and their targets from a seeded PRNG, so that any sequence it finds broken can be replayed:
//!
//! - `kill -9` of a broker (the leader of a partition or a follower), restarted after the hold;
//! - `SIGSTOP` of a broker, continued (`SIGCONT`) after the hold: a process that stops without
//!   dying, as in a long pause, and wakes up with stale beliefs;
//! - isolation of a broker from its peers through the fault proxy, healed after the hold;
//! - `kill -9` of the gateway, restarted after the hold;
//! - two brokers down at once (`kill -9` of a partition's leader and of one other broker): no
//!   partition has a quorum until both are back;
//! - a full disk on one designated broker: a ballast file takes real blocks until the broker is below
//!   both of its watermarks (it refuses commands and writes nothing more to its log), and is removed
//!   after the hold. Only that broker has watermarks set, relative to the free space measured at
//!   the start, so the real disk never fills and the other brokers are not affected.
//!
//! Each round observes the roles, resolves the drawn plan into targets (the same seed and the same
//! roles give the same targets), applies the fault under load, holds it 1 to 5 s, heals it, and
//! measures the time until creations are acknowledged on every partition again (time to recover),
//! then waits until every broker has applied what the leaders had committed, so that the next round
//! starts from a whole cluster. A round that does not recover within its limit fails loudly, and the
//! campaign goes on to show whether the cluster heals later; a broker that exits by itself ends the
//! campaign at once. At the end the load drains and the ledger is checked: no acknowledged creation
//! lost, no instance key handed out twice, no job activated after its completion was acknowledged,
//! every acknowledged instance finished.
//!
//! `WAGGLE_FAULT_SEED` (default: from the clock) and `WAGGLE_FAULT_ROUNDS` (default 3, which keeps
//! `cargo test` short) choose the run; the seed is printed first. `scripts/fault-campaign.sh` runs
//! long campaigns and replays seeds.

// The harness serves the failover tests too; this binary uses only part of it.
#[allow(dead_code)]
mod cluster_support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cluster_support::checks::{
    assert_one_leader_per_term, drain_and_check, try_leader_commit_indexes, try_wait_until_applied,
};
use cluster_support::workload::{start_load, Workload};
use cluster_support::{Cluster, ClusterOptions, Network, BROKERS, PARTITIONS};

const DEFAULT_ROUNDS: usize = 3;
/// Longest and shortest hold of a fault, in tenths of a second.
const HOLD_TENTHS: (u64, u64) = (10, 50);
/// How long after healing creations must be acknowledged on every partition again.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);
/// How long after recovering every broker must have applied what the leaders had committed.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(60);
/// How long a round waits for a leader on every partition before it draws its targets.
const LEADERS_LIMIT: Duration = Duration::from_secs(30);
/// Rounds in a row that may fail before the campaign stops drawing new ones.
const MAX_FAILED_IN_A_ROW: usize = 3;
/// How often the brokers' raft gauges are checked for two leaders in one term while a fault holds.
const SAFETY_SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// The broker whose disk fills up.
const DISK_BROKER: usize = BROKERS - 1;
const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;
/// The disk broker's watermarks sit this far below the free space measured at the start. The file
/// system is shared with whatever else runs on the machine (a build writes gigabytes), so the
/// margin is wide enough that the broker does not cross a watermark without the ballast.
const COMMANDS_HEADROOM: u64 = 2 * GIB;
const REPLICATION_HEADROOM: u64 = 2 * GIB + 256 * MIB;
/// The ballast leaves the free space this far below the start's: 256 MiB under the replication
/// watermark, whatever else was written or deleted since.
const BALLAST_DEPTH: u64 = 2 * GIB + 512 * MIB;
/// Free space the disk fault needs at the start; below it, disk rounds are skipped, not run.
const DISK_FAULT_MIN_FREE: u64 = BALLAST_DEPTH + 4 * GIB;
/// How long the disk broker may take to notice the ballast (it samples every second).
const DISK_NOTICE_LIMIT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_fault_rounds_lose_no_acknowledged_work() {
    let seed = env_or("WAGGLE_FAULT_SEED", clock_seed);
    let rounds = env_or("WAGGLE_FAULT_ROUNDS", || DEFAULT_ROUNDS as u64) as usize;
    eprintln!(
        "fault campaign seed={seed} rounds={rounds} (replay: scripts/fault-campaign.sh --seed {seed} --rounds {rounds})"
    );
    let disk = Disk::measure(&std::env::temp_dir());
    let mut options = ClusterOptions::new(Network::Proxied);
    for node in 0..BROKERS {
        let (commands, replication) = match &disk {
            Some(disk) if node == DISK_BROKER => (disk.commands_watermark(), disk.replication_watermark()),
            _ => (0, 0),
        };
        options = options.broker_args(
            node,
            &[
                "--min-free-disk-bytes",
                &commands.to_string(),
                "--replication-min-free-disk-bytes",
                &replication.to_string(),
            ],
        );
    }
    let mut cluster = Cluster::start_with(options).await;
    match &disk {
        Some(disk) => cluster.clock.note(format!(
            "{} MiB free at the start; broker {DISK_BROKER} refuses commands below {} MiB and stops writing its log \
             below {} MiB",
            disk.free_at_start / MIB,
            disk.commands_watermark() / MIB,
            disk.replication_watermark() / MIB
        )),
        None => cluster
            .clock
            .note(format!("less than {} MiB free: disk-full rounds will be skipped", DISK_FAULT_MIN_FREE / MIB)),
    }
    let workload = start_load(&cluster).await;

    let mut plans = Prng(seed);
    let mut tally: BTreeMap<FaultKind, Tally> = BTreeMap::new();
    let mut failed_in_a_row = 0;
    for round in 1..=rounds {
        let draw = Draw::new(&mut Prng(plans.next_u64()));
        let leaders = cluster.wait_for_leaders(None, LEADERS_LIMIT).await;
        let plan = draw.resolve(&leaders);
        let skipped = plan.kind == FaultKind::DiskFull && disk.is_none();
        cluster.clock.note(format!(
            "round {round}/{rounds}: {}{}",
            plan.description,
            if skipped { " (skipped: not enough free disk space)" } else { "" }
        ));
        if skipped {
            continue;
        }
        let outcome = run_round(&mut cluster, &workload, &plan, disk.as_ref()).await;
        let exited = cluster.exited_brokers();
        assert!(exited.is_empty(), "round {round} (seed {seed}): brokers exited by themselves: {exited:?}");
        if let Some(status) = cluster.gateway_exit() {
            panic!("round {round} (seed {seed}): the gateway exited by itself with {status}");
        }
        let entry = tally.entry(plan.kind).or_default();
        entry.rounds += 1;
        for (kind, count) in outcome.failed_requests {
            *entry.failed_requests.entry(kind).or_default() += count;
        }
        if let Some(served) = outcome.served_during {
            cluster.clock.note(format!(
                "every partition acknowledged creations during the fault, {:.2} s after it began",
                served.as_secs_f64()
            ));
            entry.served_during.push(served);
        }
        match outcome.result {
            Ok(recovered) => {
                cluster.clock.note(format!(
                    "round {round}/{rounds} survived: creations on every partition {:.2} s after healing",
                    recovered.as_secs_f64()
                ));
                entry.survived += 1;
                entry.recoveries.push(recovered);
                failed_in_a_row = 0;
            }
            Err(problem) => {
                cluster.clock.note(format!("ROUND {round}/{rounds} FAILED ({}): {problem}", plan.description));
                cluster.clock.note(format!(
                    "leaders in the Topology (partition → brokers): {:?}; raft gauges (broker → partition → \
                     gauges): {:?}",
                    cluster.leader_claims().await,
                    cluster.raft_gauges_of_all().await
                ));
                for node in 0..BROKERS {
                    cluster.clock.note(format!("broker {node} /health/live: {:?}", cluster.liveness(node).await));
                }
                entry.failures.push(format!("round {round}: {}: {problem}", plan.description));
                failed_in_a_row += 1;
                if failed_in_a_row == MAX_FAILED_IN_A_ROW {
                    cluster.clock.note(format!("{MAX_FAILED_IN_A_ROW} rounds in a row failed: no further rounds"));
                    break;
                }
            }
        }
    }

    let table = report(seed, rounds, &tally);
    eprintln!("{table}");
    drain_and_check(&cluster, workload).await;
    assert_eq!(cluster.exited_brokers(), vec![], "no broker may exit by itself");
    let failures: Vec<&String> = tally.values().flat_map(|t| &t.failures).collect();
    assert!(failures.is_empty(), "seed {seed}: {} rounds failed:\n{failures:#?}\n{table}", failures.len());
    cluster.clock.note(format!("seed {seed}: every round recovered and the ledger holds"));
}

/// The PRNG draws of one round, made before the roles are known so that every round draws the same
/// numbers whatever the cluster looks like.
#[derive(Debug, PartialEq)]
struct Draw {
    kind: FaultKind,
    partition: u32,
    /// The leader of `partition` rather than one of its followers.
    leader: bool,
    /// Which of the other brokers (in node order): the follower, or the second broker to go down.
    other: usize,
    hold: Duration,
}

impl Draw {
    fn new(prng: &mut Prng) -> Draw {
        let kind = FaultKind::ALL[prng.below(FaultKind::ALL.len() as u64) as usize];
        let partition = 1 + prng.below(u64::from(PARTITIONS)) as u32;
        let leader = prng.below(2) == 0;
        let other = prng.below(BROKERS as u64 - 1) as usize;
        let tenths = HOLD_TENTHS.0 + prng.below(HOLD_TENTHS.1 - HOLD_TENTHS.0 + 1);
        Draw { kind, partition, leader, other, hold: Duration::from_millis(100 * tenths) }
    }

    /// Turns the draw into brokers, given who leads each partition.
    fn resolve(&self, leaders: &BTreeMap<u32, usize>) -> Plan {
        let leader = leaders[&self.partition];
        let others: Vec<usize> = (0..BROKERS).filter(|node| *node != leader).collect();
        let follower = others[self.other];
        let led_by = |node: usize| leaders.iter().filter(|(_, l)| **l == node).map(|(p, _)| *p).collect::<Vec<u32>>();
        let (target, role) = if self.leader {
            (leader, format!("leader of partition {}", self.partition))
        } else {
            (follower, format!("follower of partition {}", self.partition))
        };
        let hold = format!("for {:.1} s", self.hold.as_secs_f64());
        let (targets, description) = match self.kind {
            FaultKind::Kill => (vec![target], format!("kill -9 broker {target} ({role}) {hold}")),
            FaultKind::Pause => (vec![target], format!("SIGSTOP broker {target} ({role}) {hold}")),
            FaultKind::Isolate => (vec![target], format!("isolate broker {target} ({role}) {hold}")),
            FaultKind::GatewayKill => (vec![], format!("kill -9 the gateway {hold}")),
            FaultKind::TwoDown => (
                vec![leader, follower],
                format!("kill -9 brokers {leader} (leader of partition {}) and {follower} {hold}", self.partition),
            ),
            FaultKind::DiskFull => {
                let led = led_by(DISK_BROKER);
                let role = if led.is_empty() { "leads no partition".into() } else { format!("leads {led:?}") };
                (vec![DISK_BROKER], format!("fill the disk of broker {DISK_BROKER} ({role}) {hold}"))
            }
        };
        Plan { kind: self.kind, targets, hold: self.hold, description }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum FaultKind {
    Kill,
    Pause,
    Isolate,
    GatewayKill,
    TwoDown,
    DiskFull,
}

impl FaultKind {
    const ALL: [FaultKind; 6] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Isolate,
        FaultKind::GatewayKill,
        FaultKind::TwoDown,
        FaultKind::DiskFull,
    ];

    fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill -9 broker",
            FaultKind::Pause => "SIGSTOP broker",
            FaultKind::Isolate => "isolate broker",
            FaultKind::GatewayKill => "kill -9 gateway",
            FaultKind::TwoDown => "two brokers down",
            FaultKind::DiskFull => "disk full",
        }
    }
}

/// One round's fault with its targets resolved.
struct Plan {
    kind: FaultKind,
    targets: Vec<usize>,
    hold: Duration,
    description: String,
}

struct Outcome {
    /// Time from healing until creations were acknowledged on every partition, or what went wrong.
    result: Result<Duration, String>,
    /// Time from the fault until creations were acknowledged on every partition, if that happened
    /// before it was healed: the cluster worked around the fault.
    served_during: Option<Duration>,
    /// Requests the load saw fail from the fault until the cluster had caught up, by RPC and code.
    failed_requests: BTreeMap<String, usize>,
}

/// What the rounds of one fault kind came to.
#[derive(Default)]
struct Tally {
    rounds: usize,
    survived: usize,
    failed_requests: BTreeMap<String, usize>,
    recoveries: Vec<Duration>,
    served_during: Vec<Duration>,
    failures: Vec<String>,
}

async fn run_round(cluster: &mut Cluster, workload: &Workload, plan: &Plan, disk: Option<&Disk>) -> Outcome {
    let failed_before = workload.failed_requests();
    let mut served_during = None;
    let result = apply_hold_heal(cluster, workload, plan, disk, &mut served_during).await;
    let mut failed_requests = workload.failed_requests();
    for (kind, count) in failed_requests.iter_mut() {
        *count -= failed_before.get(kind).copied().unwrap_or(0);
    }
    failed_requests.retain(|_, count| *count > 0);
    Outcome { result, served_during, failed_requests }
}

async fn apply_hold_heal(
    cluster: &mut Cluster,
    workload: &Workload,
    plan: &Plan,
    disk: Option<&Disk>,
    served_during: &mut Option<Duration>,
) -> Result<Duration, String> {
    let mut ballast = None;
    let applied = Instant::now();
    match plan.kind {
        FaultKind::Kill | FaultKind::TwoDown => plan.targets.iter().for_each(|node| cluster.kill(*node)),
        FaultKind::Pause => cluster.pause(plan.targets[0]),
        FaultKind::Isolate => cluster.isolate(plan.targets[0]),
        FaultKind::GatewayKill => cluster.kill_gateway(),
        FaultKind::DiskFull => {
            let disk = disk.expect("disk rounds run only when the disk was measured");
            ballast = Some(Ballast::take(cluster.dir(), disk));
            let noticed = wait_until_disk_full(cluster, disk).await?;
            cluster.clock.note(format!("broker {DISK_BROKER} {noticed}"));
        }
    }
    let held = Instant::now();
    while held.elapsed() < plan.hold {
        // The gateway may be down, so the brokers are asked directly. A paused broker answers no
        // scrape: the sample is cut short rather than the hold made longer.
        let left = plan.hold.saturating_sub(held.elapsed());
        if let Ok(gauges) = tokio::time::timeout(left, cluster.raft_gauges_of_all()).await {
            assert_one_leader_per_term(&gauges);
        }
        tokio::time::sleep(SAFETY_SAMPLE_EVERY.min(plan.hold.saturating_sub(held.elapsed()))).await;
    }
    let firsts = workload.first_creations_since(applied);
    if firsts.len() as u32 == PARTITIONS {
        *served_during = firsts.values().max().map(|last| last.duration_since(applied));
    }
    let healing = Instant::now();
    match plan.kind {
        FaultKind::Kill => cluster.restart(plan.targets[0]).await,
        FaultKind::TwoDown => cluster.restart_all(&plan.targets).await,
        FaultKind::Pause => cluster.resume(plan.targets[0]),
        FaultKind::Isolate => cluster.heal(),
        FaultKind::GatewayKill => cluster.restart_gateway().await,
        FaultKind::DiskFull => {
            drop(ballast);
            cluster.clock.note(format!("removed the ballast from broker {DISK_BROKER}'s disk"));
        }
    }
    let recovered = workload.try_wait_for_creations_on_every_partition(healing, PARTITIONS, RECOVERY_LIMIT).await?;
    let caught_up = wait_until_caught_up(cluster).await?;
    cluster.clock.note(format!("every broker applied what its leaders had committed {caught_up:.2?} after recovering"));
    Ok(recovered)
}

/// Waits until every broker has applied what the leaders had committed when this was called.
async fn wait_until_caught_up(cluster: &Cluster) -> Result<Duration, String> {
    let started = Instant::now();
    let committed = loop {
        match try_leader_commit_indexes(cluster).await {
            Ok(committed) => break committed,
            Err(e) if started.elapsed() >= CATCH_UP_LIMIT => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    for node in 0..BROKERS {
        let left = CATCH_UP_LIMIT.saturating_sub(started.elapsed());
        try_wait_until_applied(cluster, node, &committed, left).await?;
    }
    Ok(started.elapsed())
}

/// Waits until the disk broker reports less free space than its replication watermark.
async fn wait_until_disk_full(cluster: &Cluster, disk: &Disk) -> Result<String, String> {
    let started = Instant::now();
    loop {
        let free = cluster.metrics(DISK_BROKER).await.ok().and_then(|text| disk_free_bytes(&text));
        if let Some(free) = free.filter(|free| *free < disk.replication_watermark()) {
            return Ok(format!("sees {} MiB free after {:.1?}", free / MIB, started.elapsed()));
        }
        if started.elapsed() >= DISK_NOTICE_LIMIT {
            return Err(format!(
                "broker {DISK_BROKER} still reports {:?} MiB free {DISK_NOTICE_LIMIT:?} after the ballast went in \
                 (replication watermark {} MiB)",
                free.map(|f| f / MIB),
                disk.replication_watermark() / MIB
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `waggle_disk_free_bytes` out of a broker's metrics.
fn disk_free_bytes(metrics: &str) -> Option<u64> {
    metrics.lines().find_map(|line| line.strip_prefix("waggle_disk_free_bytes ")).and_then(|v| v.trim().parse().ok())
}

/// The free space of the file system the cluster's directories are on, measured at the start.
struct Disk {
    free_at_start: u64,
}

impl Disk {
    /// `None` when there is too little room to take the ballast without coming near a full disk.
    fn measure(dir: &Path) -> Option<Disk> {
        let free_at_start = free_bytes(dir);
        (free_at_start >= DISK_FAULT_MIN_FREE).then_some(Disk { free_at_start })
    }

    fn commands_watermark(&self) -> u64 {
        self.free_at_start - COMMANDS_HEADROOM
    }

    fn replication_watermark(&self) -> u64 {
        self.free_at_start - REPLICATION_HEADROOM
    }
}

/// Free bytes on the file system holding `dir`, as the brokers measure them.
// The field types differ between platforms.
#[allow(clippy::unnecessary_cast)]
fn free_bytes(dir: &Path) -> u64 {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).expect("a path without NUL bytes");
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a valid NUL-terminated path and a writable buffer, read only after success.
    let result = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    assert_eq!(result, 0, "statvfs {}: {}", dir.display(), std::io::Error::last_os_error());
    // SAFETY: statvfs succeeded, so it filled the buffer.
    let stat = unsafe { stat.assume_init() };
    (stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64)
}

/// A file that takes real blocks of the disk (fallocate, not a sparse file) until it is dropped.
struct Ballast(PathBuf);

impl Ballast {
    /// Takes enough space to leave the free space [`BALLAST_DEPTH`] below the start's.
    fn take(dir: &Path, disk: &Disk) -> Ballast {
        let path = dir.join("ballast");
        let bytes = free_bytes(dir).saturating_sub(disk.free_at_start - BALLAST_DEPTH);
        let file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        let ballast = Ballast(path);
        if bytes > 0 {
            let length = libc::off_t::try_from(bytes).expect("the ballast's size fits in off_t");
            // SAFETY: a valid open file descriptor; fallocate only reserves blocks for it.
            let allocated = unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&file), 0, 0, length) };
            assert_eq!(allocated, 0, "fallocate of {} MiB: {}", bytes / MIB, std::io::Error::last_os_error());
        }
        ballast
    }
}

impl Drop for Ballast {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// splitmix64: small, fast, and the same on every platform, which is all a replayable plan needs.
struct Prng(u64);

impl Prng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `bound` (the modulo bias is negligible for the small bounds used here).
    fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

/// `name`'s value from the environment, or `default()` when it is not set.
fn env_or(name: &str, default: impl FnOnce() -> u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value.trim().parse().unwrap_or_else(|e| panic!("{name}={value:?} is not a number: {e}")),
        Err(_) => default(),
    }
}

/// A seed from the clock, kept to six digits so that it is easy to copy.
fn clock_seed() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970").as_nanos();
    Prng(nanos as u64).next_u64() % 1_000_000
}

/// The per-fault table.
fn report(seed: u64, rounds: usize, tally: &BTreeMap<FaultKind, Tally>) -> String {
    let seconds = |d: &Duration| format!("{:.2}", d.as_secs_f64());
    let mut table = format!(
        "fault campaign seed={seed} rounds={rounds}\n\
         {:<17} {:>6} {:>8} {:>8}   {:<26} {}\n",
        "fault", "rounds", "survived", "failed", "recovery s (min/med/max)", "served during the fault (rounds, max s)"
    );
    for (kind, t) in tally {
        let mut times = t.recoveries.clone();
        times.sort();
        let recovery = match (times.first(), times.last()) {
            (Some(min), Some(max)) => {
                format!("{} / {} / {}", seconds(min), seconds(&times[times.len() / 2]), seconds(max))
            }
            _ => "-".into(),
        };
        let served = match t.served_during.iter().max() {
            Some(max) => format!("{} of {}, {}", t.served_during.len(), t.rounds, seconds(max)),
            None => format!("0 of {}", t.rounds),
        };
        let failed: usize = t.failed_requests.values().sum();
        let _ = writeln!(
            table,
            "{:<17} {:>6} {:>8} {:>8}   {recovery:<26} {served}",
            kind.name(),
            t.rounds,
            t.survived,
            failed
        );
    }
    table.push_str("failed requests by fault, RPC and status code:\n");
    for (kind, t) in tally {
        let codes: Vec<String> = t.failed_requests.iter().map(|(code, n)| format!("{code} {n}")).collect();
        let codes = if codes.is_empty() { "none".into() } else { codes.join(", ") };
        let _ = writeln!(table, "  {}: {codes}", kind.name());
    }
    table
}

#[test]
fn the_same_seed_draws_the_same_faults() {
    let draws = |seed: u64| -> Vec<Draw> {
        let mut plans = Prng(seed);
        (0..50).map(|_| Draw::new(&mut Prng(plans.next_u64()))).collect()
    };
    assert_eq!(draws(1234), draws(1234));
    assert_ne!(draws(1234), draws(1235));
    let kinds: std::collections::BTreeSet<FaultKind> = draws(1234).iter().map(|d| d.kind).collect();
    assert_eq!(kinds.len(), FaultKind::ALL.len(), "fifty rounds draw every kind of fault");
    let leaders = BTreeMap::from([(1, 0), (2, 1), (3, 2)]);
    let descriptions = |seed| draws(seed).iter().map(|d| d.resolve(&leaders).description).collect::<Vec<_>>();
    assert_eq!(descriptions(99), descriptions(99));
}

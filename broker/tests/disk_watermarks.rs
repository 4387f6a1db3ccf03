//! Brokers on a disk that really fills up: a ballast file takes the space (fallocate reserves real
//! blocks), and removing it gives the space back. Each watermark sits 512 MiB below the free space
//! at the start, so other writers on the same disk cannot cross it by accident, and the 1 GiB
//! ballast crosses it for sure. Nothing is restarted: the brokers must resume by themselves.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{create, deploy, execute, execute_until, http_get};
use tokio_util::sync::CancellationToken;
use waggle_broker::{BrokerConfig, RunningBroker};
use waggle_protocol::command::{BrokerError, ClientCommand, CommandResult};

const MIB: u64 = 1024 * 1024;

/// The value of the metric line that starts with `series` (a name, with its labels if it has any).
async fn metric(broker: &RunningBroker, series: &str) -> i64 {
    let text = http_get(broker.management_addr, "/metrics").await;
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{series} is missing from the metrics"))
        .trim()
        .parse()
        .expect("an integer metric")
}

/// Free bytes on the file system holding `dir`, as the broker measures them.
fn free_bytes(dir: &Path) -> u64 {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a valid NUL-terminated path and a writable buffer, read only after success.
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) }, 0);
    // SAFETY: statvfs succeeded, so it filled the buffer.
    let stat = unsafe { stat.assume_init() };
    stat.f_bavail * stat.f_frsize
}

/// A file that really takes `bytes` of the disk until it is dropped.
struct Ballast(PathBuf);

impl Ballast {
    fn take(dir: &Path, bytes: u64) -> Ballast {
        let path = dir.join("ballast");
        let file = std::fs::File::create(&path).unwrap();
        // SAFETY: a valid open file descriptor; fallocate reserves blocks, unlike a sparse file.
        let allocated = unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&file), 0, 0, bytes as i64) };
        assert_eq!(allocated, 0, "fallocate: {}", std::io::Error::last_os_error());
        Ballast(path)
    }
}

impl Drop for Ballast {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A watermark 512 MiB below the free space now, after checking there is room for the ballast.
fn watermark_below_free_space(dir: &Path) -> u64 {
    let free = free_bytes(dir);
    assert!(free > 2048 * MIB, "these tests need 2 GiB free on {}", dir.display());
    free - 512 * MIB
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_free_disk_watermark_commands_are_refused_saying_why_and_resume_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let watermark = watermark_below_free_space(dir.path());
    let any = "127.0.0.1:0".parse().unwrap();
    let config = BrokerConfig {
        min_free_disk_bytes: watermark,
        replication_min_free_disk_bytes: 0,
        ..BrokerConfig::single_node(dir.path().join("data"), any, any)
    };
    let shutdown = CancellationToken::new();
    let broker = waggle_broker::start(config, shutdown.clone()).await.unwrap();
    let addr = broker.command_addr;
    let deployed = execute_until(addr, &deploy(), Duration::from_secs(10), Result::is_ok).await;
    assert!(matches!(deployed, Ok(CommandResult::Deployed { .. })), "{deployed:?}");

    let ballast = Ballast::take(dir.path(), 1024 * MIB);
    let refusal =
        execute_until(addr, &create(), Duration::from_secs(10), |r| matches!(r, Err(BrokerError::DiskSpaceLow { .. })))
            .await;
    let Err(error @ BrokerError::DiskSpaceLow { free_bytes, watermark_bytes }) = refusal else {
        panic!("expected a refusal for low disk space within 10 s of filling the disk, got {refusal:?}")
    };
    assert_eq!(watermark_bytes, watermark);
    assert!(free_bytes < watermark, "the free space is measured: {free_bytes}");
    assert!(error.to_string().contains("min_free_disk_bytes"), "{error}");
    let gauge = metric(&broker, "waggle_disk_free_bytes").await;
    assert!(gauge > 0 && (gauge as u64) < watermark, "the gauge shows the low free space: {gauge}");

    drop(ballast);
    let resumed = execute_until(addr, &create(), Duration::from_secs(10), Result::is_ok).await;
    assert!(
        matches!(resumed, Ok(CommandResult::ProcessInstanceCreated(_))),
        "commands are taken again once space is freed, without a restart: {resumed:?}"
    );
    shutdown.cancel();
    broker.stopped.await.unwrap();
}

/// Loopback addresses that were free a moment ago, for brokers that must know each other's
/// addresses before any of them starts.
fn free_addresses(count: usize) -> Vec<SocketAddr> {
    let listeners: Vec<_> = (0..count).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

/// Runs `command` on whichever of `brokers` leads partition 1, waiting up to 20 s for one to.
async fn run_on_the_leader(brokers: &[RunningBroker], command: &ClientCommand) -> CommandResult {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for broker in brokers {
            match execute(broker.command_addr, command).await {
                Ok(result) => return result,
                Err(BrokerError::NotLeader { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert!(Instant::now() < deadline, "no leader among the brokers after 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Three brokers, one partition on all three. The first broker's disk drops below its replication
/// watermark. It stands for election first at start-up, so it most likely leads: it must give up
/// leading (and not stand again) while it cannot write, the other two go on committing, and once
/// the space is back it catches up by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_below_the_replication_watermark_neither_leads_nor_takes_entries_and_catches_up_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let watermark = watermark_below_free_space(dir.path());
    let internal = free_addresses(3);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = |node_id: u32, watermark: u64| BrokerConfig {
        node_id,
        cluster_size: 3,
        replication_factor: 3,
        peers: internal.iter().map(ToString::to_string).collect(),
        internal_addr: internal[node_id as usize],
        min_free_disk_bytes: watermark,
        replication_min_free_disk_bytes: watermark,
        ..BrokerConfig::single_node(dir.path().join(format!("broker-{node_id}")), any, any)
    };
    let shutdown = CancellationToken::new();
    let mut brokers = Vec::new();
    for (node_id, watermark) in [(0, watermark), (1, 0), (2, 0)] {
        brokers.push(waggle_broker::start(config(node_id, watermark), shutdown.clone()).await.unwrap());
    }
    run_on_the_leader(&brokers, &deploy()).await;
    let commit_index = "waggle_raft_commit_index{partition=\"1\"}";
    let last_log = "waggle_raft_last_log_index{partition=\"1\"}";
    let role = "waggle_raft_role{partition=\"1\"}";
    const LEADER: i64 = 2;

    let ballast = Ballast::take(dir.path(), 1024 * MIB);
    // The brokers sample their disk once a second; a new leader takes an election timeout.
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&brokers[0], role).await == LEADER {
        assert!(Instant::now() < deadline, "the low-disk broker still leads 20 s after its disk filled up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stalled_at = metric(&brokers[0], last_log).await;
    for _ in 0..20 {
        let created = run_on_the_leader(&brokers[1..], &create()).await;
        assert!(matches!(created, CommandResult::ProcessInstanceCreated(_)), "{created:?}");
    }
    let committed = metric(&brokers[1], commit_index).await.max(metric(&brokers[2], commit_index).await);
    assert!(committed >= stalled_at + 20, "two of three brokers commit on their own: {committed} vs {stalled_at}");
    assert_eq!(metric(&brokers[0], last_log).await, stalled_at, "the low-disk broker took no entries");
    assert_ne!(metric(&brokers[0], role).await, LEADER, "the low-disk broker did not lead again");

    drop(ballast);
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&brokers[0], last_log).await < committed {
        assert!(Instant::now() < deadline, "the first broker did not catch up within 20 s of freeing the disk");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    for broker in brokers {
        broker.stopped.await.unwrap();
    }
}

//! A disk that really fills up, past every watermark: RocksDB's writes fail with ENOSPC and the
//! partition's raft stops. Once the space is freed the broker must restart the replica in place,
//! without a process restart, and keep everything it acknowledged.
//!
//! The data directory lives on a small tmpfs of its own, so filling it up disturbs nothing else on
//! the machine. Mounting one needs root, as the operator's tests against the real API server do.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{create, deploy, execute, execute_until, http_get};
use tokio_util::sync::CancellationToken;
use waggle_broker::BrokerConfig;
use waggle_protocol::command::{ActivateJobs, BrokerReply, ClientCommand, CommandResult};

const MIB: u64 = 1024 * 1024;

/// A tmpfs mounted on a fresh directory for as long as it lives.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(bytes: u64) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a {bytes}-byte tmpfs on {} failed; this test needs root",
            dir.path().display()
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// A file that takes every free byte of a file system until dropped.
struct Filler(PathBuf);

impl Filler {
    fn fill(dir: &Path) -> Filler {
        use std::io::Write;
        let path = dir.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0xA5u8; 64 * 1024];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        let _ = file.sync_all();
        Filler(path)
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn created_key(reply: &BrokerReply) -> i64 {
    match reply {
        Ok(CommandResult::ProcessInstanceCreated(created)) => created.process_instance_key,
        other => panic!("expected an instance, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_by_a_full_disk_restarts_in_place_once_space_is_freed_and_keeps_what_it_acknowledged() {
    let disk = SmallDisk::mount(48 * MIB);
    let any = "127.0.0.1:0".parse().unwrap();
    let config = BrokerConfig {
        // No watermarks: the disk is to fill up for real.
        min_free_disk_bytes: 0,
        replication_min_free_disk_bytes: 0,
        ..BrokerConfig::single_node(disk.path().join("data"), any, any)
    };
    let shutdown = CancellationToken::new();
    let broker = waggle_broker::start(config, shutdown.clone()).await.unwrap();
    let deployed = execute_until(broker.command_addr, &deploy(), Duration::from_secs(10), Result::is_ok).await;
    assert!(matches!(deployed, Ok(CommandResult::Deployed { .. })), "{deployed:?}");
    let mut acknowledged: Vec<i64> = Vec::new();
    for _ in 0..5 {
        acknowledged.push(created_key(&execute(broker.command_addr, &create()).await));
    }

    let filler = Filler::fill(disk.path());
    // The log's appends now fail; the first failure stops raft.
    let deadline = Instant::now() + Duration::from_secs(30);
    let refusal = loop {
        match execute(broker.command_addr, &create()).await {
            Ok(CommandResult::ProcessInstanceCreated(created)) => acknowledged.push(created.process_instance_key),
            Ok(other) => panic!("{other:?}"),
            Err(error) => break error,
        }
        assert!(Instant::now() < deadline, "commands still succeed 30 s after the disk filled up");
    };
    eprintln!("after {} instances the broker answered: {refusal}", acknowledged.len());
    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let ready = http_get(broker.management_addr, "/health/ready").await;
        if ready.contains("restarts once the disk has room") || Instant::now() > deadline {
            break ready;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(ready.contains("503") && ready.contains("raft stopped"), "readiness says why: {ready}");
    assert!(ready.contains("restarts once the disk has room"), "readiness says what it waits for: {ready}");
    let live = http_get(broker.management_addr, "/health/live").await;
    assert!(live.contains("200 OK"), "a replica waiting for disk space is no reason to restart the broker: {live}");

    drop(filler);
    let resumed = execute_until(broker.command_addr, &create(), Duration::from_secs(30), Result::is_ok).await;
    acknowledged.push(created_key(&resumed));
    let metrics = http_get(broker.management_addr, "/metrics").await;
    assert!(
        metrics.contains("waggle_replica_restarts_total{partition=\"1\"} 1"),
        "the replica was restarted in place once: {}",
        metrics.lines().filter(|l| l.contains("restarts")).collect::<Vec<_>>().join("\n")
    );

    // Every acknowledged instance is still there: each has its job waiting.
    let activate = ClientCommand::ActivateJobs(ActivateJobs {
        job_type: "work".into(),
        worker: "test".into(),
        timeout: 60_000,
        max_jobs_to_activate: 10_000,
        fetch_variables: vec![],
        tenant_ids: vec![],
    });
    let Ok(CommandResult::JobsActivated { jobs }) = execute(broker.command_addr, &activate).await else {
        panic!("jobs can be activated after the restart")
    };
    let with_jobs: std::collections::HashSet<i64> = jobs.iter().map(|job| job.process_instance_key).collect();
    let lost: Vec<_> = acknowledged.iter().filter(|key| !with_jobs.contains(key)).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged instances are gone: {lost:?}", lost.len(), acknowledged.len());
    shutdown.cancel();
    broker.stopped.await.unwrap();
}

//! Failover of a three-broker cluster under load: what the cluster acknowledged survives a leader's
//! death and a leader's isolation, and the cluster keeps serving.
//!
//! Each test runs real `waggle` processes (three brokers, each replicating all three partitions, and
//! a standalone gateway; see `cluster_support`), drives steady load through the gateway's Zeebe API,
//! injects one fault, and then checks the acknowledged work against the ledger the load kept:
//!
//! - acknowledged process instance keys are unique: two leaders acknowledging writes for one
//!   partition would hand out the same key twice;
//! - every acknowledged instance finishes once the cluster is whole again;
//! - no job whose completion was acknowledged is ever activated again.
//!
//! The tests print a timeline (run with `--nocapture`); when one fails it prints the tail of every
//! process's log and keeps their data directory.

// The harness serves the fault campaign too; this binary uses only part of it.
#[allow(dead_code)]
mod cluster_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cluster_support::checks::{
    assert_one_leader_per_term, drain_and_check, highest_term_leaders, leader_commit_indexes, wait_until_applied,
};
use cluster_support::management::{RaftGauges, LEADER};
use cluster_support::workload::{start_load, LOAD_STEP, LOAD_STEP_LIMIT};
use cluster_support::{Cluster, Network, BROKERS, PARTITIONS, SNAPSHOT_INTERVAL};

/// The tests assert on timings and each runs four processes; two clusters at once would compete for
/// the same few cores, so the tests take turns.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long after a leader dies a new leader for every partition, and acknowledged creations on
/// every partition, must appear. Elections time out after 0.4 to 0.8 s.
const FAILOVER_LIMIT: Duration = Duration::from_secs(10);
/// How long a killed broker may stay down while waiting for the log to move past it.
const COMPACTION_LIMIT: Duration = Duration::from_secs(40);
const CATCH_UP_LIMIT: Duration = Duration::from_secs(30);
/// How long a leader stays isolated at least; longer if its partitions have no new leader yet.
const ISOLATION: Duration = Duration::from_secs(5);
/// Replies in flight when a leader is isolated may still commit entries; after this, nothing can.
const ISOLATION_SETTLE: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_work_survives_killing_a_leader() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(Network::Direct).await;
    let clock = cluster.clock;
    let workload = start_load(&cluster).await;

    let victim = cluster.wait_for_leaders(None, FAILOVER_LIMIT).await[&1];
    let at_kill = cluster.raft_gauges(victim).await.expect("the leader of partition 1 serves metrics");
    let killed = Instant::now();
    cluster.kill(victim);
    let leaders = cluster.wait_for_leaders(Some(victim), FAILOVER_LIMIT).await;
    clock.note(format!("new leaders {leaders:?} (partition → broker), {:?} after the kill", killed.elapsed()));
    let serving = workload.wait_for_creations_on_every_partition(killed, PARTITIONS, FAILOVER_LIMIT).await;
    clock.note(format!("creations acknowledged on every partition again {serving:?} after the kill"));

    // Keep broker `victim` down until the other replicas compacted their logs past its end, so that
    // it can only catch up by installing a snapshot.
    let compacted = wait_until_compacted_past(&cluster, victim, &at_kill).await;
    clock.note(format!(
        "the other replicas compacted every partition's log past broker {victim}'s end, {:?} after the kill; \
         partition → (broker {victim}'s last index, lowest purged index elsewhere): {compacted:?}",
        killed.elapsed()
    ));
    let restarted = Instant::now();
    cluster.restart(victim).await;
    let at_restart = leader_commit_indexes(&cluster).await;
    wait_until_applied(&cluster, victim, &at_restart, CATCH_UP_LIMIT).await;
    clock.note(format!(
        "broker {victim} applied what its leaders had committed at the restart ({at_restart:?}, partition → \
         index) {:?} after the restart",
        restarted.elapsed()
    ));
    workload.wait_for_more_creations(LOAD_STEP, LOAD_STEP_LIMIT).await;
    drain_and_check(&cluster, workload).await;

    let drained = leader_commit_indexes(&cluster).await;
    wait_until_applied(&cluster, victim, &drained, CATCH_UP_LIMIT).await;
    clock.note(format!("broker {victim} applied everything its leaders committed ({drained:?})"));
    let log = cluster.current_log(victim);
    assert!(
        log.contains("Done install complete snapshot"),
        "broker {victim} came back after its partitions' logs had been compacted past its own, so it \
         must have caught up by installing a snapshot, but its log since the restart shows no \
         `Done install complete snapshot` line from openraft"
    );
    clock.note(format!(
        "broker {victim} installed {} snapshot(s) after the restart",
        log.matches("Done install complete snapshot").count()
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_acknowledges_nothing_and_nothing_is_lost() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start(Network::Proxied).await;
    let clock = cluster.clock;
    let workload = start_load(&cluster).await;

    let leaders = cluster.wait_for_leaders(None, FAILOVER_LIMIT).await;
    let victim = leaders[&1];
    let led: Vec<u32> = leaders.iter().filter(|(_, node)| **node == victim).map(|(p, _)| *p).collect();
    cluster.isolate(victim);
    let isolated = Instant::now();
    let mut successors: BTreeMap<u32, (usize, Duration)> = BTreeMap::new();
    let mut settled: Option<BTreeMap<u32, RaftGauges>> = None;
    let (mut samples, mut stale_leader_samples, mut double_claim_samples) = (0, 0, 0);
    // When the Topology last named the isolated broker leader of a partition: it must stop claiming
    // leadership once it has not heard from a quorum for about an election timeout (check-quorum).
    let mut last_claim: Option<Duration> = None;
    let elected = |successors: &BTreeMap<u32, (usize, Duration)>| led.iter().all(|p| successors.contains_key(p));
    while isolated.elapsed() < ISOLATION || (!elected(&successors) && isolated.elapsed() < FAILOVER_LIMIT) {
        let claims = cluster.leader_claims().await.unwrap_or_default();
        double_claim_samples += usize::from(claims.values().any(|claimants| claimants.len() > 1));
        if claims.values().any(|claimants| claimants.contains(&victim)) {
            last_claim = Some(isolated.elapsed());
        }
        let gauges = cluster.raft_gauges_of_all().await;
        assert_one_leader_per_term(&gauges);
        let own = gauges.get(&victim).expect("an isolated broker still answers the test's metrics requests");
        stale_leader_samples += usize::from(own.values().any(|g| g.role == LEADER));
        for (partition, (node, _)) in highest_term_leaders(&gauges) {
            if node != victim && led.contains(&partition) {
                successors.entry(partition).or_insert((node, isolated.elapsed()));
            }
        }
        if isolated.elapsed() >= ISOLATION_SETTLE {
            let before = settled.get_or_insert_with(|| own.clone());
            // Without a quorum nothing commits, so nothing is applied and no client is answered.
            for (partition, now) in own {
                let before = &before[partition];
                assert_eq!(
                    (before.commit_index, before.applied_index),
                    (now.commit_index, now.applied_index),
                    "broker {victim}, cut off from its peers, committed or applied new entries of partition \
                     {partition} (commit index, applied index)"
                );
            }
        }
        samples += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    clock.note(format!(
        "while broker {victim} was isolated: {samples} samples, never two leaders in one term; broker {victim} \
         still called itself leader in {stale_leader_samples} of them and the Topology named two leaders for a \
         partition in {double_claim_samples}; new leaders (partition → broker, time after isolation) \
         {successors:?}; creations acknowledged on partitions {:?}",
        workload.partitions_creating_since(isolated)
    ));
    clock.note(format!("the Topology last named broker {victim} a leader {last_claim:?} after its isolation"));
    assert!(
        last_claim.is_none_or(|at| at < ISOLATION),
        "broker {victim}, cut off from its peers, still claimed leadership {last_claim:?} after its isolation"
    );
    cluster.heal();
    for partition in &led {
        assert!(
            successors.contains_key(partition),
            "the majority did not elect a new leader for partition {partition} within {FAILOVER_LIMIT:?} of its \
             leader (broker {victim}) being isolated"
        );
    }
    let healed = Instant::now();
    wait_for_single_leaders(&cluster).await;
    clock.note(format!("one leader per partition again, {:?} after healing", healed.elapsed()));
    workload.wait_for_more_creations(LOAD_STEP, LOAD_STEP_LIMIT).await;
    drain_and_check(&cluster, workload).await;
}

/// Waits until every other broker has compacted every partition's log past where `at_kill` (the
/// gauges `victim` reported just before it was killed) ended; returns, by partition, that end and the
/// lowest purged index among the other brokers.
async fn wait_until_compacted_past(
    cluster: &Cluster,
    victim: usize,
    at_kill: &BTreeMap<u32, RaftGauges>,
) -> BTreeMap<u32, (i64, i64)> {
    let started = Instant::now();
    loop {
        let gauges = cluster.raft_gauges_of_all().await;
        let others: Vec<_> = gauges.iter().filter(|(node, _)| **node != victim).map(|(_, g)| g).collect();
        let progress: BTreeMap<u32, (i64, i64)> = (1..=PARTITIONS)
            .map(|p| {
                let purged = others.iter().map(|g| g.get(&p).map_or(0, |g| g.purged_index)).min().unwrap_or(0);
                (p, (at_kill[&p].last_log_index, purged))
            })
            .collect();
        // The victim may have appended a few more entries between its last scrape and its death.
        if others.len() == BROKERS - 1
            && progress.values().all(|(end, purged)| *purged >= end + SNAPSHOT_INTERVAL as i64 / 2)
        {
            return progress;
        }
        assert!(
            started.elapsed() < COMPACTION_LIMIT,
            "the other brokers did not compact their logs past broker {victim}'s end within {COMPACTION_LIMIT:?}; \
             partition → (broker {victim}'s last index, lowest purged index elsewhere): {progress:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every partition has exactly one broker reporting itself leader: a deposed leader
/// must notice the newer term once it hears from its peers again.
async fn wait_for_single_leaders(cluster: &Cluster) {
    let started = Instant::now();
    loop {
        let gauges = cluster.raft_gauges_of_all().await;
        assert_one_leader_per_term(&gauges);
        let counts: BTreeMap<u32, usize> = (1..=PARTITIONS)
            .map(|p| (p, gauges.values().filter(|g| g.get(&p).is_some_and(|g| g.role == LEADER)).count()))
            .collect();
        if gauges.len() == BROKERS && counts.values().all(|n| *n == 1) {
            return;
        }
        assert!(
            started.elapsed() < FAILOVER_LIMIT,
            "{FAILOVER_LIMIT:?} after healing, leaders per partition are {counts:?} ({} brokers answered)",
            gauges.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

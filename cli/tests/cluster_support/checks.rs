//! The checks that close every test that injects faults: the ledger check on the load's
//! acknowledgements, raft's election safety, and replicas catching up with their leaders.
//!
//! They live in the harness because the single-fault failover tests and the fault campaign must judge
//! the cluster by the same standard: whatever the cluster acknowledged holds, whichever faults came
//! before.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::management::{RaftGauges, LEADER};
use super::workload::{self, Workload};
use super::{Cluster, PARTITIONS};

/// After the creations stop, the drain fails once no acknowledged instance has finished for this
/// long (work that is stuck) ...
const DRAIN_STALL: Duration = Duration::from_secs(60);
/// ... or once this much time has passed in all (a backlog that never ends).
const DRAIN_LIMIT: Duration = Duration::from_secs(900);

/// Stops creating, lets the workers finish every acknowledged instance, and checks the ledger:
///
/// - acknowledged process instance keys are unique: two leaders acknowledging writes for one
///   partition would hand out the same key twice;
/// - every acknowledged instance finishes once the cluster is whole again;
/// - no job whose completion was acknowledged is ever activated again;
/// - no more instances run than were acknowledged or failed to be created: a creation the gateway
///   retried after a lost answer is applied once (the partition remembers its request id).
pub async fn drain_and_check(cluster: &Cluster, mut workload: Workload) {
    workload.stop_creating().await;
    cluster.clock.note(format!("stopped creating: {}", workload.summary()));
    let draining = Instant::now();
    let unfinished = workload.wait_until_all_finished(DRAIN_STALL, DRAIN_LIMIT).await;
    cluster.clock.note(format!("drained for {:?}: {}", draining.elapsed(), workload.summary()));
    let created = workload.created();
    let duplicates = workload.duplicate_instance_keys();
    let reactivated = workload.reactivated_after_completion();
    let gone = workload.finished_by_job_gone();
    let (unacknowledged, failed_creations) = workload.unacknowledged_instances();
    workload.stop().await;

    assert!(
        duplicates.is_empty(),
        "{} acknowledged process instance keys were handed out twice (partitions {:?}): {:?}",
        duplicates.len(),
        partitions_of(&duplicates),
        &duplicates[..duplicates.len().min(20)]
    );
    assert!(
        unfinished.is_empty(),
        "{} of {created} acknowledged instances did not finish: none finished for {DRAIN_STALL:?}, or {DRAIN_LIMIT:?} \
         passed, after {:?} of draining (partitions {:?}): {:?}",
        unfinished.len(),
        draining.elapsed(),
        partitions_of(&unfinished),
        &unfinished[..unfinished.len().min(20)]
    );
    assert!(
        reactivated.is_empty(),
        "{} jobs were activated again after their completion had been acknowledged: {:?}",
        reactivated.len(),
        &reactivated[..reactivated.len().min(20)]
    );
    assert!(
        unacknowledged.len() <= failed_creations,
        "{} instances ran that no acknowledged creation named, but only {failed_creations} creations failed: \
         a creation was applied twice (partitions {:?}): {:?}",
        unacknowledged.len(),
        partitions_of(&unacknowledged),
        &unacknowledged[..unacknowledged.len().min(20)]
    );
    let running = workload::still_running(&cluster.client(), &gone).await;
    assert!(
        running.is_empty(),
        "instances whose b job was gone had not finished: {:?}",
        &running[..running.len().min(20)]
    );
    cluster.clock.note(format!(
        "all {created} acknowledged instances finished, keys unique, no completed job activated again \
         ({} instances confirmed finished by cancelling them)",
        gone.len()
    ));
}

/// How many keys fall on each partition.
fn partitions_of(keys: &[i64]) -> BTreeMap<u32, usize> {
    keys.iter().fold(BTreeMap::new(), |mut counts, key| {
        *counts.entry(workload::partition_of(*key)).or_default() += 1;
        counts
    })
}

/// Per partition, the broker that is leader with the highest term, and that term.
pub fn highest_term_leaders(gauges: &BTreeMap<usize, BTreeMap<u32, RaftGauges>>) -> BTreeMap<u32, (usize, i64)> {
    let mut leaders: BTreeMap<u32, (usize, i64)> = BTreeMap::new();
    for (node, partitions) in gauges {
        for (partition, g) in partitions.iter().filter(|(_, g)| g.role == LEADER) {
            if leaders.get(partition).is_none_or(|(_, term)| g.term > *term) {
                leaders.insert(*partition, (*node, g.term));
            }
        }
    }
    leaders
}

/// Raft's election safety: at most one leader per term and partition. Role and term come from one
/// scrape of one broker, so a broker that just stepped down cannot be mistaken for a second leader.
pub fn assert_one_leader_per_term(gauges: &BTreeMap<usize, BTreeMap<u32, RaftGauges>>) {
    for partition in 1..=PARTITIONS {
        let mut leaders: Vec<(i64, usize)> = gauges
            .iter()
            .filter_map(|(node, partitions)| partitions.get(&partition).map(|g| (g, *node)))
            .filter(|(g, _)| g.role == LEADER)
            .map(|(g, node)| (g.term, node))
            .collect();
        leaders.sort();
        assert!(
            leaders.windows(2).all(|pair| pair[0].0 != pair[1].0),
            "partition {partition} has two leaders in one term: (term, broker) {leaders:?}"
        );
    }
}

/// What the leader of each partition has committed.
pub async fn leader_commit_indexes(cluster: &Cluster) -> BTreeMap<u32, i64> {
    try_leader_commit_indexes(cluster).await.unwrap_or_else(|e| panic!("{e}"))
}

/// [`leader_commit_indexes`], or why not every partition has a leader that answers.
pub async fn try_leader_commit_indexes(cluster: &Cluster) -> Result<BTreeMap<u32, i64>, String> {
    let gauges = cluster.raft_gauges_of_all().await;
    let leaders = highest_term_leaders(&gauges);
    let committed: BTreeMap<u32, i64> =
        leaders.iter().map(|(p, (leader, _))| (*p, gauges[leader][p].commit_index)).collect();
    if committed.len() as u32 == PARTITIONS {
        Ok(committed)
    } else {
        Err(format!("not every partition has a leader: {gauges:?}"))
    }
}

/// Waits until broker `node` has applied at least `targets` (partition → raft index).
pub async fn wait_until_applied(cluster: &Cluster, node: usize, targets: &BTreeMap<u32, i64>, limit: Duration) {
    try_wait_until_applied(cluster, node, targets, limit).await.unwrap_or_else(|e| panic!("{e}"))
}

/// [`wait_until_applied`], returning what went wrong instead of panicking.
pub async fn try_wait_until_applied(
    cluster: &Cluster,
    node: usize,
    targets: &BTreeMap<u32, i64>,
    limit: Duration,
) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let own = cluster.raft_gauges(node).await.unwrap_or_default();
        let lagging: BTreeMap<u32, (i64, Option<i64>)> = targets
            .iter()
            .map(|(p, target)| (*p, (*target, own.get(p).map(|g| g.applied_index))))
            .filter(|(_, (target, applied))| applied.is_none_or(|applied| applied < *target))
            .collect();
        if lagging.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= limit {
            return Err(format!(
                "broker {node} did not catch up within {limit:?}; partition → (leader's applied index, \
                 broker {node}'s): {lagging:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

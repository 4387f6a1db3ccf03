//! A broker's configuration, validated once at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;

use waggle_engine::processor::ProcessingLimits;

#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub node_id: u32,
    pub cluster_size: u32,
    pub partitions: u32,
    pub replication_factor: u32,
    /// Internal addresses of all brokers in node-id order (may be empty for a single broker).
    pub peers: Vec<String>,
    pub data_dir: PathBuf,
    /// Where other brokers reach this one (raft).
    pub internal_addr: SocketAddr,
    /// Where gateways reach this one.
    pub command_addr: SocketAddr,
    /// The command address to tell gateways; defaults to `command_addr`.
    pub advertised_command_addr: Option<String>,
    pub management_addr: SocketAddr,
    /// Commands a partition queues before it answers RESOURCE_EXHAUSTED.
    pub queue_capacity: usize,
    /// Raft log entries between two state snapshots at least; the log is compacted below each
    /// snapshot.
    pub snapshot_interval: u64,
    /// Time between two state snapshots at least, so that a busy partition, which fills an interval
    /// of entries within seconds, does not pay for a snapshot (a flush of every memtable and a brief
    /// hold on writes) that often. Zero: a snapshot after every `snapshot_interval` entries.
    pub snapshot_period: std::time::Duration,
    /// How much one processing run may do: steps before it yields, deferrals in a row before an
    /// instance without a wait state gets an incident, and the FEEL evaluation limits.
    pub processing: ProcessingLimits,
    /// How long a partition may go without progress before liveness reports it stuck, so that
    /// Kubernetes restarts the broker.
    pub stall_timeout: std::time::Duration,
    /// Free bytes on the data directory's disk below which the broker takes no new commands.
    pub min_free_disk_bytes: u64,
    /// Free bytes below which the broker writes nothing more to its log (neither as leader nor as
    /// follower), so that a disk never fills up under raft. At most `min_free_disk_bytes`.
    pub replication_min_free_disk_bytes: u64,
    /// How long a partition remembers its answer to a client request, so that the gateway's retry of
    /// a command that was applied gets that answer instead of applying the command again.
    pub dedup_window: std::time::Duration,
}

/// The default of [`BrokerConfig::snapshot_period`].
pub const DEFAULT_SNAPSHOT_PERIOD: std::time::Duration = std::time::Duration::from_secs(60);
/// The longest [`BrokerConfig::snapshot_period`]: the log below the last snapshot is kept until the
/// next one, so the period bounds how much log a busy partition holds.
const MAX_SNAPSHOT_PERIOD: std::time::Duration = std::time::Duration::from_secs(3600);

/// Bounds of [`BrokerConfig::dedup_window`].
const MIN_DEDUP_WINDOW: std::time::Duration = std::time::Duration::from_secs(30);
const MAX_DEDUP_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("invalid configuration: {key} {problem}")]
    Invalid { key: &'static str, problem: String },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, problem: problem.into() }
}

impl BrokerConfig {
    /// A single broker with one partition: the `waggle dev` default.
    pub fn single_node(data_dir: PathBuf, command_addr: SocketAddr, management_addr: SocketAddr) -> Self {
        BrokerConfig {
            node_id: 0,
            cluster_size: 1,
            partitions: 1,
            replication_factor: 1,
            peers: vec![],
            data_dir,
            internal_addr: command_addr,
            command_addr,
            advertised_command_addr: None,
            management_addr,
            queue_capacity: 4096,
            snapshot_interval: 10_000,
            snapshot_period: DEFAULT_SNAPSHOT_PERIOD,
            processing: ProcessingLimits::default(),
            stall_timeout: std::time::Duration::from_secs(30),
            min_free_disk_bytes: 256 * 1024 * 1024,
            replication_min_free_disk_bytes: 64 * 1024 * 1024,
            dedup_window: crate::dedup::DEFAULT_WINDOW,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cluster_size == 0 {
            return Err(invalid("cluster-size", "must be at least 1"));
        }
        if self.node_id >= self.cluster_size {
            return Err(invalid(
                "node-id",
                format!(
                    "is {} but must be below cluster-size ({}): node ids count from 0",
                    self.node_id, self.cluster_size
                ),
            ));
        }
        if self.partitions == 0 {
            return Err(invalid("partitions", "must be at least 1"));
        }
        if self.replication_factor == 0 {
            return Err(invalid("replication-factor", "must be at least 1"));
        }
        if self.replication_factor > self.cluster_size {
            return Err(invalid(
                "replication-factor",
                format!("is {} but must not exceed cluster-size ({})", self.replication_factor, self.cluster_size),
            ));
        }
        if self.cluster_size > 1 && self.peers.len() != self.cluster_size as usize {
            return Err(invalid(
                "peers",
                format!(
                    "lists {} addresses but cluster-size is {}: give every broker's internal address in node-id order",
                    self.peers.len(),
                    self.cluster_size
                ),
            ));
        }
        if self.queue_capacity == 0 {
            return Err(invalid("queue-capacity", "must be at least 1"));
        }
        if self.stall_timeout < std::time::Duration::from_secs(5) {
            return Err(invalid(
                "stall-timeout",
                format!(
                    "is {} s but must be at least 5 s: a partition's driver may take seconds when busy",
                    self.stall_timeout.as_secs()
                ),
            ));
        }
        if self.dedup_window < MIN_DEDUP_WINDOW || self.dedup_window > MAX_DEDUP_WINDOW {
            return Err(invalid(
                "dedup-window",
                format!(
                    "is {} s but must be from {} s (the gateway retries a request for as long as its client \
                     waits, and a retry must still find the first answer) to {} s (the memory grows with the \
                     window)",
                    self.dedup_window.as_secs(),
                    MIN_DEDUP_WINDOW.as_secs(),
                    MAX_DEDUP_WINDOW.as_secs()
                ),
            ));
        }
        if self.processing.max_steps_per_run == 0 {
            return Err(invalid("max-steps-per-run", "must be at least 1"));
        }
        if self.processing.max_deferrals_without_wait == 0 {
            return Err(invalid("max-deferrals-without-wait", "must be at least 1"));
        }
        if self.replication_min_free_disk_bytes > self.min_free_disk_bytes {
            return Err(invalid(
                "replication-min-free-disk-bytes",
                format!(
                    "is {} but must not exceed min-free-disk-bytes ({}): the broker stops taking commands before it \
                     stops replicating",
                    self.replication_min_free_disk_bytes, self.min_free_disk_bytes
                ),
            ));
        }
        if self.snapshot_interval < 10 {
            return Err(invalid(
                "snapshot-interval",
                format!("is {} but must be at least 10 log entries", self.snapshot_interval),
            ));
        }
        if self.snapshot_period > MAX_SNAPSHOT_PERIOD {
            return Err(invalid(
                "snapshot-period",
                format!(
                    "is {} s but must be at most {} s: the log is kept from one snapshot to the next",
                    self.snapshot_period.as_secs(),
                    MAX_SNAPSHOT_PERIOD.as_secs()
                ),
            ));
        }
        Ok(())
    }

    /// Node ids that hold replicas of a partition: round-robin, partition p on (p-1+i) mod n.
    pub fn replicas_of(&self, partition_id: u32) -> Vec<u32> {
        (0..self.replication_factor).map(|i| (partition_id - 1 + i) % self.cluster_size).collect()
    }

    /// Partitions with a replica on this broker.
    pub fn local_partitions(&self) -> Vec<u32> {
        (1..=self.partitions).filter(|p| self.replicas_of(*p).contains(&self.node_id)).collect()
    }

    /// The internal address of a node.
    pub fn peer_addr(&self, node_id: u32) -> String {
        self.peers.get(node_id as usize).cloned().unwrap_or_else(|| self.internal_addr.to_string())
    }

    pub fn advertised_command_addr(&self) -> String {
        self.advertised_command_addr.clone().unwrap_or_else(|| self.command_addr.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(size: u32, rf: u32) -> BrokerConfig {
        BrokerConfig {
            cluster_size: size,
            replication_factor: rf,
            partitions: 3,
            peers: (0..size).map(|i| format!("127.0.0.1:{}", 27000 + i)).collect(),
            ..BrokerConfig::single_node(
                "data".into(),
                "127.0.0.1:26501".parse().unwrap(),
                "127.0.0.1:9600".parse().unwrap(),
            )
        }
    }

    #[test]
    fn replication_factor_above_cluster_size_is_refused_naming_both_keys() {
        let error = cluster(2, 3).validate().unwrap_err().to_string();
        assert!(error.contains("replication-factor") && error.contains("cluster-size"), "{error}");
    }

    #[test]
    fn peers_must_list_every_broker() {
        let mut config = cluster(3, 3);
        config.peers.pop();
        assert!(config.validate().unwrap_err().to_string().contains("peers"));
    }

    #[test]
    fn a_dedup_window_outside_its_bounds_is_refused_naming_the_key() {
        for seconds in [0, 29, 24 * 60 * 60 + 1] {
            let config = BrokerConfig { dedup_window: std::time::Duration::from_secs(seconds), ..cluster(1, 1) };
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains("dedup-window") && error.contains(&format!("is {seconds} s")), "{error}");
        }
        assert!(BrokerConfig { dedup_window: std::time::Duration::from_secs(30), ..cluster(1, 1) }.validate().is_ok());
    }

    #[test]
    fn a_snapshot_period_over_an_hour_is_refused_naming_the_key() {
        let config = BrokerConfig { snapshot_period: std::time::Duration::from_secs(3601), ..cluster(1, 1) };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("snapshot-period") && error.contains("is 3601 s"), "{error}");
        for seconds in [0, 3600] {
            let config = BrokerConfig { snapshot_period: std::time::Duration::from_secs(seconds), ..cluster(1, 1) };
            assert!(config.validate().is_ok());
        }
    }

    #[test]
    fn replicas_are_placed_round_robin() {
        let config = cluster(3, 2);
        assert_eq!(config.replicas_of(1), vec![0, 1]);
        assert_eq!(config.replicas_of(2), vec![1, 2]);
        assert_eq!(config.replicas_of(3), vec![2, 0]);
        let node2 = BrokerConfig { node_id: 2, ..config };
        assert_eq!(node2.local_partitions(), vec![2, 3]);
    }
}

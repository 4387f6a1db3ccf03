//! What a broker tells gateways about itself: its partitions, their roles and health.
//!
//! Gateways ask every broker they know for this and merge the answers into the cluster topology they
//! route by and report through the Topology RPC.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub node_id: u32,
    /// Where gateways send commands (the broker-internal gRPC service).
    pub command_addr: String,
    pub version: String,
    pub cluster_size: u32,
    pub partitions_count: u32,
    pub replication_factor: u32,
    pub partitions: Vec<PartitionInfo>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub partition_id: u32,
    pub role: PartitionRole,
    pub health: PartitionHealth,
    /// Why the replica is not healthy, when it is not.
    pub problem: Option<String>,
    /// The node id of the leader this replica knows of, if any.
    pub leader: Option<u32>,
    /// Raft term of the replica, so gateways prefer the newest claim when brokers disagree.
    pub term: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartitionRole {
    Leader,
    Follower,
    Inactive,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartitionHealth {
    Healthy,
    Unhealthy,
    Dead,
}

//! Raft replication of a partition: openraft over RocksDB, talking gRPC.
//!
//! Each partition is one openraft group. Its log entries are [`RecordBatch`]es written by the leader's
//! engine; the state machine applies their events to the partition's state on every replica. The log
//! store and the state machine share the partition's RocksDB database (different column families).

// openraft's `StorageError` is large, and its storage traits return it by value; the helpers here
// return what those traits need.
#![allow(clippy::result_large_err)]

pub mod handoff;
pub mod log_store;
pub mod network;
pub mod snapshot;
pub mod state_machine;

use openraft::{ErrorSubject, ErrorVerb, StorageError, StorageIOError};
use serde::{Deserialize, Serialize};
use waggle_protocol::record::RecordBatch;

/// What applying a batch tells the writer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// Position of the batch's last record.
    pub last_position: i64,
}

openraft::declare_raft_types!(
    /// openraft's types for a Waggle partition.
    pub TypeConfig:
        D = RecordBatch,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = snapshot::SnapshotStream,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;

pub(crate) fn io_error(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    error: impl std::error::Error + 'static,
) -> StorageError<u64> {
    StorageIOError::new(subject, verb, openraft::AnyError::new(&error)).into()
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("raft values always serialize")
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    subject: ErrorSubject<u64>,
    bytes: &[u8],
) -> Result<T, StorageError<u64>> {
    postcard::from_bytes(bytes).map_err(|e| io_error(subject, ErrorVerb::Read, e))
}

//! The partition state machine: applies committed batches through the engine's appliers.
//!
//! Applying is the only way partition state changes, on leader and followers alike. A leader takes the
//! changes its driver already made while processing a batch instead of applying that batch's records
//! again ([`super::handoff`]); every other entry goes through the engine's appliers. A whole run of
//! entries is applied into one overlay and written as one RocksDB write batch together with the
//! applied log id and membership, so state and its position are always consistent on disk. A batch's
//! remembered answers ([`crate::dedup`]) are written in that same batch, so that memory is as
//! replicated as the engine's state.
//!
//! Snapshots are RocksDB checkpoints of the partition's database ([`super::snapshot`]); installing
//! one replaces the `state` and `answers` column families wholesale.

use std::sync::Arc;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogId, StorageError, StoredMembership};
use rocksdb::WriteBatch;
use serde::Deserialize;
use waggle_engine::processor::Engine;
use waggle_engine::state::{KvRead, KvWrite, Overlay};

use super::handoff::Handoff;
use super::snapshot::{self, SnapshotError, SnapshotStore, SnapshotStream};
use super::{decode, encode, io_error, Applied, Entry, TypeConfig};
use crate::dedup;
use crate::storage::{cf, commit_state, Database, StateReader, CF_STATE};

/// State keys of the state machine itself; the engine's tables never use this prefix.
const APPLIED: &[u8] = b"\xF0applied";
const MEMBERSHIP: &[u8] = b"\xF0membership";

type Membership = StoredMembership<u64, openraft::BasicNode>;

pub struct StateMachine {
    db: Arc<Database>,
    engine: Engine,
    /// The changes the leader's driver made while processing the batches it writes, and the position
    /// of the last record applied, when known (not after a start or a snapshot install until a batch
    /// with records is applied).
    handoff: Arc<Handoff>,
    snapshots: Arc<SnapshotStore>,
    /// Called with the position of every applied batch's last record.
    on_applied: Arc<dyn Fn(i64) + Send + Sync>,
}

impl StateMachine {
    pub fn new(
        db: Arc<Database>,
        engine: Engine,
        handoff: Arc<Handoff>,
        snapshots: SnapshotStore,
        on_applied: Arc<dyn Fn(i64) + Send + Sync>,
    ) -> Self {
        Self { db, engine, handoff, snapshots: Arc::new(snapshots), on_applied }
    }

    fn read<T: for<'de> Deserialize<'de>>(&self, key: &[u8]) -> Result<Option<T>, StorageError<u64>> {
        StateReader::new(&self.db).get(key).map(|b| decode(ErrorSubject::StateMachine, &b)).transpose()
    }
}

fn snapshot_error(subject: ErrorSubject<u64>, verb: ErrorVerb) -> impl FnOnce(SnapshotError) -> StorageError<u64> {
    move |e| io_error(subject, verb, e)
}

/// Runs blocking snapshot work off the async runtime's threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SnapshotError> + Send + 'static,
) -> Result<T, SnapshotError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| SnapshotError::Stopped(e.to_string()))?
}

/// The raft metadata of the checkpoint `name` at `path`, from the applied log id and membership it
/// holds.
fn checkpoint_meta(path: &std::path::Path, name: String) -> Result<snapshot::Meta, SnapshotError> {
    let checkpoint = snapshot::open_checkpoint(path)?;
    let read = |key: &[u8]| {
        checkpoint
            .get_cf(cf(&checkpoint, CF_STATE), key)
            .map_err(|source| SnapshotError::Rocks { context: "reading a checkpoint's position".into(), source })
    };
    let format = |e: postcard::Error| SnapshotError::Format(e.to_string());
    let last_log_id: Option<LogId<u64>> =
        read(APPLIED)?.map(|b| postcard::from_bytes(&b)).transpose().map_err(format)?.flatten();
    let last_membership: Membership =
        read(MEMBERSHIP)?.map(|b| postcard::from_bytes(&b)).transpose().map_err(format)?.unwrap_or_default();
    let snapshot_id = match last_log_id {
        Some(id) => format!("{}-{}-{name}", id.leader_id.term, id.index),
        None => format!("empty-{name}"),
    };
    Ok(SnapshotMeta { last_log_id, last_membership, snapshot_id })
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<u64>>, Membership), StorageError<u64>> {
        let applied = self.read::<Option<LogId<u64>>>(APPLIED)?.flatten();
        let membership = self.read::<Membership>(MEMBERSHIP)?.unwrap_or_default();
        Ok((applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let reader = StateReader::new(&self.db);
        let mut overlay = Overlay::new(&reader);
        let mut results = Vec::new();
        let mut answers = WriteBatch::default();
        let applied_before = self.handoff.applied_position();
        let mut position = applied_before;
        for entry in entries {
            let log_id = *entry.get_log_id();
            let mut applied = Applied::default();
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(batch) => {
                    let processed = batch
                        .records
                        .first()
                        .and_then(|first| self.handoff.take(log_id.leader_id.term, first.position, position));
                    match processed {
                        Some(writes) => overlay.absorb(writes),
                        None => {
                            for record in &batch.records {
                                self.engine.apply(&mut overlay, record);
                            }
                        }
                    }
                    dedup::remember(&self.db, &mut answers, &batch);
                    if let Some(last) = batch.records.last() {
                        applied.last_position = last.position;
                        position = Some(last.position);
                    }
                }
                EntryPayload::Membership(membership) => {
                    overlay.put(MEMBERSHIP, &encode(&StoredMembership::new(Some(log_id), membership)));
                }
            }
            overlay.put(APPLIED, &encode(&Some(log_id)));
            results.push(applied);
        }
        let writes = overlay.into_writes();
        commit_state(&self.db, answers, writes)
            .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
        if position != applied_before {
            self.handoff.set_applied_position(position);
            if let Some(position) = position {
                (self.on_applied)(position);
            }
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { db: self.db.clone(), snapshots: self.snapshots.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotStream>, StorageError<u64>> {
        let stream =
            self.snapshots.receive().map_err(snapshot_error(ErrorSubject::Snapshot(None), ErrorVerb::Write))?;
        Ok(Box::new(stream))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<SnapshotStream>,
    ) -> Result<(), StorageError<u64>> {
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let path = snapshot.path().map(ToOwned::to_owned).ok_or_else(|| {
            io_error(subject.clone(), ErrorVerb::Read, std::io::Error::other("a received snapshot has no file"))
        })?;
        drop(snapshot);
        let (db, snapshots, meta) = (self.db.clone(), self.snapshots.clone(), meta.clone());
        blocking(move || {
            snapshot::install(&db, &path)?;
            snapshots.take(&db, |_, _| Ok(meta), Some(&path))
        })
        .await
        .map_err(snapshot_error(subject, ErrorVerb::Write))?;
        self.engine = Engine::new(self.engine.partition_id(), self.engine.partition_count());
        self.handoff.set_applied_position(None);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let current =
            self.snapshots.current().map_err(snapshot_error(ErrorSubject::Snapshot(None), ErrorVerb::Read))?;
        Ok(current.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(data) }))
    }
}

pub struct SnapshotBuilder {
    db: Arc<Database>,
    snapshots: Arc<SnapshotStore>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let (db, snapshots) = (self.db.clone(), self.snapshots.clone());
        let (meta, data) = blocking(move || snapshots.take(&db, checkpoint_meta, None))
            .await
            .map_err(snapshot_error(ErrorSubject::Snapshot(None), ErrorVerb::Write))?;
        Ok(Snapshot { meta, snapshot: Box::new(data) })
    }
}

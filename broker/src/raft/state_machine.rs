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
//! Snapshots are a consistent copy of the `state` column family and of the answers still remembered,
//! taken from a RocksDB snapshot and stored as a file beside the database. Installing one replaces
//! both column families wholesale.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogId, StorageError, StoredMembership};
use rocksdb::{IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};
use waggle_engine::processor::Engine;
use waggle_engine::state::{KvRead, KvWrite, Overlay};

use super::handoff::Handoff;
use super::{decode, encode, io_error, Applied, Entry, TypeConfig};
use crate::dedup;
use crate::now_millis;
use crate::storage::{cf, commit_state, Database, StateReader, CF_ANSWERS, CF_STATE};

/// State keys of the state machine itself; the engine's tables never use this prefix.
const APPLIED: &[u8] = b"\xF0applied";
const MEMBERSHIP: &[u8] = b"\xF0membership";

/// Version 2 carries the remembered answers apart from the state; version 1 kept them in it.
const SNAPSHOT_FORMAT_VERSION: u16 = 2;

type Membership = StoredMembership<u64, openraft::BasicNode>;

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    version: u16,
    meta: SnapshotMeta<u64, openraft::BasicNode>,
    /// The `state` column family.
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// The `answers` column family, without what had expired.
    answers: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The snapshot format of brokers before the `answers` column family.
#[derive(Deserialize)]
struct SnapshotFileV1 {
    meta: SnapshotMeta<u64, openraft::BasicNode>,
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Decodes a snapshot file of any format this broker knows.
fn read_snapshot(subject: ErrorSubject<u64>, bytes: &[u8]) -> Result<SnapshotFile, StorageError<u64>> {
    let (version, rest) =
        postcard::take_from_bytes::<u16>(bytes).map_err(|e| io_error(subject.clone(), ErrorVerb::Read, e))?;
    match version {
        1 => {
            let SnapshotFileV1 { meta, mut entries } = decode(subject, rest)?;
            let answers = dedup::migrate_entries(&mut entries);
            Ok(SnapshotFile { version: SNAPSHOT_FORMAT_VERSION, meta, entries, answers })
        }
        SNAPSHOT_FORMAT_VERSION => decode(subject, bytes),
        newer => Err(io_error(
            subject,
            ErrorVerb::Read,
            std::io::Error::other(format!("snapshot format {newer} is newer than this broker")),
        )),
    }
}

pub struct StateMachine {
    db: Arc<Database>,
    engine: Engine,
    /// The changes the leader's driver made while processing the batches it writes, and the position
    /// of the last record applied, when known (not after a start or a snapshot install until a batch
    /// with records is applied).
    handoff: Arc<Handoff>,
    snapshot_path: PathBuf,
    /// Called with the position of every applied batch's last record.
    on_applied: Arc<dyn Fn(i64) + Send + Sync>,
}

impl StateMachine {
    pub fn new(
        db: Arc<Database>,
        engine: Engine,
        handoff: Arc<Handoff>,
        snapshot_path: PathBuf,
        on_applied: Arc<dyn Fn(i64) + Send + Sync>,
    ) -> Self {
        Self { db, engine, handoff, snapshot_path, on_applied }
    }

    fn read<T: for<'de> Deserialize<'de>>(&self, key: &[u8]) -> Result<Option<T>, StorageError<u64>> {
        StateReader::new(&self.db).get(key).map(|b| decode(ErrorSubject::StateMachine, &b)).transpose()
    }
}

/// Writes a snapshot file atomically and durably and returns its bytes.
///
/// The file is synced before it replaces the previous one, and the directory after: openraft purges
/// the log below a snapshot, so a snapshot lost in a crash would lose the state it stands for. Syncing
/// here, on the snapshot's own task, also keeps the file's megabytes out of the next journal commit,
/// which the raft log's fsync would otherwise wait for (ext4 writes a renamed file's data with it).
fn store_snapshot(path: &std::path::Path, file: &SnapshotFile) -> Result<Vec<u8>, StorageError<u64>> {
    use std::io::Write as _;
    let bytes = encode(file);
    let tmp = path.with_extension("tmp");
    let written = std::fs::File::create(&tmp)
        .and_then(|mut out| out.write_all(&bytes).and_then(|_| out.sync_all()))
        .and_then(|_| std::fs::rename(&tmp, path))
        .and_then(|_| match path.parent() {
            Some(dir) => std::fs::File::open(dir)?.sync_all(),
            None => Ok(()),
        });
    written.map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
    Ok(bytes)
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
        SnapshotBuilder { db: self.db.clone(), snapshot_path: self.snapshot_path.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let file = read_snapshot(subject.clone(), snapshot.get_ref())?;
        let (state, answers) = (cf(&self.db, CF_STATE), cf(&self.db, CF_ANSWERS));
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(state, [0u8].as_slice(), [0xFFu8; 9].as_slice());
        batch.delete_range_cf(answers, b"".as_slice(), [0xFFu8; 9].as_slice());
        for (key, value) in &file.entries {
            batch.put_cf(state, key, value);
        }
        for (key, value) in &file.answers {
            batch.put_cf(answers, key, value);
        }
        self.db.replace_state(batch).map_err(|e| io_error(subject.clone(), ErrorVerb::Write, e))?;
        self.engine = Engine::new(self.engine.partition_id(), self.engine.partition_count());
        self.handoff.set_applied_position(None);
        store_snapshot(&self.snapshot_path, &SnapshotFile { meta: meta.clone(), ..file })?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let bytes = match std::fs::read(&self.snapshot_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e)),
        };
        let file = read_snapshot(ErrorSubject::Snapshot(None), &bytes)?;
        Ok(Some(Snapshot { meta: file.meta, snapshot: Box::new(Cursor::new(bytes)) }))
    }
}

pub struct SnapshotBuilder {
    db: Arc<Database>,
    snapshot_path: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let view = self.db.snapshot();
        let state = cf(&self.db, CF_STATE);
        let mut entries = Vec::new();
        for item in view.iterator_cf(state, IteratorMode::Start) {
            let (key, value) = item.map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
            entries.push((key.to_vec(), value.to_vec()));
        }
        let answers = dedup::live_entries(&view, &self.db, now_millis())
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        let lookup = |key: &[u8]| entries.iter().find(|(k, _)| k.as_slice() == key).map(|(_, v)| v.clone());
        let last_log_id: Option<LogId<u64>> =
            lookup(APPLIED).map(|b| decode(ErrorSubject::Snapshot(None), &b)).transpose()?.flatten();
        let last_membership: Membership =
            lookup(MEMBERSHIP).map(|b| decode(ErrorSubject::Snapshot(None), &b)).transpose()?.unwrap_or_default();
        let snapshot_id = match last_log_id {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, entries.len()),
            None => format!("empty-{}", entries.len()),
        };
        let meta = SnapshotMeta { last_log_id, last_membership, snapshot_id };
        let file = SnapshotFile { version: SNAPSHOT_FORMAT_VERSION, meta: meta.clone(), entries, answers };
        let bytes = store_snapshot(&self.snapshot_path, &file)?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct WrittenByVersion1 {
        version: u16,
        meta: SnapshotMeta<u64, openraft::BasicNode>,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
    }

    #[test]
    fn a_snapshot_of_an_older_broker_is_read_with_its_answers_moved_out_of_the_state() {
        let until: i64 = 9_000;
        let mut index = vec![0xF2];
        index.extend_from_slice(&((until as u64) ^ (1 << 63)).to_be_bytes());
        index.extend_from_slice(&42u64.to_be_bytes());
        let mut answer_key = vec![0xF1];
        answer_key.extend_from_slice(&42u64.to_be_bytes());
        let entries = vec![(vec![0x05, 1], vec![1]), (answer_key, vec![7]), (index, vec![])];
        let meta = SnapshotMeta { snapshot_id: "old".into(), ..Default::default() };
        let bytes = encode(&WrittenByVersion1 { version: 1, meta, entries });

        let file = read_snapshot(ErrorSubject::Snapshot(None), &bytes).unwrap();
        assert_eq!(file.meta.snapshot_id, "old");
        assert_eq!(file.entries, vec![(vec![0x05, 1], vec![1])]);
        let mut remembered = until.to_be_bytes().to_vec();
        remembered.push(7);
        assert_eq!(file.answers, vec![(42u64.to_be_bytes().to_vec(), remembered)]);
    }

    #[test]
    fn a_snapshot_of_a_newer_format_is_refused_saying_so() {
        let bytes = encode(&(SNAPSHOT_FORMAT_VERSION + 1));
        let error = read_snapshot(ErrorSubject::Snapshot(None), &bytes).err().expect("refused");
        assert!(error.to_string().contains("newer than this broker"), "{error}");
    }
}

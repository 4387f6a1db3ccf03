//! The raft log in RocksDB: entries by index, plus vote, committed and purged log ids.
//!
//! Appends are written with fsync before openraft is told they are durable: an entry that a leader
//! counted towards a quorum must survive a crash of this process or machine.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogId, StorageError, Vote};
use prometheus::IntCounter;
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions};

use super::{decode, encode, io_error, Entry, TypeConfig};
use crate::storage::{cf, Database, CF_LOG, CF_RAFT};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"purged";

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// The last committed log index, for metrics (openraft's metrics do not report it).
    committed: Arc<AtomicU64>,
    /// Counts the synchronous appends, so that a benchmark can tell how many commands shared each.
    fsyncs: IntCounter,
}

impl LogStore {
    pub fn new(db: Arc<Database>, committed: Arc<AtomicU64>, fsyncs: IntCounter) -> Self {
        let store = Self { db, committed, fsyncs };
        if let Ok(Some(Some(last))) = store.read_meta::<Option<LogId<u64>>>(COMMITTED) {
            store.committed.store(last.index, Ordering::Relaxed);
        }
        store
    }

    fn read_meta<T: for<'de> serde::Deserialize<'de>>(&self, key: &[u8]) -> Result<Option<T>, StorageError<u64>> {
        let bytes = self
            .db
            .get_cf(cf(&self.db, CF_RAFT), key)
            .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read, e))?;
        bytes.map(|b| decode(ErrorSubject::Store, &b)).transpose()
    }

    fn write_meta<T: serde::Serialize>(&self, key: &[u8], value: &T, sync: bool) -> Result<(), StorageError<u64>> {
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        self.db
            .put_cf_opt(cf(&self.db, CF_RAFT), key, encode(value), &options)
            .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    fn last_entry(&self) -> Result<Option<Entry>, StorageError<u64>> {
        let mut iter = self.db.iterator_cf(cf(&self.db, CF_LOG), IteratorMode::End);
        match iter.next() {
            Some(Ok((_, value))) => Ok(Some(decode(ErrorSubject::Logs, &value)?)),
            Some(Err(e)) => Err(io_error(ErrorSubject::Logs, ErrorVerb::Read, e)),
            None => Ok(None),
        }
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<u64>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        let iter = self.db.iterator_cf(cf(&self.db, CF_LOG), IteratorMode::From(&index_key(start), Direction::Forward));
        for item in iter {
            let (key, value) = item.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            let index = u64::from_be_bytes(key.as_ref().try_into().expect("log keys are 8 bytes"));
            if !range.contains(&index) {
                break;
            }
            entries.push(decode(ErrorSubject::Logs, &value)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let last_purged_log_id: Option<LogId<u64>> = self.read_meta(PURGED)?;
        let last_log_id = self.last_entry()?.map(|e| *e.get_log_id()).or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.write_meta(VOTE, vote, true)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        self.read_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError<u64>> {
        self.committed.store(committed.map_or(0, |c| c.index), Ordering::Relaxed);
        // Losing this only slows recovery (openraft re-learns it), so it need not be synced.
        self.write_meta(COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self.read_meta::<Option<LogId<u64>>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let log = cf(&self.db, CF_LOG);
        for entry in entries {
            batch.put_cf(log, index_key(entry.get_log_id().index), encode(&entry));
        }
        let mut options = WriteOptions::default();
        options.set_sync(true);
        let result = self.db.write_opt(batch, &options);
        self.fsyncs.inc();
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(io_error(ErrorSubject::Logs, ErrorVerb::Write, e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.db
            .delete_range_cf(cf(&self.db, CF_LOG), index_key(log_id.index), index_key(u64::MAX))
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.write_meta(PURGED, &log_id, true)?;
        self.db
            .delete_range_cf(cf(&self.db, CF_LOG), index_key(0), index_key(log_id.index + 1))
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

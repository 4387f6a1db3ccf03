//! RocksDB, one database per partition replica.
//!
//! Each partition keeps three column families in its own directory (`<data-dir>/partition-<id>`):
//! `log` (raft entries by index), `raft` (vote, committed and purged log ids) and `state` (the engine's
//! tables plus the state machine's applied log id). State changes are written in one atomic write batch
//! together with the applied log id, so a crash never leaves state and its position out of step.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{ColumnFamily, Direction, IteratorMode, Options, ReadOptions, WriteBatch, DB};
use waggle_engine::state::{KvRead, Write};

pub const CF_LOG: &str = "log";
pub const CF_RAFT: &str = "raft";
pub const CF_STATE: &str = "state";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open the partition database at {path}: {source}")]
    Open { path: PathBuf, source: rocksdb::Error },
    #[error("RocksDB failed: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("cannot decode stored {what}: {message}")]
    Decode { what: &'static str, message: String },
}

/// An open partition database that reports when it is closed, so that a restart in the same process
/// (tests, or a partition moving back) waits for RocksDB to release its lock.
pub struct Database {
    db: Option<DB>,
    closed: tokio::sync::watch::Sender<bool>,
}

impl Database {
    /// Becomes true once the database is closed.
    pub fn closed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closed.subscribe()
    }
}

impl std::ops::Deref for Database {
    type Target = DB;

    fn deref(&self) -> &DB {
        self.db.as_ref().expect("the database is open until dropped")
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        drop(self.db.take());
        self.closed.send_replace(true);
    }
}

/// Opens (or creates) a partition's database.
pub fn open(path: &Path) -> Result<Arc<Database>, StorageError> {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.set_max_background_jobs(2);
    options.set_compression_type(rocksdb::DBCompressionType::Lz4);
    let db = DB::open_cf(&options, path, [CF_LOG, CF_RAFT, CF_STATE])
        .map_err(|source| StorageError::Open { path: path.to_path_buf(), source })?;
    Ok(Arc::new(Database { db: Some(db), closed: tokio::sync::watch::channel(false).0 }))
}

pub fn cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    db.cf_handle(name).expect("column families are created when the database opens")
}

/// The engine's view of the `state` column family.
pub struct StateReader<'a> {
    db: &'a DB,
}

impl<'a> StateReader<'a> {
    pub fn new(db: &'a DB) -> Self {
        Self { db }
    }
}

impl KvRead for StateReader<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.db.get_cf(cf(self.db, CF_STATE), key).expect("reading partition state from RocksDB failed")
    }

    fn scan_prefix(&self, prefix: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) {
        let mut options = ReadOptions::default();
        options.set_prefix_same_as_start(false);
        let iter =
            self.db.iterator_cf_opt(cf(self.db, CF_STATE), options, IteratorMode::From(prefix, Direction::Forward));
        for item in iter {
            let (key, value) = item.expect("scanning partition state in RocksDB failed");
            if !key.starts_with(prefix) || !visit(&key, &value) {
                break;
            }
        }
    }
}

/// Writes buffered state changes to the `state` column family in one atomic batch.
pub fn commit_state(db: &DB, writes: impl IntoIterator<Item = (Vec<u8>, Write)>) -> Result<(), rocksdb::Error> {
    let state = cf(db, CF_STATE);
    let mut batch = WriteBatch::default();
    for (key, write) in writes {
        match write {
            Write::Put(value) => batch.put_cf(state, key, value),
            Write::Delete => batch.delete_cf(state, key),
        }
    }
    db.write(batch)
}

#[cfg(test)]
mod tests {
    use waggle_engine::state::conformance;
    use waggle_engine::state::KvWrite;

    use super::*;

    /// The state column family as a writable store, writing through [`commit_state`] like the
    /// state machine does.
    struct RocksState {
        db: Arc<Database>,
        _dir: tempfile::TempDir,
    }

    impl KvRead for RocksState {
        fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
            StateReader::new(&self.db).get(key)
        }

        fn scan_prefix(&self, prefix: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) {
            StateReader::new(&self.db).scan_prefix(prefix, visit)
        }
    }

    impl KvWrite for RocksState {
        fn put(&mut self, key: &[u8], value: &[u8]) {
            commit_state(&self.db, [(key.to_vec(), Write::Put(value.to_vec()))]).unwrap();
        }

        fn delete(&mut self, key: &[u8]) {
            commit_state(&self.db, [(key.to_vec(), Write::Delete)]).unwrap();
        }
    }

    #[test]
    fn rocksdb_state_passes_the_conformance_suite() {
        conformance::run(&mut || {
            let dir = tempfile::tempdir().unwrap();
            let db = open(dir.path()).unwrap();
            Box::new(RocksState { db, _dir: dir })
        });
    }
}

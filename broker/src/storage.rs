//! RocksDB, one database per partition replica.
//!
//! Each partition keeps four column families in its own directory (`<data-dir>/partition-<id>`):
//! `log` (raft entries by index), `raft` (vote, committed and purged log ids), `state` (the engine's
//! tables plus the state machine's applied log id) and `answers` (the memory of answered requests,
//! [`dedup`]). State changes and answers are written in one atomic write batch together with the
//! applied log id, so a crash never leaves state and its position out of step.
//!
//! Scans are where an LSM tree hurts a workflow engine: almost every entry the engine writes is deleted
//! again within milliseconds, and each delete leaves a tombstone that iterators step over until
//! compaction drops it. Two rules keep a scan's cost independent of the history behind it:
//! - every scan is bounded above by the end of its prefix, so it never walks into the tombstones of the
//!   tables that follow;
//! - scans of the engine's queue tables ([`QUEUE_TABLES`]: activatable jobs, deadlines, back-offs,
//!   message expiry, the outbox) start where the previous scan of the same prefix found its first live
//!   entry ([`ScanHints`]), instead of at the front where the tombstones of everything already
//!   consumed pile up. A write below that point moves the hint back, so no live entry is ever skipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rocksdb::{BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, Options, ReadOptions, WriteBatch, DB};
use waggle_engine::state::tables::QUEUE_TABLES;
use waggle_engine::state::{KvRead, Write};

use crate::dedup;

pub const CF_LOG: &str = "log";
pub const CF_RAFT: &str = "raft";
pub const CF_STATE: &str = "state";
pub const CF_ANSWERS: &str = "answers";

/// How much write-ahead log a partition's database keeps at most (see [`open`]).
const MAX_TOTAL_WAL_BYTES: u64 = 256 << 20;

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
    hints: Mutex<ScanHints>,
    closed: tokio::sync::watch::Sender<bool>,
}

impl Database {
    /// Becomes true once the database is closed.
    pub fn closed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closed.subscribe()
    }

    fn hints(&self) -> MutexGuard<'_, ScanHints> {
        self.hints.lock().expect("scan hints are never left half-updated")
    }

    /// Writes a batch that replaces the state and answers column families wholesale (a snapshot
    /// install), forgetting every scan hint.
    pub fn replace_state(&self, batch: WriteBatch) -> Result<(), rocksdb::Error> {
        let mut hints = self.hints();
        self.write(batch)?;
        hints.clear();
        Ok(())
    }
}

/// Where the live entries of each scanned queue prefix begin, as far as this process knows.
///
/// Invariant: no live entry under `prefix` sorts below `start[prefix]`. Scans establish it (the first
/// entry a scan meets is live), state writes keep it (a put below the hint lowers it), and deletes
/// only make a hint conservative. `commits` counts state writes so that a scan whose view may predate
/// a concurrent write does not record a hint from it.
#[derive(Default)]
struct ScanHints {
    start: HashMap<Vec<u8>, Vec<u8>>,
    commits: u64,
}

impl ScanHints {
    fn clear(&mut self) {
        self.start.clear();
        self.commits += 1;
    }

    /// Lowers the hints that a put of `key` would otherwise jump over.
    fn observe_put(&mut self, key: &[u8]) {
        for (prefix, start) in &mut self.start {
            if key.starts_with(prefix) && key < start.as_slice() {
                start.clear();
                start.extend_from_slice(key);
            }
        }
    }
}

/// The state's access pattern: point reads, many of keys that do not exist (is there an incident for
/// this element, a buffered message for this correlation key?), and a delete for nearly every insert.
fn tune_state(options: &mut Options) {
    // Bloom filters answer most reads of absent keys without touching a data block.
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    options.set_block_based_table_factory(&table);
    // Files that are mostly tombstones are compacted early, so that scans meet fewer of them.
    options.add_compact_on_deletion_collector_factory(10_000, 5_000, 0.5);
}

/// The memory of answers: a point read per client command, almost always of an id that is not
/// there, and entries that expire by the time they carry rather than by deletes.
fn tune_answers(options: &mut Options) {
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    options.set_block_based_table_factory(&table);
    options.set_compaction_filter("waggle-expired-answers", dedup::drop_expired);
}

fn is_queue_scan(prefix: &[u8]) -> bool {
    prefix.first().is_some_and(|table| QUEUE_TABLES.contains(table))
}

/// The first key after every key that starts with `prefix`, or `None` if there is no such key
/// (a prefix of only 0xFF bytes).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
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
    // The raft column family takes a few bytes per entry and would keep every write-ahead-log file
    // alive until its memtable fills: 2.5 GB of logs in ten minutes under load. Past this size
    // RocksDB flushes the column families that hold the oldest file instead.
    options.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
    let families = [CF_LOG, CF_RAFT, CF_STATE, CF_ANSWERS].map(|name| {
        let mut family = options.clone();
        match name {
            CF_STATE => tune_state(&mut family),
            CF_ANSWERS => tune_answers(&mut family),
            _ => {}
        }
        ColumnFamilyDescriptor::new(name, family)
    });
    let db = DB::open_cf_descriptors(&options, path, families)
        .map_err(|source| StorageError::Open { path: path.to_path_buf(), source })?;
    Ok(Arc::new(Database {
        db: Some(db),
        hints: Mutex::new(ScanHints::default()),
        closed: tokio::sync::watch::channel(false).0,
    }))
}

pub fn cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    db.cf_handle(name).expect("column families are created when the database opens")
}

/// The engine's view of the `state` column family.
pub struct StateReader<'a> {
    db: &'a Database,
}

impl<'a> StateReader<'a> {
    pub fn new(db: &'a Database) -> Self {
        Self { db }
    }
}

impl KvRead for StateReader<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.db.get_cf(cf(self.db, CF_STATE), key).expect("reading partition state from RocksDB failed")
    }

    fn scan_prefix(&self, prefix: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) {
        let mut options = ReadOptions::default();
        let end = prefix_end(prefix);
        if let Some(end) = &end {
            options.set_iterate_upper_bound(end.clone());
        }
        let queue = is_queue_scan(prefix);
        // Taking the hint and creating the iterator under the hints' lock orders the scan with state
        // writes, which hold it while they write: the iterator sees every write the hint accounts for.
        let (mut iter, commits) = {
            let hints = self.db.hints();
            let start = if queue { hints.start.get(prefix).map(Vec::as_slice) } else { None };
            let mut iter = self.db.raw_iterator_cf_opt(cf(self.db, CF_STATE), options);
            iter.seek(start.unwrap_or(prefix));
            (iter, hints.commits)
        };
        let mut first_live: Option<Vec<u8>> = None;
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            if queue && first_live.is_none() {
                first_live = Some(key.to_vec());
            }
            if !visit(key, value) {
                break;
            }
            iter.next();
        }
        if let Err(e) = iter.status() {
            panic!("scanning partition state in RocksDB failed: {e}");
        }
        if queue {
            let mut hints = self.db.hints();
            if hints.commits == commits {
                // An empty prefix starts at its end: the next put under it lowers the hint to itself.
                let start = first_live.or(end).unwrap_or_else(|| prefix.to_vec());
                hints.start.insert(prefix.to_vec(), start);
            }
        }
    }
}

/// Writes buffered state changes to the `state` column family in one atomic batch, with whatever
/// `batch` holds already.
pub fn commit_state(
    db: &Database,
    mut batch: WriteBatch,
    writes: impl IntoIterator<Item = (Vec<u8>, Write)>,
) -> Result<(), rocksdb::Error> {
    let state = cf(db, CF_STATE);
    let mut hints = db.hints();
    for (key, write) in writes {
        match write {
            Write::Put(value) => {
                if is_queue_scan(&key) {
                    hints.observe_put(&key);
                }
                batch.put_cf(state, key, value)
            }
            Write::Delete => batch.delete_cf(state, key),
        }
    }
    hints.commits += 1;
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
            commit_state(&self.db, WriteBatch::default(), [(key.to_vec(), Write::Put(value.to_vec()))]).unwrap();
        }

        fn delete(&mut self, key: &[u8]) {
            commit_state(&self.db, WriteBatch::default(), [(key.to_vec(), Write::Delete)]).unwrap();
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

    fn put(db: &Database, key: &[u8]) {
        commit_state(db, WriteBatch::default(), [(key.to_vec(), Write::Put(b"v".to_vec()))]).unwrap();
    }

    fn delete(db: &Database, key: &[u8]) {
        commit_state(db, WriteBatch::default(), [(key.to_vec(), Write::Delete)]).unwrap();
    }

    fn key(table: u8, n: u32) -> Vec<u8> {
        let mut key = vec![table];
        key.extend_from_slice(&n.to_be_bytes());
        key
    }

    fn scan_all(db: &Database, prefix: &[u8]) -> Vec<Vec<u8>> {
        let mut found = Vec::new();
        StateReader::new(db).scan_prefix(prefix, &mut |k, _| {
            found.push(k.to_vec());
            true
        });
        found
    }

    /// Runs `scan` and returns how many deleted entries RocksDB stepped over meanwhile.
    fn tombstones_walked(scan: impl FnOnce()) -> u64 {
        use rocksdb::perf::{set_perf_stats, PerfContext, PerfMetric, PerfStatsLevel};
        set_perf_stats(PerfStatsLevel::EnableCount);
        let mut context = PerfContext::default();
        context.reset();
        scan();
        let walked = context.metric(PerfMetric::InternalDeleteSkippedCount);
        set_perf_stats(PerfStatsLevel::Disable);
        walked
    }

    const CONSUMED: u32 = 20_000;

    #[test]
    fn a_queue_scan_does_not_walk_the_tombstones_of_consumed_entries_again() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path()).unwrap();
        let queue = QUEUE_TABLES[0];
        for n in 0..CONSUMED {
            put(&db, &key(queue, n));
            delete(&db, &key(queue, n));
        }
        put(&db, &key(queue, CONSUMED));
        let first = tombstones_walked(|| assert_eq!(scan_all(&db, &[queue]), vec![key(queue, CONSUMED)]));
        assert!(first >= u64::from(CONSUMED), "the first scan has to find where live entries begin ({first})");
        delete(&db, &key(queue, CONSUMED));
        put(&db, &key(queue, CONSUMED + 1));
        let again = tombstones_walked(|| assert_eq!(scan_all(&db, &[queue]), vec![key(queue, CONSUMED + 1)]));
        assert!(again <= 2, "a later scan starts where the live entries began, yet walked {again} tombstones");
    }

    #[test]
    fn a_scan_stops_at_the_end_of_its_prefix_instead_of_walking_the_next_table() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path()).unwrap();
        let (table, next) = (0x30, 0x31);
        put(&db, &key(table, 1));
        for n in 0..CONSUMED {
            put(&db, &key(next, n));
            delete(&db, &key(next, n));
        }
        put(&db, &key(next, CONSUMED));
        let walked = tombstones_walked(|| assert_eq!(scan_all(&db, &[table]), vec![key(table, 1)]));
        assert_eq!(walked, 0);
    }

    #[test]
    fn an_entry_written_below_a_queue_hint_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path()).unwrap();
        let queue = QUEUE_TABLES[1];
        put(&db, &key(queue, 50));
        assert_eq!(scan_all(&db, &[queue]), vec![key(queue, 50)]);
        put(&db, &key(queue, 10));
        assert_eq!(scan_all(&db, &[queue]), vec![key(queue, 10), key(queue, 50)]);
        delete(&db, &key(queue, 10));
        delete(&db, &key(queue, 50));
        assert_eq!(scan_all(&db, &[queue]), Vec::<Vec<u8>>::new());
        put(&db, &key(queue, 5));
        assert_eq!(scan_all(&db, &[queue]), vec![key(queue, 5)]);
    }

    #[test]
    fn replacing_the_state_forgets_the_queue_hints() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path()).unwrap();
        let queue = QUEUE_TABLES[2];
        put(&db, &key(queue, 50));
        assert_eq!(scan_all(&db, &[queue]), vec![key(queue, 50)]);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf(&db, CF_STATE), [0u8].as_slice(), [0xFFu8; 9].as_slice());
        batch.put_cf(cf(&db, CF_STATE), key(queue, 7), b"v");
        db.replace_state(batch).unwrap();
        assert_eq!(scan_all(&db, &[queue]), vec![key(queue, 7)]);
    }

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
    }
}

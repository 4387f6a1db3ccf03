//! A replica's snapshots: RocksDB checkpoints, serialised only when a follower needs one.
//!
//! A snapshot lets raft compact the log and lets a follower that fell too far behind catch up. The
//! first need is constant, the second rare. Copying the state and the remembered answers into a file
//! at every snapshot made the common case pay for the rare one: with a few million answers
//! remembered, each snapshot read, encoded, wrote and synced a few hundred megabytes, took a quarter
//! of a second of CPU that grew with the history, and its disk writes stretched the log's fsyncs
//! next to it. So a snapshot is now a RocksDB checkpoint of the partition's database: its memtables
//! are flushed and its table files hard-linked into a directory of their own, which costs about the
//! same whatever the size of the state. Only when a follower has to receive a snapshot is the
//! checkpoint serialised ([`SnapshotStream`]), once per snapshot, into a stream file beside it.
//!
//! Layout, under `<partition>/snapshots/`:
//! - `<name>/`: a checkpoint (a complete RocksDB database, opened read-only when needed);
//! - `current`: which checkpoint is the snapshot and its raft metadata, replaced atomically, so a
//!   crash leaves either the previous snapshot or the new one;
//! - `<name>.stream`: the checkpoint serialised for followers, made on first use;
//! - `incoming-<n>.stream`: a snapshot being received from the leader.
//!
//! Anything else there is left over from an interrupted snapshot and is removed by the next one.
//!
//! The stream format (version 3) is a header, `postcard(u16 version) ‖ u32 length ‖ postcard(meta)`,
//! then frames `family ‖ u32 key length ‖ key ‖ u32 value length ‖ value` with family 1 for the
//! `state` column family and 2 for `answers`, and a 0 byte that ends it. Lengths are little-endian.
//! Versions 1 and 2 were single postcard files (`<partition>/snapshot.bin`); a replica still offers
//! one of those until it takes its first checkpoint, and installs them when an older leader sends
//! one.

use std::fs::File;
use std::future::Future as _;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};

use openraft::SnapshotMeta;
use rocksdb::checkpoint::Checkpoint;
use rocksdb::{IteratorMode, Options, WriteBatch, DB};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use crate::dedup;
use crate::storage::{cf, Database, CF_ANSWERS, CF_LOG, CF_RAFT, CF_STATE};

pub type Meta = SnapshotMeta<u64, openraft::BasicNode>;

/// The version of the stream format written here; 1 and 2 are still read.
const STREAM_FORMAT_VERSION: u16 = 3;

const FRAME_END: u8 = 0;
const FRAME_STATE: u8 = 1;
const FRAME_ANSWER: u8 = 2;

/// Names temporary files uniquely within the process, so that two concurrent serialisations or
/// receptions never write the same file.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot I/O failed ({context}): {source}")]
    Io { context: String, source: std::io::Error },
    #[error("RocksDB failed on a snapshot ({context}): {source}")]
    Rocks { context: String, source: rocksdb::Error },
    #[error("the snapshot is not readable: {0}")]
    Format(String),
    #[error("the snapshot task stopped before it finished: {0}")]
    Stopped(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let context = context.into();
    move |source| SnapshotError::Io { context, source }
}

fn rocks(context: impl Into<String>) -> impl FnOnce(rocksdb::Error) -> SnapshotError {
    let context = context.into();
    move |source| SnapshotError::Rocks { context, source }
}

/// What `current` records.
#[derive(Serialize, Deserialize)]
struct Pointer {
    checkpoint: String,
    meta: Meta,
}

/// Where a replica keeps its snapshots (see the module documentation).
pub struct SnapshotStore {
    dir: PathBuf,
    /// The single-file snapshot of brokers before checkpoints.
    legacy: PathBuf,
    /// Held while a snapshot is taken: a follower can build one while it installs another, and
    /// each would otherwise remove the other's checkpoint as a leftover.
    taking: std::sync::Mutex<()>,
}

impl SnapshotStore {
    /// The store of the partition whose database is in `partition_dir`. Snapshots that were being
    /// received when the replica last stopped are removed: the leader sends them again.
    pub fn new(partition_dir: &Path) -> Self {
        let store = Self {
            dir: partition_dir.join("snapshots"),
            legacy: partition_dir.join("snapshot.bin"),
            taking: std::sync::Mutex::new(()),
        };
        for entry in std::fs::read_dir(&store.dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with("incoming-") {
                if let Err(e) = std::fs::remove_file(entry.path()) {
                    tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove a partial snapshot");
                }
            }
        }
        store
    }

    fn pointer_path(&self) -> PathBuf {
        self.dir.join("current")
    }

    fn stream_path(&self, checkpoint: &str) -> PathBuf {
        self.dir.join(format!("{checkpoint}.stream"))
    }

    /// The snapshot `pointer` names: its metadata, and its data as a stream that is serialised from
    /// the checkpoint only when first read.
    fn snapshot(&self, pointer: Pointer) -> (Meta, SnapshotStream) {
        let (checkpoint, stream) = (self.dir.join(&pointer.checkpoint), self.stream_path(&pointer.checkpoint));
        let data = SnapshotStream::pending(checkpoint, stream, pointer.meta.clone());
        (pointer.meta, data)
    }

    /// Checkpoints `db` and makes the checkpoint the current snapshot; `meta` gives its raft
    /// metadata, given the checkpoint's directory (a build reads the applied log id and membership
    /// from the checkpoint itself, not from the live database that goes on changing; an install
    /// already knows them), and `stream`, if
    /// given, is a serialised form of the same state to keep for followers. If the current snapshot
    /// is already further along (an install overtook a build), it stays current and is returned.
    pub fn take(
        &self,
        db: &Database,
        meta: impl FnOnce(&Path, String) -> Result<Meta, SnapshotError>,
        stream: Option<&Path>,
    ) -> Result<(Meta, SnapshotStream), SnapshotError> {
        let _taking = self.taking.lock().expect("taking a snapshot never panics while holding the lock");
        std::fs::create_dir_all(&self.dir).map_err(io("creating the snapshot directory"))?;
        let name = format!("{}-{}", crate::now_millis(), SEQUENCE.fetch_add(1, Ordering::Relaxed));
        let path = self.dir.join(&name);
        Checkpoint::new(&**db)
            .and_then(|checkpoint| checkpoint.create_checkpoint(&path))
            .map_err(rocks("creating a checkpoint"))?;
        let meta = meta(&path, name.clone())?;
        if let Some(current) = self.pointer()?.filter(|current| current.meta.last_log_id > meta.last_log_id) {
            self.remove_all_but(&current.checkpoint);
            return Ok(self.snapshot(current));
        }
        if let Some(stream) = stream {
            std::fs::rename(stream, self.stream_path(&name)).map_err(io("keeping the received snapshot"))?;
        }
        let pointer = Pointer { checkpoint: name.clone(), meta };
        write_durably(&self.pointer_path(), &crate::raft::encode(&pointer))?;
        self.remove_all_but(&name);
        Ok(self.snapshot(pointer))
    }

    fn pointer(&self) -> Result<Option<Pointer>, SnapshotError> {
        match std::fs::read(self.pointer_path()) {
            Ok(bytes) => postcard::from_bytes(&bytes).map(Some).map_err(|e| SnapshotError::Format(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("reading the current snapshot")(e)),
        }
    }

    /// Removes every checkpoint, stream and leftover but the current checkpoint and its stream.
    /// Failures only leave files behind for the next snapshot to remove, so they are logged.
    fn remove_all_but(&self, current: &str) {
        let keep = [current.to_string(), format!("{current}.stream"), "current".to_string()];
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => return tracing::warn!(dir = %self.dir.display(), error = %e, "cannot list old snapshots"),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&name) || name.starts_with("incoming-") {
                continue;
            }
            let path = entry.path();
            let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            if let Err(e) = removed {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove an old snapshot");
            }
        }
        if let Err(e) = std::fs::remove_file(&self.legacy) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.legacy.display(), error = %e, "cannot remove the old snapshot file");
            }
        }
    }

    /// The current snapshot, if there is one: its metadata, and its data as a stream that is
    /// serialised from the checkpoint only when first read.
    pub fn current(&self) -> Result<Option<(Meta, SnapshotStream)>, SnapshotError> {
        if let Some(pointer) = self.pointer()? {
            return Ok(Some(self.snapshot(pointer)));
        }
        let mut file = match File::open(&self.legacy) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("opening the snapshot file")(e)),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io("reading the snapshot file"))?;
        let (version, rest) =
            postcard::take_from_bytes::<u16>(&bytes).map_err(|e| SnapshotError::Format(e.to_string()))?;
        if version >= STREAM_FORMAT_VERSION {
            return Err(SnapshotError::Format(format!("{} has format {version}", self.legacy.display())));
        }
        let (meta, _) = postcard::take_from_bytes::<Meta>(rest).map_err(|e| SnapshotError::Format(e.to_string()))?;
        let file = File::open(&self.legacy).map_err(io("opening the snapshot file"))?;
        Ok(Some((meta, SnapshotStream::ready(file, self.legacy.clone()))))
    }

    /// A new, empty stream to receive a snapshot into.
    pub fn receive(&self) -> Result<SnapshotStream, SnapshotError> {
        std::fs::create_dir_all(&self.dir).map_err(io("creating the snapshot directory"))?;
        let path = self.dir.join(format!("incoming-{}.stream", SEQUENCE.fetch_add(1, Ordering::Relaxed)));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io("creating a file for a received snapshot"))?;
        Ok(SnapshotStream::ready(file, path))
    }
}

/// Opens a checkpoint's database for reading.
pub fn open_checkpoint(path: &Path) -> Result<DB, SnapshotError> {
    DB::open_cf_for_read_only(&Options::default(), path, [CF_LOG, CF_RAFT, CF_STATE, CF_ANSWERS], false)
        .map_err(rocks(format!("opening checkpoint {}", path.display())))
}

/// Writes `bytes` to `path` so that after a crash `path` holds either its old content or `bytes`.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    let tmp = path.with_extension(format!("tmp-{}", SEQUENCE.fetch_add(1, Ordering::Relaxed)));
    File::create(&tmp)
        .and_then(|mut out| out.write_all(bytes).and_then(|_| out.sync_all()))
        .and_then(|_| std::fs::rename(&tmp, path))
        .and_then(|_| sync_parent(path))
        .map_err(io(format!("writing {}", path.display())))
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Serialises the checkpoint at `checkpoint` into a new stream file at `stream`, with the answers
/// still remembered at `now`, and opens it for reading.
fn serialise(checkpoint: &Path, stream: &Path, meta: &Meta, now: i64) -> Result<File, SnapshotError> {
    let db = open_checkpoint(checkpoint)?;
    let tmp = stream.with_extension(format!("tmp-{}", SEQUENCE.fetch_add(1, Ordering::Relaxed)));
    let context = || format!("writing {}", tmp.display());
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp).map_err(io(context()))?);
    let header = crate::raft::encode(meta);
    out.write_all(&crate::raft::encode(&STREAM_FORMAT_VERSION))
        .and_then(|_| out.write_all(&(header.len() as u32).to_le_bytes()))
        .and_then(|_| out.write_all(&header))
        .map_err(io(context()))?;
    let mut frame = |family: u8, key: &[u8], value: &[u8]| {
        out.write_all(&[family])
            .and_then(|_| out.write_all(&(key.len() as u32).to_le_bytes()))
            .and_then(|_| out.write_all(key))
            .and_then(|_| out.write_all(&(value.len() as u32).to_le_bytes()))
            .and_then(|_| out.write_all(value))
            .map_err(io(context()))
    };
    for item in db.iterator_cf(cf(&db, CF_STATE), IteratorMode::Start) {
        let (key, value) = item.map_err(rocks("reading a checkpoint's state"))?;
        frame(FRAME_STATE, &key, &value)?;
    }
    for item in db.iterator_cf(cf(&db, CF_ANSWERS), IteratorMode::Start) {
        let (key, value) = item.map_err(rocks("reading a checkpoint's answers"))?;
        if dedup::is_live(&value, now) {
            frame(FRAME_ANSWER, &key, &value)?;
        }
    }
    out.write_all(&[FRAME_END]).and_then(|_| out.flush()).map_err(io(context()))?;
    drop(out);
    std::fs::rename(&tmp, stream).map_err(io(format!("naming {}", stream.display())))?;
    File::open(stream).map_err(io(format!("opening {}", stream.display())))
}

/// Reads a snapshot stream of any known format from `path` and hands each entry to `put` (family,
/// key, value), returning the metadata the stream carries.
pub fn read_stream(path: &Path, mut put: impl FnMut(u8, &[u8], &[u8])) -> Result<Meta, SnapshotError> {
    let mut input = BufReader::with_capacity(1 << 20, File::open(path).map_err(io("opening a received snapshot"))?);
    let mut version = [0u8; 1];
    input.read_exact(&mut version).map_err(io("reading a snapshot's format"))?;
    match u16::from(version[0]) {
        1 | 2 => {
            let mut bytes = version.to_vec();
            input.read_to_end(&mut bytes).map_err(io("reading a snapshot"))?;
            let (meta, state, answers) = legacy::read(&bytes)?;
            state.iter().for_each(|(k, v)| put(FRAME_STATE, k, v));
            answers.iter().for_each(|(k, v)| put(FRAME_ANSWER, k, v));
            Ok(meta)
        }
        3 => {
            let early = |e: std::io::Error| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => SnapshotError::Format("the snapshot stream ends early".into()),
                _ => io("reading a snapshot")(e),
            };
            let bytes = |len: usize, input: &mut BufReader<File>| -> Result<Vec<u8>, SnapshotError> {
                let mut buffer = vec![0u8; len];
                input.read_exact(&mut buffer).map_err(early)?;
                Ok(buffer)
            };
            let length = |input: &mut BufReader<File>| -> Result<usize, SnapshotError> {
                let mut word = [0u8; 4];
                input.read_exact(&mut word).map_err(early)?;
                Ok(u32::from_le_bytes(word) as usize)
            };
            let header_len = length(&mut input)?;
            let meta: Meta = postcard::from_bytes(&bytes(header_len, &mut input)?)
                .map_err(|e| SnapshotError::Format(e.to_string()))?;
            loop {
                let mut family = [0u8; 1];
                input.read_exact(&mut family).map_err(early)?;
                match family[0] {
                    FRAME_END => return Ok(meta),
                    family @ (FRAME_STATE | FRAME_ANSWER) => {
                        let key_len = length(&mut input)?;
                        let key = bytes(key_len, &mut input)?;
                        let value_len = length(&mut input)?;
                        let value = bytes(value_len, &mut input)?;
                        put(family, &key, &value);
                    }
                    other => return Err(SnapshotError::Format(format!("unknown frame kind {other}"))),
                }
            }
        }
        newer => Err(SnapshotError::Format(format!("snapshot format {newer} is newer than this broker"))),
    }
}

/// Replaces the `state` and `answers` column families of `db` with the snapshot stream at `path`, in
/// one atomic write, and returns the metadata the stream carries.
pub fn install(db: &Database, path: &Path) -> Result<Meta, SnapshotError> {
    let (state, answers) = (cf(db, CF_STATE), cf(db, CF_ANSWERS));
    let mut batch = WriteBatch::default();
    batch.delete_range_cf(state, [0u8].as_slice(), [0xFFu8; 9].as_slice());
    batch.delete_range_cf(answers, b"".as_slice(), [0xFFu8; 9].as_slice());
    let meta = read_stream(path, |family, key, value| match family {
        FRAME_STATE => batch.put_cf(state, key, value),
        _ => batch.put_cf(answers, key, value),
    })?;
    db.replace_state(batch).map_err(rocks("installing a snapshot"))?;
    Ok(meta)
}

/// Snapshot files of brokers before checkpoints: one postcard value per file.
mod legacy {
    use serde::Deserialize;

    use super::{Meta, SnapshotError};
    use crate::dedup;

    type Entries = Vec<(Vec<u8>, Vec<u8>)>;

    /// Version 2 carried the remembered answers apart from the state.
    #[derive(Deserialize)]
    struct Version2 {
        _version: u16,
        meta: Meta,
        entries: Entries,
        answers: Entries,
    }

    /// Version 1 kept the answers in the state.
    #[derive(Deserialize)]
    struct Version1 {
        _version: u16,
        meta: Meta,
        entries: Entries,
    }

    /// The metadata, the state entries and the answers of a version 1 or 2 file.
    pub(super) fn read(bytes: &[u8]) -> Result<(Meta, Entries, Entries), SnapshotError> {
        let format = |e: postcard::Error| SnapshotError::Format(e.to_string());
        match bytes.first() {
            Some(1) => {
                let Version1 { meta, mut entries, .. } = postcard::from_bytes(bytes).map_err(format)?;
                let answers = dedup::migrate_entries(&mut entries);
                Ok((meta, entries, answers))
            }
            _ => {
                let Version2 { meta, entries, answers, .. } = postcard::from_bytes(bytes).map_err(format)?;
                Ok((meta, entries, answers))
            }
        }
    }
}

/// Snapshot data as openraft reads and writes it: a file, which for the current snapshot is first
/// serialised from its checkpoint, on a blocking thread, when openraft first reads or seeks it.
pub struct SnapshotStream {
    state: StreamState,
    /// A seek asked for before the file was there.
    seek: Option<std::io::SeekFrom>,
}

enum StreamState {
    Pending { checkpoint: PathBuf, stream: PathBuf, meta: Box<Meta> },
    Serialising { task: tokio::task::JoinHandle<Result<File, SnapshotError>>, path: PathBuf },
    Ready { file: tokio::fs::File, path: PathBuf },
    Failed,
}

impl SnapshotStream {
    fn pending(checkpoint: PathBuf, stream: PathBuf, meta: Meta) -> Self {
        Self { state: StreamState::Pending { checkpoint, stream, meta: Box::new(meta) }, seek: None }
    }

    fn ready(file: File, path: PathBuf) -> Self {
        Self { state: StreamState::Ready { file: tokio::fs::File::from_std(file), path }, seek: None }
    }

    /// The file behind a stream that has one (a received snapshot, or one already serialised).
    pub fn path(&self) -> Option<&Path> {
        match &self.state {
            StreamState::Ready { path, .. } => Some(path),
            _ => None,
        }
    }

    /// Drives the stream to its file: starts the serialisation if it has not started, and waits
    /// for it.
    fn poll_file(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<&mut tokio::fs::File>> {
        loop {
            let next = match &mut self.state {
                StreamState::Pending { checkpoint, stream, meta } => {
                    let (checkpoint, path, meta) = (checkpoint.clone(), stream.clone(), meta.clone());
                    let (stream, now) = (path.clone(), crate::now_millis());
                    let task = tokio::task::spawn_blocking(move || match File::open(&stream) {
                        Ok(file) => Ok(file),
                        Err(_) => serialise(&checkpoint, &stream, &meta, now),
                    });
                    StreamState::Serialising { task, path }
                }
                StreamState::Serialising { task, path } => {
                    let joined = ready!(Pin::new(task).poll(cx));
                    match joined.map_err(std::io::Error::other).and_then(|r| r.map_err(std::io::Error::other)) {
                        Ok(file) => {
                            StreamState::Ready { file: tokio::fs::File::from_std(file), path: std::mem::take(path) }
                        }
                        Err(e) => {
                            self.state = StreamState::Failed;
                            return Poll::Ready(Err(e));
                        }
                    }
                }
                StreamState::Ready { .. } => break,
                StreamState::Failed => {
                    return Poll::Ready(Err(std::io::Error::other("the snapshot could not be serialised")))
                }
            };
            self.state = next;
        }
        let StreamState::Ready { file, .. } = &mut self.state else { unreachable!("the loop ends on a ready stream") };
        if let Some(position) = self.seek.take() {
            Pin::new(&mut *file).start_seek(position)?;
        }
        Poll::Ready(Ok(file))
    }
}

impl AsyncRead for SnapshotStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let file = ready!(self.get_mut().poll_file(cx))?;
        Pin::new(file).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let file = ready!(self.get_mut().poll_file(cx))?;
        Pin::new(file).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let file = ready!(self.get_mut().poll_file(cx))?;
        Pin::new(file).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let file = ready!(self.get_mut().poll_file(cx))?;
        Pin::new(file).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotStream {
    fn start_seek(self: Pin<&mut Self>, position: std::io::SeekFrom) -> std::io::Result<()> {
        let this = self.get_mut();
        match &mut this.state {
            StreamState::Ready { file, .. } => Pin::new(file).start_seek(position),
            _ => {
                this.seek = Some(position);
                Ok(())
            }
        }
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        let file = ready!(self.get_mut().poll_file(cx))?;
        Pin::new(file).poll_complete(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use waggle_protocol::record::{Answer, RecordBatch};

    use super::*;
    use crate::storage::open;

    type Entries = BTreeMap<(u8, Vec<u8>), Vec<u8>>;

    fn meta(id: &str) -> Meta {
        Meta { snapshot_id: id.into(), ..Default::default() }
    }

    /// A database with two state entries and two answers, one of them expired at `now`.
    fn filled(dir: &Path, now: i64) -> std::sync::Arc<Database> {
        let db = open(dir).unwrap();
        let mut write = WriteBatch::default();
        write.put_cf(cf(&db, CF_STATE), [0x05, 1], [1u8]);
        write.put_cf(cf(&db, CF_STATE), [0x07, 2], [2u8]);
        let live =
            RecordBatch::with_answers(vec![], now, now + 60_000, vec![Answer { request_id: 1, result: vec![9] }]);
        let expired = RecordBatch::with_answers(vec![], now, now - 1, vec![Answer { request_id: 2, result: vec![8] }]);
        dedup::remember(&db, &mut write, &live);
        dedup::remember(&db, &mut write, &expired);
        db.write(write).unwrap();
        db
    }

    fn contents(db: &DB) -> Entries {
        let mut entries = Entries::new();
        for (family, name) in [(FRAME_STATE, CF_STATE), (FRAME_ANSWER, CF_ANSWERS)] {
            for item in db.iterator_cf(cf(db, name), IteratorMode::Start) {
                let (key, value) = item.unwrap();
                entries.insert((family, key.to_vec()), value.to_vec());
            }
        }
        entries
    }

    fn read_all(path: &Path) -> Result<(Meta, Entries), SnapshotError> {
        let mut entries = Entries::new();
        let meta = read_stream(path, |family, key, value| {
            entries.insert((family, key.to_vec()), value.to_vec());
        })?;
        Ok((meta, entries))
    }

    async fn materialise(mut stream: SnapshotStream) -> Vec<u8> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        stream.seek(std::io::SeekFrom::Start(0)).await.unwrap();
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await.unwrap();
        bytes
    }

    #[tokio::test]
    async fn a_checkpoint_streams_the_state_and_the_live_answers_into_a_follower() {
        let now = crate::now_millis();
        let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let leader = filled(leader_dir.path(), now);
        let store = SnapshotStore::new(leader_dir.path());
        let (taken, _) = store.take(&leader, |_, name| Ok(meta(&name)), None).unwrap();
        let (current, stream) = store.current().unwrap().expect("a current snapshot");
        assert_eq!(current, taken);
        let bytes = materialise(stream).await;

        let follower = open(follower_dir.path()).unwrap();
        let mut stale = WriteBatch::default();
        stale.put_cf(cf(&follower, CF_STATE), [0x09], [0u8]);
        follower.write(stale).unwrap();
        let received = SnapshotStore::new(follower_dir.path()).receive().unwrap();
        let path = received.path().unwrap().to_owned();
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(install(&follower, &path).unwrap(), taken);

        let mut expected = contents(&leader);
        expected.retain(|(family, key), _| !(*family == FRAME_ANSWER && key == &2u64.to_be_bytes()));
        assert_eq!(expected.len(), 3, "two state entries and the live answer");
        assert_eq!(contents(&follower), expected, "the stale entry is gone, the expired answer not copied");
    }

    #[tokio::test]
    async fn a_checkpoint_is_what_the_database_held_when_it_was_taken() {
        let now = crate::now_millis();
        let dir = tempfile::tempdir().unwrap();
        let db = filled(dir.path(), now);
        let store = SnapshotStore::new(dir.path());
        let before = contents(&db);
        store.take(&db, |_, name| Ok(meta(&name)), None).unwrap();
        let mut later = WriteBatch::default();
        later.put_cf(cf(&db, CF_STATE), [0x05, 3], [3u8]);
        db.write(later).unwrap();

        let (_, stream) = store.current().unwrap().unwrap();
        let copy = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(copy.path(), materialise(stream).await).unwrap();
        let (_, streamed) = read_all(copy.path()).unwrap();
        assert_eq!(streamed.len(), before.len() - 1, "all but the expired answer");
        assert!(streamed.iter().all(|(entry, value)| before.get(entry) == Some(value)));
    }

    #[test]
    fn a_new_snapshot_replaces_the_previous_one_and_its_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let db = filled(dir.path(), crate::now_millis());
        let store = SnapshotStore::new(dir.path());
        std::fs::write(dir.path().join("snapshot.bin"), b"old format").unwrap();
        store.take(&db, |_, name| Ok(meta(&name)), None).unwrap();
        std::fs::create_dir(store.dir.join("interrupted")).unwrap();
        let incoming = store.receive().unwrap();
        let (second, _) = store.take(&db, |_, name| Ok(meta(&name)), None).unwrap();

        let mut names: Vec<String> =
            std::fs::read_dir(&store.dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        names.sort();
        let incoming_name = incoming.path().unwrap().file_name().unwrap().to_string_lossy().into_owned();
        let mut expected = vec!["current".to_string(), second.snapshot_id.clone(), incoming_name];
        expected.sort();
        assert_eq!(names, expected);
        assert!(!dir.path().join("snapshot.bin").exists(), "the old-format file is gone");
        assert_eq!(store.current().unwrap().unwrap().0, second);
    }

    #[test]
    fn a_truncated_stream_is_refused_saying_so() {
        let dir = tempfile::tempdir().unwrap();
        let db = filled(dir.path(), crate::now_millis());
        let store = SnapshotStore::new(dir.path());
        store.take(&db, |_, name| Ok(meta(&name)), None).unwrap();
        let checkpoint = store.dir.join(store.pointer().unwrap().unwrap().checkpoint);
        let path = dir.path().join("cut.stream");
        serialise(&checkpoint, &path, &meta("m"), crate::now_millis()).unwrap();
        let whole = std::fs::read(&path).unwrap();
        std::fs::write(&path, &whole[..whole.len() - 3]).unwrap();
        let error = read_all(&path).expect_err("refused");
        assert!(error.to_string().contains("ends early"), "{error}");
        let untouched = contents(&db);
        assert!(install(&db, &path).is_err());
        assert_eq!(contents(&db), untouched, "a refused snapshot changes nothing");
    }

    #[derive(Serialize)]
    struct WrittenByVersion1 {
        version: u16,
        meta: Meta,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
    }

    #[test]
    fn a_snapshot_of_an_older_broker_is_offered_and_installed_with_its_answers_moved_out_of_the_state() {
        let until: i64 = 9_000;
        let mut index = vec![0xF2];
        index.extend_from_slice(&((until as u64) ^ (1 << 63)).to_be_bytes());
        index.extend_from_slice(&42u64.to_be_bytes());
        let mut answer_key = vec![0xF1];
        answer_key.extend_from_slice(&42u64.to_be_bytes());
        let entries = vec![(vec![0x05, 1], vec![1]), (answer_key, vec![7]), (index, vec![])];
        let bytes = crate::raft::encode(&WrittenByVersion1 { version: 1, meta: meta("old"), entries });
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("snapshot.bin"), &bytes).unwrap();

        let (offered, _) = SnapshotStore::new(dir.path()).current().unwrap().expect("the old file is offered");
        assert_eq!(offered.snapshot_id, "old");
        let (read, entries) = read_all(&dir.path().join("snapshot.bin")).unwrap();
        assert_eq!(read.snapshot_id, "old");
        let mut remembered = until.to_be_bytes().to_vec();
        remembered.push(7);
        let expected = Entries::from([
            ((FRAME_STATE, vec![0x05, 1]), vec![1]),
            ((FRAME_ANSWER, 42u64.to_be_bytes().to_vec()), remembered),
        ]);
        assert_eq!(entries, expected);
    }

    #[test]
    fn a_snapshot_of_a_newer_format_is_refused_saying_so() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), crate::raft::encode(&(STREAM_FORMAT_VERSION + 1))).unwrap();
        let error = read_all(file.path()).expect_err("refused");
        assert!(error.to_string().contains("newer than this broker"), "{error}");
    }
}

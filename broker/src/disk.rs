//! The free space of the disk that holds the data directory, against the watermark below which the
//! broker takes no new commands.
//!
//! A full disk is the one fault a broker cannot ride out: raft can no longer append, and a write
//! that fails half-way stops the partition's raft for good. So the broker backs off in two steps
//! while there is still room:
//!
//! 1. below `min_free_disk_bytes` it takes no new client commands, answering RESOURCE_EXHAUSTED
//!    with the reason; what is already in flight, time-driven work and the messages between
//!    partitions can still be written;
//! 2. below `replication_min_free_disk_bytes` it writes nothing more to its log: a leader stops
//!    appending batches, and a follower refuses the entries and snapshots its leader sends (the
//!    leader retries them later). Heartbeats and votes still flow, so leadership stays put.
//!
//! The space is sampled every second; once it is freed, the broker takes commands and replicates
//! again by itself, without a restart.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

const SAMPLE_EVERY: Duration = Duration::from_secs(1);

pub struct DiskWatch {
    free_bytes: AtomicU64,
    watermarks: Watermarks,
}

/// Free bytes below which the broker refuses commands, and below which it stops writing its log.
#[derive(Clone, Copy, Debug)]
pub struct Watermarks {
    pub commands: u64,
    pub replication: u64,
}

impl DiskWatch {
    /// Samples the free space of `dir` now and then every second until `shutdown`.
    pub fn start(
        dir: PathBuf,
        watermarks: Watermarks,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Arc<DiskWatch> {
        let watch = Arc::new(DiskWatch { free_bytes: AtomicU64::new(u64::MAX), watermarks });
        watch.sample(&dir, &metrics);
        let sampler = watch.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(SAMPLE_EVERY) => sampler.sample(&dir, &metrics),
                }
            }
        });
        watch
    }

    fn sample(&self, dir: &Path, metrics: &Metrics) {
        match free_bytes(dir) {
            Ok(free) => {
                let before = self.free_bytes.swap(free, Ordering::Relaxed);
                metrics.disk_free_bytes.set(free.min(i64::MAX as u64) as i64);
                self.report_crossings(before, free);
            }
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot read the free disk space"),
        }
    }

    fn report_crossings(&self, before: u64, free: u64) {
        let Watermarks { commands, replication } = self.watermarks;
        match (before < commands, free < commands) {
            (false, true) => tracing::warn!(
                free,
                watermark = commands,
                "disk space is below min_free_disk_bytes: refusing new commands"
            ),
            (true, false) => tracing::info!(free, "disk space is above min_free_disk_bytes again: taking commands"),
            _ => {}
        }
        match (before < replication, free < replication) {
            (false, true) => tracing::warn!(
                free,
                watermark = replication,
                "disk space is below replication_min_free_disk_bytes: writing nothing more to the log"
            ),
            (true, false) => {
                tracing::info!(free, "disk space is above replication_min_free_disk_bytes again: replicating")
            }
            _ => {}
        }
    }

    /// `Err((free, watermark))` while the free space is below the watermark for new commands.
    pub fn check(&self) -> Result<(), (u64, u64)> {
        self.below(self.watermarks.commands)
    }

    /// `Err((free, watermark))` while the free space is too low to write anything to the log.
    pub fn check_replication(&self) -> Result<(), (u64, u64)> {
        self.below(self.watermarks.replication)
    }

    /// `Err((free, needed))` while the free space is below the replication watermark or below
    /// `floor`, the least a replica needs to open its database again.
    pub fn check_restart(&self, floor: u64) -> Result<(), (u64, u64)> {
        self.below(self.watermarks.replication.max(floor))
    }

    fn below(&self, watermark: u64) -> Result<(), (u64, u64)> {
        let free = self.free_bytes.load(Ordering::Relaxed);
        if free < watermark {
            Err((free, watermark))
        } else {
            Ok(())
        }
    }
}

/// Bytes available to this (unprivileged) process on the file system holding `dir`.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path contains a NUL byte"))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a valid NUL-terminated string and `stat` is a writable statvfs buffer; the
    // buffer is only read after the call reported success.
    let result = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs succeeded, so it filled the buffer.
    let stat = unsafe { stat.assume_init() };
    // The field types differ between platforms (u32 on some 32-bit ones).
    #[allow(clippy::unnecessary_cast)]
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_free_space_of_a_real_directory_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        assert!(free > 0);
        assert!(free_bytes(&dir.path().join("missing")).is_err());
    }
}

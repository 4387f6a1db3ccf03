//! A partition's state: ordered key-value tables behind one narrow trait.
//!
//! The engine never touches storage directly. It reads through [`KvRead`] and writes through
//! [`KvWrite`]; the broker implements [`KvRead`] over RocksDB and this crate provides [`MemKv`] (tests,
//! benchmarks) and [`Overlay`], which buffers writes on top of any reader. The leader processes commands
//! on an overlay and throws it away; every replica, leader included, then applies the committed events
//! through an overlay whose writes it commits to RocksDB in one write batch, together with the applied
//! log index. One generic trait (instead of one per backend per table) keeps the RocksDB side tiny, and
//! the typed tables ([`tables`]) are written once and checked on every backend by [`conformance`].
//!
//! Key layout: every table owns a one-byte prefix that is never reused; a table whose layout changes gets
//! a new prefix. Integers in keys are big-endian so that byte order is numeric order.

pub mod conformance;
mod overlay;
pub mod tables;

use std::collections::BTreeMap;

pub use overlay::{Overlay, Write};

/// Read access to ordered key-value state.
pub trait KvRead {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    /// Visits the entries whose keys start with `prefix`, in key order, until `visit` returns false.
    fn scan_prefix(&self, prefix: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool);
}

/// Read and write access to ordered key-value state.
pub trait KvWrite: KvRead {
    fn put(&mut self, key: &[u8], value: &[u8]);
    fn delete(&mut self, key: &[u8]);
}

/// State held in memory; the reference backend.
#[derive(Default, Clone, Debug)]
pub struct MemKv {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl MemKv {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &Vec<u8>)> {
        self.entries.iter()
    }

    /// Applies an overlay's buffered writes.
    pub fn commit(&mut self, writes: impl IntoIterator<Item = (Vec<u8>, Write)>) {
        for (key, write) in writes {
            match write {
                Write::Put(value) => {
                    self.entries.insert(key, value);
                }
                Write::Delete => {
                    self.entries.remove(&key);
                }
            }
        }
    }
}

impl KvRead for MemKv {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.entries.get(key).cloned()
    }

    fn scan_prefix(&self, prefix: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) {
        for (k, v) in self.entries.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) || !visit(k, v) {
                break;
            }
        }
    }
}

impl KvWrite for MemKv {
    fn put(&mut self, key: &[u8], value: &[u8]) {
        self.entries.insert(key.to_vec(), value.to_vec());
    }

    fn delete(&mut self, key: &[u8]) {
        self.entries.remove(key);
    }
}

//! Buffered writes over a read-only base.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::{KvRead, KvWrite};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    Put(Vec<u8>),
    Delete,
}

/// Reads see the buffered writes first, then the base; nothing reaches the base until the owner takes
/// the writes with [`Overlay::into_writes`] and commits them.
pub struct Overlay<'a> {
    base: &'a dyn KvRead,
    writes: BTreeMap<Vec<u8>, Write>,
}

impl<'a> Overlay<'a> {
    pub fn new(base: &'a dyn KvRead) -> Self {
        Self { base, writes: BTreeMap::new() }
    }

    pub fn into_writes(self) -> BTreeMap<Vec<u8>, Write> {
        self.writes
    }
}

impl KvRead for Overlay<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.writes.get(key) {
            Some(Write::Put(value)) => Some(value.clone()),
            Some(Write::Delete) => None,
            None => self.base.get(key),
        }
    }

    fn scan_prefix(&self, prefix: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) {
        // Merge the base's entries with the buffered writes, both in key order.
        let mut own = self
            .writes
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .peekable();
        let mut stopped = false;
        self.base.scan_prefix(prefix, &mut |key, value| {
            while let Some((own_key, write)) = own.peek() {
                if own_key.as_slice() > key {
                    break;
                }
                let same = own_key.as_slice() == key;
                if let Write::Put(own_value) = write {
                    if !visit(own_key, own_value) {
                        stopped = true;
                        return false;
                    }
                }
                own.next();
                if same {
                    return true;
                }
            }
            if !visit(key, value) {
                stopped = true;
                return false;
            }
            true
        });
        if stopped {
            return;
        }
        for (key, write) in own {
            if let Write::Put(value) = write {
                if !visit(key, value) {
                    return;
                }
            }
        }
    }
}

impl KvWrite for Overlay<'_> {
    fn put(&mut self, key: &[u8], value: &[u8]) {
        self.writes.insert(key.to_vec(), Write::Put(value.to_vec()));
    }

    fn delete(&mut self, key: &[u8]) {
        self.writes.insert(key.to_vec(), Write::Delete);
    }
}

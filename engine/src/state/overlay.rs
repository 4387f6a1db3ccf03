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
///
/// A checkpoint lets the owner undo the writes of one command of a batch whose processing failed
/// half-way, keeping those of the commands before it.
pub struct Overlay<'a> {
    base: &'a dyn KvRead,
    writes: BTreeMap<Vec<u8>, Write>,
    /// While a checkpoint is open: what each key written since held in `writes` before.
    undo: Option<Vec<(Vec<u8>, Option<Write>)>>,
}

impl<'a> Overlay<'a> {
    pub fn new(base: &'a dyn KvRead) -> Self {
        Self { base, writes: BTreeMap::new(), undo: None }
    }

    /// Starts remembering writes so that [`Overlay::rollback`] can undo them.
    pub fn checkpoint(&mut self) {
        self.undo = Some(Vec::new());
    }

    /// Keeps the writes since the checkpoint and closes it.
    pub fn release(&mut self) {
        self.undo = None;
    }

    /// Undoes every write since the checkpoint and closes it.
    pub fn rollback(&mut self) {
        for (key, previous) in self.undo.take().unwrap_or_default().into_iter().rev() {
            match previous {
                Some(write) => self.writes.insert(key, write),
                None => self.writes.remove(&key),
            };
        }
    }

    /// Buffers `write` of `key`, noting what it replaces while a checkpoint is open. The replaced
    /// write moves into the undo log rather than being copied: every write of a batch passes here.
    fn record(&mut self, key: &[u8], write: Write) {
        let key = key.to_vec();
        match &mut self.undo {
            Some(undo) => {
                let previous = self.writes.insert(key.clone(), write);
                undo.push((key, previous));
            }
            None => {
                self.writes.insert(key, write);
            }
        }
    }

    pub fn into_writes(self) -> BTreeMap<Vec<u8>, Write> {
        self.writes
    }

    /// Takes over writes that another overlay made over the same state as this one shows, as if they
    /// had been made here: later writes replace earlier ones of the same key.
    pub fn absorb(&mut self, writes: BTreeMap<Vec<u8>, Write>) {
        debug_assert!(self.undo.is_none(), "absorbing writes while a checkpoint is open");
        if self.writes.is_empty() {
            self.writes = writes;
        } else {
            self.writes.extend(writes);
        }
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
        self.record(key, Write::Put(value.to_vec()));
    }

    fn delete(&mut self, key: &[u8]) {
        self.record(key, Write::Delete);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemKv;

    #[test]
    fn rollback_undoes_the_writes_since_the_checkpoint_and_keeps_the_earlier_ones() {
        let mut base = MemKv::new();
        base.put(b"a", b"base");
        base.put(b"b", b"base");
        let mut overlay = Overlay::new(&base);
        overlay.put(b"a", b"first");
        overlay.checkpoint();
        overlay.put(b"a", b"second");
        overlay.delete(b"b");
        overlay.put(b"c", b"new");
        overlay.put(b"c", b"newer");
        overlay.rollback();
        assert_eq!(overlay.get(b"a"), Some(b"first".to_vec()));
        assert_eq!(overlay.get(b"b"), Some(b"base".to_vec()));
        assert_eq!(overlay.get(b"c"), None);
        overlay.checkpoint();
        overlay.put(b"c", b"kept");
        overlay.release();
        overlay.rollback();
        assert_eq!(overlay.get(b"c"), Some(b"kept".to_vec()));
    }

    #[test]
    fn absorbed_writes_replace_earlier_ones_and_keep_the_rest() {
        let mut base = MemKv::new();
        base.put(b"a", b"base");
        let mut processed = Overlay::new(&base);
        processed.put(b"b", b"processed");
        processed.delete(b"a");
        let processed = processed.into_writes();
        let mut overlay = Overlay::new(&base);
        overlay.put(b"b", b"earlier");
        overlay.put(b"c", b"earlier");
        overlay.absorb(processed);
        assert_eq!(overlay.get(b"a"), None);
        assert_eq!(overlay.get(b"b"), Some(b"processed".to_vec()));
        assert_eq!(overlay.get(b"c"), Some(b"earlier".to_vec()));
    }
}

//! The leader's processed state changes, handed to its own state machine with the batch.
//!
//! To process a batch the leader's engine runs every record it produces through the appliers on an
//! overlay of the applied state, so by the time the batch is written the leader already holds exactly
//! the state changes that applying the batch will make (the engine's tests assert this for every
//! input). Applying the committed batch through the appliers once more would repeat the same reads,
//! decoding and encoding: about a fifth of a single node's CPU. So the driver hands the overlay's writes
//! over, and the state machine takes them instead of running the appliers, but only for exactly the
//! entry they were made for, applied on exactly the state they were made on:
//!
//! - the entry's term is the term the driver led when it processed, and its first record has the
//!   batch's first position: a term has one leader, so that entry is the driver's batch;
//! - the position of the last record the state machine applied is the one the driver's overlay saw.
//!
//! Everything else goes through the appliers as before: followers, a leader's first batch after it
//! starts (the state machine does not know its position yet), entries of other terms, and a batch the
//! driver gave up on.

use std::collections::BTreeMap;
use std::sync::Mutex;

use waggle_engine::state::Write;

/// State changes the driver made while processing one batch.
pub struct Processed {
    /// The term the driver led when it processed the batch.
    pub term: u64,
    /// The position of the batch's first record.
    pub first_position: i64,
    /// The position of the last record applied to the state the driver processed on.
    pub base_position: i64,
    pub writes: BTreeMap<Vec<u8>, Write>,
}

#[derive(Default)]
struct Slot {
    /// The position of the last record the state machine applied, when it knows it.
    applied_position: Option<i64>,
    /// The driver has at most one batch in flight.
    pending: Option<Processed>,
}

/// Shared by a partition's driver and state machine.
#[derive(Default)]
pub struct Handoff {
    slot: Mutex<Slot>,
}

impl Handoff {
    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().expect("the handoff slot is never left half-updated")
    }

    /// The position of the last record applied, if the state machine knows it: the base a batch
    /// processed now has.
    pub fn applied_position(&self) -> Option<i64> {
        self.slot().applied_position
    }

    /// Offers the changes of the batch the driver is about to write.
    pub fn offer(&self, processed: Processed) {
        self.slot().pending = Some(processed);
    }

    /// Withdraws whatever the state machine did not take: the batch was applied through the
    /// appliers, or given up.
    pub fn withdraw(&self) {
        self.slot().pending = None;
    }

    /// The changes for the entry of `term` whose first record is at `first_position`, if they were
    /// made on the state the state machine has applied so far, whose last record is at `applied`.
    pub fn take(&self, term: u64, first_position: i64, applied: Option<i64>) -> Option<BTreeMap<Vec<u8>, Write>> {
        let pending = self.slot().pending.take_if(|pending| {
            pending.term == term && pending.first_position == first_position && applied == Some(pending.base_position)
        })?;
        Some(pending.writes)
    }

    /// Records the position of the last record applied; `None` when the state was replaced by a
    /// snapshot, whose last position is not known.
    pub fn set_applied_position(&self, position: Option<i64>) {
        self.slot().applied_position = position;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn processed(term: u64, first_position: i64, base_position: i64) -> Processed {
        let writes = BTreeMap::from([(b"k".to_vec(), Write::Put(b"v".to_vec()))]);
        Processed { term, first_position, base_position, writes }
    }

    #[test]
    fn the_changes_go_to_their_own_entry_applied_on_the_state_they_were_made_on() {
        let handoff = Handoff::default();
        handoff.offer(processed(3, 10, 9));
        assert!(handoff.take(2, 10, Some(9)).is_none(), "an entry of another term");
        assert!(handoff.take(3, 11, Some(9)).is_none(), "another entry of the same term");
        assert!(handoff.take(3, 10, Some(9)).is_some());
        assert!(handoff.take(3, 10, Some(9)).is_none(), "taken once");
    }

    #[test]
    fn changes_made_on_another_state_are_not_taken() {
        let handoff = Handoff::default();
        handoff.offer(processed(3, 10, 9));
        assert!(handoff.take(3, 10, None).is_none(), "the state machine does not know its position");
        assert!(handoff.take(3, 10, Some(8)).is_none(), "the state machine has not applied what the driver saw");
        assert!(handoff.take(3, 10, Some(9)).is_some());
    }
}

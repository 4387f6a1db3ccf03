//! The partition's memory of answered requests: a retried command is answered, not applied again.
//!
//! The gateway retries a command when its leader cannot be reached, turns out not to lead any more,
//! or dies while holding it. In the last two cases the first attempt may well have been applied: the
//! leader committed the batch and crashed before answering, or it lost leadership after replicating
//! the batch, which the next leader then committed. Applying the retry as well would create a second
//! instance, or reject a job completion as NOT_FOUND although it succeeded. So the gateway gives every
//! client request a [`RequestId`] that stays the same across its retries, and the partition remembers,
//! for a window (`dedup_window`, default 5 minutes), the answer it gave to each id. A retry inside the
//! window gets the first answer, whatever it was (a rejection included), and changes nothing.
//!
//! The memory is replicated state, not a cache of the leader's: the leader writes each answer into the
//! batch that commits the command ([`RecordBatch::answers`]), and every replica's state machine stores
//! it in the partition's state, next to the engine's tables. A retry that reaches a new leader after a
//! failover therefore finds it, and snapshots, which copy the whole state, carry it to replicas that
//! catch up from one. Two tables live under the state machine's own prefixes, which the engine never
//! uses:
//!
//! - `ANSWER ‖ request id` → the encoded `CommandResult`, as the leader encoded it once for the log;
//! - `EXPIRY ‖ remember-until ‖ request id` → nothing: a time-ordered index of the first.
//!
//! Expiry is deterministic: a batch carries the leader's clock ([`RecordBatch::timestamp`]) and the
//! time until which its answers are remembered, and applying a batch forgets the answers whose time is
//! up by the batch's clock, never by the replica's own, so every replica forgets the same answers at
//! the same log position. Forgetting walks the index from its front and stops at the first entry still
//! due, at most [`FORGET_PER_BATCH`] entries per batch: a bounded seek, never a scan of the table. The
//! index is a queue table for the storage layer, so the walk starts past the tombstones of entries
//! already forgotten.
//!
//! The leader looks an id up before it processes a command, both in this memory (what committed
//! batches answered) and among the commands of the batch it is building; the driver awaits each batch's
//! commit before it builds the next, so those are all the commands in flight. A second copy of a
//! request in the same batch is answered with the first copy's answer once that commits.
//!
//! What is remembered:
//!
//! - Every mutating command: deploy, create, cancel, complete/fail job, throw error, update retries or
//!   timeout, publish message, broadcast signal, set variables, resolve incident.
//! - Not `ActivateJobs`. Its answer is the activated jobs with their variables: remembering it would
//!   copy the largest answers of the busiest command into the log a second time, and handing a retry
//!   the jobs of the first attempt is no better than activating again. The jobs the first attempt
//!   activated stay locked until their time-out and are then activated again, so none is lost; only
//!   their work is delayed, which is Zeebe's behaviour for a lost activation too.
//! - A create that awaits the instance's result is answered, the first time, when the instance
//!   completes. The memory holds what was answered or is to be answered: the completion when the
//!   instance completed while this leader held the client's request (in the same batch or a later
//!   one), otherwise the creation. A retry that finds the creation waits for that instance as the
//!   first attempt did; if the instance has already ended, its result is gone and the retry is
//!   rejected saying so, rather than creating a second instance.
//!
//! Ids are 64-bit: each gateway counts up from its own random start, so two ids collide only if two
//! gateways' ranges overlap within one window, which at any plausible rate is far less likely than a
//! disk error.

use waggle_engine::state::{KvRead, KvWrite};
use waggle_protocol::command::{ClientCommand, RequestId};
use waggle_protocol::record::RecordBatch;

/// Remembered answers by request id. The state machine's prefixes start at 0xF0.
const ANSWER: u8 = 0xF1;
/// The time-ordered index of [`ANSWER`]: remember-until, then request id.
pub const EXPIRY: u8 = 0xF2;
/// How many expired answers applying one batch forgets at most. A batch remembers at most one answer
/// per command (two for a create that also completes), so forgetting keeps up with remembering.
const FORGET_PER_BATCH: usize = 2048;

/// The default window during which a partition remembers an answer.
pub const DEFAULT_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// Whether a retry of `command` is answered from memory (see the module documentation).
pub fn applies_to(command: &ClientCommand) -> bool {
    !matches!(command, ClientCommand::ActivateJobs(_))
}

fn answer_key(request_id: RequestId) -> [u8; 9] {
    let mut key = [ANSWER; 9];
    key[1..].copy_from_slice(&request_id.to_be_bytes());
    key
}

/// Epoch milliseconds as big-endian bytes that sort like the numbers, negative ones included.
fn time_bytes(millis: i64) -> [u8; 8] {
    ((millis as u64) ^ (1 << 63)).to_be_bytes()
}

fn expiry_key(until: i64, request_id: RequestId) -> [u8; 17] {
    let mut key = [EXPIRY; 17];
    key[1..9].copy_from_slice(&time_bytes(until));
    key[9..].copy_from_slice(&request_id.to_be_bytes());
    key
}

/// The encoded answer given to `request_id`, if the partition still remembers it.
pub fn remembered(kv: &dyn KvRead, request_id: RequestId) -> Option<Vec<u8>> {
    kv.get(&answer_key(request_id))
}

/// Applies committed batches to the memory, on every replica.
///
/// It knows when the earliest remembered answer is due, so that a batch with nothing due reads
/// nothing: that knowledge only decides whether to look, never what is forgotten, so it may be lost
/// (a restart, a snapshot installed) without replicas diverging.
#[derive(Debug, Default)]
pub struct Memory {
    /// When the earliest remembered answer is due; `None` when not known.
    next_due: Option<i64>,
}

impl Memory {
    /// Forgets what is due by the batch's clock, then remembers the batch's answers. Reads nothing
    /// but the batch and the state.
    pub fn apply(&mut self, kv: &mut dyn KvWrite, batch: &RecordBatch) {
        if self.next_due.is_none_or(|due| due <= batch.timestamp) {
            self.next_due = Some(forget_due(kv, batch.timestamp));
        }
        for answer in &batch.answers {
            kv.put(&answer_key(answer.request_id), &answer.result);
            kv.put(&expiry_key(batch.remember_until, answer.request_id), &[]);
        }
        if !batch.answers.is_empty() {
            self.next_due = self.next_due.map(|due| due.min(batch.remember_until));
        }
    }

    /// Forgets what it knew about the state, which was replaced.
    pub fn reset(&mut self) {
        self.next_due = None;
    }
}

/// Forgets the answers due at `now`, at most [`FORGET_PER_BATCH`], and returns when the earliest
/// answer left is due (`i64::MAX` when none is left).
fn forget_due(kv: &mut dyn KvWrite, now: i64) -> i64 {
    let now_bytes = time_bytes(now);
    let mut due: Vec<[u8; 17]> = Vec::new();
    let mut next_due = i64::MAX;
    kv.scan_prefix(&[EXPIRY], &mut |key, _| {
        let Ok(key) = <[u8; 17]>::try_from(key) else { return true };
        if key[1..9] > now_bytes[..] || due.len() == FORGET_PER_BATCH {
            next_due = time_of(&key);
            return false;
        }
        due.push(key);
        true
    });
    for key in due {
        let mut id = [0u8; 8];
        id.copy_from_slice(&key[9..]);
        kv.delete(&answer_key(RequestId::from_be_bytes(id)));
        kv.delete(&key);
    }
    next_due
}

fn time_of(expiry_key: &[u8; 17]) -> i64 {
    let mut time = [0u8; 8];
    time.copy_from_slice(&expiry_key[1..9]);
    (u64::from_be_bytes(time) ^ (1 << 63)) as i64
}

#[cfg(test)]
mod tests {
    use waggle_engine::state::MemKv;
    use waggle_protocol::record::Answer;

    use super::*;

    fn batch(timestamp: i64, answers: &[(RequestId, u8)]) -> RecordBatch {
        let answers = answers.iter().map(|&(request_id, byte)| Answer { request_id, result: vec![byte] }).collect();
        RecordBatch::with_answers(vec![], timestamp, timestamp + 1000, answers)
    }

    #[test]
    fn an_answer_is_remembered_until_a_batch_stamped_after_its_window() {
        let (mut kv, mut memory) = (MemKv::new(), Memory::default());
        memory.apply(&mut kv, &batch(5_000, &[(7, 1), (8, 2)]));
        assert_eq!(remembered(&kv, 7), Some(vec![1]));
        assert_eq!(remembered(&kv, 9), None);
        memory.apply(&mut kv, &batch(5_999, &[]));
        assert_eq!(remembered(&kv, 8), Some(vec![2]), "still inside the window");
        memory.apply(&mut kv, &batch(6_000, &[(9, 3)]));
        assert_eq!((remembered(&kv, 7), remembered(&kv, 8)), (None, None));
        assert_eq!(remembered(&kv, 9), Some(vec![3]));
        assert_eq!(kv.iter().count(), 2, "only request 9 and its index entry are left");
    }

    #[test]
    fn forgetting_goes_by_the_batch_clock_and_stops_after_a_bounded_number() {
        let (mut kv, mut memory) = (MemKv::new(), Memory::default());
        let many: Vec<(RequestId, u8)> = (1..=FORGET_PER_BATCH as u64 + 10).map(|id| (id, 0)).collect();
        memory.apply(&mut kv, &batch(-500, &many));
        memory.apply(&mut kv, &batch(10_000, &[]));
        assert_eq!(kv.iter().count(), 20, "ten answers and their index entries wait for the next batch");
        memory.apply(&mut kv, &batch(10_001, &[]));
        assert_eq!(kv.iter().count(), 0);
    }

    #[test]
    fn a_replica_that_lost_track_of_the_next_due_time_forgets_the_same_answers() {
        let (mut kv, mut memory) = (MemKv::new(), Memory::default());
        memory.apply(&mut kv, &batch(1_000, &[(1, 1)]));
        memory.apply(&mut kv, &batch(3_000, &[(2, 2)]));
        let (mut restarted, mut fresh) = (kv.clone(), Memory::default());
        for (kv, memory) in [(&mut kv, &mut memory), (&mut restarted, &mut fresh)] {
            memory.apply(kv, &batch(2_500, &[]));
            assert_eq!((remembered(kv, 1), remembered(kv, 2)), (None, Some(vec![2])));
            memory.apply(kv, &batch(3_500, &[]));
            assert_eq!(remembered(kv, 2), Some(vec![2]), "due at 4000");
            memory.apply(kv, &batch(4_000, &[]));
            assert_eq!(kv.iter().count(), 0);
        }
    }

    #[test]
    fn only_client_commands_other_than_activation_are_remembered() {
        assert!(applies_to(&ClientCommand::CompleteJob { job_key: 1, variables: "{}".into() }));
        assert!(!applies_to(&ClientCommand::ActivateJobs(waggle_protocol::command::ActivateJobs {
            job_type: "t".into(),
            worker: "w".into(),
            timeout: 1,
            max_jobs_to_activate: 1,
            fetch_variables: vec![],
            tenant_ids: vec![],
        })));
    }
}

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
//! it in the partition's `answers` column family in the same atomic write as the batch's state
//! changes. A retry that reaches a new leader after a failover therefore finds it, and snapshots carry
//! the answers still remembered to replicas that catch up from one.
//!
//! One entry per answer, `request id` → `remember-until ‖ encoded CommandResult`, as the leader
//! encoded it once for the log. A batch carries the time until which its answers are remembered
//! (the leader's clock plus the window), and a lookup treats an answer whose time is up as forgotten,
//! so what a lookup finds does not depend on when the entry is physically removed. Nothing deletes
//! answers: a compaction filter drops the expired ones whenever RocksDB compacts the column family.
//! At a few thousand commands a second the memory holds over a million answers; keeping them out of
//! the engine's state means no index, no deletes and no tombstones to write, step over and compact,
//! and the state the engine reads stays small.
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

use rocksdb::{CompactionDecision, WriteBatch};
use waggle_protocol::command::{ClientCommand, RequestId};
use waggle_protocol::record::RecordBatch;

use crate::now_millis;
use crate::storage::{cf, Database, CF_ANSWERS, CF_STATE};

/// The default window during which a partition remembers an answer.
pub const DEFAULT_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// Whether a retry of `command` is answered from memory (see the module documentation).
pub fn applies_to(command: &ClientCommand) -> bool {
    !matches!(command, ClientCommand::ActivateJobs(_))
}

fn key(request_id: RequestId) -> [u8; 8] {
    request_id.to_be_bytes()
}

fn entry(remember_until: i64, result: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + result.len());
    value.extend_from_slice(&remember_until.to_be_bytes());
    value.extend_from_slice(result);
    value
}

/// Until when an entry is remembered; `None` for a value too short to be an entry.
fn remember_until(value: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(value.get(..8)?.try_into().ok()?))
}

/// The encoded answer given to `request_id`, if the partition still remembers it at time `now`.
pub fn remembered(db: &Database, request_id: RequestId, now: i64) -> Option<Vec<u8>> {
    let value = db
        .get_pinned_cf(cf(db, CF_ANSWERS), key(request_id))
        .expect("reading remembered answers from RocksDB failed")?;
    is_live(&value, now).then(|| value[8..].to_vec())
}

/// Adds a committed batch's answers to the write that applies it.
pub fn remember(db: &Database, write: &mut WriteBatch, batch: &RecordBatch) {
    let answers = cf(db, CF_ANSWERS);
    for answer in &batch.answers {
        write.put_cf(answers, key(answer.request_id), entry(batch.remember_until, &answer.result));
    }
}

/// The compaction filter of the `answers` column family: drops answers whose time is up by the
/// replica's clock. Lookups compare with the leader's clock, so a replica whose clock runs ahead
/// drops entries that lookups would ignore anyway, and one whose clock lags keeps them longer.
pub fn drop_expired(_level: u32, _key: &[u8], value: &[u8]) -> CompactionDecision {
    match remember_until(value) {
        Some(until) if until > now_millis() => CompactionDecision::Keep,
        _ => CompactionDecision::Remove,
    }
}

/// Whether a stored answer is still remembered at `now` (a snapshot carries only those).
pub fn is_live(value: &[u8], now: i64) -> bool {
    remember_until(value).is_some_and(|until| until > now)
}

/// Where brokers before the `answers` column family kept the memory, in the state column family:
/// `0xF1 ‖ request id` → encoded result, and the index `0xF2 ‖ remember-until ‖ request id` → nothing.
mod legacy {
    pub const ANSWER: u8 = 0xF1;
    pub const EXPIRY: u8 = 0xF2;
}

/// Moves answers kept in the old layout (see [`legacy`]) from state `entries` into `answers`
/// entries; what the old index does not cover is dropped. Used for snapshots of older brokers.
pub fn migrate_entries(entries: &mut Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut until: std::collections::HashMap<[u8; 8], i64> = std::collections::HashMap::new();
    for (key, _) in entries.iter().filter(|(key, _)| key.first() == Some(&legacy::EXPIRY) && key.len() == 17) {
        let time = u64::from_be_bytes(key[1..9].try_into().expect("8 bytes")) ^ (1 << 63);
        until.insert(key[9..17].try_into().expect("8 bytes"), time as i64);
    }
    let mut answers = Vec::new();
    for (key, value) in entries.iter().filter(|(key, _)| key.first() == Some(&legacy::ANSWER) && key.len() == 9) {
        let id: [u8; 8] = key[1..9].try_into().expect("8 bytes");
        if let Some(&time) = until.get(&id) {
            answers.push((id.to_vec(), entry(time, value)));
        }
    }
    entries.retain(|(key, _)| !matches!(key.first(), Some(&legacy::ANSWER | &legacy::EXPIRY)));
    answers
}

/// Moves answers that an older broker kept in the state column family into the `answers` column
/// family, in one write. Run when a partition opens; does nothing once they have moved.
pub fn migrate(db: &Database) -> Result<(), rocksdb::Error> {
    let state = cf(db, CF_STATE);
    let mut old = Vec::new();
    for prefix in [legacy::ANSWER, legacy::EXPIRY] {
        for item in db.prefix_iterator_cf(state, [prefix]) {
            let (key, value) = item?;
            if key.first() != Some(&prefix) {
                break;
            }
            old.push((key.to_vec(), value.to_vec()));
        }
    }
    if old.is_empty() {
        return Ok(());
    }
    let mut write = WriteBatch::default();
    for (key, _) in &old {
        write.delete_cf(state, key);
    }
    for (key, value) in migrate_entries(&mut old) {
        write.put_cf(cf(db, CF_ANSWERS), key, value);
    }
    db.write(write)
}

#[cfg(test)]
mod tests {
    use rocksdb::{BottommostLevelCompaction, CompactOptions, IteratorMode};
    use waggle_protocol::record::Answer;

    use super::*;
    use crate::storage::open;

    fn batch(remember_until: i64, answers: &[(RequestId, u8)]) -> RecordBatch {
        let answers = answers.iter().map(|&(request_id, byte)| Answer { request_id, result: vec![byte] }).collect();
        RecordBatch::with_answers(vec![], remember_until - 1_000, remember_until, answers)
    }

    fn apply(db: &Database, batch: &RecordBatch) {
        let mut write = WriteBatch::default();
        remember(db, &mut write, batch);
        db.write(write).unwrap();
    }

    fn stored_keys(db: &Database, family: &str) -> Vec<Vec<u8>> {
        db.iterator_cf(cf(db, family), IteratorMode::Start).map(|item| item.unwrap().0.to_vec()).collect()
    }

    #[test]
    fn an_answer_is_remembered_until_its_time_is_up() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path()).unwrap();
        apply(&db, &batch(6_000, &[(7, 1), (8, 2)]));
        assert_eq!(remembered(&db, 7, 5_999), Some(vec![1]));
        assert_eq!(remembered(&db, 8, 5_999), Some(vec![2]));
        assert_eq!(remembered(&db, 9, 5_999), None);
        assert_eq!(remembered(&db, 7, 6_000), None, "forgotten once its time is up");
    }

    #[test]
    fn compaction_drops_expired_answers_and_keeps_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path()).unwrap();
        let now = now_millis();
        apply(&db, &batch(now - 1, &[(1, 1), (2, 2)]));
        apply(&db, &batch(now + 600_000, &[(3, 3)]));
        assert_eq!(stored_keys(&db, CF_ANSWERS).len(), 3);
        db.flush_cf(cf(&db, CF_ANSWERS)).unwrap();
        let mut force = CompactOptions::default();
        force.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
        db.compact_range_cf_opt(cf(&db, CF_ANSWERS), None::<&[u8]>, None::<&[u8]>, &force);
        assert_eq!(stored_keys(&db, CF_ANSWERS), vec![key(3).to_vec()]);
        assert_eq!(remembered(&db, 3, now), Some(vec![3]));
    }

    #[test]
    fn answers_an_older_broker_kept_in_the_state_move_to_their_own_column_family() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path()).unwrap();
        let state = cf(&db, CF_STATE);
        let until: i64 = 9_000;
        let mut old = WriteBatch::default();
        old.put_cf(state, [legacy::ANSWER, 0, 0, 0, 0, 0, 0, 0, 42], [7u8]);
        let mut index = vec![legacy::EXPIRY];
        index.extend_from_slice(&((until as u64) ^ (1 << 63)).to_be_bytes());
        index.extend_from_slice(&42u64.to_be_bytes());
        old.put_cf(state, &index, b"");
        old.put_cf(state, [0x05, 1], [1u8]);
        db.write(old).unwrap();

        migrate(&db).unwrap();
        assert_eq!(remembered(&db, 42, until - 1), Some(vec![7]));
        assert_eq!(remembered(&db, 42, until), None);
        assert_eq!(stored_keys(&db, CF_STATE), vec![vec![0x05, 1]], "the engine's state is left alone");
        migrate(&db).unwrap();
        assert_eq!(stored_keys(&db, CF_ANSWERS), vec![key(42).to_vec()]);
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

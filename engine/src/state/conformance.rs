//! The conformance suite every state backend must pass.
//!
//! The engine's correctness rests on the backend behaving exactly like [`super::MemKv`]: point reads,
//! deletes, and prefix scans in byte order that stop when asked. The broker runs this same suite on its
//! RocksDB backend, so a backend cannot drift from the reference unnoticed.

use waggle_protocol::record::JobRecord;

use super::tables::jobs::{self, Job, JobState};
use super::{KvRead, KvWrite, Overlay};

/// Runs every check against fresh, empty stores made by `make`. Panics on the first violation.
pub fn run(make: &mut dyn FnMut() -> Box<dyn KvWrite>) {
    point_reads_see_the_latest_write(make().as_mut());
    prefix_scans_are_ordered_and_bounded(make().as_mut());
    prefix_scans_stop_when_asked(make().as_mut());
    overlays_merge_their_writes_with_the_base(make().as_mut());
    job_indexes_follow_job_state(make().as_mut());
}

fn point_reads_see_the_latest_write(kv: &mut dyn KvWrite) {
    assert_eq!(kv.get(b"a"), None);
    kv.put(b"a", b"1");
    kv.put(b"a", b"2");
    assert_eq!(kv.get(b"a"), Some(b"2".to_vec()));
    kv.delete(b"a");
    assert_eq!(kv.get(b"a"), None);
    kv.put(b"empty", b"");
    assert_eq!(kv.get(b"empty"), Some(Vec::new()), "an empty value is a value, not a missing key");
}

fn scan(kv: &dyn super::KvRead, prefix: &[u8]) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    kv.scan_prefix(prefix, &mut |k, _| {
        keys.push(k.to_vec());
        true
    });
    keys
}

fn prefix_scans_are_ordered_and_bounded(kv: &mut dyn KvWrite) {
    for key in [&b"b\x02"[..], b"a\xff", b"b\x01", b"b", b"c\x00", b"b\xff\xff"] {
        kv.put(key, b"v");
    }
    assert_eq!(scan(kv, b"b"), vec![b"b".to_vec(), b"b\x01".to_vec(), b"b\x02".to_vec(), b"b\xff\xff".to_vec()]);
    assert_eq!(scan(kv, b"d"), Vec::<Vec<u8>>::new());
}

fn prefix_scans_stop_when_asked(kv: &mut dyn KvWrite) {
    for i in 0u8..10 {
        kv.put(&[7, i], &[i]);
    }
    let mut seen = 0;
    kv.scan_prefix(&[7], &mut |_, _| {
        seen += 1;
        seen < 3
    });
    assert_eq!(seen, 3);
}

fn overlays_merge_their_writes_with_the_base(kv: &mut dyn KvWrite) {
    kv.put(b"k1", b"base");
    kv.put(b"k3", b"base");
    kv.put(b"k5", b"base");
    let mut overlay = Overlay::new(&*kv);
    overlay.put(b"k2", b"new");
    overlay.put(b"k3", b"changed");
    overlay.delete(b"k5");
    overlay.put(b"k6", b"new");
    assert_eq!(overlay.get(b"k3"), Some(b"changed".to_vec()));
    assert_eq!(overlay.get(b"k5"), None);
    let mut entries = Vec::new();
    overlay.scan_prefix(b"k", &mut |k, v| {
        entries.push((k.to_vec(), v.to_vec()));
        true
    });
    assert_eq!(
        entries,
        vec![
            (b"k1".to_vec(), b"base".to_vec()),
            (b"k2".to_vec(), b"new".to_vec()),
            (b"k3".to_vec(), b"changed".to_vec()),
            (b"k6".to_vec(), b"new".to_vec()),
        ]
    );
    let writes = overlay.into_writes();
    assert_eq!(writes.len(), 4);
    assert_eq!(kv.get(b"k3"), Some(b"base".to_vec()), "an overlay never writes through to its base");
}

fn job_indexes_follow_job_state(kv: &mut dyn KvWrite) {
    let job = |key: i64, state: JobState, deadline: i64| Job {
        key,
        state,
        record: JobRecord { job_type: "ship".into(), deadline, ..Default::default() },
    };
    jobs::put(kv, &job(10, JobState::Activatable, -1));
    jobs::put(kv, &job(11, JobState::Activatable, -1));
    assert_eq!(jobs::activatable(kv, "ship", 10), vec![10, 11]);
    assert_eq!(jobs::activatable(kv, "ship", 1), vec![10]);
    assert_eq!(jobs::activatable(kv, "shi", 10), Vec::<i64>::new(), "job types match exactly");
    jobs::put(kv, &job(10, JobState::Activated, 5_000));
    assert_eq!(jobs::activatable(kv, "ship", 10), vec![11]);
    assert_eq!(jobs::timed_out(kv, 4_999, 10), Vec::<i64>::new());
    assert_eq!(jobs::timed_out(kv, 5_000, 10), vec![10]);
    assert_eq!(jobs::next_due(kv), Some(5_000));
    jobs::remove(kv, 10);
    assert_eq!(jobs::timed_out(kv, 10_000, 10), Vec::<i64>::new());
    assert_eq!(jobs::next_due(kv), None);
}

#[cfg(test)]
mod tests {
    #[test]
    fn in_memory_state_passes_the_conformance_suite() {
        super::run(&mut || Box::new(super::super::MemKv::new()));
    }
}

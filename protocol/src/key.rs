//! Key encoding: every key names the partition that owns its entity.
//!
//! As in Zeebe, `key = (partition_id << 51) + counter`, so a gateway can route any request that carries
//! a key (a job, an instance, an incident) to the right partition without asking anyone.

pub const PARTITION_BITS_SHIFT: u32 = 51;
const COUNTER_MASK: i64 = (1i64 << PARTITION_BITS_SHIFT) - 1;

/// The first key a partition hands out.
pub fn first_key(partition_id: u32) -> i64 {
    encode(partition_id, 1)
}

pub fn encode(partition_id: u32, counter: i64) -> i64 {
    ((partition_id as i64) << PARTITION_BITS_SHIFT) + counter
}

/// The partition a key belongs to, or `None` for keys no partition could have issued.
pub fn partition_of(key: i64) -> Option<u32> {
    if key <= 0 {
        return None;
    }
    let partition = (key >> PARTITION_BITS_SHIFT) as u32;
    (partition > 0 && key & COUNTER_MASK > 0).then_some(partition)
}

/// The partition that owns messages with this correlation key: the same hash Zeebe uses (31-based over
/// the key's bytes, as signed bytes), so that every gateway and partition agrees without coordination.
pub fn message_partition(correlation_key: &str, partition_count: u32) -> u32 {
    let hash = correlation_key.as_bytes().iter().fold(0i32, |h, &b| h.wrapping_mul(31).wrapping_add(b as i8 as i32));
    (hash % partition_count as i32).unsigned_abs() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_key_of_partition_one_matches_zeebe() {
        assert_eq!(first_key(1), 2251799813685249);
        assert_eq!(partition_of(2251799813685249), Some(1));
    }

    #[test]
    fn message_partition_is_stable_and_in_range() {
        assert_eq!(message_partition("order-42", 1), 1);
        for key in ["", "a", "order-42", "ünïcode", "a-much-longer-correlation-key-value"] {
            let p = message_partition(key, 3);
            assert!((1..=3).contains(&p));
            assert_eq!(p, message_partition(key, 3));
        }
        assert_ne!(message_partition("a", 7), message_partition("b", 7));
    }

    #[test]
    fn keys_outside_any_partition_have_none() {
        assert_eq!(partition_of(0), None);
        assert_eq!(partition_of(-5), None);
        assert_eq!(partition_of(42), None);
        assert_eq!(partition_of(encode(3, 0)), None);
        assert_eq!(partition_of(encode(3, 9)), Some(3));
    }
}

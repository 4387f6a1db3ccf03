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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_key_of_partition_one_matches_zeebe() {
        assert_eq!(first_key(1), 2251799813685249);
        assert_eq!(partition_of(2251799813685249), Some(1));
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

//! The ring: every record's 64-bit position, and the partition it falls in.
//!
//! This module owns the placement formula and nothing else: it does not decide how many
//! partitions a collection has (that is the [`crate::record::CollectionSpec`]) nor which
//! node serves which range (that is the plan).
//!
//! # The position of a record
//!
//! `H(s)` is XXH3-64 of the UTF-8 bytes of `s` with seed 0 (crate `xxhash-rust`, feature
//! `xxh3`). XXH3's output is specified by the xxHash project and is the same on every
//! platform, endianness and library version, so positions written to the log today stay
//! valid for every later build and for clients in other languages (e.g. Python
//! `xxhash.xxh3_64_intdigest`).
//!
//! The routing key is the tenant when the record has one, else the id:
//!
//! ```text
//! with a tenant t:   position = (H(t) & 0xFFFF_FFFF_0000_0000) | (H(id) & 0x0000_0000_FFFF_FFFF)
//! without a tenant:  position = (H(id) & 0xFFFF_FFFF_0000_0000) | (H(id) & 0x0000_0000_FFFF_FFFF)
//!                             = H(id)
//! ```
//!
//! So the high 32 bits come from the routing key and the low 32 bits from the id. All
//! vectors of one tenant lie in one contiguous range of 2^32 positions
//! ([`tenant_range`]) that can later be split by the low bits; without a tenant both
//! halves come from the same hash of the id, which spreads ids uniformly over the ring.
//!
//! # Partitions
//!
//! A topic with `p` partitions cuts the ring into `p` equal ranges; position `x` falls in
//! partition `floor(x * p / 2^64)` ([`partition_of`]). Partition counts are
//! `1..=`[`MAX_PARTITIONS`]; check counts that come from input with
//! [`validate_partitions`].

use xxhash_rust::xxh3::xxh3_64;

use crate::record::RingRange;
use crate::{Error, Result};

/// The most partitions a topic of a collection may have: the log's limit.
pub const MAX_PARTITIONS: u32 = hektor_log::topic::MAX_PARTITIONS;

const HIGH: u64 = 0xFFFF_FFFF_0000_0000;
const LOW: u64 = 0x0000_0000_FFFF_FFFF;

/// XXH3-64, seed 0, of a string's UTF-8 bytes: the one hash of the ring.
pub fn hash(s: &str) -> u64 {
    xxh3_64(s.as_bytes())
}

/// The ring position of a record with this tenant (routing key) and id.
pub fn position(tenant: Option<&str>, id: &str) -> u64 {
    let id_hash = hash(id);
    let routing_hash = match tenant {
        Some(t) => hash(t),
        None => id_hash,
    };
    (routing_hash & HIGH) | (id_hash & LOW)
}

/// The contiguous range of ring positions holding all vectors of this tenant: the 2^32
/// positions whose high 32 bits are those of `H(tenant)`.
pub fn tenant_range(tenant: &str) -> RingRange {
    let start = hash(tenant) & HIGH;
    RingRange {
        start,
        // `None` (= 2^64) for the tenant whose high bits are all ones.
        end: start.checked_add(LOW + 1),
    }
}

/// Check a partition count that comes from input: `1..=MAX_PARTITIONS`.
pub fn validate_partitions(partitions: u32) -> Result<()> {
    if (1..=MAX_PARTITIONS).contains(&partitions) {
        Ok(())
    } else {
        Err(Error::InvalidPartitions {
            partitions,
            max: MAX_PARTITIONS,
        })
    }
}

/// Out-of-range counts are clamped so these functions never panic; callers validate.
fn clamp_partitions(partitions: u32) -> u32 {
    partitions.clamp(1, MAX_PARTITIONS)
}

/// The partition, of `partitions` equal ranges of the ring, that `position` falls in:
/// `floor(position * partitions / 2^64)`.
///
/// A count outside `1..=MAX_PARTITIONS` is clamped into it (see [`validate_partitions`]).
pub fn partition_of(position: u64, partitions: u32) -> u32 {
    let p = clamp_partitions(partitions);
    ((position as u128 * p as u128) >> 64) as u32
}

/// First position of partition `i` of `p`: the least `x` with `x * p >= i * 2^64`.
fn partition_start(i: u32, p: u32) -> u128 {
    ((i as u128) << 64).div_ceil(p as u128)
}

/// The ring range of partition `partition` of `partitions`; the last one ends at `None`
/// (2^64). Exactly the positions `x` with `partition_of(x, partitions) == partition`.
///
/// A count outside `1..=MAX_PARTITIONS` is clamped into it, and a partition past the last
/// is taken as the last (see [`validate_partitions`]).
pub fn partition_range(partition: u32, partitions: u32) -> RingRange {
    let p = clamp_partitions(partitions);
    let i = partition.min(p - 1);
    // Both starts are < 2^64 because i < p, so the casts are exact.
    let start = partition_start(i, p) as u64;
    let end = (i + 1 < p).then(|| partition_start(i + 1, p) as u64);
    RingRange { start, end }
}

/// The partitions overlapping a range (for fanning a tenant's query out), in order. An
/// empty range yields the partition its start falls in.
pub fn partitions_overlapping(range: RingRange, partitions: u32) -> std::ops::RangeInclusive<u32> {
    let first = partition_of(range.start, partitions);
    let last = match range.end {
        None => clamp_partitions(partitions) - 1,
        Some(end) if end > range.start => partition_of(end - 1, partitions),
        Some(_) => first,
    };
    first..=last
}

/// The partitions holding a tenant's vectors.
pub fn tenant_partitions(tenant: &str, partitions: u32) -> std::ops::RangeInclusive<u32> {
    partitions_overlapping(tenant_range(tenant), partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// A random test id from a seeded generator.
    fn random_id(rng: &mut StdRng) -> String {
        format!("doc-{:x}", rng.random::<u64>())
    }

    /// Golden values of the hash. Cross-checked independently with the Python binding of
    /// the reference C implementation (`pip install xxhash` 4.1.0, xxHash 0.8.4:
    /// `xxhash.xxh3_64_intdigest(b"...")`), which printed exactly these numbers. If this
    /// test fails, every ring position written to a log has moved: do not "fix" the
    /// numbers.
    #[test]
    fn hash_is_xxh3_64_seed_0() {
        assert_eq!(hash(""), 0x2d06_8005_38d3_94c2);
        assert_eq!(hash("a"), 16_629_034_431_890_738_719);
        assert_eq!(hash("tenant-acme"), 11_612_631_095_231_016_286);
        assert_eq!(hash("doc-42"), 4_349_696_829_835_097_483);
        assert_eq!(hash("hello world"), 15_296_390_279_056_496_779);
    }

    #[test]
    fn positions_follow_the_documented_formula() {
        // Without a tenant, the position is the hash of the id.
        assert_eq!(position(None, "doc-42"), 0x3c5d_3a38_96f6_b58b);
        // With one, high half from the tenant, low half from the id.
        assert_eq!(
            position(Some("tenant-acme"), "doc-42"),
            0xa128_5a74_96f6_b58b
        );
        assert_eq!(
            tenant_range("tenant-acme"),
            RingRange {
                start: 0xa128_5a74_0000_0000,
                end: Some(0xa128_5a75_0000_0000)
            }
        );
    }

    #[test]
    fn a_tenants_vectors_are_contiguous() {
        let mut rng = StdRng::seed_from_u64(7);
        for tenant in ["acme", "globex", "initech", ""] {
            let range = tenant_range(tenant);
            for p in [1, 3, 16, 1024] {
                let parts = partitions_overlapping(range, p);
                // A range of 2^32 positions spans at most 2 partitions when p <= 1024.
                assert!(parts.end() - parts.start() <= 1, "{tenant}: {parts:?}");
                assert_eq!(tenant_partitions(tenant, p), parts);
            }
            for _ in 0..1000 {
                let pos = position(Some(tenant), &random_id(&mut rng));
                assert!(range.contains(pos), "{tenant}: {pos:#x} not in {range:?}");
                for p in [1, 3, 16, 1024] {
                    let part = partition_of(pos, p);
                    assert!(partitions_overlapping(range, p).contains(&part));
                }
            }
        }
    }

    #[test]
    fn the_last_tenant_range_ends_at_the_end_of_the_ring() {
        // Any range whose start has all-ones high bits must end at None, not wrap.
        let range = RingRange {
            start: HIGH,
            end: HIGH.checked_add(LOW + 1),
        };
        assert_eq!(range.end, None);
        assert_eq!(partitions_overlapping(range, 4), 3..=3);
    }

    #[test]
    fn partition_ranges_tile_the_ring() {
        for p in [1, 2, 3, 5, 7, 16, 100, 1000, 1023, 1024] {
            let mut expected_start = 0u64;
            for i in 0..p {
                let r = partition_range(i, p);
                assert_eq!(r.start, expected_start, "gap or overlap before {i} of {p}");
                assert_eq!(partition_of(r.start, p), i);
                match r.end {
                    Some(end) => {
                        assert!(end > r.start, "empty partition {i} of {p}");
                        assert_eq!(partition_of(end - 1, p), i);
                        assert_eq!(partition_of(end, p), i + 1);
                        expected_start = end;
                    }
                    None => assert_eq!(i, p - 1, "only the last partition is open-ended"),
                }
                assert_eq!(partitions_overlapping(r, p), i..=i);
            }
            assert_eq!(partition_range(p - 1, p).end, None);
            assert_eq!(partition_of(u64::MAX, p), p - 1);
            assert_eq!(partitions_overlapping(RingRange::FULL, p), 0..=p - 1);
        }
    }

    #[test]
    fn partitions_are_balanced() {
        let mut rng = StdRng::seed_from_u64(42);
        let p = 16u32;
        let n = 100_000usize;
        let mut counts = vec![0usize; p as usize];
        for _ in 0..n {
            counts[partition_of(position(None, &random_id(&mut rng)), p) as usize] += 1;
        }
        let mean = n as f64 / p as f64;
        for (i, &c) in counts.iter().enumerate() {
            let dev = (c as f64 - mean).abs() / mean;
            assert!(dev <= 0.05, "partition {i}: {c} records, mean {mean}");
        }
    }

    #[test]
    fn bad_partition_counts_are_refused_and_never_panic() {
        assert!(validate_partitions(0).is_err());
        assert!(validate_partitions(1025).is_err());
        assert!(validate_partitions(1).is_ok());
        assert!(validate_partitions(1024).is_ok());
        // Clamped, not a division by zero or an out-of-range partition.
        assert_eq!(partition_of(u64::MAX, 0), 0);
        assert_eq!(partition_range(5, 0), RingRange::FULL);
        assert_eq!(partition_range(9, 4), partition_range(3, 4));
        assert_eq!(partition_of(u64::MAX, u32::MAX), MAX_PARTITIONS - 1);
    }

    #[test]
    fn an_empty_range_overlaps_the_partition_of_its_start() {
        let r = RingRange {
            start: 1 << 63,
            end: Some(1 << 63),
        };
        assert_eq!(partitions_overlapping(r, 2), 1..=1);
    }
}

//! Stamps and version vectors: the order all regions agree on, and the causality check.
//!
//! A [`Stamp`] is a write's effective hybrid logical clock (see [`crate::source`]) and its
//! origin region. Stamps compare by hlc, then by origin name, so two regions order any two
//! writes alike. Within one source partition effective hlcs strictly increase, and one id
//! always lies in one partition, so no two different writes of an id share a stamp.
//!
//! A [`VersionVector`] maps each origin region to the greatest stamp hlc from that region
//! that is known: for a write, what its writer had applied when it wrote (`seen`); for a
//! merged state, the join of the stamps and contexts of every write it has absorbed. It is
//! a version vector whose counters are positions in each origin's partition clock rather
//! than per-id counters, so a writer can fill it in without reading the id first.

use std::collections::BTreeMap;

use hektor_topics::hlc::Hlc;
use hektor_topics::record::MAX_REGION_LEN;
use serde::{Deserialize, Serialize};

use crate::{MergeError, Result};

/// The most regions a version vector may name (a cluster has a handful).
pub const MAX_REGIONS: usize = 64;

/// The Kafka header carrying a write's `seen` vector on the log (MirrorMaker 2 copies
/// headers byte for byte): `region=hlc` pairs, comma-separated, hlc in decimal; absent
/// when the writer could not tell (it holds no shard of the partition).
pub const SEEN_HEADER: &str = "hektor-seen";

/// The longest [`SEEN_HEADER`] value accepted.
pub const MAX_SEEN_HEADER_BYTES: usize = 8 * 1024;

/// Where a write stands in the order every region agrees on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// The effective hlc in its origin's partition (compared first).
    pub hlc: Hlc,
    /// The region that accepted the write (compared second, by bytes).
    pub origin: String,
}

impl Stamp {
    pub fn new(hlc: Hlc, origin: impl Into<String>) -> Stamp {
        Stamp {
            hlc,
            origin: origin.into(),
        }
    }
}

/// Checks a region name read from a record or a stored state.
pub fn validate_region(name: &str) -> Result<()> {
    if name.len() > MAX_REGION_LEN || name.chars().any(char::is_control) {
        return Err(MergeError::InvalidRegion {
            name: name.chars().take(80).collect(),
            max: MAX_REGION_LEN,
        });
    }
    Ok(())
}

/// How two writes relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    /// The first was made knowing the second.
    After,
    /// The second was made knowing the first.
    Before,
    /// The same knowledge.
    Equal,
    /// Neither knew the other: a conflict, resolved by the policy.
    Concurrent,
}

/// Per origin region, the greatest stamp hlc known from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VersionVector(BTreeMap<String, Hlc>);

impl VersionVector {
    pub fn new() -> VersionVector {
        VersionVector::default()
    }

    /// The greatest hlc known from `region` (zero when none).
    pub fn get(&self, region: &str) -> Hlc {
        self.0.get(region).copied().unwrap_or_default()
    }

    /// Whether the write with `stamp` is known here.
    pub fn includes(&self, stamp: &Stamp) -> bool {
        self.get(&stamp.origin) >= stamp.hlc
    }

    /// Raise `region`'s entry to at least `hlc`.
    pub fn observe(&mut self, region: &str, hlc: Hlc) {
        match self.0.get_mut(region) {
            Some(known) => *known = (*known).max(hlc),
            None => {
                self.0.insert(region.to_owned(), hlc);
            }
        }
    }

    /// Raise every entry to at least `other`'s (the least upper bound).
    pub fn join(&mut self, other: &VersionVector) {
        for (region, hlc) in &other.0 {
            self.observe(region, *hlc);
        }
    }

    /// How `self` relates to `other`, entry by entry.
    pub fn compare(&self, other: &VersionVector) -> Causality {
        let (mut ahead, mut behind) = (false, false);
        for region in self.0.keys().chain(other.0.keys()) {
            let (a, b) = (self.get(region), other.get(region));
            ahead |= a > b;
            behind |= a < b;
        }
        match (ahead, behind) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::After,
            (false, true) => Causality::Before,
            (true, true) => Causality::Concurrent,
        }
    }

    /// The regions and their entries, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Hlc)> {
        self.0.iter().map(|(r, h)| (r.as_str(), *h))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The [`SEEN_HEADER`] value of this vector.
    pub fn to_header(&self) -> String {
        let mut out = String::with_capacity(self.0.len() * 24);
        for (i, (region, hlc)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(region);
            out.push('=');
            out.push_str(&hlc.0.to_string());
        }
        out
    }

    /// A vector from its [`SEEN_HEADER`] value, checked (size, region names, numbers).
    pub fn from_header(value: &[u8]) -> Result<VersionVector> {
        let bad = |reason: String| MergeError::InvalidSeenHeader { reason };
        if value.len() > MAX_SEEN_HEADER_BYTES {
            return Err(bad(format!(
                "{} bytes, at most {MAX_SEEN_HEADER_BYTES}",
                value.len()
            )));
        }
        let text = std::str::from_utf8(value).map_err(|_| bad("not UTF-8".into()))?;
        let mut vv = VersionVector::new();
        for pair in text.split(',').filter(|p| !p.is_empty()) {
            let (region, hlc) = pair
                .rsplit_once('=')
                .ok_or_else(|| bad(format!("`{pair}` is not region=hlc")))?;
            let hlc: u64 = hlc
                .parse()
                .map_err(|_| bad(format!("`{hlc}` is not a decimal hlc")))?;
            validate_region(region)?;
            if region.is_empty() || region.contains([',', '=']) {
                return Err(bad(format!(
                    "region `{region}` is empty or contains `,` or `=`"
                )));
            }
            vv.observe(region, Hlc(hlc));
        }
        vv.validate()?;
        Ok(vv)
    }

    /// Checks a vector read from a record or a stored state.
    pub fn validate(&self) -> Result<()> {
        if self.0.len() > MAX_REGIONS {
            return Err(MergeError::TooManyRegions {
                count: self.0.len(),
                max: MAX_REGIONS,
            });
        }
        self.0.keys().try_for_each(|r| validate_region(r))
    }
}

impl FromIterator<(String, Hlc)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (String, Hlc)>>(iter: I) -> VersionVector {
        let mut vv = VersionVector::new();
        for (region, hlc) in iter {
            vv.observe(&region, hlc);
        }
        vv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vv(entries: &[(&str, u64)]) -> VersionVector {
        entries
            .iter()
            .map(|(r, h)| (r.to_string(), Hlc(*h)))
            .collect()
    }

    #[test]
    fn stamps_order_by_hlc_then_origin() {
        assert!(Stamp::new(Hlc(5), "west") < Stamp::new(Hlc(6), "east"));
        assert!(Stamp::new(Hlc(5), "east") < Stamp::new(Hlc(5), "west"));
    }

    #[test]
    fn version_vectors_compare_entry_by_entry() {
        let a = vv(&[("east", 3), ("west", 5)]);
        assert_eq!(a.compare(&a.clone()), Causality::Equal);
        assert_eq!(a.compare(&vv(&[("east", 3)])), Causality::After);
        assert_eq!(vv(&[("east", 3)]).compare(&a), Causality::Before);
        assert_eq!(
            a.compare(&vv(&[("east", 4), ("west", 1)])),
            Causality::Concurrent
        );
        let mut j = a.clone();
        j.join(&vv(&[("east", 4), ("south", 1)]));
        assert_eq!(j, vv(&[("east", 4), ("west", 5), ("south", 1)]));
        assert!(j.includes(&Stamp::new(Hlc(4), "east")));
        assert!(!j.includes(&Stamp::new(Hlc(5), "east")));
        assert!(!j.includes(&Stamp::new(Hlc(1), "north")));
    }

    #[test]
    fn the_seen_header_round_trips_and_refuses_garbage() {
        let v = vv(&[("east", 3), ("west", u64::MAX)]);
        assert_eq!(VersionVector::from_header(v.to_header().as_bytes()), Ok(v));
        assert_eq!(VersionVector::from_header(b""), Ok(VersionVector::new()));
        for bad in [
            &b"east"[..],
            b"east=x",
            b"=5",
            b"a\nb=1",
            &[0xff, b'=', b'1'],
        ] {
            assert!(VersionVector::from_header(bad).is_err(), "{bad:?}");
        }
        assert!(VersionVector::from_header(&vec![b'a'; MAX_SEEN_HEADER_BYTES + 1]).is_err());
    }

    #[test]
    fn bad_regions_and_oversized_vectors_are_refused() {
        assert!(validate_region("us-east-1").is_ok());
        assert!(validate_region("a\nb").is_err());
        assert!(validate_region(&"r".repeat(MAX_REGION_LEN + 1)).is_err());
        let big: VersionVector = (0..=MAX_REGIONS)
            .map(|i| (format!("r{i}"), Hlc(1)))
            .collect();
        assert!(matches!(
            big.validate(),
            Err(MergeError::TooManyRegions { .. })
        ));
    }
}

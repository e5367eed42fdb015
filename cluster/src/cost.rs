//! What the cluster's data costs per month by storage tier (seed §2.2): the bytes each tier
//! holds, counted from what the nodes report they hold (every replica is a copy that
//! costs) and, for archived shards, from their snapshot in object storage (one copy),
//! priced per GB-month with the seed's prices unless told otherwise.
//!
//! Pure: the caller gathers the shard maps, the heartbeats' held shards and the archive
//! sizes; this module only sums and prices them.

use std::collections::BTreeMap;
use std::sync::Arc;

use hektor_topics::record::{HeldShard, RingRange, Tier};
use serde::Serialize;

use crate::ShardMap;

/// Dollars per GB-month (10^9 bytes) of each tier. The defaults are the seed's: memory
/// 0.30 (hot), local SSD 0.10 (warm), compressed on disk 0.03 (cold), object storage
/// 0.004 (archive).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TierPrices {
    pub hot: f64,
    pub warm: f64,
    pub cold: f64,
    pub archive: f64,
}

impl Default for TierPrices {
    fn default() -> TierPrices {
        TierPrices {
            hot: 0.30,
            warm: 0.10,
            cold: 0.03,
            archive: 0.004,
        }
    }
}

impl TierPrices {
    pub fn of(&self, tier: Tier) -> f64 {
        match tier {
            Tier::Hot => self.hot,
            Tier::Warm => self.warm,
            Tier::Cold => self.cold,
            Tier::Archive => self.archive,
        }
    }
}

/// One tier's share of the data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierCost {
    pub tier: Tier,
    /// Shard copies in the tier (a shard with two replicas counts twice).
    pub copies: u64,
    /// Vectors the holders report (archived snapshots' are not counted).
    pub vectors: u64,
    pub bytes: u64,
    pub price_per_gb_month: f64,
    pub cost_per_month: f64,
}

/// The cluster's storage cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostReport {
    pub prices: TierPrices,
    /// Every tier, hot to archive, empty ones included.
    pub tiers: Vec<TierCost>,
    pub bytes: u64,
    pub cost_per_month: f64,
    /// What the same bytes would cost all in the hot tier.
    pub cost_all_hot: f64,
    /// `cost_per_month / cost_all_hot` (1 when nothing is stored).
    pub ratio_to_all_hot: f64,
    /// Archived shards whose snapshot size this node does not know (not counted).
    pub archives_unknown: u64,
}

const GB: f64 = 1e9;

/// Sum and price the held copies. `held`: what each live node reports holding (its
/// heartbeat); a copy is priced at the tier its range has in the collection's map (a
/// serving shard, or a target being built; copies of ranges the map no longer has are
/// left out). `archived(collection, range)`: the bytes of an archived shard's snapshot,
/// when known.
pub fn cost_report(
    maps: &BTreeMap<String, Arc<ShardMap>>,
    held: &[HeldShard],
    archived: impl Fn(&str, RingRange) -> Option<u64>,
    prices: TierPrices,
) -> CostReport {
    let tiers = [Tier::Hot, Tier::Warm, Tier::Cold, Tier::Archive];
    let mut sums: BTreeMap<usize, (u64, u64, u64)> = BTreeMap::new();
    let index = |tier: Tier| tiers.iter().position(|&t| t == tier).unwrap_or(0);
    for copy in held {
        let Some(map) = maps.get(&copy.collection) else {
            continue;
        };
        let tier = map
            .shards()
            .iter()
            .find(|s| s.range == copy.range)
            .map(|s| s.tier)
            .or_else(|| {
                map.targets()
                    .iter()
                    .find(|t| t.range == copy.range)
                    .map(|t| t.tier)
            });
        // An archived shard's local copy (while it uploads) is priced by its snapshot.
        let Some(tier) = tier.filter(|&t| t != Tier::Archive) else {
            continue;
        };
        let sum = sums.entry(index(tier)).or_default();
        sum.0 += 1;
        sum.1 += copy.vectors;
        sum.2 += copy.bytes;
    }
    let mut archives_unknown = 0;
    for (collection, map) in maps {
        for shard in map.shards().iter().filter(|s| s.tier == Tier::Archive) {
            match archived(collection, shard.range) {
                Some(bytes) => {
                    let sum = sums.entry(index(Tier::Archive)).or_default();
                    sum.0 += 1;
                    sum.2 += bytes;
                }
                None => archives_unknown += 1,
            }
        }
    }
    let tiers: Vec<TierCost> = tiers
        .iter()
        .enumerate()
        .map(|(i, &tier)| {
            let (copies, vectors, bytes) = sums.get(&i).copied().unwrap_or_default();
            let price = prices.of(tier);
            TierCost {
                tier,
                copies,
                vectors,
                bytes,
                price_per_gb_month: price,
                cost_per_month: bytes as f64 / GB * price,
            }
        })
        .collect();
    let bytes = tiers.iter().map(|t| t.bytes).sum::<u64>();
    let cost_per_month = tiers.iter().map(|t| t.cost_per_month).sum::<f64>();
    let cost_all_hot = bytes as f64 / GB * prices.hot;
    CostReport {
        prices,
        tiers,
        bytes,
        cost_per_month,
        cost_all_hot,
        ratio_to_all_hot: if cost_all_hot > 0.0 {
            cost_per_month / cost_all_hot
        } else {
            1.0
        },
        archives_unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_of_four() -> ShardMap {
        let tiers = [Tier::Hot, Tier::Warm, Tier::Cold, Tier::Archive];
        let shards = (0..4)
            .map(|i| crate::Shard {
                range: hektor_topics::ring::partition_range(i, 4),
                replicas: vec!["n1".into(), "n2".into()],
                tier: tiers[i as usize],
            })
            .collect();
        ShardMap::new("c", 1, shards).unwrap()
    }

    #[test]
    fn copies_are_priced_at_their_tier_and_archives_by_their_snapshot() {
        let map = map_of_four();
        let shards = map.shards().to_vec();
        let maps = BTreeMap::from([("c".to_string(), Arc::new(map))]);
        let copy = |i: usize, bytes: u64| HeldShard {
            collection: "c".into(),
            range: shards[i].range,
            vectors: 10,
            bytes,
        };
        // Two replicas of each shard but the archived one; one copy of a dropped collection.
        let mut held = Vec::new();
        for i in 0..3 {
            held.push(copy(i, 2_000_000_000));
            held.push(copy(i, 2_000_000_000));
        }
        held.push(HeldShard {
            collection: "gone".into(),
            ..copy(0, 5)
        });
        let archive = shards[3].range;
        let report = cost_report(
            &maps,
            &held,
            |c, r| (c == "c" && r == archive).then_some(1_000_000_000),
            TierPrices::default(),
        );
        let costs: Vec<(Tier, u64, f64)> = report
            .tiers
            .iter()
            .map(|t| {
                (
                    t.tier,
                    t.copies,
                    (t.cost_per_month * 1000.0).round() / 1000.0,
                )
            })
            .collect();
        assert_eq!(
            costs,
            [
                (Tier::Hot, 2, 1.2),
                (Tier::Warm, 2, 0.4),
                (Tier::Cold, 2, 0.12),
                (Tier::Archive, 1, 0.004)
            ]
        );
        assert_eq!(report.bytes, 13_000_000_000);
        assert!((report.cost_all_hot - 3.9).abs() < 1e-9);
        assert!((report.cost_per_month - 1.724).abs() < 1e-9);
        assert_eq!(report.archives_unknown, 0);
        // Unknown archive sizes are counted as unknown, not as zero-cost data.
        let report = cost_report(&maps, &held, |_, _| None, TierPrices::default());
        assert_eq!(report.archives_unknown, 1);
        assert_eq!(report.tiers[3].copies, 0);
    }

    #[test]
    fn nothing_stored_costs_nothing() {
        let report = cost_report(&BTreeMap::new(), &[], |_, _| None, TierPrices::default());
        assert_eq!((report.bytes, report.cost_per_month), (0, 0.0));
        assert_eq!(report.ratio_to_all_hot, 1.0);
    }
}

//! The busiest tenant of each shard, as one specialised timely operator.
//!
//! [`crate::hotness::hotness`] computes it as `count` over `(shard, tenant)` followed by a
//! per-shard `reduce` that takes the maximum `(count, tenant)`. That is exact but costly
//! when tenants are many: every tenant update goes through two arrangements, and the
//! reduce re-reads all of a shard's tenants each second. [`busiest_tenants`] computes the
//! same output collection for totally ordered time with one operator: updates are
//! exchanged by shard, held until their second is complete (the input frontier has passed
//! it), then applied in time order to per-shard tenant counts kept in a hash map (with the
//! maximum maintained as counts change), and for each shard whose maximum changed the old
//! maximum is retracted and the new one inserted at that second.
//!
//! This module owns only that operator; which updates it sees (the one-minute window) is
//! [`crate::hotness`]'s business.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use crate::hotness::Time;
use crate::tally::FxHasher;

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// The tenants of one shard with a non-zero count, and the busiest of them.
///
/// The busiest is kept up to date on every change that cannot lower it; when the busiest
/// tenant itself loses count it is marked stale and found again by one scan of the
/// shard's counts at the end of the second ([`ShardTenants::busiest`]) — never more work
/// than the per-shard reduce this replaces, which re-reads every tenant of a touched
/// shard each second.
#[derive(Default)]
struct ShardTenants {
    counts: FxMap<u32, isize>,
    best: Option<(isize, u32)>,
    stale: bool,
}

impl ShardTenants {
    fn apply(&mut self, tenant: u32, diff: isize) {
        if diff == 0 {
            return;
        }
        let count = match self.counts.entry(tenant) {
            Entry::Occupied(mut o) => {
                *o.get_mut() += diff;
                if *o.get() == 0 {
                    o.remove();
                    0
                } else {
                    *o.get()
                }
            }
            Entry::Vacant(v) => *v.insert(diff),
        };
        if self.stale {
            return;
        }
        match self.best {
            Some((_, top)) if top == tenant => {
                if diff > 0 {
                    self.best = Some((count, tenant));
                } else {
                    self.stale = true;
                }
            }
            best => {
                if count != 0 && best.is_none_or(|b| (count, tenant) > b) {
                    self.best = Some((count, tenant));
                }
            }
        }
    }

    /// The busiest tenant: the largest `(count, tenant)` with a non-zero count.
    fn busiest(&mut self) -> Option<(isize, u32)> {
        if self.stale {
            self.best = self.counts.iter().map(|(t, c)| (*c, *t)).max();
            self.stale = false;
        }
        self.best
    }
}

/// For a collection of `(shard, tenant)` records, `(shard, (count, tenant))` of the tenant
/// with the largest `(count, tenant)` of each shard that has any: the same collection as
/// `tenants.count().map(|((s, t), n)| (s, (n, t))).reduce(max)`.
pub fn busiest_tenants<'s>(
    tenants: VecCollection<'s, Time, (u32, u32)>,
) -> VecCollection<'s, Time, (u32, (isize, u32))> {
    type Pending = BTreeMap<Time, (Capability<Time>, Vec<((u32, u32), isize)>)>;
    tenants
        .inner
        .unary_frontier(
            Exchange::new(|update: &((u32, u32), Time, isize)| u64::from(update.0 .0)),
            "BusiestTenant",
            |_capability, _info| {
                let mut pending: Pending = BTreeMap::new();
                let mut shards: FxMap<u32, ShardTenants> = FxMap::default();
                move |(input, frontier), output| {
                    input.for_each(|capability, data| {
                        for (record, time, diff) in data.drain(..) {
                            pending
                                .entry(time)
                                .or_insert_with(|| (capability.delayed(&time, 0), Vec::new()))
                                .1
                                .push((record, diff));
                        }
                    });
                    while let Some(entry) = pending.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let (time, (capability, mut updates)) = entry.remove_entry();
                        // One shard at a time, so its counts stay warm in cache.
                        updates.sort_unstable_by_key(|((shard, _), _)| *shard);
                        let mut session = output.session(&capability);
                        for group in updates.chunk_by(|a, b| a.0 .0 == b.0 .0) {
                            let shard = group[0].0 .0;
                            let state = shards.entry(shard).or_default();
                            let old = state.busiest();
                            for ((_, tenant), diff) in group {
                                state.apply(*tenant, *diff);
                            }
                            let new = state.busiest();
                            if new.is_none() {
                                shards.remove(&shard);
                            }
                            if old == new {
                                continue;
                            }
                            if let Some(old) = old {
                                session.give(((shard, old), time, -1isize));
                            }
                            if let Some(new) = new {
                                session.give(((shard, new), time, 1isize));
                            }
                        }
                    }
                }
            },
        )
        .as_collection()
}

//! `hektor-bench placement`: runs the placement strategies of `hektor-cluster` on random
//! keys (ids → `hektor_topics::ring::position`) through 10 → 11 → 10 nodes and a reweight
//! of one node from 1 to 2, and reports, per strategy and virtual-node count, the fraction
//! of keys each event moved against the ideal, whether they all moved to (or from) the
//! changed node, and the standard deviation of per-node load. Also times lookups, and for
//! consistent hashing compares the sorted-`Vec` binary search with a `BTreeMap` walk built
//! from the same ring in the same run.
//!
//! It owns the measurement and its printing only; the strategies are the crate's.

use std::collections::BTreeMap;
use std::time::Instant;

use hektor_cluster::placement::{ConsistentHash, Placement, Strategy};
use hektor_cluster::NodeSpec;
use hektor_topics::ring;
use rand::Rng;
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct PlacementBenchArgs {
    /// Keys to place (random ids, placed by their ring position).
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: usize,
    /// Seed of the random ids.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object per line.
    #[arg(long)]
    pub json: bool,
}

/// One membership event's outcome.
#[derive(Debug, Serialize)]
struct EventRow {
    strategy: &'static str,
    vnodes: Option<usize>,
    event: &'static str,
    nodes_before: usize,
    nodes_after: usize,
    moved_fraction: f64,
    ideal_fraction: f64,
    /// Every moved key moved to the node that joined or gained weight (or from the one
    /// that left).
    moves_only_changed_node: bool,
    /// Standard deviation of per-node keys relative to each node's weighted share, in %
    /// of that share, after the event.
    load_stddev_pct: f64,
}

/// Lookup cost, ns per key.
#[derive(Debug, Serialize)]
struct LookupRow {
    strategy: &'static str,
    vnodes: Option<usize>,
    event: &'static str,
    ns_per_lookup: f64,
    /// The same ring as a `BTreeMap<u64, node>` walked with `range(key..)`, same keys,
    /// same run (consistent hashing only).
    btreemap_ns_per_lookup: Option<f64>,
}

const NODES: usize = 10;

fn node(i: usize) -> NodeSpec {
    NodeSpec::new(format!("node-{i:02}"))
}

/// Random ids `key-<hex>` (a seeded stream) → ring positions.
fn positions(n: usize, seed: u64) -> Vec<u64> {
    let mut rng = crate::seeded::stream(seed, crate::seeded::Purpose::PlacementKeys, 0);
    (0..n)
        .map(|_| ring::position(None, &format!("key-{:x}", rng.random::<u64>())))
        .collect()
}

/// The owner's node number (`node-07` → 7) of every key.
fn owners(p: &dyn Placement, keys: &[u64]) -> anyhow::Result<Vec<u16>> {
    let num: Vec<u16> = p
        .members()
        .nodes()
        .iter()
        .map(|n| n.id.trim_start_matches("node-").parse())
        .collect::<Result<_, _>>()?;
    keys.iter()
        .map(|&k| {
            p.owner_index(k)
                .map(|i| num[i])
                .ok_or_else(|| anyhow::anyhow!("{}: no owner", p.strategy()))
        })
        .collect()
}

fn load_stddev_pct(p: &dyn Placement, owners: &[u16]) -> f64 {
    let nodes = p.members().nodes();
    let total = p.members().total_weight();
    let mut counts = vec![0usize; 64];
    for &o in owners {
        counts[o as usize] += 1;
    }
    let var = nodes
        .iter()
        .map(|n| {
            let num: usize = n.id.trim_start_matches("node-").parse().unwrap_or(0);
            let expected = owners.len() as f64 * n.weight / total;
            (counts[num] as f64 / expected - 1.0).powi(2)
        })
        .sum::<f64>()
        / nodes.len() as f64;
    var.sqrt() * 100.0
}

/// Fraction of keys that changed owner; whether all went to `to` (or came from `from`).
fn moved(before: &[u16], after: &[u16], to: Option<u16>, from: Option<u16>) -> (f64, bool) {
    let mut n = 0usize;
    let mut only = true;
    for (&b, &a) in before.iter().zip(after) {
        if a != b {
            n += 1;
            only &= to.is_none_or(|t| a == t) && from.is_none_or(|f| b == f);
        }
    }
    (n as f64 / before.len() as f64, only)
}

fn run_strategy(strategy: Strategy, keys: &[u64]) -> anyhow::Result<Vec<EventRow>> {
    let mut p = strategy.build((0..NODES).map(node))?;
    let name = p.strategy();
    let vnodes = p.vnodes();
    let o0 = owners(&*p, keys)?;
    let mut rows = Vec::new();
    let mut row = |p: &dyn Placement, event, before: &[u16], after: &[u16], ideal, to, from| {
        let (fraction, only) = moved(before, after, to, from);
        rows.push(EventRow {
            strategy: name,
            vnodes,
            event,
            nodes_before: 0,
            nodes_after: p.members().len(),
            moved_fraction: fraction,
            ideal_fraction: ideal,
            moves_only_changed_node: only,
            load_stddev_pct: load_stddev_pct(p, after),
        });
    };
    let n = NODES as f64;
    p.join(node(NODES))?;
    let o1 = owners(&*p, keys)?;
    row(
        &*p,
        "join",
        &o0,
        &o1,
        1.0 / (n + 1.0),
        Some(NODES as u16),
        None,
    );
    p.leave(&node(NODES).id)?;
    let o2 = owners(&*p, keys)?;
    row(
        &*p,
        "leave",
        &o1,
        &o2,
        1.0 / (n + 1.0),
        None,
        Some(NODES as u16),
    );
    p.reweight(&node(0).id, 2.0)?;
    let o3 = owners(&*p, keys)?;
    row(
        &*p,
        "reweight",
        &o2,
        &o3,
        2.0 / (n + 1.0) - 1.0 / n,
        Some(0),
        None,
    );
    rows[0].nodes_before = NODES;
    rows[1].nodes_before = NODES + 1;
    rows[2].nodes_before = NODES;
    Ok(rows)
}

fn ns_per(keys: &[u64], start: Instant) -> f64 {
    start.elapsed().as_nanos() as f64 / keys.len() as f64
}

fn time_lookups(strategy: Strategy, keys: &[u64]) -> anyhow::Result<LookupRow> {
    let p = strategy.build((0..NODES).map(node))?;
    let (name, vnodes) = (p.strategy(), p.vnodes());
    let mut btreemap = None;
    let ns = if let Strategy::ConsistentHash { vnodes } = strategy {
        // Static dispatch on the concrete type, as a router holding it would.
        let mut ch = ConsistentHash::new(vnodes)?;
        for i in 0..NODES {
            ch.join(node(i))?;
        }
        let tree: BTreeMap<u64, usize> = ch.ring().collect();
        let first = tree.values().next().copied().unwrap_or(0);
        let start = Instant::now();
        let mut sum = 0usize;
        for &k in keys {
            sum += tree.range(k..).next().map_or(first, |(_, &o)| o);
        }
        std::hint::black_box(sum);
        btreemap = Some(ns_per(keys, start));
        let start = Instant::now();
        let mut sum = 0usize;
        for &k in keys {
            sum += ch.owner_index(k).unwrap_or(0);
        }
        std::hint::black_box(sum);
        ns_per(keys, start)
    } else {
        let start = Instant::now();
        let mut sum = 0usize;
        for &k in keys {
            sum += p.owner_index(k).unwrap_or(0);
        }
        std::hint::black_box(sum);
        ns_per(keys, start)
    };
    Ok(LookupRow {
        strategy: name,
        vnodes,
        event: "lookup",
        ns_per_lookup: ns,
        btreemap_ns_per_lookup: btreemap,
    })
}

/// Run the benchmark on a blocking thread (it is pure CPU work) and print its rows.
pub async fn run(args: PlacementBenchArgs) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || measure(args)).await?
}

fn measure(args: PlacementBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.keys > 0, "--keys must be at least 1");
    let keys = positions(args.keys, args.seed);
    let mut strategies = vec![Strategy::HashMod, Strategy::Range];
    for vnodes in [10, 50, 150, 500] {
        strategies.push(Strategy::ConsistentHash { vnodes });
    }
    for vnodes in [10, 50, 150, 500] {
        strategies.push(Strategy::BalancedSlots { vnodes });
    }
    if !args.json {
        println!(
            "{} keys, {NODES} -> {} -> {NODES} nodes, then node-00 weight 1 -> 2",
            args.keys,
            NODES + 1
        );
        println!(
            "{:<16} {:>6} {:<9} {:>8} {:>8} {:>8} {:>10} {:>10}",
            "strategy", "vnodes", "event", "moved", "ideal", "ratio", "only-node", "stddev%"
        );
    }
    let mut lookups = Vec::new();
    for &s in &strategies {
        for r in run_strategy(s, &keys)? {
            if args.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{:<16} {:>6} {:<9} {:>8.4} {:>8.4} {:>8.3} {:>10} {:>10.2}",
                    r.strategy,
                    r.vnodes.map_or("-".into(), |v| v.to_string()),
                    r.event,
                    r.moved_fraction,
                    r.ideal_fraction,
                    r.moved_fraction / r.ideal_fraction,
                    r.moves_only_changed_node,
                    r.load_stddev_pct
                );
            }
        }
        lookups.push(time_lookups(s, &keys)?);
    }
    if !args.json {
        println!();
        println!(
            "{:<16} {:>6} {:>14} {:>18}",
            "strategy", "vnodes", "ns/lookup", "BTreeMap ns/lookup"
        );
    }
    for l in lookups {
        if args.json {
            println!("{}", serde_json::to_string(&l)?);
        } else {
            println!(
                "{:<16} {:>6} {:>14.1} {:>18}",
                l.strategy,
                l.vnodes.map_or("-".into(), |v| v.to_string()),
                l.ns_per_lookup,
                l.btreemap_ns_per_lookup
                    .map_or("-".into(), |b| format!("{b:.1}"))
            );
        }
    }
    Ok(())
}

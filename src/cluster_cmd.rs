//! `hektor cluster`: print a node's `GET /cluster` view as readable tables — the shard map
//! (range, replicas, tier, and vectors and lag where this node holds the shard) with
//! hotness; what the stored bytes cost per month by tier; the members; the node's load
//! against its capacity; the map changes this node
//! made as controller; and the kinetic planner's recent decisions.
//!
//! This module only fetches and formats; the view itself is built by the node.

use anyhow::Context;
use serde_json::Value;

#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// The node's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    pub url: String,
    /// Print the raw JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// The API key to send (when the node runs with --api-keys).
    #[arg(long, env = "HEKTOR_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let url = format!("{}/cluster", args.url.trim_end_matches('/'));
    let response = crate::client::http_client(args.api_key.as_deref())?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("fetching {url} (is `hektor serve` running there?)"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("reading the answer of {url}"))?;
    if !status.is_success() {
        anyhow::bail!("{url} answered {status}: {body}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        print!("{}", render(&body));
    }
    Ok(())
}

fn f64_of(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

fn u64_of(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// A ring position as 16 hex digits; the end of the ring is `2^64`.
fn position(v: Option<&Value>) -> String {
    match v.and_then(Value::as_u64) {
        Some(p) => format!("{p:016x}"),
        None => "2^64".into(),
    }
}

/// The view as text tables.
pub fn render(view: &Value) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    match view.get("planner").filter(|p| !p.is_null()) {
        Some(p) => out.push_str(&format!(
            "planner: every {} ms, {} rounds; the controller carries out its splits\n",
            u64_of(p, "interval_ms"),
            u64_of(p, "rounds")
        )),
        None => out.push_str("planner: off (no hotness)\n"),
    }
    for c in view["collections"].as_array().unwrap_or(&empty) {
        out.push_str(&format!(
            "\ncollection {} ({} partitions, replication {}, map epoch {}, {} shards being built)\n",
            c["name"].as_str().unwrap_or("?"),
            u64_of(c, "partitions"),
            u64_of(c, "replication"),
            u64_of(c, "epoch"),
            c["targets"].as_array().map_or(0, Vec::len)
        ));
        out.push_str(&format!(
            "{:>5}  {:>16}  {:>16}  {:>9}  {:>6}  {:>9}  {:>8}  {:>8}  {:>5}  state  replicas\n",
            "part", "start", "end", "vectors", "lag", "hotness", "qps_1m", "p99_ms", "tier"
        ));
        for s in c["shards"].as_array().unwrap_or(&empty) {
            let state = match (s["hot"].as_bool(), s["cold"].as_bool()) {
                (Some(true), _) => "hot",
                (_, Some(true)) => "cold",
                _ => "-",
            };
            // Vectors and lag are known for the shards this node holds.
            let local = |k: &str| s[k].as_u64().map_or_else(|| "-".into(), |v| v.to_string());
            let replicas: Vec<&str> = s["replicas"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .filter_map(Value::as_str)
                .collect();
            out.push_str(&format!(
                "{:>5}  {:>16}  {:>16}  {:>9}  {:>6}  {:>9.2}  {:>8.2}  {:>8.2}  {:>5}  {state:<5}  {}\n",
                u64_of(s, "shard"),
                position(s["range"].get("start")),
                position(s["range"].get("end")),
                local("vectors"),
                local("lag"),
                f64_of(s, "hotness"),
                f64_of(s, "qps_1m"),
                f64_of(s, "p99_ms"),
                s["tier"].as_str().unwrap_or("?"),
                replicas.join(","),
            ));
        }
    }
    let cost = &view["cost"];
    if let Some(tiers) = cost["tiers"].as_array() {
        out.push_str(&format!(
            "\nstorage cost (per month, seed prices): ${:.4}, all hot ${:.4} ({:.1}%)\n",
            f64_of(cost, "cost_per_month"),
            f64_of(cost, "cost_all_hot"),
            f64_of(cost, "ratio_to_all_hot") * 100.0
        ));
        out.push_str(&format!(
            "{:>8}  {:>6}  {:>10}  {:>12}  {:>9}  {:>10}\n",
            "tier", "copies", "vectors", "MiB", "$/GB-mo", "$/month"
        ));
        for t in tiers {
            out.push_str(&format!(
                "{:>8}  {:>6}  {:>10}  {:>12.1}  {:>9.3}  {:>10.4}\n",
                t["tier"].as_str().unwrap_or("?"),
                u64_of(t, "copies"),
                u64_of(t, "vectors"),
                u64_of(t, "bytes") as f64 / (1u64 << 20) as f64,
                f64_of(t, "price_per_gb_month"),
                f64_of(t, "cost_per_month"),
            ));
        }
        if u64_of(cost, "archives_unknown") > 0 {
            out.push_str(&format!(
                "  ({} archived shards of unknown size not counted)\n",
                u64_of(cost, "archives_unknown")
            ));
        }
    }
    let nodes = view["nodes"].as_array().unwrap_or(&empty);
    if !nodes.is_empty() {
        out.push_str("\nnodes\n");
        for n in nodes {
            out.push_str(&format!(
                "  {}: {:.1} ops/s, load {:.1}% of capacity {:.2}\n",
                n["node"].as_str().unwrap_or("?"),
                f64_of(n, "ops_per_s"),
                f64_of(n, "load") * 100.0,
                f64_of(n, "capacity")
            ));
        }
    }
    let tiering = &view["planner"]["tiering"];
    let hot = tiering["nodes"].as_array().unwrap_or(&empty);
    if !hot.is_empty() {
        let mib = |v: &Value, k: &str| u64_of(v, k) as f64 / (1u64 << 20) as f64;
        out.push_str(&format!(
            "\nhot tier (tiers by hotness {})\n",
            if tiering["enabled"] == Value::Bool(true) {
                "on"
            } else {
                "off"
            }
        ));
        for n in hot {
            out.push_str(&format!(
                "  {}: {:.1} MiB of {:.1} MiB budget, {} hot shards\n",
                n["node"].as_str().unwrap_or("?"),
                mib(n, "hot_bytes"),
                mib(n, "budget_bytes"),
                u64_of(n, "hot_shards"),
            ));
        }
        for w in tiering["waiting"].as_array().unwrap_or(&empty) {
            out.push_str(&format!(
                "  {} [{}, {}) wants {}: {}\n",
                w["collection"].as_str().unwrap_or("?"),
                position(w["range"].get("start")),
                position(w["range"].get("end")),
                w["wants"].as_str().unwrap_or("?"),
                w["why"].as_str().unwrap_or("?"),
            ));
        }
    }
    let members = view["members"].as_object();
    if let Some(members) = members.filter(|m| !m.is_empty()) {
        out.push_str("\nmembers\n");
        for (id, m) in members {
            let state = match (m["alive"].as_bool(), m["leaving"].as_bool()) {
                (Some(false), _) => "dead",
                (_, Some(true)) => "draining",
                _ => "alive",
            };
            out.push_str(&format!(
                "  {id} at {}: {state}\n",
                m["address"].as_str().unwrap_or("?")
            ));
        }
    }
    let changes = view["map_changes"].as_array().unwrap_or(&empty);
    if !changes.is_empty() {
        out.push_str(&format!(
            "\nmap changes by this node as controller ({})\n",
            changes.len()
        ));
        for c in changes {
            let reasons: Vec<&str> = c["reasons"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .filter_map(Value::as_str)
                .collect();
            out.push_str(&format!(
                "  {} epoch {}: {}\n",
                c["collection"].as_str().unwrap_or("?"),
                u64_of(c, "epoch"),
                reasons.join("; ")
            ));
        }
    }
    let decisions = view["decisions"].as_array().unwrap_or(&empty);
    out.push_str(&format!(
        "\nplanner decisions ({}; splits are carried out by the controller)\n",
        decisions.len()
    ));
    for d in decisions {
        out.push_str(&format!(
            "  {} epoch {} {}: {}\n",
            d["collection"].as_str().unwrap_or("?"),
            u64_of(d, "epoch"),
            d["action"]["action"].as_str().unwrap_or("?"),
            d["reason"].as_str().unwrap_or("")
        ));
    }
    out
}

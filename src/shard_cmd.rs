//! `hektor shard split|tier`: ask a node's controller for a shard split or a tier change
//! (`POST /cluster/collections/{c}/plan`). The shard is named by its range start (hex
//! `0x…` or decimal) as `hektor cluster` shows it; a split point defaults to the middle of
//! the shard's range.
//!
//! This module only builds the request; the controller carries it out and `hektor
//! cluster` shows the result.

use anyhow::Context;
use hektor_topics::record::{PlanAction, RingRange, Tier};
use serde_json::Value;

#[derive(Debug, Clone, clap::Args)]
pub struct ShardArgs {
    #[command(subcommand)]
    pub command: ShardCommand,
    /// A node's HTTP address.
    #[arg(long, global = true, default_value = "http://127.0.0.1:7070")]
    pub url: String,
    /// The API key to send (when the node runs with --api-keys; it needs `read` and `admin`).
    #[arg(long, global = true, env = "HEKTOR_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ShardCommand {
    /// Split a shard in two.
    Split {
        collection: String,
        /// The shard's range start.
        shard: String,
        /// Where to split (default: the middle of the range).
        #[arg(long)]
        at: Option<String>,
    },
    /// Serve a shard from another storage tier: hot, warm or cold, or archive it to object
    /// storage (`archive`: needs `serve --archive-url` on its holders).
    Tier {
        collection: String,
        shard: String,
        tier: String,
    },
}

fn number(text: &str) -> anyhow::Result<u64> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.with_context(|| format!("`{text}` is not a ring position (decimal or 0x-hex)"))
}

pub async fn run(args: ShardArgs) -> anyhow::Result<()> {
    let base = args.url.trim_end_matches('/');
    let (collection, shard) = match &args.command {
        ShardCommand::Split {
            collection, shard, ..
        }
        | ShardCommand::Tier {
            collection, shard, ..
        } => (collection.clone(), number(shard)?),
    };
    let client = crate::client::http_client(args.api_key.as_deref())?;
    // Find the shard's full range in the node's view.
    let view: Value = client
        .get(format!("{base}/collections/{collection}"))
        .send()
        .await
        .with_context(|| format!("asking {base} (is a node running there?)"))?
        .json()
        .await?;
    let range: RingRange = view["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| serde_json::from_value::<RingRange>(s["range"].clone()).ok())
        .find(|r| r.start == shard)
        .with_context(|| {
            format!("collection `{collection}` has no shard starting at {shard:#x}: {view}")
        })?;
    let action = match &args.command {
        ShardCommand::Split { at, .. } => {
            let at = match at {
                Some(at) => number(at)?,
                None => {
                    let end = range.end.map_or(1u128 << 64, u128::from);
                    ((range.start as u128 + end) / 2) as u64
                }
            };
            PlanAction::Split { shard: range, at }
        }
        ShardCommand::Tier { tier, .. } => PlanAction::SetTier {
            shard: range,
            tier: match tier.as_str() {
                "hot" => Tier::Hot,
                "warm" => Tier::Warm,
                "cold" => Tier::Cold,
                "archive" => Tier::Archive,
                other => anyhow::bail!("unknown tier `{other}`: use hot, warm, cold or archive"),
            },
        },
    };
    let response = client
        .post(format!("{base}/cluster/collections/{collection}/plan"))
        .json(&action)
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        anyhow::bail!("{base} refused: {status} {body}");
    }
    println!("{}", serde_json::to_string(&body)?);
    Ok(())
}

//! `hektor produce --collection C FILE`: load an fvecs file (ids from a sibling `.ids`
//! file, else the row number; payload text from a sibling `.txt` file when present) or a
//! JSONL file (one `{"id", "vector", "tenant"?, "payload"?}` per line) into a collection,
//! through a node's HTTP API in the binary bulk form, in batches, with a progress bar and
//! a final rate.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use hektor_indexers::dataset::read_fvecs;
use hektor_ingest::http::{encode_bulk, BULK_CONTENT_TYPE};
use hektor_ingest::validate::UpsertItem;
use hektor_topics::record::{VectorRecord, VectorUpsert};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Clone, clap::Args)]
pub struct ProduceArgs {
    /// The collection to load into (it must exist).
    #[arg(long)]
    pub collection: String,
    /// An .fvecs or .jsonl file.
    pub file: PathBuf,
    /// The node's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    pub url: String,
    /// Vectors per request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Load at most this many vectors.
    #[arg(long)]
    pub limit: Option<usize>,
    /// The API key to send (when the node runs with --api-keys; it needs `write`).
    #[arg(long, env = "HEKTOR_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

fn sibling_lines(file: &Path, ext: &str) -> Option<Vec<String>> {
    let path = file.with_extension(ext);
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.lines().map(str::to_owned).collect())
}

/// Read the items of an fvecs or JSONL file.
pub fn read_items(file: &Path, limit: Option<usize>) -> anyhow::Result<Vec<UpsertItem>> {
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
    let mut items = Vec::new();
    match ext {
        "fvecs" => {
            let (data, dim) = read_fvecs(file, limit)?;
            let rows = data.len() / dim.max(1);
            let ids = sibling_lines(file, "ids");
            let texts = sibling_lines(file, "txt");
            for i in 0..rows.min(limit.unwrap_or(usize::MAX)) {
                let id = ids
                    .as_ref()
                    .and_then(|ids| ids.get(i).cloned())
                    .unwrap_or_else(|| i.to_string());
                let payload = texts
                    .as_ref()
                    .and_then(|t| t.get(i))
                    .map(|text| serde_json::json!({ "text": text }));
                items.push(UpsertItem {
                    id,
                    vector: data[i * dim..(i + 1) * dim].to_vec(),
                    tenant: None,
                    payload,
                });
            }
        }
        "jsonl" | "ndjson" => {
            let reader = std::io::BufReader::new(
                std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
            );
            for (n, line) in reader.lines().enumerate() {
                if items.len() >= limit.unwrap_or(usize::MAX) {
                    break;
                }
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let item: UpsertItem = serde_json::from_str(&line)
                    .with_context(|| format!("{}:{}: not a vector item", file.display(), n + 1))?;
                items.push(item);
            }
        }
        other => anyhow::bail!("unsupported file type `.{other}`: use .fvecs or .jsonl"),
    }
    Ok(items)
}

pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let items = read_items(&args.file, args.limit)?;
    let client = crate::client::http_client(args.api_key.as_deref())?;
    let url = format!(
        "{}/collections/{}/vectors",
        args.url.trim_end_matches('/'),
        args.collection
    );
    let bar = ProgressBar::new(items.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} vectors {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    for chunk in items.chunks(args.batch.max(1)) {
        let records: Vec<VectorRecord> = chunk
            .iter()
            .map(|item| {
                VectorRecord::Upsert(VectorUpsert {
                    collection: args.collection.clone(),
                    id: item.id.clone(),
                    tenant: item.tenant.clone(),
                    vector: item.vector.clone(),
                    payload: item.payload.clone(),
                    hlc: Default::default(),
                    origin: String::new(),
                })
            })
            .collect();
        let body = encode_bulk(&records)?;
        let response = client
            .post(&url)
            .header("content-type", BULK_CONTENT_TYPE)
            .body(body)
            .send()
            .await
            .with_context(|| format!("posting to {url}"))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            bar.abandon();
            anyhow::bail!("{url} answered {status}: {text}");
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "produced {} vectors into `{}` in {secs:.2}s ({:.0} vectors/s)",
        items.len(),
        args.collection,
        items.len() as f64 / secs.max(1e-9)
    );
    Ok(())
}

//! `hektor serve --demo`: create a `demo` collection from the sample shipped in the repo
//! (3,000 Debian package descriptions embedded with all-MiniLM-L6-v2), wait until it is
//! searchable, and print a search the user can paste.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hektor_indexers::dataset::read_fvecs;
use hektor_indexers::host::ShardHost;
use hektor_ingest::validate::{UpsertItem, WriteBatch};
use hektor_ingest::{Token, Writer};
use hektor_topics::record::{CollectionSpec, Distance};

use crate::serve::ServeArgs;

pub const DEMO_COLLECTION: &str = "demo";
const SAMPLE_DIR: &str = "samples/debian-minilm-384-sample";

/// The sample directory: `--sample`, else `samples/...` under the current directory, else
/// under the source tree this binary was built from.
pub fn sample_dir(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    let candidates = [
        PathBuf::from(SAMPLE_DIR),
        Path::new(env!("CARGO_MANIFEST_DIR")).join(SAMPLE_DIR),
    ];
    candidates
        .into_iter()
        .find(|p| p.join("base.fvecs").exists())
        .context("the demo sample was not found; pass --sample DIR (a directory with base.fvecs, base.ids, base.txt)")
}

fn read_lines(path: &Path) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().map(str::to_owned).collect())
}

pub async fn load(
    args: &ServeArgs,
    writer: Arc<Writer>,
    host: Arc<ShardHost>,
) -> anyhow::Result<()> {
    let dir = sample_dir(args.sample.as_deref())?;
    let (base, dim) = read_fvecs(&dir.join("base.fvecs"), None)?;
    let ids = read_lines(&dir.join("base.ids"))?;
    let texts = read_lines(&dir.join("base.txt")).unwrap_or_default();
    let rows = base.len() / dim;
    anyhow::ensure!(
        ids.len() >= rows,
        "base.ids has {} lines for {rows} vectors",
        ids.len()
    );
    let started = Instant::now();
    let spec = CollectionSpec {
        name: DEMO_COLLECTION.into(),
        dimension: dim as u32,
        distance: Distance::Cosine,
        partitions: 4,
        replication: 1,
        placement: Default::default(),
        merge: Default::default(),
        write_level: Default::default(),
    };
    writer.catalog().create(spec).await?;
    let mut token = Token::default();
    let chunk = 500;
    for start in (0..rows).step_by(chunk) {
        let end = (start + chunk).min(rows);
        let batch = WriteBatch {
            upserts: (start..end)
                .map(|i| UpsertItem {
                    id: ids[i].clone(),
                    vector: base[i * dim..(i + 1) * dim].to_vec(),
                    tenant: None,
                    payload: Some(serde_json::json!({
                        "package": ids[i],
                        "text": texts.get(i).cloned().unwrap_or_default(),
                    })),
                })
                .collect(),
            deletes: Vec::new(),
        };
        let (t, _) = writer.write(DEMO_COLLECTION, batch).await?;
        token.merge(&t);
    }
    // Wait until every shard has applied the load.
    let deadline = Instant::now() + Duration::from_secs(120);
    let collection = loop {
        if let Some(c) = host.collection(DEMO_COLLECTION) {
            break c;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the demo collection never opened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for shard in &collection.shards {
        if let Some(&offset) = token.offsets.get(&shard.partition) {
            let left = deadline.saturating_duration_since(Instant::now());
            anyhow::ensure!(
                shard.wait_applied(offset, left).await,
                "demo load timed out"
            );
        }
    }
    // A query the user can paste: the first sample query, in a file next to the data.
    let (queries, qdim) = read_fvecs(&dir.join("query.fvecs"), Some(1))?;
    let qtext = read_lines(&dir.join("query.txt"))
        .ok()
        .and_then(|l| l.into_iter().next())
        .unwrap_or_default();
    let query_file = args.log.data_dir.join("demo-query.json");
    let body = serde_json::json!({ "vector": &queries[..qdim], "k": 5 });
    std::fs::write(&query_file, serde_json::to_vec(&body)?)?;
    let query_file = std::fs::canonicalize(&query_file)?;
    println!(
        "demo: loaded {rows} vectors into `{DEMO_COLLECTION}` in {:.1}s; searchable now.",
        started.elapsed().as_secs_f64()
    );
    println!("demo: the query is the embedding of: {qtext:?}");
    println!(
        "demo: try\n  curl -s http://{}/collections/{DEMO_COLLECTION}/search -H 'content-type: application/json' -d @{}",
        args.listen,
        query_file.display()
    );
    Ok(())
}

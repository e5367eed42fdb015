//! What `/metrics` of the real `hektor serve` (embedded log) exposes, and what reads it:
//!
//! - Prometheus conventions: every counter's name ends with `_total`;
//! - per-shard series follow the shards the node serves: after a split the parent shard
//!   has no series left, the halves have theirs, and a dropped collection has none;
//! - the Grafana dashboard (`deploy/grafana/dashboards/hektor.json`): every metric its
//!   panels and variables query exists in a live answer, so a renamed metric fails here;
//!   and the compose file mounts provisioning files that exist.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// One sample line of the text exposition format: its metric name and labels.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The `/metrics` answer: its sample lines and its `# TYPE name type` lines.
struct Exposition {
    text: String,
    samples: Vec<Sample>,
    types: BTreeMap<String, String>,
}

impl Exposition {
    fn names(&self) -> BTreeSet<&str> {
        self.samples.iter().map(|s| s.name.as_str()).collect()
    }

    /// The samples of `name` whose labels include all of `labels`.
    fn series<'a>(&'a self, name: &'a str, labels: &'a [(&str, &str)]) -> Vec<&'a Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }
}

fn scrape(url: &str) -> Exposition {
    let resp = client()
        .get(format!("{url}/metrics"))
        .send()
        .expect("GET /metrics");
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().expect("a text answer");
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                panic!("a malformed TYPE line: {line}");
            };
            types.insert(name.to_string(), kind.to_string());
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            samples.push(parse_sample(line));
        }
    }
    Exposition {
        text,
        samples,
        types,
    }
}

/// `name{k="v",...} value` or `name value`.
fn parse_sample(line: &str) -> Sample {
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = line[..end].to_string();
    let mut labels = BTreeMap::new();
    if line[end..].starts_with('{') {
        let mut chars = line[end + 1..].chars();
        loop {
            let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
            let key = key.trim_start_matches(',').trim().to_string();
            if key.is_empty() || key.starts_with('}') {
                break;
            }
            assert_eq!(chars.next(), Some('"'), "a label value is quoted: {line}");
            let mut value = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.insert(key, value);
        }
    }
    let value = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a sample without a value: {line}"));
    Sample {
        name,
        labels,
        value,
    }
}

fn upsert(url: &str, collection: &str, n: usize) {
    let upserts: Vec<_> = (0..n)
        .map(|i| {
            let x = i as f32;
            json!({"id": format!("v{i}"), "vector": [1.0, x.sin(), x.cos(), x / n as f32]})
        })
        .collect();
    let (status, body) = post(
        &format!("{url}/collections/{collection}/vectors"),
        &json!({ "upserts": upserts }),
    );
    assert_eq!(status, 200, "{body}");
}

fn search(url: &str, collection: &str, times: usize) {
    for i in 0..times {
        let x = i as f32;
        let (status, body) = post(
            &format!("{url}/collections/{collection}/search"),
            &json!({"vector": [1.0, x.sin(), x.cos(), 0.5], "k": 3}),
        );
        assert_eq!(status, 200, "{body}");
    }
}

/// Wait (at most 60 s) until `/metrics` satisfies `ok`.
fn scrape_until(url: &str, what: &str, ok: impl Fn(&Exposition) -> bool) -> Exposition {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = scrape(url);
        if ok(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "never {what}:\n{}", m.text);
        std::thread::sleep(Duration::from_millis(200));
    }
}

const SHARD_FAMILIES: [&str; 4] = [
    "hektor_shard_vectors",
    "hektor_shard_pending",
    "hektor_shard_lag",
    "hektor_shard_dead_lettered_total",
];

#[test]
fn counters_end_in_total_and_split_or_dropped_shards_leave_no_series() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), None, &["--engine", "exact", "--no-planner"]);
    let url = &server.url;
    create_collection(url, "s", 4, 1);
    upsert(url, "s", 300);
    search(url, "s", 5);
    // The whole partition is one shard, labelled by its partition.
    let whole = [("collection", "s"), ("shard", "0")];
    let m = scrape_until(url, "showed the whole shard's 300 vectors", |m| {
        m.series("hektor_shard_vectors", &whole)
            .first()
            .is_some_and(|s| s.value == 300.0)
    });
    for family in SHARD_FAMILIES {
        assert_eq!(m.series(family, &whole).len(), 1, "{family}:\n{}", m.text);
    }
    // Every counter is named `..._total`; the node's counts are counters.
    let counters: Vec<&String> = m
        .types
        .iter()
        .filter(|(_, kind)| *kind == "counter")
        .map(|(name, _)| name)
        .collect();
    for name in &counters {
        assert!(name.ends_with("_total"), "counter {name} lacks _total");
    }
    for name in [
        "hektor_requests_total",
        "hektor_shard_dead_lettered_total",
        "hektor_shard_searches_total",
        "hektor_events_dropped_total",
        "hektor_build_candidate_rows_total",
        "hektor_build_candidate_gpu_failures_total",
    ] {
        assert_eq!(
            m.types.get(name).map(String::as_str),
            Some("counter"),
            "{name}:\n{}",
            m.text
        );
    }
    for gauge in [
        "hektor_shard_vectors",
        "hektor_shard_pending",
        "hektor_shard_lag",
    ] {
        assert_eq!(m.types.get(gauge).map(String::as_str), Some("gauge"));
    }
    // Where the shard's bytes are: its vectors' pages hold 300 × 16 bytes of components.
    assert_eq!(
        m.types.get("hektor_shard_disk_bytes").map(String::as_str),
        Some("gauge")
    );
    let part = |name: &'static str| {
        m.series(
            "hektor_shard_disk_bytes",
            &[("collection", "s"), ("shard", "0"), ("part", name)],
        )
        .first()
        .map(|s| s.value)
    };
    let vectors = part("vectors").unwrap_or_else(|| panic!("no vectors part:\n{}", m.text));
    assert!(
        (300.0 * 16.0..=64.0 * 4096.0).contains(&vectors),
        "vectors take {vectors} bytes:\n{}",
        m.text
    );
    assert!(part("records").is_some_and(|b| b > 0.0), "{}", m.text);
    let searches = m.series("hektor_shard_searches_total", &[]);
    assert!(
        searches.len() == 1 && searches[0].value >= 5.0,
        "five searches were served:\n{}",
        m.text
    );

    // Split the shard: once the halves serve, the parent has no series.
    let (_, info) = get(&format!("{url}/collections/s"));
    let range = info["shards"][0]["range"].clone();
    let (status, body) = post(
        &format!("{url}/cluster/collections/s/plan"),
        &json!({"action": "split", "shard": range, "at": 1u64 << 63}),
    );
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, info) = get(&format!("{url}/collections/s"));
        if info["shards"].as_array().unwrap().len() == 2
            && info["targets"].as_array().unwrap().is_empty()
            && info["complete"] == json!(true)
            && info["vectors"] == json!(300)
        {
            break;
        }
        assert!(Instant::now() < deadline, "never split: {info}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let halves = ["0@0000000000000000", "0@8000000000000000"];
    let m = scrape_until(url, "dropped the parent's series", |m| {
        SHARD_FAMILIES
            .iter()
            .all(|f| m.series(f, &whole).is_empty())
    });
    for family in SHARD_FAMILIES {
        for half in halves {
            assert_eq!(
                m.series(family, &[("collection", "s"), ("shard", half)])
                    .len(),
                1,
                "{family} of {half}:\n{}",
                m.text
            );
        }
        assert_eq!(
            m.series(family, &[("collection", "s")]).len(),
            2,
            "{family}: only the halves:\n{}",
            m.text
        );
    }

    // A dropped collection leaves no series either.
    let (status, body) = call(
        reqwest::Method::DELETE,
        &format!("{url}/collections/s"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    scrape_until(url, "dropped the collection's series", |m| {
        m.samples
            .iter()
            .all(|s| s.labels.get("collection").map(String::as_str) != Some("s"))
    });
}

/// Every `hektor_...` name in a PromQL expression (quoted strings skipped).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' || c == '\'' {
            while let Some(d) = chars.next() {
                if d == '\\' {
                    chars.next();
                } else if d == c {
                    break;
                }
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let mut word = c.to_string();
            while let Some(&d) = chars.peek() {
                if d.is_ascii_alphanumeric() || d == '_' || d == ':' {
                    word.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            if word.starts_with("hektor_") {
                names.push(word);
            }
        } else if c == '$' {
            // A Grafana variable such as $__rate_interval: not a metric.
            while chars
                .peek()
                .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '_')
            {
                chars.next();
            }
        }
    }
    names
}

/// Every PromQL expression of the dashboard: panel targets (rows' panels included) and
/// query variables, with where each is.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("panel {title}: a target without expr"));
                out.push((format!("panel {title:?}"), expr.to_string()));
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = &var["query"];
        let text = query["query"].as_str().or(query.as_str());
        if let Some(text) = text {
            let name = var["name"].as_str().unwrap_or("?");
            out.push((format!("variable {name:?}"), text.to_string()));
        }
    }
    out
}

#[test]
fn the_grafana_dashboard_queries_only_metrics_the_node_exposes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = root.join("deploy/grafana/dashboards/hektor.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("the dashboard file"))
            .expect("the dashboard is JSON");
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 9, "too few queries: {queries:?}");
    let mut wanted = BTreeSet::new();
    for (place, expr) in &queries {
        let names = metric_names(expr);
        assert!(
            !names.is_empty(),
            "{place} queries no hektor metric: {expr}"
        );
        wanted.extend(names);
    }
    // Every panel reads the provisioned data source.
    let provisioned = std::fs::read_to_string(
        root.join("deploy/grafana/provisioning/datasources/prometheus.yml"),
    )
    .unwrap();
    assert!(provisioned.contains("uid: prometheus"), "{provisioned}");
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "prometheus",
            "panel {}",
            panel["title"]
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), None, &["--engine", "exact", "--no-planner"]);
    let url = &server.url;
    create_collection(url, "d", 4, 2);
    upsert(url, "d", 50);
    search(url, "d", 5);
    let (status, _) = get(&format!("{url}/collections/nope"));
    assert_eq!(status, 404);
    let m = scrape_until(url, "showed the shards", |m| {
        !m.series("hektor_shard_vectors", &[("collection", "d")])
            .is_empty()
    });
    let exposed = m.names();
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|n| !exposed.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics lacks: {missing:?}\n{}",
        m.text
    );
    // What the issue asks the dashboard to show is there.
    for name in [
        "hektor_requests_total",
        "hektor_request_seconds_bucket",
        "hektor_shard_vectors",
        "hektor_shard_pending",
        "hektor_shard_lag",
        "hektor_shard_dead_lettered_total",
        "hektor_events_dropped_total",
        "hektor_shard_searches_total",
    ] {
        assert!(wanted.contains(name), "no panel shows {name}");
    }
}

#[test]
fn the_compose_file_mounts_provisioning_that_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let compose = std::fs::read_to_string(root.join("docker-compose.yml")).unwrap();
    assert!(compose.contains("\n  grafana:\n"), "no grafana service");
    // Every host path a volume names (`- ./x:/y[:ro]`) exists in the repository.
    let mounts: Vec<&str> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- ./"))
        .filter_map(|l| l.split(':').next())
        .collect();
    assert!(
        mounts.contains(&"deploy/grafana/provisioning")
            && mounts.contains(&"deploy/grafana/dashboards"),
        "{mounts:?}"
    );
    for mount in mounts {
        assert!(
            root.join(mount).exists(),
            "compose mounts ./{mount}: absent"
        );
    }
    for file in [
        "deploy/grafana/provisioning/datasources/prometheus.yml",
        "deploy/grafana/provisioning/dashboards/hektor.yml",
        "deploy/grafana/dashboards/hektor.json",
    ] {
        assert!(root.join(file).is_file(), "{file} is missing");
    }
}

#[test]
fn metric_names_are_read_from_expressions() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (route, le) (rate(hektor_request_seconds_bucket{instance=~"hektor_x", status=~"5.."}[$__rate_interval])))"#
        ),
        ["hektor_request_seconds_bucket"]
    );
    assert_eq!(
        metric_names("hektor_a_total / on(instance) hektor_b"),
        ["hektor_a_total", "hektor_b"]
    );
}

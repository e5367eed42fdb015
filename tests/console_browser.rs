//! The web console (`/ui`) in a real headless Chromium, against the real binary: `hektor
//! serve --demo` on a free port, then `chromium --headless=new --dump-dom` on
//! `http://127.0.0.1:PORT/ui` once the page's script has polled the views, and a
//! `--screenshot`. The rendered DOM must show the demo collection's shards (one row per
//! shard of `GET /cluster`) and the node id, as text: the node id here carries markup
//! (`<b>…</b>`), which must come out escaped, never as an element. A second node, with API
//! keys and without the router role, serves `/ui` without a key and the page asks for one.
//!
//! The browser is `$HEKTOR_CHROMIUM`, else `chromium` or `chromium-browser` on PATH
//! (`bash scripts/chromium.sh install` installs Debian's). Without one the test says it did
//! not run; under `CI=true` it fails. `HEKTOR_CONSOLE_SCREENSHOT=docs/console.png` also
//! writes the screenshot there.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// A node id with markup in it: the console must show it as text.
const NODE_ID: &str = "n1<b>bold</b>";

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The browser, or `None` (said loudly) when there is none outside CI.
fn chromium() -> Option<PathBuf> {
    let explicit = std::env::var("HEKTOR_CHROMIUM")
        .ok()
        .filter(|p| !p.is_empty());
    let found = match &explicit {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => on_path("chromium").or_else(|| on_path("chromium-browser")),
    };
    if found.is_none() {
        let why = match explicit {
            Some(p) => format!("HEKTOR_CHROMIUM={p} is not a file"),
            None => "no `chromium` or `chromium-browser` on PATH".to_string(),
        };
        assert!(
            !is_ci(),
            "CI=true but {why}: install it with `bash scripts/chromium.sh install` or set HEKTOR_CHROMIUM"
        );
        eprintln!(
            "WARNING: console browser test NOT RUN: {why} (install one with `bash scripts/chromium.sh install`)"
        );
    }
    found
}

/// Run headless Chromium on `url` with `extra` flags for `budget_ms` of virtual time (the
/// page polls every 2 s; virtual time stands still while a fetch is on the wire); returns
/// its stdout. `profile` is a fresh directory for its user data.
fn run_chromium(bin: &Path, profile: &Path, budget_ms: u64, extra: &[String], url: &str) -> String {
    let mut child = Command::new(bin)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--hide-scrollbars",
            "--mute-audio",
        ])
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    // Read both pipes on threads so a large DOM cannot block the browser.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for chromium") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium did not finish within 90 s on {url}; its stderr:\n{}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    assert!(
        status.success(),
        "chromium failed ({status}) on {url}; its stderr:\n{stderr}"
    );
    stdout
}

/// How many times `needle` occurs in `hay`.
fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// The value of `attr="..."` on the element whose opening tag starts with `tag_start`.
fn attribute(dom: &str, tag_start: &str, attr: &str) -> Option<String> {
    let tag = &dom[dom.find(tag_start)?..];
    let tag = &tag[..tag.find('>')?];
    let at = tag.find(&format!(" {attr}=\""))? + attr.len() + 3;
    Some(tag[at..].split('"').next()?.to_string())
}

/// The demo collection in a `GET /cluster` view.
fn demo_of(cluster: &Value) -> Value {
    cluster["collections"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "demo"))
        .cloned()
        .unwrap_or_else(|| panic!("no demo in GET /cluster: {cluster}"))
}

/// Wait until the demo's map is at `min_epoch` or later and settled: nothing being built,
/// every shard open here, and the epoch unchanged for 4 s (the planner, every 500 ms here,
/// may act on what an operator did: it merges cold halves of a split back).
fn settled(url: &str, min_epoch: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut seen: Option<(u64, Instant)> = None;
    loop {
        let (status, cluster) = get(&format!("{url}/cluster"));
        assert_eq!(status, 200, "{cluster}");
        let demo = demo_of(&cluster);
        let epoch = demo["epoch"].as_u64().unwrap_or(0);
        let shards = demo["shards"].as_array().cloned().unwrap_or_default();
        let quiet = epoch >= min_epoch
            && !shards.is_empty()
            && demo["targets"].as_array().is_some_and(Vec::is_empty)
            && shards.iter().all(|s| s["vectors"].is_u64());
        match seen {
            Some((e, since)) if quiet && e == epoch => {
                if since.elapsed() >= Duration::from_secs(4) {
                    return cluster;
                }
            }
            _ => seen = quiet.then(|| (epoch, Instant::now())),
        }
        assert!(
            Instant::now() < deadline,
            "the demo's map never settled: {demo}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Wait until the demo collection holds all its vectors.
fn demo_loaded(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (status, body) = get(&format!("{url}/collections/demo"));
        if status == 200 && body["complete"] == true && body["vectors"].as_u64() >= Some(3000) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the demo never loaded: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn the_console_shows_the_demo_collection_in_a_real_browser() {
    let Some(browser) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(
        &dir.path().join("node"),
        None,
        &[
            "--demo",
            "--node-id",
            NODE_ID,
            "--planner-interval-ms",
            "500",
        ],
    );
    let url = &server.url;
    demo_loaded(url);
    // An operator's split of the first shard, so the ring has unequal arcs and the map
    // changes say why; wait until it has switched in and the halves are open.
    let quarter: u64 = 1 << 62;
    let (status, body) = post(
        &format!("{url}/cluster/collections/demo/plan"),
        &json!({"action": "split", "shard": {"start": 0, "end": quarter}, "at": quarter / 2}),
    );
    assert_eq!(status, 202, "{body}");
    // Epoch 1 begins the split, epoch 2 switches the halves in.
    settled(url, 2);
    // Some searches, so the planner has hotness to show.
    let query: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("node/demo-query.json")).expect("the demo's query"),
    )
    .unwrap();
    for k in 1..=40 {
        let (status, body) = post(
            &format!("{url}/collections/demo/search"),
            &json!({"vector": query["vector"], "k": 1 + k % 10}),
        );
        assert_eq!(status, 200, "{body}");
    }
    std::thread::sleep(Duration::from_millis(1500));

    // The served files.
    let c = client();
    let page = c.get(format!("{url}/ui")).send().unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.headers().contains_key("content-security-policy"));
    for (file, kind) in [("app.js", "text/javascript"), ("style.css", "text/css")] {
        let r = c.get(format!("{url}/ui/{file}")).send().unwrap();
        assert_eq!(r.status(), 200, "{file}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(kind));
    }
    assert_eq!(
        c.get(format!("{url}/ui/nope")).send().unwrap().status(),
        404
    );

    // The page after its script ran, against the map as it was before and after the
    // browser looked (again if the map changed meanwhile).
    let mut tries = 0;
    let (dom, cluster) = loop {
        let before = settled(url, 2);
        let profile = tempfile::tempdir().unwrap();
        let dom = run_chromium(
            &browser,
            profile.path(),
            7_000,
            &["--dump-dom".to_string()],
            &format!("{url}/ui"),
        );
        let (_, after) = get(&format!("{url}/cluster"));
        tries += 1;
        if demo_of(&before)["epoch"] == demo_of(&after)["epoch"] || tries == 3 {
            break (dom, after);
        }
    };
    let shards = demo_of(&cluster)["shards"].as_array().map_or(0, Vec::len);
    assert!(shards >= 4, "{cluster}");
    assert_eq!(cluster["node"], NODE_ID, "{cluster}");
    let polls: usize = attribute(&dom, "<body", "data-polls")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the page never rendered a poll:\n{dom}"));
    assert!(polls >= 1, "{dom}");
    assert_eq!(
        count(&dom, "<tr class=\"shard-row\" data-collection=\"demo\""),
        shards,
        "one shard row per shard of GET /cluster ({shards}):\n{dom}"
    );
    // The node id, as text: in the header, each shard's replicas and the nodes table.
    let escaped = "n1&lt;b&gt;bold&lt;/b&gt;";
    assert!(
        count(&dom, escaped) > shards,
        "the node id shows as text:\n{dom}"
    );
    assert!(
        !dom.contains("<b>bold</b>"),
        "markup from the API became an element:\n{dom}"
    );
    assert!(
        dom.contains("<tr class=\"node-row\""),
        "no nodes table:\n{dom}"
    );
    // The controller's map changes, with their reasons: the first map, the split begun,
    // the halves switched in.
    assert!(
        count(&dom, "<tr class=\"map-change-row\"") >= 3,
        "map changes:\n{dom}"
    );
    assert!(dom.contains("split at 0x2000000000000000"), "{dom}");
    let samples: usize = attribute(&dom, "<canvas id=\"heat\"", "data-samples")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(samples >= 1, "the heat map kept no sample:\n{dom}");
    let rows: usize = attribute(&dom, "<canvas id=\"heat\"", "data-rows")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert_eq!(rows, shards, "one heat-map row per shard:\n{dom}");
    assert!(!dom.contains("API key needed"), "{dom}");

    // A screenshot of the same page.
    let profile2 = tempfile::tempdir().unwrap();
    let shot = profile2.path().join("console.png");
    // A longer budget: more polls, a wider heat map.
    run_chromium(
        &browser,
        profile2.path(),
        40_000,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,900".to_string(),
        ],
        &format!("{url}/ui"),
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 10_000,
        "a blank screenshot? {} bytes",
        png.len()
    );
    if let Some(to) = std::env::var_os("HEKTOR_CONSOLE_SCREENSHOT") {
        std::fs::write(&to, &png).unwrap();
        eprintln!(
            "console screenshot ({} bytes) written to {}",
            png.len(),
            Path::new(&to).display()
        );
    }
}

#[test]
fn the_console_is_served_without_a_key_and_asks_for_one() {
    let Some(browser) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    std::fs::write(
        &keys,
        json!({"keys": [{"name": "ops", "key": "console-test-key-0123456789", "scopes": ["read"]}]})
            .to_string(),
    )
    .unwrap();
    // A node without the router role: its views (and so the console) are still served.
    let server = start_server(
        &dir.path().join("node"),
        None,
        &[
            "--api-keys",
            keys.to_str().unwrap(),
            "--roles",
            "data,controller",
        ],
    );
    let url = &server.url;
    let c = client();
    for path in ["/ui", "/ui/", "/ui/app.js", "/ui/style.css"] {
        let r = c.get(format!("{url}{path}")).send().unwrap();
        assert_eq!(r.status(), 200, "{path} without a key");
    }
    assert_eq!(
        c.get(format!("{url}/cluster")).send().unwrap().status(),
        401
    );
    let keyed = c
        .get(format!("{url}/cluster"))
        .bearer_auth("console-test-key-0123456789")
        .send()
        .unwrap();
    assert_eq!(keyed.status(), 200);
    // The client API is still a 421 here, views are not.
    let r = c
        .post(format!("{url}/collections/x/search"))
        .bearer_auth("console-test-key-0123456789")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status(), 421);

    let profile = tempfile::tempdir().unwrap();
    let dom = run_chromium(
        &browser,
        profile.path(),
        5_000,
        &["--dump-dom".to_string()],
        &format!("{url}/ui"),
    );
    assert!(dom.contains("API key needed"), "{dom}");
    let panel = &dom[dom
        .find("<section id=\"key-panel\"")
        .expect("the key panel")..];
    let panel = &panel[..panel.find('>').unwrap()];
    assert!(!panel.contains("hidden"), "the key panel shows:\n{dom}");
}

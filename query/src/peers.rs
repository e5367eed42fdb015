//! A node's links to the other regions (seed §3.1, §3.3): one HTTP address per region
//! (`hektor serve --region-peers east=http://…`), reached across the WAN.
//!
//! Four uses, each a plain internal route of the peer:
//! - **Round-trip time**, measured continuously: every `probe_every` a small
//!   `GET /internal/regions/probe`; the RTT (an exponentially weighted mean of the probes,
//!   and the last one) and whether the peer answers are in `GET /cluster`'s `peers` and
//!   in `/metrics` (`hektor_region_rtt_seconds{region}`, `hektor_region_up{region}`).
//! - **Acknowledgements that cross once.** Each node keeps one stream open to every peer,
//!   `GET /internal/regions/floors?origin=<its region>`: newline-delimited JSON, one line
//!   `{"collection", "partition", "floor"}` whenever a shard there merges more of this
//!   region's partition (and an empty line every second when nothing changed). A `sync`
//!   or `quorum` write waits until the floors streamed by enough regions reach its own:
//!   the news crosses the WAN once, the moment that region merges the write, and costs
//!   one line per merge, not a request per write. Without a peer, or while its stream is
//!   down, a write still learns it from the `seen` vectors on that region's mirrored
//!   records (two crossings and that region's next record): both count, the first wins.
//! - **Reads forwarded to a fresher region.** A `bounded` or `strong` search waits here
//!   first; if it is not answered within the round trip to the nearest live peer, it is
//!   also sent there (`POST /internal/collections/{c}/region-search`, which never
//!   forwards again) and the first answer wins, so a read is never slower than the
//!   faster of waiting and forwarding by more than one round trip. The answer names the
//!   region that gave it (`region`).
//! - **Session tokens of another region.** A `session` search naming the token's region
//!   asks that region's node for the token's clock floors (`POST
//!   /internal/collections/{c}/token-floors`, [`Peers::token_floors`]) and waits until
//!   this region merged that far: one round trip plus the mirror's lag. Without an answer
//!   in time the read fails saying so (503/504), never answers without the writes.
//!
//! Peers are called with the cluster secret: regions are one deployment.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::core::Collector;
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::router::{SearchRequest, SearchResponse, TokenFloors, TokenFloorsRequest};
use crate::QueryError;

/// A floors stream that says nothing (not even its empty keep-alive line) this long is
/// taken as dead and opened again.
const STREAM_SILENT: Duration = Duration::from_secs(3);
/// The most (collection, partition) floors kept per peer: a stream naming more ends (the
/// map is cleared and the stream opened again), so a peer cannot grow it without bound.
const MAX_STREAMED_FLOORS: usize = 1 << 16;
/// How often a floors stream says something when nothing changes.
pub const STREAM_KEEPALIVE: Duration = Duration::from_secs(1);
/// Weight of a new probe in the RTT's moving mean.
const EWMA_WEIGHT: f64 = 0.3;

/// `GET /internal/regions/probe`'s answer.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Probe {
    /// The answering node's region.
    pub region: String,
    /// Its wall clock (ms since the Unix epoch) when it answered.
    pub time_ms: u64,
}

/// One line of `GET /internal/regions/floors`: how far a shard of the answering region
/// has merged the asking region's copy of a partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FloorLine {
    pub collection: String,
    pub partition: u32,
    /// The asking region's effective clock (hlc) of that partition merged there.
    pub floor: u64,
}

/// A response's body as text, refused past `limit` bytes (a peer is trusted with the
/// cluster secret, but a bug there must not grow this node's memory).
async fn read_bounded(mut response: reqwest::Response, limit: usize) -> Result<String, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > limit {
            return Err(format!("longer than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|e| e.to_string())
}

/// What a node knows of one peer.
#[derive(Debug, Default, Clone)]
struct LinkState {
    /// Moving mean of the probes' round trips (µs), once one answered.
    rtt_us: Option<f64>,
    last_rtt_us: Option<u64>,
    /// When a probe last answered.
    answered_at: Option<Instant>,
    probes: u64,
    failures: u64,
    last_error: Option<String>,
    /// Whether the floors stream is open and spoke within [`STREAM_SILENT`].
    streaming: bool,
    stream_error: Option<String>,
}

struct Link {
    region: String,
    url: String,
    state: Mutex<LinkState>,
    /// Per (collection, partition): how far that region merged this region's copy, as
    /// its floors stream last said (cleared when the stream drops).
    floors: Mutex<HashMap<(String, u32), u64>>,
}

/// The other regions' nodes this node calls.
pub struct Peers {
    me: String,
    links: Vec<Link>,
    client: reqwest::Client,
    authorization: Option<String>,
    probe_every: Duration,
    /// Bumped whenever a floors stream moves a floor (what write levels wait on).
    floors_changed: watch::Sender<u64>,
    rtt: GaugeVec,
    up: IntGaugeVec,
    acks: IntCounterVec,
    forwards: IntCounterVec,
}

/// Check `--region-peers` entries: `region=URL`, an http(s) URL without a path beyond `/`,
/// each region once and not this one.
pub fn parse_peers(me: &str, entries: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for entry in entries.iter().filter(|e| !e.is_empty()) {
        let (region, url) = entry.split_once('=').ok_or_else(|| {
            format!("`{entry}`: expected REGION=URL, e.g. east=http://10.0.2.5:7070")
        })?;
        let url = url.trim_end_matches('/');
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{entry}`: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(format!(
                "`{entry}`: the URL must be http:// or https:// with a host"
            ));
        }
        if parsed.path() != "/" || parsed.query().is_some() {
            return Err(format!(
                "`{entry}`: give the node's base URL, without a path or query"
            ));
        }
        if region == me {
            return Err(format!("`{entry}` names this node's own region"));
        }
        if out.iter().any(|(r, _)| r == region) {
            return Err(format!("region `{region}` is given twice"));
        }
        out.push((region.to_owned(), url.to_owned()));
    }
    Ok(out)
}

impl Peers {
    /// Links to `peers` (region, base URL), called with `client` and the cluster secret's
    /// `authorization`.
    pub fn new(
        me: &str,
        peers: Vec<(String, String)>,
        client: reqwest::Client,
        authorization: Option<String>,
        probe_every: Duration,
    ) -> Peers {
        let gauge = |name: &str, help: &str| {
            GaugeVec::new(Opts::new(name, help), &["region"]).expect("valid metric")
        };
        Peers {
            me: me.to_owned(),
            links: peers
                .into_iter()
                .map(|(region, url)| Link {
                    region,
                    url,
                    state: Mutex::new(LinkState::default()),
                    floors: Mutex::new(HashMap::new()),
                })
                .collect(),
            client,
            authorization,
            probe_every,
            floors_changed: watch::channel(0).0,
            rtt: gauge(
                "region_rtt_seconds",
                "Round-trip time to a node of another region (moving mean of the probes)",
            ),
            up: IntGaugeVec::new(
                Opts::new(
                    "region_up",
                    "Whether another region's node answered its last probe in time (1) or not (0)",
                ),
                &["region"],
            )
            .expect("valid metric"),
            acks: IntCounterVec::new(
                Opts::new(
                    "region_acks_total",
                    "Confirmations that another region merged a sync or quorum write, by how they came: `peer` (its node's floors stream: one crossing) or `seen` (the `seen` vectors on its mirrored records)",
                ),
                &["region", "via"],
            )
            .expect("valid metric"),
            forwards: IntCounterVec::new(
                Opts::new(
                    "region_forwarded_searches_total",
                    "Bounded and strong searches sent to another region because this one was not fresh enough within a round trip, by region and outcome (`answered`: its answer was used)",
                ),
                &["region", "outcome"],
            )
            .expect("valid metric"),
        }
    }

    /// The metrics, to register in the node's registry.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.rtt.clone()),
            Box::new(self.up.clone()),
            Box::new(self.acks.clone()),
            Box::new(self.forwards.clone()),
        ]
    }

    fn link(&self, region: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.region == region)
    }

    fn get(&self, url: String) -> reqwest::RequestBuilder {
        self.call(reqwest::Method::GET, url)
    }

    /// A request to a peer's internal route, with the cluster secret.
    fn call(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let request = self.client.request(method, url);
        match &self.authorization {
            Some(auth) => request.header(reqwest::header::AUTHORIZATION, auth),
            None => request,
        }
    }

    /// Whether `region`'s peer answered a probe recently (within three probe periods).
    pub fn alive(&self, region: &str) -> bool {
        self.link(region).is_some_and(|l| {
            l.state
                .lock()
                .answered_at
                .is_some_and(|at| at.elapsed() < self.probe_every * 3)
        })
    }

    /// The measured round trip to `region` (moving mean), once a probe answered.
    pub fn rtt(&self, region: &str) -> Option<Duration> {
        let link = self.link(region)?;
        let us = link.state.lock().rtt_us?;
        Some(Duration::from_micros(us as u64))
    }

    /// The live peer with the shortest round trip, and that round trip.
    pub fn nearest_alive(&self) -> Option<(String, Duration)> {
        self.links
            .iter()
            .filter(|l| self.alive(&l.region))
            .filter_map(|l| Some((l.region.clone(), self.rtt(&l.region)?)))
            .min_by_key(|(_, rtt)| *rtt)
    }

    /// Probe every peer every `probe_every`, and keep a floors stream open to each,
    /// forever (spawned once by the node).
    pub fn spawn(self: &Arc<Self>) {
        for i in 0..self.links.len() {
            let peers = Arc::clone(self);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(peers.probe_every);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    peers.probe(i).await;
                }
            });
            let peers = Arc::clone(self);
            tokio::spawn(async move {
                loop {
                    let why = peers.follow_floors(i).await;
                    {
                        let link = &peers.links[i];
                        link.floors.lock().clear();
                        let mut state = link.state.lock();
                        state.streaming = false;
                        state.stream_error = Some(why);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
        }
    }

    /// Read link `i`'s floors stream until it fails or falls silent; why it ended.
    async fn follow_floors(&self, i: usize) -> String {
        let link = &self.links[i];
        let response = self
            .get(format!("{}/internal/regions/floors", link.url))
            .query(&[("origin", self.me.as_str())])
            .send()
            .await;
        let mut response = match response {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                return format!("floors stream answered {status}: {}", text.trim());
            }
            Err(e) => return format!("floors stream: {e}"),
        };
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let chunk = match tokio::time::timeout(STREAM_SILENT, response.chunk()).await {
                Err(_) => return format!("floors stream silent for {STREAM_SILENT:?}"),
                Ok(Err(e)) => return format!("floors stream: {e}"),
                Ok(Ok(None)) => return "floors stream ended".into(),
                Ok(Ok(Some(chunk))) => chunk,
            };
            {
                let mut state = link.state.lock();
                state.streaming = true;
                state.stream_error = None;
            }
            pending.extend_from_slice(&chunk);
            if pending.len() > 1 << 20 {
                return "floors stream: a line longer than 1 MiB".into();
            }
            let mut moved = false;
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let line = &line[..line.len() - 1];
                if line.is_empty() {
                    continue; // keep-alive
                }
                let Ok(floor) = serde_json::from_slice::<FloorLine>(line) else {
                    return format!(
                        "floors stream: not a floor line: {}",
                        String::from_utf8_lossy(&line[..line.len().min(200)])
                    );
                };
                let mut floors = link.floors.lock();
                let key = (floor.collection, floor.partition);
                if floors.len() >= MAX_STREAMED_FLOORS && !floors.contains_key(&key) {
                    return format!(
                        "floors stream: more than {MAX_STREAMED_FLOORS} partitions named"
                    );
                }
                let at = floors.entry(key).or_default();
                if floor.floor > *at {
                    *at = floor.floor;
                    moved = true;
                }
            }
            if moved {
                self.floors_changed.send_modify(|n| *n += 1);
            }
        }
    }

    /// How far `region` has merged this region's copy of `partition` of `collection`, as
    /// its floors stream last said (0: not heard, or the stream is down).
    pub fn floor(&self, region: &str, collection: &str, partition: u32) -> u64 {
        self.link(region).map_or(0, |l| {
            l.floors
                .lock()
                .get(&(collection.to_owned(), partition))
                .copied()
                .unwrap_or(0)
        })
    }

    /// Changes whenever a floors stream moves a floor.
    pub fn floors_changed(&self) -> watch::Receiver<u64> {
        self.floors_changed.subscribe()
    }

    /// One probe of link `i`: its round trip, or why it failed.
    async fn probe(&self, i: usize) {
        let link = &self.links[i];
        let began = Instant::now();
        let answer = self
            .get(format!("{}/internal/regions/probe", link.url))
            .timeout(self.probe_every.max(Duration::from_millis(500)) * 2)
            .send()
            .await;
        let answer = match answer {
            Ok(r) if r.status().is_success() => r.json::<Probe>().await.map_err(|e| e.to_string()),
            Ok(r) => Err(format!("answered {}", r.status())),
            Err(e) => Err(e.to_string()),
        };
        let took = began.elapsed();
        let mut state = link.state.lock();
        state.probes += 1;
        match answer {
            Ok(probe) if probe.region == link.region => {
                let us = took.as_micros() as f64;
                let mean = match state.rtt_us {
                    Some(mean) => mean + EWMA_WEIGHT * (us - mean),
                    None => us,
                };
                state.rtt_us = Some(mean);
                state.last_rtt_us = Some(took.as_micros() as u64);
                state.answered_at = Some(Instant::now());
                state.last_error = None;
                self.rtt.with_label_values(&[&link.region]).set(mean / 1e6);
                self.up.with_label_values(&[&link.region]).set(1);
            }
            Ok(probe) => {
                state.failures += 1;
                state.last_error = Some(format!(
                    "{} answers as region `{}`, not `{}`: check --region-peers",
                    link.url, probe.region, link.region
                ));
                self.up.with_label_values(&[&link.region]).set(0);
            }
            Err(why) => {
                state.failures += 1;
                state.last_error = Some(why);
                self.up.with_label_values(&[&link.region]).set(0);
            }
        }
    }

    /// Count a write level's confirmation that `region` merged a write, by how it came.
    pub fn count_ack(&self, region: &str, via_peer: bool) {
        self.acks
            .with_label_values(&[region, if via_peer { "peer" } else { "seen" }])
            .inc();
    }

    /// Run `request` on `region`'s node (it never forwards again); its answer names it.
    pub async fn search(
        &self,
        region: &str,
        collection: &str,
        request: &SearchRequest,
        wait: Duration,
    ) -> Result<SearchResponse, QueryError> {
        let link = self
            .link(region)
            .ok_or_else(|| QueryError::Unavailable(format!("no peer for region `{region}`")))?;
        let rtt = self.rtt(region).unwrap_or(Duration::from_millis(500));
        let call = self
            .call(
                reqwest::Method::POST,
                format!(
                    "{}/internal/collections/{collection}/region-search",
                    link.url
                ),
            )
            .json(request)
            .timeout(wait + rtt * 2 + Duration::from_secs(1));
        let outcome = async {
            let response = call.send().await.map_err(|e| {
                QueryError::Unavailable(format!("region `{region}` did not answer: {e}"))
            })?;
            let status = response.status();
            if !status.is_success() {
                let text = response.text().await.unwrap_or_default();
                return Err(QueryError::Unavailable(format!(
                    "region `{region}` answered {status}: {}",
                    text.trim()
                )));
            }
            let mut answer: SearchResponse = response
                .json()
                .await
                .map_err(|e| QueryError::Unavailable(format!("region `{region}`'s answer: {e}")))?;
            answer.region = Some(region.to_owned());
            Ok(answer)
        }
        .await;
        self.forwards
            .with_label_values(&[
                region,
                if outcome.is_ok() {
                    "answered"
                } else {
                    "failed"
                },
            ])
            .inc();
        outcome
    }

    /// A session token of `region` as that region's clock floors per partition: asks its
    /// node (`POST /internal/collections/{c}/token-floors`), which waits up to `wait` for
    /// its shards to apply the token. Every failure says that the session cannot be
    /// checked from here: 504 ([`QueryError::SessionTimeout`]) when time ran out, 503
    /// when the peer is missing or unreachable, 422 when it refused the token.
    pub async fn token_floors(
        &self,
        region: &str,
        collection: &str,
        token: &BTreeMap<u32, u64>,
        wait: Duration,
    ) -> Result<BTreeMap<u32, u64>, QueryError> {
        let cannot = |why: String| {
            format!(
                "a session token of region `{region}` cannot be checked from here: {why}; retry, or read with consistency level `strong` (or in region `{region}`)"
            )
        };
        let link = self.link(region).ok_or_else(|| {
            QueryError::Unavailable(cannot(format!(
                "this node has no peer in `{region}` (--region-peers)"
            )))
        })?;
        let rtt = self.rtt(region).unwrap_or(Duration::from_millis(500));
        let body = TokenFloorsRequest {
            token: token.clone(),
            timeout_ms: Some(wait.as_millis() as u64),
            forwarded: false,
        };
        let limit = wait + rtt * 2 + Duration::from_secs(1);
        let sent = self
            .call(
                reqwest::Method::POST,
                format!(
                    "{}/internal/collections/{collection}/token-floors",
                    link.url
                ),
            )
            .json(&body)
            .timeout(limit)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Err(QueryError::SessionTimeout(cannot(format!(
                    "its node did not answer within {} ms",
                    limit.as_millis()
                ))))
            }
            Err(e) => {
                return Err(QueryError::Unavailable(cannot(format!(
                    "its node did not answer: {e}"
                ))))
            }
        };
        let status = response.status();
        // At most what a token of every partition takes, with room to spare.
        let text = read_bounded(response, 1 << 20)
            .await
            .map_err(|e| QueryError::Unavailable(cannot(format!("its node's answer: {e}"))))?;
        if !status.is_success() {
            let why = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| text.chars().take(500).collect());
            let why = format!("its node answered {status}: {why}");
            return Err(match status.as_u16() {
                504 => QueryError::SessionTimeout(cannot(why)),
                400 | 422 => QueryError::Invalid(cannot(why)),
                _ => QueryError::Unavailable(cannot(why)),
            });
        }
        let answer: TokenFloors = serde_json::from_str(&text).map_err(|e| {
            QueryError::Unavailable(cannot(format!("its node's answer is not floors: {e}")))
        })?;
        if answer.region != region {
            return Err(QueryError::Unavailable(cannot(format!(
                "{} answers as region `{}`: check --region-peers",
                link.url, answer.region
            ))));
        }
        Ok(answer.floors)
    }

    /// Note that a forwarded search's answer was not needed (this region answered first).
    pub fn count_unused_forward(&self, region: &str) {
        self.forwards.with_label_values(&[region, "unused"]).inc();
    }

    /// `GET /cluster`'s `peers`: per region its address, RTT, whether it answers.
    pub fn view(&self) -> Vec<serde_json::Value> {
        self.links
            .iter()
            .map(|l| {
                let s = l.state.lock().clone();
                serde_json::json!({
                    "region": l.region,
                    "url": l.url,
                    "rtt_ms": s.rtt_us.map(|us| (us / 10.0).round() / 100.0),
                    "last_rtt_ms": s.last_rtt_us.map(|us| us as f64 / 1000.0),
                    "alive": self.alive(&l.region),
                    "answered_ms_ago": s.answered_at.map(|at| at.elapsed().as_millis() as u64),
                    "probes": s.probes,
                    "failures": s.failures,
                    "last_error": s.last_error,
                    "streaming": s.streaming,
                    "stream_error": s.stream_error,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn peers_are_region_equals_base_url() {
        let ok = parse_peers(
            "west",
            &entries(&["east=http://127.0.0.1:7070/", "north=https://n.example:443"]),
        )
        .unwrap();
        assert_eq!(
            ok,
            vec![
                ("east".to_owned(), "http://127.0.0.1:7070".to_owned()),
                ("north".to_owned(), "https://n.example:443".to_owned())
            ]
        );
        for (bad, why) in [
            ("east", "expected REGION=URL"),
            ("east=ftp://h:1", "http:// or https://"),
            ("east=http://h:1/search", "without a path"),
            ("west=http://h:1", "own region"),
            ("east=not a url", "east=not a url"),
        ] {
            let err = parse_peers("west", &entries(&[bad])).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let twice = parse_peers("west", &entries(&["east=http://a:1", "east=http://b:1"]));
        assert!(twice.unwrap_err().contains("twice"));
    }

    #[tokio::test]
    async fn a_session_token_of_a_region_without_a_peer_cannot_be_checked() {
        let peers = Peers::new(
            "east",
            vec![("south".into(), "http://127.0.0.1:9".into())],
            reqwest::Client::new(),
            None,
            Duration::from_secs(1),
        );
        let token = BTreeMap::from([(0, 5)]);
        let err = peers
            .token_floors("west", "docs", &token, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert_eq!(err.status(), 503, "{err}");
        let m = err.to_string();
        assert!(
            m.contains("cannot be checked from here") && m.contains("strong"),
            "{m}"
        );
        assert!(m.contains("no peer in `west`"), "{m}");
        // A peer that does not answer (nothing listens on port 9): 503 or 504, same words.
        let err = peers
            .token_floors("south", "docs", &token, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(err.status(), 503 | 504), "{err}");
        assert!(
            err.to_string().contains("cannot be checked from here"),
            "{err}"
        );
    }
}

//! Shard transfer between nodes: a move ships a shard's files instead of replaying its
//! partition and rebuilding its index on the receiving node.
//!
//! - [`routes`]: `GET /internal/collections/{c}/snapshot?incarnation=N&start=S[&end=E]`
//!   on every node holding shards. It answers with a snapshot (the format is
//!   [`hektor_indexers::snapshot`]'s) of the hosted shard whose range covers `[S, E)`,
//!   streamed while it is written; the gate lets only other nodes (the cluster secret)
//!   call it. At most [`MAX_SENDING`] snapshots are written at a time per node; more
//!   wait their turn (at most 45 s, then the stream ends with an error and the receiver
//!   asks another holder or replays the log).
//! - [`HttpSnapshots`]: the [`SnapshotSource`] a host fetches through. It asks the
//!   replicas of the serving shard that covers the wanted range, as the routing view
//!   knows them (alive nodes other than this one), one after another, and unpacks the
//!   first answer on a blocking thread as it arrives.
//!
//! The route is registered through `utoipa-axum`'s `OpenApiRouter` with its
//! `#[utoipa::path]`, so the node's `GET /openapi.json` lists it (tag `internal`).
//!
//! It owns no decision about what moves where (the controller's) or what a snapshot
//! holds (the shard's).

pub mod error;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use hektor_control::Routing;
use hektor_indexers::host::ShardHost;
use hektor_indexers::snapshot::{
    self, covers, Fetched, Manifest, SnapshotRequest, SnapshotSource, SNAPSHOT_FORMAT,
};
use hektor_topics::record::RingRange;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Semaphore};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::Error;

/// Snapshots one node writes at a time.
pub const MAX_SENDING: usize = 2;
/// How long a snapshot request waits for its turn on the sender.
const QUEUE_WAIT: Duration = Duration::from_secs(45);
/// How long a receiver waits for the next bytes of a snapshot before giving up on it
/// (the holder writes its copy before the first file's bytes flow).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes sent per chunk of the stream.
const CHUNK: usize = 256 << 10;

/// What the snapshot route needs.
#[derive(Clone)]
struct Sender {
    host: Arc<ShardHost>,
    node: String,
    /// Where copies are written before they are sent (on the shards' file system).
    scratch: PathBuf,
    sending: Arc<Semaphore>,
    next_scratch: Arc<AtomicU64>,
}

/// The internal snapshot route of a node. `scratch` is a directory on the same file
/// system as the shards (copies are written there before they are sent); it is emptied
/// now, so call this before serving.
pub async fn routes(
    host: Arc<ShardHost>,
    node: String,
    scratch: PathBuf,
) -> Result<OpenApiRouter, Error> {
    match tokio::fs::remove_dir_all(&scratch).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(Error::Io {
                path: scratch,
                source,
            })
        }
    }
    tokio::fs::create_dir_all(&scratch)
        .await
        .map_err(|source| Error::Io {
            path: scratch.clone(),
            source,
        })?;
    let state = Sender {
        host,
        node,
        scratch,
        sending: Arc::new(Semaphore::new(MAX_SENDING)),
        next_scratch: Arc::new(AtomicU64::new(0)),
    };
    Ok(OpenApiRouter::new().routes(routes!(send)).with_state(state))
}

/// The query of a snapshot request.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Wanted {
    /// The collection's incarnation (the catalog offset that created it).
    incarnation: u64,
    /// The wanted range's first ring position.
    start: u64,
    /// The wanted range's end (exclusive); absent: up to 2^64.
    end: Option<u64>,
}

/// A refusal of the snapshot route: `{"error": "why"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Why the request failed.
    pub error: String,
}

/// The answer of the snapshot route (for the document only): a tar stream of the shard's
/// files ([`hektor_indexers::snapshot`]'s format).
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
struct SnapshotStream(Vec<u8>);

fn refuse(status: StatusCode, message: String) -> Response {
    (status, axum::Json(ErrorBody { error: message })).into_response()
}

/// A snapshot of the held shard covering `[start, end)`: a tar stream of its files,
/// written while it is sent (a later error ends the stream early).
#[utoipa::path(
    get,
    path = "/internal/collections/{collection}/snapshot",
    tag = "internal",
    params(
        ("collection" = String, Path, description = "The collection's name"),
        Wanted,
    ),
    responses(
        (status = 200, description = "The snapshot, streamed", content_type = "application/x-tar", body = SnapshotStream),
        (status = 400, description = "The range is empty (JSON), or the query lacks or mistypes a field (text)",
            content(
                (ErrorBody = "application/json"),
                (String = "text/plain"),
            )),
        (status = 404, description = "This node holds no shard of that incarnation covering the range", body = ErrorBody),
    ),
)]
async fn send(
    State(state): State<Sender>,
    Path(collection): Path<String>,
    Query(wanted): Query<Wanted>,
) -> Response {
    if wanted.end.is_some_and(|end| end <= wanted.start) {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "empty range: end {:?} is not above start {}",
                wanted.end, wanted.start
            ),
        );
    }
    let range = RingRange {
        start: wanted.start,
        end: wanted.end,
    };
    let Some(hosted) = state
        .host
        .collection(&collection)
        .filter(|c| c.incarnation == wanted.incarnation)
    else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!(
                "this node holds no shard of {collection} incarnation {}",
                wanted.incarnation
            ),
        );
    };
    let Some(shard) = hosted
        .shards
        .iter()
        .find(|s| covers(s.range, range) && !s.retired())
        .cloned()
    else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("this node holds no shard of {collection} covering {range:?}"),
        );
    };
    let manifest = Manifest {
        format: SNAPSHOT_FORMAT,
        collection: collection.clone(),
        incarnation: wanted.incarnation,
        range: shard.range,
        dimension: hosted.spec.dimension as usize,
        distance: hosted.spec.distance,
        engine: shard.shard.engine(),
        from: state.node.clone(),
        files: Vec::new(),
    };
    let n = state.next_scratch.fetch_add(1, Ordering::Relaxed);
    let scratch = state.scratch.join(format!("{n}"));
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let sending = Arc::clone(&state.sending);
    tokio::spawn(async move {
        // Queue behind the snapshots being written (the receiver waits for its first
        // bytes); past the wait, the receiver hears why and replays the log instead.
        let permit = match tokio::time::timeout(QUEUE_WAIT, sending.acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            _ => {
                let why = format!(
                    "this node was busy sending {MAX_SENDING} snapshots for {QUEUE_WAIT:?}"
                );
                let _ = tx.send(Err(std::io::Error::other(why))).await;
                return;
            }
        };
        // At a lower priority than the searches this node serves meanwhile.
        let _ = hektor_indexers::background::spawn("snapshot-send", move || {
            let _permit = permit;
            let started = std::time::Instant::now();
            let out = ChannelWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
            };
            match snapshot::pack(&shard.shard, manifest, &scratch, out) {
                Ok(bytes) => tracing::info!(%collection, range = ?shard.range, bytes,
                    secs = started.elapsed().as_secs_f64(), "sent a shard snapshot"),
                Err(err) => {
                    tracing::warn!(%collection, range = ?shard.range, %err, "sending a shard snapshot failed");
                    let _ = tx.blocking_send(Err(std::io::Error::other(err.to_string())));
                }
            }
        })
        .await;
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-tar")],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

/// Feeds a response body from a blocking writer, a chunk at a time.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "receiver left"))
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Reads a response body on a blocking thread, a chunk at a time.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    chunk: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.chunk = chunk,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len());
        out[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// Fetches snapshots over HTTP from the holders the routing view names.
pub struct HttpSnapshots {
    routing: watch::Receiver<Arc<Routing>>,
    client: reqwest::Client,
    scheme: &'static str,
    authorization: Option<String>,
}

impl HttpSnapshots {
    /// `client` talks to other nodes (`https` when `tls`); `authorization` is the
    /// cluster secret's header value, if the cluster has one.
    pub fn new(
        routing: watch::Receiver<Arc<Routing>>,
        client: reqwest::Client,
        tls: bool,
        authorization: Option<String>,
    ) -> HttpSnapshots {
        HttpSnapshots {
            routing,
            client,
            scheme: if tls { "https" } else { "http" },
            authorization,
        }
    }
}

/// The nodes (id, address) that may give a snapshot for `request`: the alive replicas,
/// other than this node, of the serving shard covering its range in the map of its
/// incarnation.
pub fn holders(routing: &Routing, request: &SnapshotRequest) -> Vec<(String, String)> {
    let Some(map) = routing
        .maps
        .get(&request.collection)
        .filter(|m| m.incarnation() == request.incarnation)
    else {
        return Vec::new();
    };
    map.shards()
        .iter()
        .filter(|s| covers(s.range, request.range))
        .flat_map(|s| s.replicas.iter())
        .filter(|node| **node != routing.me)
        .filter_map(|node| {
            let info = routing.nodes.get(node).filter(|n| n.alive)?;
            Some((node.clone(), info.address.clone()))
        })
        .collect()
}

impl SnapshotSource for HttpSnapshots {
    fn fetch(
        &self,
        request: SnapshotRequest,
        into: PathBuf,
    ) -> BoxFuture<'static, Result<Option<Fetched>, String>> {
        let holders = holders(&self.routing.borrow(), &request);
        let client = self.client.clone();
        let scheme = self.scheme;
        let authorization = self.authorization.clone();
        async move {
            let mut failures = Vec::new();
            for (node, address) in holders {
                let mut url = format!(
                    "{scheme}://{address}/internal/collections/{}/snapshot?incarnation={}&start={}",
                    request.collection, request.incarnation, request.range.start
                );
                if let Some(end) = request.range.end {
                    url.push_str(&format!("&end={end}"));
                }
                let mut call = client.get(url);
                if let Some(auth) = &authorization {
                    call = call.header(reqwest::header::AUTHORIZATION, auth);
                }
                match receive(call, &request, &into).await {
                    Ok(fetched) => return Ok(Some(fetched)),
                    Err(why) => failures.push(format!("{node}: {why}")),
                }
            }
            if failures.is_empty() {
                Ok(None)
            } else {
                Err(failures.join("; "))
            }
        }
        .boxed()
    }
}

/// Receive one snapshot answer into `into`.
async fn receive(
    call: reqwest::RequestBuilder,
    request: &SnapshotRequest,
    into: &std::path::Path,
) -> Result<Fetched, String> {
    let mut response = tokio::time::timeout(IDLE_TIMEOUT, call.send())
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| format!("unreachable: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(format!("HTTP {}: {text}", status.as_u16()));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let reader = ChannelReader {
        rx,
        chunk: Bytes::new(),
    };
    let wanted = request.clone();
    let dir = into.to_path_buf();
    let unpacking = hektor_indexers::background::spawn("snapshot-receive", move || {
        snapshot::unpack(reader, &dir, &wanted)
    });
    let mut transport = None;
    loop {
        match tokio::time::timeout(IDLE_TIMEOUT, response.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                if tx.send(chunk).await.is_err() {
                    break; // the unpacker stopped: its error says why
                }
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                transport = Some(format!("the stream broke: {e}"));
                break;
            }
            Err(_) => {
                transport = Some(format!("no bytes for {IDLE_TIMEOUT:?}"));
                break;
            }
        }
    }
    drop(tx);
    let unpacked = unpacking
        .await
        .map_err(|e| format!("the unpacker failed: {e}"))?;
    match (unpacked, transport) {
        (Ok(fetched), None) => Ok(fetched),
        (_, Some(why)) => {
            let dir = into.to_path_buf();
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
            Err(why)
        }
        (Err(err), None) => Err(err.to_string()),
    }
}

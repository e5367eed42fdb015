//! Shard snapshots: the byte format a shard travels in when it moves to another node,
//! and the seam a host receives one through.
//!
//! A node that must hold a range it has no directory for (a move, a new replica, one
//! half of a split) asks a current holder for a snapshot instead of replaying the whole
//! partition from the log and rebuilding its index: the holder writes a consistent copy
//! of its files ([`crate::shard::Shard::snapshot_into`]: the LMDB environment, compacted,
//! and the hot graph's file) and streams it; the receiver unpacks it into a fresh
//! directory, opens it as it would after a restart (the graph loads, its journal replays
//! the builds since its save), drops the vectors outside its own range
//! ([`crate::shard::Shard::retain_range`]) and catches up from the copy's applied offset.
//!
//! **Format** (version [`SNAPSHOT_FORMAT`]): a POSIX tar stream whose first entry is
//! `manifest.json` (a [`Manifest`]), followed by exactly the files it lists, each a plain
//! file named without any directory: `data.mdb` (the LMDB copy) and, for a hot shard,
//! `hnsw.graph`. [`unpack`] checks all of that and the sizes against the manifest; it
//! writes nothing outside the directory it is given and refuses any other entry.
//!
//! This module owns the format and the checks; the transport (an internal HTTP route, a
//! fetcher that picks a holder) lives in the `hektor-transfer` crate, behind
//! [`SnapshotSource`].

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use hektor_topics::record::{Distance, RingRange};
use serde::{Deserialize, Serialize};

use crate::engine::EngineKind;
use crate::error::{Error, Result};
use crate::shard::Shard;

/// The version of the snapshot format this build writes and reads.
pub const SNAPSHOT_FORMAT: u32 = 1;
/// The first entry of a snapshot stream.
pub const MANIFEST: &str = "manifest.json";
/// The names a snapshot may carry besides the manifest.
const FILES: [&str; 2] = [
    crate::shard::SNAPSHOT_DATA_FILE,
    crate::engine::hnsw::GRAPH_FILE,
];
/// The most bytes a manifest may take.
const MAX_MANIFEST_BYTES: u64 = 64 << 10;

/// What a snapshot holds, written first so the receiver can refuse a wrong one before
/// reading gigabytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub collection: String,
    /// The catalog incarnation of the collection the shard belongs to.
    pub incarnation: u64,
    /// The range the holder's shard covers (the receiver's lies inside it).
    pub range: RingRange,
    pub dimension: usize,
    pub distance: Distance,
    pub engine: EngineKind,
    /// The node that wrote it.
    pub from: String,
    /// The files that follow, with their sizes in bytes.
    pub files: Vec<(String, u64)>,
}

/// Which range of which collection a receiver asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRequest {
    pub collection: String,
    pub incarnation: u64,
    pub range: RingRange,
    pub dimension: usize,
    pub distance: Distance,
}

/// A snapshot received and unpacked.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub manifest: Manifest,
    /// Bytes of the files received.
    pub bytes: u64,
}

/// Where a host gets snapshots from (implemented over HTTP by `hektor-transfer`).
pub trait SnapshotSource: Send + Sync + 'static {
    /// Fetch a snapshot of a shard covering `request.range` from some current holder and
    /// unpack it into `into` (a directory that does not exist yet). `Ok(None)`: no
    /// holder could give one (the caller replays the log instead).
    fn fetch(
        &self,
        request: SnapshotRequest,
        into: PathBuf,
    ) -> BoxFuture<'static, std::result::Result<Option<Fetched>, String>>;
}

impl Manifest {
    /// Check that this snapshot can become the shard `request` asks for.
    pub fn check(&self, request: &SnapshotRequest) -> std::result::Result<(), String> {
        if self.format != SNAPSHOT_FORMAT {
            return Err(format!(
                "snapshot format {} (this build reads {SNAPSHOT_FORMAT})",
                self.format
            ));
        }
        if self.collection != request.collection || self.incarnation != request.incarnation {
            return Err(format!(
                "snapshot of {}#{} for {}#{}",
                self.collection, self.incarnation, request.collection, request.incarnation
            ));
        }
        if !covers(self.range, request.range) {
            return Err(format!(
                "snapshot range {:?} does not cover {:?}",
                self.range, request.range
            ));
        }
        if self.dimension != request.dimension || self.distance != request.distance {
            return Err(format!(
                "snapshot has {} dimensions and {:?} distance; the collection {} and {:?}",
                self.dimension, self.distance, request.dimension, request.distance
            ));
        }
        Ok(())
    }
}

/// Whether `outer` contains every position of `inner`.
pub fn covers(outer: RingRange, inner: RingRange) -> bool {
    let end = |r: RingRange| r.end.map_or(u128::from(u64::MAX) + 1, u128::from);
    outer.start <= inner.start && end(inner) <= end(outer)
}

/// Write a snapshot of `shard` to `out`, using `scratch` (a directory that does not exist
/// yet, on the shard's file system) for the copy; `scratch` is removed afterwards.
/// `manifest.files` is filled in here. Blocking.
pub fn pack(shard: &Shard, mut manifest: Manifest, scratch: &Path, out: impl Write) -> Result<u64> {
    let result = (|| {
        let names = shard.snapshot_into(scratch)?;
        let io = |path: PathBuf| move |source| Error::Io { path, source };
        manifest.files = names
            .iter()
            .map(|n| {
                let path = scratch.join(n);
                std::fs::metadata(&path)
                    .map(|m| (n.clone(), m.len()))
                    .map_err(io(path))
            })
            .collect::<Result<_>>()?;
        let mut tar = tar::Builder::new(out);
        let json = serde_json::to_vec(&manifest).map_err(|e| Error::Snapshot(e.to_string()))?;
        let mut header = tar::Header::new_gnu();
        header.set_size(json.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        let sent = |e: std::io::Error| Error::Snapshot(format!("sending the snapshot: {e}"));
        tar.append_data(&mut header, MANIFEST, &json[..])
            .map_err(sent)?;
        let mut bytes = 0;
        for (name, len) in &manifest.files {
            let path = scratch.join(name);
            let mut file = std::fs::File::open(&path).map_err(io(path.clone()))?;
            let mut header = tar::Header::new_gnu();
            header.set_size(*len);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, name, &mut file)
                .map_err(sent)?;
            bytes += len;
        }
        tar.into_inner().and_then(|mut w| w.flush()).map_err(sent)?;
        Ok(bytes)
    })();
    let _ = std::fs::remove_dir_all(scratch);
    result
}

/// Read a snapshot stream into `into` (created here; it must not exist) and return its
/// manifest after checking it against `request`. On any error `into` is removed.
/// Blocking.
pub fn unpack(input: impl Read, into: &Path, request: &SnapshotRequest) -> Result<Fetched> {
    let result = unpack_inner(input, into, request);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(into);
    }
    result
}

fn unpack_inner(input: impl Read, into: &Path, request: &SnapshotRequest) -> Result<Fetched> {
    let bad = |why: String| Error::Snapshot(format!("refused snapshot: {why}"));
    let read = |e: std::io::Error| Error::Snapshot(format!("receiving the snapshot: {e}"));
    std::fs::create_dir(into).map_err(|source| Error::Io {
        path: into.to_path_buf(),
        source,
    })?;
    let mut archive = tar::Archive::new(input);
    let mut entries = archive.entries().map_err(read)?;
    let mut first = entries
        .next()
        .ok_or_else(|| bad("the stream is empty".into()))?
        .map_err(read)?;
    if entry_name(&first).as_deref() != Some(MANIFEST) {
        return Err(bad(format!("the first entry is not {MANIFEST}")));
    }
    if first.size() > MAX_MANIFEST_BYTES {
        return Err(bad("the manifest is too large".into()));
    }
    let mut json = Vec::new();
    first.read_to_end(&mut json).map_err(read)?;
    let manifest: Manifest =
        serde_json::from_slice(&json).map_err(|e| bad(format!("manifest: {e}")))?;
    manifest.check(request).map_err(bad)?;
    for (name, _) in &manifest.files {
        if !FILES.contains(&name.as_str()) {
            return Err(bad(format!("the manifest lists an unknown file `{name}`")));
        }
    }
    let mut received: Vec<(String, u64)> = Vec::new();
    for entry in entries {
        let mut entry = entry.map_err(read)?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(bad("an entry is not a plain file".into()));
        }
        let name = entry_name(&entry).ok_or_else(|| bad("an entry has no plain name".into()))?;
        let Some((_, len)) = manifest.files.iter().find(|(n, _)| *n == name) else {
            return Err(bad(format!("unexpected entry `{name}`")));
        };
        if received.iter().any(|(n, _)| *n == name) || entry.size() != *len {
            return Err(bad(format!(
                "entry `{name}` is repeated or of the wrong size"
            )));
        }
        let path = into.join(&name);
        let mut file = std::fs::File::create(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let copied = std::io::copy(&mut entry, &mut file).map_err(read)?;
        if copied != *len {
            return Err(bad(format!("entry `{name}` ended early")));
        }
        file.sync_all()
            .map_err(|source| Error::Io { path, source })?;
        received.push((name, copied));
    }
    if received.len() != manifest.files.len() {
        return Err(bad("the stream ended before every listed file".into()));
    }
    let bytes = received.iter().map(|(_, n)| n).sum();
    Ok(Fetched { manifest, bytes })
}

/// An entry's name when it is one plain file name (no directory, no `..`).
fn entry_name<R: Read>(entry: &tar::Entry<'_, R>) -> Option<String> {
    let path = entry.path().ok()?;
    let mut parts = path.components();
    match (parts.next(), parts.next()) {
        (Some(std::path::Component::Normal(name)), None) => name.to_str().map(str::to_string),
        _ => None,
    }
}

/// A shard's snapshot to put in the archive: the files [`crate::shard::Shard::snapshot_into`]
/// wrote to `dir`, described by `manifest` (its `files` filled in), taken with the shard's
/// consumer stopped so that `next_offset` and `hlc_floor` are exactly the copy's.
#[derive(Debug, Clone)]
pub struct ArchivePut {
    pub manifest: Manifest,
    /// The vectors-topic partition the shard follows.
    pub partition: u32,
    /// The next offset of `partition` to apply: everything below is in the copy.
    pub next_offset: u64,
    /// The partition's clock floor as committed in the copy.
    pub hlc_floor: u64,
    /// Where the files lie.
    pub dir: PathBuf,
}

/// Where an archived snapshot lies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Archived {
    /// The object location of the snapshot's folder (`s3://bucket/prefix/...` or
    /// `file:///...`).
    pub location: String,
    /// Bytes of its files.
    pub bytes: u64,
    /// The applied offset it was taken at (the restore catches up from there).
    pub next_offset: u64,
}

/// The archive tier's storage, as a host sees it (implemented on object storage by the
/// `hektor-archive` crate). Errors are that crate's typed errors, as text.
pub trait ShardArchive: Send + Sync + 'static {
    /// Upload a snapshot and check it arrived whole; the returned location holds it.
    fn put(&self, put: ArchivePut) -> BoxFuture<'static, std::result::Result<Archived, String>>;

    /// Download the newest archived snapshot of exactly `request.range` into `into` (a
    /// directory that does not exist yet), checking every file's size and digest.
    /// `Ok(None)`: nothing is archived for it. On error nothing is left at `into`.
    fn get(
        &self,
        request: SnapshotRequest,
        into: PathBuf,
    ) -> BoxFuture<'static, std::result::Result<Option<(Fetched, Archived)>, String>>;

    /// Where the newest archived snapshot of exactly `request.range` lies, if any.
    fn locate(
        &self,
        request: SnapshotRequest,
    ) -> BoxFuture<'static, std::result::Result<Option<Archived>, String>>;
}

/// Whether `name` is a file a snapshot may carry besides its manifest (the archive
/// checks a downloaded manifest with it).
pub fn is_snapshot_file(name: &str) -> bool {
    FILES.contains(&name)
}

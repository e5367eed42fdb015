//! The archive manifest: `manifest.json`, written last into an archived snapshot's folder,
//! so that its presence means every file it lists is there. It says which shard the
//! snapshot is of (collection, incarnation, range), how far it had applied its partition
//! (the restore catches up from there), and each file's size and sha256 digest (checked
//! on every restore: a corrupt or truncated object is refused, never opened).

use std::collections::BTreeMap;

use hektor_indexers::snapshot::{self, Manifest as SnapshotManifest, SnapshotRequest};
use hektor_indexers::EngineKind;
use hektor_topics::record::{Distance, RingRange};
use serde::{Deserialize, Serialize};

use crate::error::{ArchiveError, Result};

/// The version of the archive manifest this build writes and reads.
pub const ARCHIVE_FORMAT: u32 = 1;
/// The manifest's object name inside a snapshot's folder.
pub const MANIFEST: &str = "manifest.json";
/// The most bytes a manifest may take.
pub const MAX_MANIFEST_BYTES: usize = 64 << 10;

/// One archived file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedFile {
    /// Its name (one of the snapshot format's files: `data.mdb`, `hnsw.graph`).
    pub name: String,
    pub bytes: u64,
    /// Lowercase hex sha256 of its bytes.
    pub sha256: String,
}

/// What an archived snapshot holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveManifest {
    pub format: u32,
    /// The snapshot format of the files ([`hektor_indexers::snapshot::SNAPSHOT_FORMAT`]).
    pub snapshot_format: u32,
    pub collection: String,
    pub incarnation: u64,
    pub range: RingRange,
    pub dimension: usize,
    pub distance: Distance,
    pub engine: EngineKind,
    /// Per vectors-topic partition (a shard follows one), the next offset to apply:
    /// everything below is in the snapshot. Keys are partition numbers.
    pub applied: BTreeMap<u32, u64>,
    /// The partition's clock floor in the snapshot (the effective hlc of the newest record
    /// applied).
    pub hlc_floor: u64,
    /// Who wrote it (the node's region).
    pub from: String,
    /// When it was written (ms since the Unix epoch).
    pub archived_at_ms: u64,
    pub files: Vec<ArchivedFile>,
}

impl ArchiveManifest {
    /// The next offset the snapshot applies from (the one partition's).
    pub fn next_offset(&self) -> u64 {
        self.applied.values().copied().max().unwrap_or(0)
    }

    /// Bytes of all its files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// Parse and check a manifest read from `path` (its format, its file names, no
    /// file listed twice).
    pub fn parse(path: &str, json: &[u8]) -> Result<ArchiveManifest> {
        let bad = |why: String| ArchiveError::BadManifest {
            path: path.to_owned(),
            why,
        };
        if json.len() > MAX_MANIFEST_BYTES {
            return Err(bad(format!(
                "{} bytes, more than {MAX_MANIFEST_BYTES}",
                json.len()
            )));
        }
        let manifest: ArchiveManifest =
            serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
        if manifest.format != ARCHIVE_FORMAT {
            return Err(bad(format!(
                "archive format {} (this build reads {ARCHIVE_FORMAT})",
                manifest.format
            )));
        }
        if manifest.snapshot_format != snapshot::SNAPSHOT_FORMAT {
            return Err(bad(format!(
                "snapshot format {} (this build reads {})",
                manifest.snapshot_format,
                snapshot::SNAPSHOT_FORMAT
            )));
        }
        if manifest.files.is_empty() {
            return Err(bad("it lists no files".into()));
        }
        for (i, file) in manifest.files.iter().enumerate() {
            if !snapshot::is_snapshot_file(&file.name) {
                return Err(bad(format!("it lists an unknown file `{}`", file.name)));
            }
            if manifest.files[..i].iter().any(|f| f.name == file.name) {
                return Err(bad(format!("it lists `{}` twice", file.name)));
            }
            if file.sha256.len() != 64 || !file.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!("`{}` has no sha256 digest", file.name)));
            }
        }
        Ok(manifest)
    }

    /// Check that this archive is the shard `request` asks for: the same collection,
    /// incarnation and range exactly, and the same vectors.
    pub fn check(&self, path: &str, request: &SnapshotRequest) -> Result<()> {
        let found = format!(
            "{}#{} [{:#x}, {:?}) ({} dimensions, {:?})",
            self.collection,
            self.incarnation,
            self.range.start,
            self.range.end,
            self.dimension,
            self.distance
        );
        let wanted = format!(
            "{}#{} [{:#x}, {:?}) ({} dimensions, {:?})",
            request.collection,
            request.incarnation,
            request.range.start,
            request.range.end,
            request.dimension,
            request.distance
        );
        if found != wanted {
            return Err(ArchiveError::WrongShard {
                path: path.to_owned(),
                found,
                wanted,
            });
        }
        Ok(())
    }

    /// The snapshot manifest a host reads ([`hektor_indexers::snapshot::Fetched`]).
    pub fn snapshot_manifest(&self) -> SnapshotManifest {
        SnapshotManifest {
            format: self.snapshot_format,
            collection: self.collection.clone(),
            incarnation: self.incarnation,
            range: self.range,
            dimension: self.dimension,
            distance: self.distance,
            engine: self.engine,
            from: self.from.clone(),
            files: self
                .files
                .iter()
                .map(|f| (f.name.clone(), f.bytes))
                .collect(),
        }
    }
}

/// The folder of one shard's archives under the store's prefix:
/// `<collection>/<incarnation>/<start>-<end>` (hex bounds, `end` for 2^64; the same names
/// as the shard's directory on a node).
pub fn shard_folder(collection: &str, incarnation: u64, range: RingRange) -> String {
    let end = range
        .end
        .map_or_else(|| "end".to_owned(), |e| format!("{e:016x}"));
    format!("{collection}/{incarnation}/{:016x}-{end}", range.start)
}

/// The folder of one archived snapshot: the shard's folder, then the applied offset,
/// zero-padded so that names sort as numbers.
pub fn snapshot_folder(
    collection: &str,
    incarnation: u64,
    range: RingRange,
    offset: u64,
) -> String {
    format!(
        "{}/{offset:020}",
        shard_folder(collection, incarnation, range)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> ArchiveManifest {
        ArchiveManifest {
            format: ARCHIVE_FORMAT,
            snapshot_format: snapshot::SNAPSHOT_FORMAT,
            collection: "docs".into(),
            incarnation: 7,
            range: RingRange {
                start: 0,
                end: Some(1 << 62),
            },
            dimension: 4,
            distance: Distance::Cosine,
            engine: EngineKind::Cold,
            applied: BTreeMap::from([(0, 42)]),
            hlc_floor: 99,
            from: "local".into(),
            archived_at_ms: 1,
            files: vec![ArchivedFile {
                name: "data.mdb".into(),
                bytes: 10,
                sha256: "ab".repeat(32),
            }],
        }
    }

    fn request() -> SnapshotRequest {
        SnapshotRequest {
            collection: "docs".into(),
            incarnation: 7,
            range: RingRange {
                start: 0,
                end: Some(1 << 62),
            },
            dimension: 4,
            distance: Distance::Cosine,
        }
    }

    #[test]
    fn a_manifest_round_trips_and_checks() {
        let m = manifest();
        let json = serde_json::to_vec(&m).unwrap();
        let back = ArchiveManifest::parse("m", &json).unwrap();
        assert_eq!(back, m);
        assert_eq!((back.next_offset(), back.bytes()), (42, 10));
        back.check("m", &request()).unwrap();
        assert_eq!(
            back.snapshot_manifest().files,
            vec![("data.mdb".into(), 10)]
        );
    }

    #[test]
    fn bad_manifests_are_typed_errors() {
        let parse = |m: &ArchiveManifest| {
            ArchiveManifest::parse("m", &serde_json::to_vec(m).unwrap()).unwrap_err()
        };
        assert!(matches!(
            ArchiveManifest::parse("m", b"{not json"),
            Err(ArchiveError::BadManifest { .. })
        ));
        assert!(matches!(
            ArchiveManifest::parse("m", &vec![b' '; MAX_MANIFEST_BYTES + 1]),
            Err(ArchiveError::BadManifest { .. })
        ));
        let mut m = manifest();
        m.format = 2;
        assert!(matches!(parse(&m), ArchiveError::BadManifest { .. }));
        let mut m = manifest();
        m.files[0].name = "../etc/passwd".into();
        assert!(parse(&m).to_string().contains("unknown file"));
        let mut m = manifest();
        m.files.push(m.files[0].clone());
        assert!(parse(&m).to_string().contains("twice"));
        let mut m = manifest();
        m.files[0].sha256 = "xyz".into();
        assert!(parse(&m).to_string().contains("sha256"));
        let mut m = manifest();
        m.files.clear();
        assert!(parse(&m).to_string().contains("no files"));
    }

    #[test]
    fn an_archive_of_another_shard_is_refused() {
        let m = manifest();
        let mut other = request();
        other.range.end = Some(1 << 61);
        assert!(matches!(
            m.check("m", &other),
            Err(ArchiveError::WrongShard { .. })
        ));
        let mut other = request();
        other.incarnation = 8;
        assert!(m.check("m", &other).is_err());
    }

    #[test]
    fn folders_sort_by_offset() {
        let r = RingRange {
            start: 1,
            end: None,
        };
        assert_eq!(shard_folder("c", 3, r), "c/3/0000000000000001-end");
        let a = snapshot_folder("c", 3, r, 9);
        let b = snapshot_folder("c", 3, r, 10);
        assert!(a < b, "{a} {b}");
    }
}

//! Shard snapshots on real LMDB: a hot shard packed while it serves unpacks into a shard
//! that opens by loading its graph (no rebuild), holds the same vectors and answers the
//! same searches, and continues from the same applied offset; one half of it keeps only
//! its range and still finds every vector it holds; a stream that is not a snapshot of
//! the wanted shard (wrong manifest, a path outside the directory, an unlisted file, a
//! short file) is refused, and nothing is left behind.

mod common;

use std::io::Write;

use hektor_indexers::snapshot::{self, Manifest, SnapshotRequest, SNAPSHOT_FORMAT};
use hektor_indexers::{EngineKind, Opened, Shard, ShardConfig};
use hektor_topics::record::{Distance, RingRange};

const DIM: usize = 24;
const N: usize = 3_000;

fn config() -> ShardConfig {
    ShardConfig::new(DIM, Distance::Cosine, EngineKind::Hnsw)
}

fn request(range: RingRange) -> SnapshotRequest {
    SnapshotRequest {
        collection: "c".into(),
        incarnation: 7,
        range,
        dimension: DIM,
        distance: Distance::Cosine,
    }
}

fn manifest() -> Manifest {
    Manifest {
        format: SNAPSHOT_FORMAT,
        collection: "c".into(),
        incarnation: 7,
        range: RingRange::FULL,
        dimension: DIM,
        distance: Distance::Cosine,
        engine: EngineKind::Hnsw,
        from: "a".into(),
        files: Vec::new(),
    }
}

fn ids(hits: &[hektor_indexers::Hit]) -> Vec<String> {
    hits.iter().map(|h| h.id.clone()).collect()
}

#[test]
fn a_packed_shard_opens_elsewhere_with_its_graph_and_offset() {
    let ds = common::synthetic(N, 20, DIM);
    let from = tempfile::tempdir().unwrap();
    let shard = Shard::open(from.path(), config()).unwrap();
    common::load_rows(&shard, &ds, 0..N, 0);
    shard.build_index().unwrap();
    // A tail applied after the build travels as pending items.
    let extra = common::synthetic(N + 50, 1, DIM);
    common::load_rows(&shard, &extra, N..N + 50, 0);
    assert_eq!(shard.pending(), 50);

    let mut stream = Vec::new();
    let scratch = from.path().join("scratch");
    let to = tempfile::tempdir().unwrap();
    let bytes = snapshot::pack(&shard, manifest(), &scratch, &mut stream).unwrap();
    assert!(bytes > (N * DIM * 4) as u64);
    assert!(!scratch.exists(), "the scratch copy is removed");
    let into = to.path().join("shard");
    let fetched = snapshot::unpack(&stream[..], &into, &request(RingRange::FULL)).unwrap();
    assert_eq!(fetched.bytes, bytes);
    let copy = Shard::open(&into, config()).unwrap();
    assert!(
        matches!(copy.opened(), Some(Opened::Loaded { .. })),
        "the graph loads: {:?}",
        copy.opened()
    );
    assert_eq!(copy.len(), shard.len());
    assert_eq!(copy.pending(), 50);
    assert_eq!(copy.next_offset(), shard.next_offset());
    for q in 0..20 {
        let query = ds.query(q);
        assert_eq!(
            ids(&copy.search(query, 10, None).unwrap()),
            ids(&shard.search(query, 10, None).unwrap()),
            "query {q}"
        );
    }

    // One half: the right half of the ring keeps its own vectors only, and finds each.
    let half = RingRange {
        start: 1 << 63,
        end: None,
    };
    let into = to.path().join("half");
    snapshot::unpack(&stream[..], &into, &request(half)).unwrap();
    let right = Shard::open(&into, config()).unwrap();
    let trimmed = right.retain_range(half).unwrap();
    right.build_index().unwrap();
    let kept: Vec<usize> = (0..N)
        .filter(|&r| half.contains(common::ring_of(r)))
        .collect();
    assert_eq!(trimmed + right.len(), shard.len());
    let kept_extra = (N..N + 50)
        .filter(|&r| half.contains(common::ring_of(r)))
        .count();
    assert_eq!(right.len() as usize, kept.len() + kept_extra);
    let mut missed = 0;
    for &r in kept.iter().step_by(13) {
        let hits = right.search(ds.base_vector(r), 1, None).unwrap();
        if hits.first().map(|h| h.id.as_str()) != Some(ds.ids[r].as_str()) {
            missed += 1;
        }
    }
    assert!(missed <= 1, "{missed} vectors of the half not found first");
    for r in (0..N)
        .filter(|&r| !half.contains(common::ring_of(r)))
        .take(50)
    {
        assert!(right.get(None, &ds.ids[r]).unwrap().is_none());
    }
}

/// A tar stream with `entries` (name, bytes), written raw so that names the `tar`
/// builder refuses (`..`) can be tested.
fn tar_of(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in entries {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        out.write_all(header.as_bytes()).unwrap();
        out.write_all(data).unwrap();
        let pad = (512 - data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

#[test]
fn streams_that_are_not_the_wanted_snapshot_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let json = |m: &Manifest| serde_json::to_vec(m).unwrap();
    let with_files = |files: Vec<(&str, u64)>| Manifest {
        files: files.into_iter().map(|(n, l)| (n.to_string(), l)).collect(),
        ..manifest()
    };
    let cases: Vec<(&str, Vec<u8>, RingRange)> = vec![
        ("empty stream", Vec::new(), RingRange::FULL),
        (
            "no manifest first",
            tar_of(&[("data.mdb", vec![1, 2, 3])]),
            RingRange::FULL,
        ),
        (
            "another collection",
            tar_of(&[(
                "manifest.json",
                json(&Manifest {
                    collection: "other".into(),
                    ..manifest()
                }),
            )]),
            RingRange::FULL,
        ),
        (
            "a range not covered",
            tar_of(&[(
                "manifest.json",
                json(&Manifest {
                    range: RingRange {
                        start: 0,
                        end: Some(1 << 62),
                    },
                    ..manifest()
                }),
            )]),
            RingRange::FULL,
        ),
        (
            "an unknown file listed",
            tar_of(&[("manifest.json", json(&with_files(vec![("evil.sh", 3)])))]),
            RingRange::FULL,
        ),
        (
            "a path out of the directory",
            tar_of(&[
                ("manifest.json", json(&with_files(vec![("data.mdb", 3)]))),
                ("../data.mdb", vec![1, 2, 3]),
            ]),
            RingRange::FULL,
        ),
        (
            "a file of the wrong size",
            tar_of(&[
                ("manifest.json", json(&with_files(vec![("data.mdb", 5)]))),
                ("data.mdb", vec![1, 2, 3]),
            ]),
            RingRange::FULL,
        ),
        (
            "a listed file missing",
            tar_of(&[(
                "manifest.json",
                json(&with_files(vec![("data.mdb", 3), ("hnsw.graph", 2)])),
            )]),
            RingRange::FULL,
        ),
    ];
    for (i, (what, stream, range)) in cases.into_iter().enumerate() {
        let into = dir.path().join(format!("case-{i}"));
        let got = snapshot::unpack(&stream[..], &into, &request(range));
        assert!(got.is_err(), "{what}: accepted");
        assert!(!into.exists(), "{what}: left {} behind", into.display());
    }
    assert!(!dir.path().join("data.mdb").exists());
}

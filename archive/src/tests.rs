//! Unit tests of the archive on the local file system store: round trip, digests,
//! truncation, incomplete uploads, wrong shards, bad URLs.

use super::*;
use hektor_indexers::snapshot::{Manifest, SNAPSHOT_FORMAT};
use hektor_indexers::EngineKind;
use hektor_topics::record::{Distance, RingRange};

const RANGE: RingRange = RingRange {
    start: 1 << 62,
    end: Some(1 << 63),
};

fn request() -> SnapshotRequest {
    SnapshotRequest {
        collection: "docs".into(),
        incarnation: 3,
        range: RANGE,
        dimension: 8,
        distance: Distance::Cosine,
    }
}

/// A snapshot folder with a fake `data.mdb` (the archive never opens it) of `len` bytes.
fn snapshot(dir: &FsPath, offset: u64, len: usize) -> ArchivePut {
    std::fs::create_dir_all(dir).unwrap();
    let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + offset as usize) as u8).collect();
    std::fs::write(dir.join("data.mdb"), &bytes).unwrap();
    ArchivePut {
        manifest: Manifest {
            format: SNAPSHOT_FORMAT,
            collection: "docs".into(),
            incarnation: 3,
            range: RANGE,
            dimension: 8,
            distance: Distance::Cosine,
            engine: EngineKind::Cold,
            from: "local".into(),
            files: vec![("data.mdb".into(), len as u64)],
        },
        partition: 1,
        next_offset: offset,
        hlc_floor: 77,
        dir: dir.to_path_buf(),
    }
}

fn open(root: &FsPath) -> Archive {
    let url = format!("file://{}", root.join("store").display());
    Archive::open(&url, &ArchiveOptions::default()).unwrap()
}

#[tokio::test]
async fn a_snapshot_round_trips_and_older_ones_go() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = open(tmp.path());
    assert!(archive.locate(&request()).await.unwrap().is_none());
    let first = archive
        .put(&snapshot(&tmp.path().join("a"), 10, 5000))
        .await
        .unwrap();
    assert_eq!((first.bytes, first.next_offset), (5000, 10));
    let put = snapshot(&tmp.path().join("b"), 25, 3000);
    let second = archive.put(&put).await.unwrap();
    assert!(second
        .location
        .ends_with("/docs/3/4000000000000000-8000000000000000/00000000000000000025"));
    // The older snapshot's objects are gone; the newer one is found.
    let older = tmp
        .path()
        .join("store/docs/3/4000000000000000-8000000000000000/00000000000000000010");
    assert!(!older.join("data.mdb").exists());
    assert_eq!(
        archive.locate(&request()).await.unwrap(),
        Some(second.clone())
    );
    let (_, manifest) = archive.newest(&request()).await.unwrap().unwrap();
    assert_eq!(manifest.applied, BTreeMap::from([(1, 25)]));
    assert_eq!(manifest.hlc_floor, 77);
    let into = tmp.path().join("restored");
    let (fetched, archived) = archive.get(&request(), &into).await.unwrap().unwrap();
    assert_eq!(archived, second);
    assert_eq!(fetched.bytes, 3000);
    assert_eq!(fetched.manifest.files, vec![("data.mdb".to_string(), 3000)]);
    assert_eq!(
        std::fs::read(into.join("data.mdb")).unwrap(),
        std::fs::read(put.dir.join("data.mdb")).unwrap()
    );
}

#[tokio::test]
async fn a_corrupt_or_truncated_object_is_refused_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = open(tmp.path());
    let done = archive
        .put(&snapshot(&tmp.path().join("a"), 4, 4096))
        .await
        .unwrap();
    let object = archive.path(&format!(
        "{}/data.mdb",
        manifest::snapshot_folder("docs", 3, RANGE, 4)
    ));
    // Same size, one byte flipped.
    let mut bytes = archive
        .store()
        .get(&object)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    bytes[100] ^= 0xFF;
    archive
        .store()
        .put(&object, PutPayload::from(bytes.clone()))
        .await
        .unwrap();
    let into = tmp.path().join("r1");
    let err = archive.get(&request(), &into).await.unwrap_err();
    assert!(matches!(err, ArchiveError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("sha256"), "{err}");
    assert!(!into.exists());
    // Cut short.
    archive
        .store()
        .put(&object, PutPayload::from(bytes[..1000].to_vec()))
        .await
        .unwrap();
    let err = archive.get(&request(), &into).await.unwrap_err();
    assert!(
        matches!(
            err,
            ArchiveError::Truncated {
                got: 1000,
                want: 4096,
                ..
            }
        ),
        "{err}"
    );
    assert!(!into.exists());
    // Longer than the manifest says.
    bytes.extend_from_slice(&[0; 10]);
    archive
        .store()
        .put(&object, PutPayload::from(bytes))
        .await
        .unwrap();
    let err = archive.get(&request(), &into).await.unwrap_err();
    assert!(matches!(err, ArchiveError::Truncated { .. }), "{err}");
    // A corrupt manifest is an error too, with the location.
    let manifest = archive.path(&format!(
        "{}/{MANIFEST}",
        manifest::snapshot_folder("docs", 3, RANGE, 4)
    ));
    archive
        .store()
        .put(&manifest, PutPayload::from_static(b"{\"format\": 1"))
        .await
        .unwrap();
    let err = archive.locate(&request()).await.unwrap_err();
    assert!(matches!(err, ArchiveError::BadManifest { .. }), "{err}");
    assert!(err.to_string().contains(&done.location), "{err}");
}

#[tokio::test]
async fn an_upload_without_its_manifest_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = open(tmp.path());
    archive
        .put(&snapshot(&tmp.path().join("a"), 4, 100))
        .await
        .unwrap();
    // A later upload that stopped before its manifest: only its data object exists.
    let partial = archive.path(&format!(
        "{}/data.mdb",
        manifest::snapshot_folder("docs", 3, RANGE, 9)
    ));
    archive
        .store()
        .put(&partial, PutPayload::from_static(b"xx"))
        .await
        .unwrap();
    let found = archive.locate(&request()).await.unwrap().unwrap();
    assert_eq!(found.next_offset, 4);
}

#[tokio::test]
async fn another_shards_archive_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = open(tmp.path());
    archive
        .put(&snapshot(&tmp.path().join("a"), 4, 100))
        .await
        .unwrap();
    let mut wrong = request();
    wrong.dimension = 9;
    let err = archive
        .get(&wrong, &tmp.path().join("r"))
        .await
        .unwrap_err();
    assert!(matches!(err, ArchiveError::WrongShard { .. }), "{err}");
    // Another range has nothing archived.
    let mut other = request();
    other.range.end = Some(3 << 62);
    assert!(archive
        .get(&other, &tmp.path().join("r"))
        .await
        .unwrap()
        .is_none());
}

#[test]
fn bad_urls_say_what_to_use() {
    for url in ["", "docs", "http://x/y", "file://relative", "s3:///prefix"] {
        let err = Archive::open(url, &ArchiveOptions::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::BadUrl { .. }), "{url}: {err}");
        assert!(err.to_string().contains("s3://bucket/prefix"), "{err}");
    }
    let options = ArchiveOptions {
        endpoint: Some("http://10.1.2.3:9000".into()),
        ..Default::default()
    };
    let err = Archive::open("s3://b/p", &options).unwrap_err();
    assert!(err.to_string().contains("allow-http"), "{err}");
    let options = ArchiveOptions {
        endpoint: Some("http://127.0.0.1:9000".into()),
        access_key_id: Some("k".into()),
        secret_access_key: Some("s".into()),
        ..Default::default()
    };
    let archive = Archive::open("s3://bucket/some/prefix/", &options).unwrap();
    assert_eq!(archive.url(), "s3://bucket/some/prefix");
    assert_eq!(archive.path("c/1").to_string(), "some/prefix/c/1");
}

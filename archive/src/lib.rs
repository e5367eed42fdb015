//! The archive tier: shard snapshots in object storage, put there when a shard's map tier
//! becomes `archive` and read back when a search (or a promotion) needs the shard again.
//!
//! - [`Archive`] is one object store (the `object_store` crate): the local file system
//!   (`file:///path`, the default for a single machine) or any S3-compatible server
//!   (`s3://bucket/prefix`, with the endpoint and credentials from [`ArchiveOptions`] or
//!   the `AWS_*` environment; plain http is allowed for a loopback endpoint, or when asked).
//! - **Layout** under the URL's prefix:
//!   `<collection>/<incarnation>/<start>-<end>/<offset>/{data.mdb,hnsw.graph,manifest.json}`:
//!   the shard's folder named like its directory on a node, then one folder per archived
//!   snapshot named by the applied offset it was taken at (zero-padded, so the newest
//!   sorts last). The files are exactly a snapshot's ([`hektor_indexers::snapshot`]'s
//!   format, the same `data.mdb` LMDB copy and hot graph file a shard move sends), and
//!   `manifest.json` ([`manifest::ArchiveManifest`]: the shard, the applied offset per
//!   partition, the clock floor, each file's size and sha256) is written last: a folder
//!   without it is an upload that did not finish and is ignored. Older snapshots of the
//!   shard are deleted after a newer one is complete.
//! - [`Archive::put`] uploads (streaming each file, then reading back each object's size);
//!   [`Archive::get`] downloads the newest complete snapshot and checks every file's size
//!   and digest before the host opens anything: a truncated or corrupt object is an
//!   [`ArchiveError`], never a panic and never a shard served from bad bytes.
//! - It implements [`ShardArchive`], the seam a shard host archives and restores through.
//!
//! No blocking call runs on an async task: digests and file removal run on blocking
//! threads; object I/O is async.

pub mod error;
pub mod manifest;

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use futures::StreamExt;
use hektor_indexers::snapshot::{ArchivePut, Archived, Fetched, ShardArchive, SnapshotRequest};
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

pub use error::{ArchiveError, Result};
pub use manifest::{ArchiveManifest, ArchivedFile, ARCHIVE_FORMAT, MANIFEST};
/// The object store crate, for callers that reach the objects themselves (tests).
pub use object_store;

/// Settings of an S3 store beyond its URL (each falls back to the `AWS_*` environment:
/// `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`).
#[derive(Debug, Clone, Default)]
pub struct ArchiveOptions {
    /// The S3 endpoint, e.g. `http://127.0.0.1:9000` (default: AWS's).
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Default `us-east-1`.
    pub region: Option<String>,
    /// Allow a plain-http endpoint that is not on the loopback interface.
    pub allow_http: bool,
}

/// One object store holding archived shard snapshots under a prefix.
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    /// The prefix inside the store (no leading or trailing `/`; may be empty).
    prefix: String,
    /// The URL it was opened with, without a trailing `/` (what locations are shown as).
    url: String,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive").field("url", &self.url).finish()
    }
}

impl Archive {
    /// Open the store at `url`: `file:///absolute/path` (created if missing) or
    /// `s3://bucket[/prefix]`. Blocking (it may create the directory): call at start.
    pub fn open(url: &str, options: &ArchiveOptions) -> Result<Archive> {
        let bad = |why: &str| ArchiveError::BadUrl {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        let trimmed = url.trim_end_matches('/').to_owned();
        match parsed.scheme() {
            "file" => {
                let path = parsed
                    .to_file_path()
                    .map_err(|()| bad("not an absolute local path"))?;
                std::fs::create_dir_all(&path).map_err(|source| ArchiveError::Io {
                    path: path.clone(),
                    source,
                })?;
                let store = LocalFileSystem::new_with_prefix(&path).map_err(|source| {
                    ArchiveError::Setup {
                        url: url.to_owned(),
                        source,
                    }
                })?;
                Ok(Archive {
                    store: Arc::new(store),
                    prefix: String::new(),
                    url: trimmed,
                })
            }
            "s3" => {
                let bucket = parsed
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| bad("no bucket"))?;
                let prefix = parsed.path().trim_matches('/').to_owned();
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
                let endpoint = options.endpoint.clone().or_else(|| env("AWS_ENDPOINT_URL"));
                if let Some(endpoint) = &endpoint {
                    let e = url::Url::parse(endpoint).map_err(|e| ArchiveError::BadUrl {
                        url: endpoint.clone(),
                        why: format!("the S3 endpoint: {e}"),
                    })?;
                    let loopback = match e.host() {
                        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                        Some(url::Host::Domain(d)) => d == "localhost",
                        None => false,
                    };
                    if e.scheme() == "http" && !(loopback || options.allow_http) {
                        return Err(ArchiveError::BadUrl {
                            url: endpoint.clone(),
                            why: "a plain-http S3 endpoint off the loopback interface needs --archive-allow-http".into(),
                        });
                    }
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(e.scheme() == "http");
                }
                if let Some(key) = &options.access_key_id {
                    builder = builder.with_access_key_id(key);
                }
                if let Some(secret) = &options.secret_access_key {
                    builder = builder.with_secret_access_key(secret);
                }
                let region = options
                    .region
                    .clone()
                    .or_else(|| env("AWS_REGION"))
                    .or_else(|| env("AWS_DEFAULT_REGION"))
                    .unwrap_or_else(|| "us-east-1".into());
                builder = builder
                    .with_region(region)
                    .with_virtual_hosted_style_request(false);
                let store = builder.build().map_err(|source| ArchiveError::Setup {
                    url: url.to_owned(),
                    source,
                })?;
                Ok(Archive {
                    store: Arc::new(store),
                    prefix,
                    url: trimmed,
                })
            }
            other => Err(bad(&format!("unknown scheme `{other}`"))),
        }
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The object store itself (tests list and corrupt objects through it).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The store path of `rel` under the prefix.
    pub fn path(&self, rel: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(rel)
        } else {
            Path::from(format!("{}/{rel}", self.prefix))
        }
    }

    fn location(&self, rel: &str) -> String {
        format!("{}/{rel}", self.url)
    }

    /// Upload a snapshot (see the module doc) and return where it lies.
    pub async fn put(&self, put: &ArchivePut) -> Result<Archived> {
        let m = &put.manifest;
        let folder =
            manifest::snapshot_folder(&m.collection, m.incarnation, m.range, put.next_offset);
        let mut files = Vec::with_capacity(m.files.len());
        for (name, len) in &m.files {
            let local = put.dir.join(name);
            let sha256 = sha256_file(local.clone()).await?;
            let path = self.path(&format!("{folder}/{name}"));
            let file = tokio::fs::File::open(&local)
                .await
                .map_err(|source| ArchiveError::Io {
                    path: local.clone(),
                    source,
                })?;
            let mut writer = BufWriter::new(Arc::clone(&self.store), path.clone());
            let mut reader = tokio::io::BufReader::with_capacity(1 << 20, file);
            let copied = tokio::io::copy(&mut reader, &mut writer).await;
            let copied = match copied {
                Ok(n) => n,
                Err(source) => {
                    let _ = writer.abort().await;
                    return Err(ArchiveError::Io {
                        path: local,
                        source,
                    });
                }
            };
            writer.shutdown().await.map_err(|e| ArchiveError::Store {
                op: "upload",
                path: path.to_string(),
                source: object_store::Error::Generic {
                    store: "archive",
                    source: Box::new(e),
                },
            })?;
            let head = self
                .store
                .head(&path)
                .await
                .map_err(|source| ArchiveError::Store {
                    op: "head",
                    path: path.to_string(),
                    source,
                })?;
            if head.size != *len || copied != *len {
                return Err(ArchiveError::UploadIncomplete {
                    path: path.to_string(),
                    got: head.size,
                    want: *len,
                });
            }
            files.push(ArchivedFile {
                name: name.clone(),
                bytes: *len,
                sha256,
            });
        }
        let archived_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let manifest = ArchiveManifest {
            format: ARCHIVE_FORMAT,
            snapshot_format: m.format,
            collection: m.collection.clone(),
            incarnation: m.incarnation,
            range: m.range,
            dimension: m.dimension,
            distance: m.distance,
            engine: m.engine,
            applied: BTreeMap::from([(put.partition, put.next_offset)]),
            hlc_floor: put.hlc_floor,
            from: m.from.clone(),
            archived_at_ms,
            files,
        };
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| ArchiveError::BadManifest {
            path: folder.clone(),
            why: e.to_string(),
        })?;
        let path = self.path(&format!("{folder}/{MANIFEST}"));
        self.store
            .put(&path, PutPayload::from(json))
            .await
            .map_err(|source| ArchiveError::Store {
                op: "put",
                path: path.to_string(),
                source,
            })?;
        // Older snapshots of the shard are superseded: delete them (best effort).
        let shard = manifest::shard_folder(&m.collection, m.incarnation, m.range);
        if let Err(err) = self.delete_older(&shard, &folder).await {
            tracing::warn!(%err, %shard, "could not delete older archived snapshots");
        }
        Ok(Archived {
            location: self.location(&folder),
            bytes: manifest.bytes(),
            next_offset: put.next_offset,
        })
    }

    /// The snapshot folders of one shard (relative to the prefix), oldest first.
    async fn snapshot_folders(&self, shard: &str) -> Result<Vec<String>> {
        let path = self.path(shard);
        let listed = self
            .store
            .list_with_delimiter(Some(&path))
            .await
            .map_err(|source| ArchiveError::Store {
                op: "list",
                path: path.to_string(),
                source,
            })?;
        let mut folders: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .filter(|name| name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()))
            .map(|name| format!("{shard}/{name}"))
            .collect();
        folders.sort();
        Ok(folders)
    }

    async fn delete_older(&self, shard: &str, keep: &str) -> Result<()> {
        for folder in self.snapshot_folders(shard).await? {
            if folder.as_str() >= keep {
                continue;
            }
            let path = self.path(&folder);
            let mut listed = self.store.list(Some(&path));
            while let Some(meta) = listed.next().await {
                let meta = meta.map_err(|source| ArchiveError::Store {
                    op: "list",
                    path: path.to_string(),
                    source,
                })?;
                self.store
                    .delete(&meta.location)
                    .await
                    .map_err(|source| ArchiveError::Store {
                        op: "delete",
                        path: meta.location.to_string(),
                        source,
                    })?;
            }
        }
        Ok(())
    }

    /// The newest complete snapshot of exactly `request.range`: its folder and manifest
    /// (checked against the request). Folders without a manifest are skipped.
    pub async fn newest(
        &self,
        request: &SnapshotRequest,
    ) -> Result<Option<(String, ArchiveManifest)>> {
        let shard = manifest::shard_folder(&request.collection, request.incarnation, request.range);
        for folder in self.snapshot_folders(&shard).await?.into_iter().rev() {
            let path = self.path(&format!("{folder}/{MANIFEST}"));
            let got = match self.store.get(&path).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(source) => {
                    return Err(ArchiveError::Store {
                        op: "get",
                        path: path.to_string(),
                        source,
                    })
                }
            };
            let json = got.bytes().await.map_err(|source| ArchiveError::Store {
                op: "get",
                path: path.to_string(),
                source,
            })?;
            let where_ = self.location(&format!("{folder}/{MANIFEST}"));
            let manifest = ArchiveManifest::parse(&where_, &json)?;
            manifest.check(&where_, request)?;
            return Ok(Some((folder, manifest)));
        }
        Ok(None)
    }

    /// Where the newest complete snapshot of `request.range` lies.
    pub async fn locate(&self, request: &SnapshotRequest) -> Result<Option<Archived>> {
        Ok(self
            .newest(request)
            .await?
            .map(|(folder, manifest)| Archived {
                location: self.location(&folder),
                bytes: manifest.bytes(),
                next_offset: manifest.next_offset(),
            }))
    }

    /// Download the newest complete snapshot of `request.range` into `into` (created
    /// here; it must not exist), checking each file's size and sha256. On any error
    /// nothing is left at `into`. `Ok(None)`: nothing archived.
    pub async fn get(
        &self,
        request: &SnapshotRequest,
        into: &FsPath,
    ) -> Result<Option<(Fetched, Archived)>> {
        let Some((folder, manifest)) = self.newest(request).await? else {
            return Ok(None);
        };
        tokio::fs::create_dir(into)
            .await
            .map_err(|source| ArchiveError::Io {
                path: into.to_path_buf(),
                source,
            })?;
        match self.download(&folder, &manifest, into).await {
            Ok(bytes) => Ok(Some((
                Fetched {
                    manifest: manifest.snapshot_manifest(),
                    bytes,
                },
                Archived {
                    location: self.location(&folder),
                    bytes,
                    next_offset: manifest.next_offset(),
                },
            ))),
            Err(err) => {
                let _ = tokio::fs::remove_dir_all(into).await;
                Err(err)
            }
        }
    }

    async fn download(
        &self,
        folder: &str,
        manifest: &ArchiveManifest,
        into: &FsPath,
    ) -> Result<u64> {
        let mut total = 0;
        for file in &manifest.files {
            let rel = format!("{folder}/{}", file.name);
            let path = self.path(&rel);
            let shown = self.location(&rel);
            let store_err = |op, source| ArchiveError::Store {
                op,
                path: shown.clone(),
                source,
            };
            let got = self
                .store
                .get(&path)
                .await
                .map_err(|e| store_err("get", e))?;
            let local = into.join(&file.name);
            let io = |source| ArchiveError::Io {
                path: local.clone(),
                source,
            };
            let mut out = tokio::fs::File::create(&local).await.map_err(io)?;
            let mut stream = got.into_stream();
            let mut received = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| store_err("get", e))?;
                received += chunk.len() as u64;
                if received > file.bytes {
                    return Err(ArchiveError::Truncated {
                        path: shown.clone(),
                        got: received,
                        want: file.bytes,
                    });
                }
                out.write_all(&chunk).await.map_err(io)?;
            }
            out.sync_all().await.map_err(io)?;
            drop(out);
            if received != file.bytes {
                return Err(ArchiveError::Truncated {
                    path: shown,
                    got: received,
                    want: file.bytes,
                });
            }
            let digest = sha256_file(local.clone()).await?;
            if digest != file.sha256 {
                return Err(ArchiveError::Corrupt {
                    path: shown,
                    got: digest,
                    want: file.sha256.clone(),
                });
            }
            total += received;
        }
        Ok(total)
    }
}

/// The lowercase hex sha256 of a file, on a blocking thread.
pub async fn sha256_file(path: PathBuf) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let io = |source| ArchiveError::Io {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::File::open(&path).map_err(io)?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(io)?;
        Ok(hex::encode(hasher.finalize()))
    })
    .await
    .map_err(|e| ArchiveError::Task(e.to_string()))?
}

impl ShardArchive for Archive {
    fn put(&self, put: ArchivePut) -> BoxFuture<'static, std::result::Result<Archived, String>> {
        let this = self.shared();
        Box::pin(async move { this.put(&put).await.map_err(|e| e.to_string()) })
    }

    fn get(
        &self,
        request: SnapshotRequest,
        into: PathBuf,
    ) -> BoxFuture<'static, std::result::Result<Option<(Fetched, Archived)>, String>> {
        let this = self.shared();
        Box::pin(async move { this.get(&request, &into).await.map_err(|e| e.to_string()) })
    }

    fn locate(
        &self,
        request: SnapshotRequest,
    ) -> BoxFuture<'static, std::result::Result<Option<Archived>, String>> {
        let this = self.shared();
        Box::pin(async move { this.locate(&request).await.map_err(|e| e.to_string()) })
    }
}

impl Archive {
    /// A handle sharing this store (the futures of [`ShardArchive`] are `'static`).
    fn shared(&self) -> Archive {
        Archive {
            store: Arc::clone(&self.store),
            prefix: self.prefix.clone(),
            url: self.url.clone(),
        }
    }
}

#[cfg(test)]
mod tests;

//! The LMDB layout of one shard: its environment, its named databases, and the byte
//! formats of what they hold. [`crate::shard::Shard`] decides what to write (last writer
//! wins, offsets, pending tail); this module only says where and how it is stored, and
//! gives index engines read access to the vectors.
//!
//! Databases of a shard's environment:
//!
//! | name         | key                         | value                                       |
//! |--------------|-----------------------------|---------------------------------------------|
//! | `meta`       | a name (`config`, `format`, `next_offset`, `next_item`, `hlc_floor`, and per mirrored source `source/<region>/next_offset`, `source/<region>/floor`) | JSON or a big-endian `u64` |
//! | `ids`        | the vector's key, [`vector_store_key`] of (tenant, id) | its item id, `u32` big-endian |
//! | `records`    | item id                     | ring `u64`, hlc `u64`, id, tenant, origin region, payload JSON (see [`Record`]) |
//! | `vectors`    | item id                     | norm `f32` then the vector, `f32` little-endian |
//! | `ring`       | ring position ++ item id, big-endian | nothing: the tenant-range index    |
//! | `tombstones` | the vector's key, as in `ids` | hlc of its delete, `u64` big-endian, then its origin region (absent: none) |
//! | `sources`    | a mirrored source's name, `0x00`, effective hlc big-endian | the xxh3-128 digest of the record stamped so (see [`hektor_merge::SourceFloor`]) |
//! | `pending`    | item id                     | nothing: written since the last index build  |
//! | `stale`      | item id                     | nothing: in the built index, but deleted or replaced since |
//! | `index`      | engine-defined              | engine-defined (arroy's trees and vectors, hnsw's build epoch) |
//! | `index_warm` | `engine/warm_graph.rs`      | the warm engine's HNSW graph and int8 vectors     |
//! | `index_cold` | arroy-defined               | the cold engine's trees and binary-quantized vectors (arroy) |
//!
//! Each engine keeps its data in its own database (arroy and hnsw share `index`; they are
//! never active together), so a shard switching engines
//! ([`crate::shard::Shard::set_engine`]) builds the new index next to the old one and
//! clears the old one in the same write transaction.
//!
//! **Format** (`meta` `format`, [`STORE_FORMAT`]): 2 since vectors are keyed by (tenant,
//! id); a shard without the key was written as format 1, keyed by id alone. Untenanted keys
//! are the same bytes in both, so a format-1 shard holding no vector with a tenant is
//! stamped 2 when opened; one holding such vectors cannot be re-keyed (format 1 did not
//! store the tenant) and is refused with [`Error::OldFormat`]: rebuild it from the log
//! (the shard host does that by itself).

use std::path::{Path, PathBuf};

use heed::byteorder::BigEndian;
use heed::types::{Bytes, Str, Unit, U32};
use heed::{CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions, RoTxn, WithoutTls};
use hektor_topics::hlc::Hlc;

use crate::error::{Error, Result};
use crate::metric;

pub(crate) const META_CONFIG: &str = "config";
pub(crate) const META_NEXT_OFFSET: &str = "next_offset";
pub(crate) const META_NEXT_ITEM: &str = "next_item";
/// The partition's clock floor: the effective hlc of the last record applied (or passed).
pub(crate) const META_HLC_FLOOR: &str = "hlc_floor";
/// The store's format (absent: 1); see the module's documentation.
pub(crate) const META_FORMAT: &str = "format";
/// The format this build writes: `ids` and `tombstones` keyed by [`vector_store_key`].
pub const STORE_FORMAT: u64 = 2;

/// Longest key of `ids` and `tombstones` stored as is: LMDB keys are at most 511 bytes.
const MAX_INLINE_KEY: usize = 511;
/// First byte of a key stored as a hash ([`vector_store_key`]); never a byte of UTF-8.
pub(crate) const HASHED_KEY: u8 = 0xFE;

/// The key of a vector in `ids` and `tombstones`: its topic key
/// ([`hektor_topics::record::vector_key`]: the id, or `0xFF tenant 0xFF id`) when it fits
/// an LMDB key, else `0xFE` and the SHA-256 of it (a tenant and an id of 256 bytes each,
/// which validation accepts, make 514 bytes). `0xFE` and `0xFF` never start UTF-8, so the
/// three forms never collide; SHA-256 keeps hashed keys collision-free even for crafted
/// tenants and ids.
pub(crate) fn vector_store_key(tenant: Option<&str>, id: &str) -> Vec<u8> {
    let key = hektor_topics::record::vector_key(tenant, id);
    if key.len() <= MAX_INLINE_KEY {
        return key;
    }
    use sha2::Digest;
    let mut out = Vec::with_capacity(33);
    out.push(HASHED_KEY);
    out.extend_from_slice(&sha2::Sha256::digest(&key));
    out
}

/// Longest vector id accepted: LMDB keys are at most 511 bytes.
pub const MAX_ID_BYTES: usize = 511;

/// The environment and databases of one shard. Database handles are plain ids, so the
/// struct is cheap to share; every read or write goes through a transaction.
#[derive(Debug)]
pub struct Store {
    pub(crate) path: PathBuf,
    pub(crate) env: Env<WithoutTls>,
    pub(crate) meta: Database<'static, Str, Bytes>,
    pub(crate) ids: Database<'static, Bytes, U32<BigEndian>>,
    pub(crate) records: Database<'static, U32<BigEndian>, Bytes>,
    pub(crate) vectors: Database<'static, U32<BigEndian>, Bytes>,
    pub(crate) ring: Database<'static, Bytes, Unit>,
    pub(crate) tombstones: Database<'static, Bytes, Bytes>,
    /// Per mirrored source, the records its floor remembers (see the module doc).
    pub(crate) sources: Database<'static, Bytes, Bytes>,
    pub(crate) pending: Database<'static, U32<BigEndian>, Unit>,
    pub(crate) stale: Database<'static, U32<BigEndian>, Unit>,
    /// The engine's own database; its key and value types are the engine's business.
    pub(crate) index: Database<'static, Bytes, Bytes>,
    /// The warm engine's database (an HNSW graph over int8 vectors).
    pub(crate) index_warm: Database<'static, Bytes, Bytes>,
    /// The cold engine's database (arroy trees over binary-quantized vectors).
    pub(crate) index_cold: Database<'static, Bytes, Bytes>,
    pub(crate) dimension: usize,
    /// Where the data file is mapped (read from /proc/self/maps once: the map never
    /// moves while the store is open); see [`Store::release_pages`].
    mapped: std::sync::OnceLock<Vec<(usize, usize)>>,
}

type Dbs = (
    Database<'static, Str, Bytes>,
    Database<'static, Bytes, U32<BigEndian>>,
    Database<'static, U32<BigEndian>, Bytes>,
    Database<'static, U32<BigEndian>, Bytes>,
    Database<'static, Bytes, Unit>,
    Database<'static, Bytes, Bytes>,
    Database<'static, U32<BigEndian>, Unit>,
    Database<'static, U32<BigEndian>, Unit>,
    Database<'static, Bytes, Bytes>,
    Database<'static, Bytes, Bytes>,
    Database<'static, Bytes, Bytes>,
    Database<'static, Bytes, Bytes>,
);

/// Where a shard's bytes on disk are ([`Store::footprint`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Footprint {
    /// The data file's length (LMDB grows it ahead of use).
    pub file_bytes: u64,
    /// Pages in use up to the last one written, in bytes.
    pub used_bytes: u64,
    /// Used pages that no database holds: LMDB's free list, its meta pages and the
    /// catalogue of databases.
    pub other_bytes: u64,
    /// Per database: entries and the bytes of its pages.
    pub databases: std::collections::BTreeMap<&'static str, DbFootprint>,
}

/// One database's share of a [`Footprint`].
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct DbFootprint {
    pub entries: u64,
    pub bytes: u64,
}

impl Store {
    /// Open (creating if needed) the environment in `dir`.
    pub(crate) fn open(dir: &Path, map_size: usize, dimension: usize) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let storage = |source| Error::Storage {
            path: dir.to_path_buf(),
            source,
        };
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        // The map keeps this size and address while the store is open: the warm engine's
        // searches rely on that (`Pins` in `engine/warm_graph.rs`). Never resize it live.
        options.map_size(map_size).max_dbs(16);
        // No read-ahead (`MDB_NORDAHEAD`, i.e. `MADV_RANDOM` on the map): the warm and
        // cold tiers read their graph and the hits' vectors at random, and with the
        // kernel's read-ahead 1,000 warm searches pulled the whole file (290 MiB for 62k
        // vectors) into the page cache instead of the ~40 MiB they touch. The cost: a hot
        // shard loading its vectors from a cold page cache faults page by page.
        // SAFETY: the flag only changes how the map is advised (no aliasing or lifetime
        // consequence).
        unsafe { options.flags(EnvFlags::NO_READ_AHEAD) };
        // SAFETY: LMDB requires that the environment is not opened twice in one process
        // (heed refuses that with `EnvAlreadyOpened`) and that its files are not modified
        // by anything but LMDB; a shard directory belongs to this shard alone.
        let env = unsafe { options.open(dir) }.map_err(storage)?;
        let wtxn = env.write_txn().map_err(storage)?;
        let dbs: Dbs = env
            .create_databases_and_commit(wtxn, |dbo, wtxn| -> heed::Result<_> {
                Ok(CommitOrAbort::<_, ()>::Commit((
                    dbo.create_database(wtxn, Some("meta"))?,
                    dbo.create_database(wtxn, Some("ids"))?,
                    dbo.create_database(wtxn, Some("records"))?,
                    dbo.create_database(wtxn, Some("vectors"))?,
                    dbo.create_database(wtxn, Some("ring"))?,
                    dbo.create_database(wtxn, Some("tombstones"))?,
                    dbo.create_database(wtxn, Some("pending"))?,
                    dbo.create_database(wtxn, Some("stale"))?,
                    dbo.create_database(wtxn, Some("index"))?,
                    dbo.create_database(wtxn, Some("index_warm"))?,
                    dbo.create_database(wtxn, Some("index_cold"))?,
                    dbo.create_database(wtxn, Some("sources"))?,
                )))
            })
            .map_err(storage)?
            .unwrap_commit();
        let (
            meta,
            ids,
            records,
            vectors,
            ring,
            tombstones,
            pending,
            stale,
            index,
            index_warm,
            index_cold,
            sources,
        ) = dbs;
        Ok(Store {
            path: dir.to_path_buf(),
            env,
            meta,
            ids,
            records,
            vectors,
            ring,
            tombstones,
            pending,
            stale,
            index,
            index_warm,
            index_cold,
            sources,
            dimension,
            mapped: std::sync::OnceLock::new(),
        })
    }

    /// Bring the whole data file into the page cache with large sequential reads, ahead of
    /// a scan of every vector (the hot engine's open). The map itself has no read-ahead
    /// (see [`Store::open`]), so a scan from a cold page cache faulted one page at a time:
    /// a 62k-vector hot shard opened in 38–45 s instead of 27 s (36.6 / 32.7 s with
    /// `POSIX_FADV_WILLNEED` alone); with this read first, 25.8 / 24.3 s from a cold cache
    /// against 23.8 / 26.2 s cached. Best effort: an error only loses the warm-up.
    pub(crate) fn prefetch_file(&self) {
        use std::io::Read;
        let Ok(mut file) = std::fs::File::open(self.path.join("data.mdb")) else {
            return;
        };
        let mut buf = vec![0u8; 4 << 20];
        while matches!(file.read(&mut buf), Ok(n) if n > 0) {}
    }

    /// Let go of the pages of this environment's map that the process has touched: a hot
    /// shard reads every vector once to fill its graph's rows (at open and at each build)
    /// and serves from those rows afterwards, so the pages it read are not needed by
    /// serving, yet they stayed in the process's resident set (at 100k vectors, 435 MiB of
    /// VmRSS after a restart, for 146 MiB of vectors).
    ///
    /// `MADV_DONTNEED` on LMDB's read-only shared map only unmaps the pages from this
    /// process: their contents stay in the page cache (and on disk), and a later read
    /// faults them back in, same bytes, so readers holding slices into the map are
    /// unaffected. Best effort (Linux only): an error only keeps the pages resident.
    pub(crate) fn release_pages(&self) {
        #[cfg(target_os = "linux")]
        {
            let ranges = self.mapped.get_or_init(|| {
                let file = self.path.join("data.mdb");
                match (
                    file.canonicalize(),
                    std::fs::read_to_string("/proc/self/maps"),
                ) {
                    (Ok(file), Ok(maps)) => mapped_ranges(&maps, &file),
                    _ => Vec::new(),
                }
            });
            for &(start, end) in ranges {
                // SAFETY: the range is a mapping of this environment's data file (read from
                // /proc/self/maps just now; the map is never moved or resized while the
                // store is open). MADV_DONTNEED on a shared, read-only file mapping drops
                // the process's page table entries only; no data is lost.
                unsafe {
                    libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
                }
            }
        }
    }

    /// The directory of the environment.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Dimension of every stored vector.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Map an LMDB error to this shard's [`Error::Storage`].
    pub(crate) fn storage(&self, source: heed::Error) -> Error {
        Error::Storage {
            path: self.path.clone(),
            source,
        }
    }

    pub(crate) fn corrupt(&self, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// Read a big-endian `u64` from the meta database (0 when absent).
    pub(crate) fn meta_u64(&self, txn: &RoTxn, key: &str) -> Result<u64> {
        match self.meta.get(txn, key).map_err(|e| self.storage(e))? {
            None => Ok(0),
            Some(bytes) => {
                let arr: [u8; 8] = bytes
                    .try_into()
                    .map_err(|_| self.corrupt(format!("meta `{key}` is not 8 bytes")))?;
                Ok(u64::from_be_bytes(arr))
            }
        }
    }

    /// Bytes of LMDB pages (branch, leaf and overflow) used by `db`.
    pub(crate) fn db_bytes(
        &self,
        txn: &RoTxn,
        db: &Database<'static, Bytes, Bytes>,
    ) -> Result<u64> {
        let stat = db.stat(txn).map_err(|e| self.storage(e))?;
        Ok(stat.non_free_page_size() as u64)
    }

    /// Where the environment's bytes are: each database's pages, and the pages none holds
    /// (LMDB's free list: what copy-on-write left behind, reused by later commits).
    pub fn footprint(&self) -> Result<Footprint> {
        let st = |e| self.storage(e);
        let txn = self.env.read_txn().map_err(st)?;
        let last_page = self.env.info().last_page_number as u64;
        let mut databases = std::collections::BTreeMap::new();
        let mut in_dbs = 0u64;
        let mut add = |name: &'static str, stat: heed::DatabaseStat| {
            let pages = (stat.branch_pages + stat.leaf_pages + stat.overflow_pages) as u64;
            in_dbs += pages;
            databases.insert(
                name,
                DbFootprint {
                    entries: stat.entries as u64,
                    bytes: pages * stat.page_size as u64,
                },
            );
        };
        add("meta", self.meta.stat(&txn).map_err(st)?);
        add("ids", self.ids.stat(&txn).map_err(st)?);
        add("records", self.records.stat(&txn).map_err(st)?);
        add("vectors", self.vectors.stat(&txn).map_err(st)?);
        add("ring", self.ring.stat(&txn).map_err(st)?);
        add("tombstones", self.tombstones.stat(&txn).map_err(st)?);
        add("sources", self.sources.stat(&txn).map_err(st)?);
        add("pending", self.pending.stat(&txn).map_err(st)?);
        add("stale", self.stale.stat(&txn).map_err(st)?);
        add("index", self.index.stat(&txn).map_err(st)?);
        add("index_warm", self.index_warm.stat(&txn).map_err(st)?);
        add("index_cold", self.index_cold.stat(&txn).map_err(st)?);
        let page_size = u64::from(self.env.unnamed_database_stat().page_size);
        let used = (last_page + 1) * page_size;
        drop(txn);
        Ok(Footprint {
            file_bytes: self.env.real_disk_size().map_err(st)?,
            used_bytes: used,
            other_bytes: used.saturating_sub(in_dbs * page_size),
            databases,
        })
    }

    /// Every item holding a vector.
    pub(crate) fn vector_items(&self, txn: &RoTxn) -> Result<roaring::RoaringBitmap> {
        let mut items = roaring::RoaringBitmap::new();
        let iter = self
            .vectors
            .remap_data_type::<heed::types::DecodeIgnore>()
            .iter(txn)
            .map_err(|e| self.storage(e))?;
        for entry in iter {
            items.insert(entry.map_err(|e| self.storage(e))?.0);
        }
        Ok(items)
    }

    /// Decode the stored vector of `item` into `out` (length = dimension) and return its
    /// norm, or `None` when the item holds no vector.
    pub fn vector_into(&self, txn: &RoTxn, item: u32, out: &mut [f32]) -> Result<Option<f32>> {
        match self.vectors.get(txn, &item).map_err(|e| self.storage(e))? {
            None => Ok(None),
            Some(bytes) => self.decode_vector(item, bytes, out).map(Some),
        }
    }

    /// The stored vector of `item`, zero-copy: its components as little-endian f32 bytes
    /// and its norm, or `None` when the item holds no vector.
    pub fn vector_bytes<'t>(&self, txn: &'t RoTxn, item: u32) -> Result<Option<(&'t [u8], f32)>> {
        match self.vectors.get(txn, &item).map_err(|e| self.storage(e))? {
            None => Ok(None),
            Some(bytes) => self.split_vector(item, bytes).map(Some),
        }
    }

    /// Visit every stored vector in item-id order, zero-copy: `f(item, vector as
    /// little-endian f32 bytes, norm)`.
    pub fn for_each_vector_bytes(
        &self,
        txn: &RoTxn,
        mut f: impl FnMut(u32, &[u8], f32),
    ) -> Result<()> {
        for entry in self.vectors.iter(txn).map_err(|e| self.storage(e))? {
            let (item, bytes) = entry.map_err(|e| self.storage(e))?;
            let (v, norm) = self.split_vector(item, bytes)?;
            f(item, v, norm);
        }
        Ok(())
    }

    /// A stored vector's bytes as (components, norm), checked against the dimension.
    fn split_vector<'b>(&self, item: u32, bytes: &'b [u8]) -> Result<(&'b [u8], f32)> {
        let expected = 4 + 4 * self.dimension;
        if bytes.len() != expected {
            return Err(self.corrupt(format!(
                "vector of item {item} has {} bytes, expected {expected}",
                bytes.len()
            )));
        }
        let norm = f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        Ok((&bytes[4..], norm))
    }

    fn decode_vector(&self, item: u32, bytes: &[u8], out: &mut [f32]) -> Result<f32> {
        let (v, norm) = self.split_vector(item, bytes)?;
        if out.len() != self.dimension {
            return Err(self.corrupt(format!(
                "vector of item {item} decoded into {} floats, expected {}",
                out.len(),
                self.dimension
            )));
        }
        metric::decode_f32s(v, out);
        Ok(norm)
    }

    /// The bytes stored for a vector: its norm, then its components.
    pub(crate) fn encode_vector(vector: &[f32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 4 * vector.len());
        out.extend_from_slice(&metric::norm(vector).to_le_bytes());
        metric::encode_f32s(vector, &mut out);
        out
    }

    /// The key of the ring index: position then item, both big-endian, so a byte-order
    /// range scan is a ring-order range scan.
    pub(crate) fn ring_key(ring: u64, item: u32) -> [u8; 12] {
        let mut key = [0u8; 12];
        key[..8].copy_from_slice(&ring.to_be_bytes());
        key[8..].copy_from_slice(&item.to_be_bytes());
        key
    }

    /// The raw bytes of `item`'s record (see [`Record`]), borrowed from the snapshot.
    pub(crate) fn record_bytes<'t>(&self, txn: &'t RoTxn, item: u32) -> Result<Option<&'t [u8]>> {
        self.records.get(txn, &item).map_err(|e| self.storage(e))
    }

    pub(crate) fn record(&self, txn: &RoTxn, item: u32) -> Result<Option<Record>> {
        match self.records.get(txn, &item).map_err(|e| self.storage(e))? {
            None => Ok(None),
            Some(bytes) => Record::decode(bytes)
                .map(Some)
                .ok_or_else(|| self.corrupt(format!("record of item {item} does not decode"))),
        }
    }
}

/// What the `records` database holds for one live item (its vector lives in `vectors`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Record {
    pub ring: u64,
    pub hlc: Hlc,
    pub id: String,
    pub tenant: Option<String>,
    /// The region that accepted the write (empty: unknown, as in records stored before
    /// origins were); with `hlc`, the write's [`hektor_merge::Stamp`].
    pub origin: String,
    /// This write met a write of another region it had not seen (it replaced one, or one
    /// arrived after it and lost): a conflict, resolved by the stamps.
    pub concurrent: bool,
    pub payload: Option<serde_json::Value>,
    /// Under `crdt`, the stamps of the payload's fields and of the newest delete
    /// ([`crate::fields`]); `None` under `lww`.
    pub stamps: Option<crate::fields::FieldStamps>,
}

/// Bit of a record's id-length field saying a tenant follows the id. Ids are far shorter
/// than 2^31 bytes, so records written before tenants were stored never have it set.
const HAS_TENANT: u32 = 1 << 31;
/// Bit of a record's id-length field saying an origin region follows the tenant (records
/// stored before origins were never have it set, and decode with an empty origin).
const HAS_ORIGIN: u32 = 1 << 30;
/// Bit of a record's id-length field saying the write met a concurrent one
/// ([`Record::concurrent`]).
const CONCURRENT: u32 = 1 << 29;
/// Bit of a record's id-length field saying the field stamps of a `crdt` record follow
/// the origin ([`Record::stamps`]).
const HAS_STAMPS: u32 = 1 << 28;
/// Every flag bit of the id-length field.
const ID_FLAGS: u32 = HAS_TENANT | HAS_ORIGIN | CONCURRENT | HAS_STAMPS;

/// The value of a tombstone: the delete's hlc (big-endian, as it always was), then its
/// origin region's bytes (absent in tombstones stored before origins were).
pub(crate) fn encode_tombstone(hlc: Hlc, origin: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + origin.len());
    out.extend_from_slice(&hlc.0.to_be_bytes());
    out.extend_from_slice(origin.as_bytes());
    out
}

/// A tombstone's (hlc, origin), or `None` when the bytes are not one.
pub(crate) fn decode_tombstone(bytes: &[u8]) -> Option<(Hlc, &str)> {
    let hlc = u64::from_be_bytes(bytes.get(0..8)?.try_into().ok()?);
    Some((Hlc(hlc), std::str::from_utf8(&bytes[8..]).ok()?))
}

impl Record {
    /// `ring u64 LE | hlc u64 LE | id length u32 LE | id | [tenant length u32 LE | tenant]
    /// | [origin length u32 LE | origin] | [stamps length u32 LE | stamps JSON] | payload
    /// JSON (absent = empty)`; the tenant is there when bit 31 of the id length is set
    /// ([`HAS_TENANT`]), the origin when bit 30 is ([`HAS_ORIGIN`], only for a non-empty
    /// origin), the field stamps when bit 28 is ([`HAS_STAMPS`], `crdt` collections), so
    /// records written without them still decode (tenant `None`, origin empty).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let tenant_len = self.tenant.as_ref().map_or(0, |t| 4 + t.len());
        let mut out = Vec::with_capacity(24 + self.id.len() + tenant_len + self.origin.len() + 64);
        out.extend_from_slice(&self.ring.to_le_bytes());
        out.extend_from_slice(&self.hlc.0.to_le_bytes());
        let mut flag = if self.tenant.is_some() { HAS_TENANT } else { 0 };
        if !self.origin.is_empty() {
            flag |= HAS_ORIGIN;
        }
        if self.concurrent {
            flag |= CONCURRENT;
        }
        // Serialising plain maps and strings to a Vec cannot fail.
        let stamps = self
            .stamps
            .as_ref()
            .and_then(|s| serde_json::to_vec(s).ok());
        if stamps.is_some() {
            flag |= HAS_STAMPS;
        }
        out.extend_from_slice(&(self.id.len() as u32 | flag).to_le_bytes());
        out.extend_from_slice(self.id.as_bytes());
        if let Some(t) = &self.tenant {
            out.extend_from_slice(&(t.len() as u32).to_le_bytes());
            out.extend_from_slice(t.as_bytes());
        }
        if !self.origin.is_empty() {
            out.extend_from_slice(&(self.origin.len() as u32).to_le_bytes());
            out.extend_from_slice(self.origin.as_bytes());
        }
        if let Some(stamps) = &stamps {
            out.extend_from_slice(&(stamps.len() as u32).to_le_bytes());
            out.extend_from_slice(stamps);
        }
        if let Some(p) = &self.payload {
            // Serialising a `Value` to a Vec cannot fail.
            if let Ok(bytes) = serde_json::to_vec(p) {
                out.extend_from_slice(&bytes);
            }
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Record> {
        let ring = u64::from_le_bytes(bytes.get(0..8)?.try_into().ok()?);
        let hlc = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
        let id_field = u32::from_le_bytes(bytes.get(16..20)?.try_into().ok()?);
        let id_len = (id_field & !ID_FLAGS) as usize;
        let id = std::str::from_utf8(bytes.get(20..20 + id_len)?)
            .ok()?
            .to_owned();
        let mut rest = &bytes[20 + id_len..];
        let tenant = if id_field & HAS_TENANT != 0 {
            let len = u32::from_le_bytes(rest.get(0..4)?.try_into().ok()?) as usize;
            let tenant = std::str::from_utf8(rest.get(4..4 + len)?).ok()?.to_owned();
            rest = &rest[4 + len..];
            Some(tenant)
        } else {
            None
        };
        let origin = if id_field & HAS_ORIGIN != 0 {
            let len = u32::from_le_bytes(rest.get(0..4)?.try_into().ok()?) as usize;
            let origin = std::str::from_utf8(rest.get(4..4 + len)?).ok()?.to_owned();
            rest = &rest[4 + len..];
            origin
        } else {
            String::new()
        };
        let stamps = if id_field & HAS_STAMPS != 0 {
            let len = u32::from_le_bytes(rest.get(0..4)?.try_into().ok()?) as usize;
            let stamps = serde_json::from_slice(rest.get(4..4 + len)?).ok()?;
            rest = &rest[4 + len..];
            Some(stamps)
        } else {
            None
        };
        let payload = if rest.is_empty() {
            None
        } else {
            Some(serde_json::from_slice(rest).ok()?)
        };
        Some(Record {
            ring,
            hlc: Hlc(hlc),
            id,
            tenant,
            origin,
            concurrent: id_field & CONCURRENT != 0,
            payload,
            stamps,
        })
    }

    /// Only the id and the payload's JSON bytes (empty: no payload), borrowed from
    /// `bytes`, without copying them or parsing the payload (a search's hits).
    pub(crate) fn decode_id_payload(bytes: &[u8]) -> Option<(&str, &[u8])> {
        let id_field = u32::from_le_bytes(bytes.get(16..20)?.try_into().ok()?);
        let id_len = (id_field & !ID_FLAGS) as usize;
        let id = std::str::from_utf8(bytes.get(20..20 + id_len)?).ok()?;
        let mut at = 20 + id_len;
        for flag in [HAS_TENANT, HAS_ORIGIN, HAS_STAMPS] {
            if id_field & flag != 0 {
                let len = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
                at = at.checked_add(4 + len)?;
                bytes.get(..at)?;
            }
        }
        Some((id, bytes.get(at..)?))
    }

    /// Only the hlc, without decoding the rest.
    pub(crate) fn decode_hlc(bytes: &[u8]) -> Option<Hlc> {
        Some(Hlc(u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?)))
    }

    /// Only the stamp (hlc and origin), without decoding the id or the payload.
    pub(crate) fn decode_stamp(bytes: &[u8]) -> Option<(Hlc, &str)> {
        let hlc = Self::decode_hlc(bytes)?;
        let id_field = u32::from_le_bytes(bytes.get(16..20)?.try_into().ok()?);
        if id_field & HAS_ORIGIN == 0 {
            return Some((hlc, ""));
        }
        let mut at = 20 + (id_field & !ID_FLAGS) as usize;
        if id_field & HAS_TENANT != 0 {
            let len = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
            at += 4 + len;
        }
        let len = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
        let origin = std::str::from_utf8(bytes.get(at + 4..at + 4 + len)?).ok()?;
        Some((hlc, origin))
    }
}

/// The address ranges at which `file` is mapped, from the text of `/proc/self/maps`.
#[cfg(target_os = "linux")]
fn mapped_ranges(maps: &str, file: &Path) -> Vec<(usize, usize)> {
    let file = file.to_string_lossy();
    maps.lines()
        .filter_map(|line| {
            // address perms offset dev inode path
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let path = fields.nth(4)?;
            if path != file {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some((
                usize::from_str_radix(start, 16).ok()?,
                usize::from_str_radix(end, 16).ok()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn mapped_ranges_are_read_from_proc_maps() {
        let maps = "7f0000000000-7f0000100000 r--s 00000000 fd:01 1234   /d/shard/data.mdb\n\
                    7f0000200000-7f0000300000 r--s 00000000 fd:01 1235   /d/other/data.mdb\n\
                    7f0000400000-7f0000401000 rw-p 00000000 00:00 0 \n";
        assert_eq!(
            mapped_ranges(maps, Path::new("/d/shard/data.mdb")),
            [(0x7f00_0000_0000, 0x7f00_0010_0000)]
        );
        assert!(mapped_ranges(maps, Path::new("/d/none")).is_empty());
    }

    /// Field stamps of a `crdt` record: a field and a delete.
    fn stamped() -> crate::fields::FieldStamps {
        crate::fields::FieldStamps {
            deleted: Some((Hlc::new(5, 0), "east".into())),
            fields: [("t".to_owned(), (Hlc::new(7, 1), "wëst".to_owned()))].into(),
        }
    }

    #[test]
    fn record_round_trips_with_and_without_payload() {
        for payload in [
            None,
            Some(serde_json::Value::Null),
            Some(serde_json::json!({"t": "ü", "n": [1, 2]})),
        ] {
            for tenant in [None, Some(String::new()), Some("tenant-ß".to_owned())] {
                for ((origin, concurrent), stamps) in [("", false), ("west", true), ("ü-1", false)]
                    .into_iter()
                    .zip([None, Some(Default::default()), Some(stamped())])
                {
                    let r = Record {
                        ring: u64::MAX - 3,
                        hlc: Hlc::new(1_700_000_000_000, 9),
                        id: "pkg-ü".into(),
                        tenant: tenant.clone(),
                        origin: origin.into(),
                        concurrent,
                        payload: payload.clone(),
                        stamps,
                    };
                    let bytes = r.encode();
                    assert_eq!(Record::decode(&bytes), Some(r.clone()));
                    assert_eq!(Record::decode_hlc(&bytes), Some(r.hlc));
                    assert_eq!(Record::decode_stamp(&bytes), Some((r.hlc, origin)));
                    let (id, raw) = Record::decode_id_payload(&bytes).unwrap();
                    assert_eq!(id, r.id);
                    let expected = payload.as_ref().map(|p| serde_json::to_vec(p).unwrap());
                    assert_eq!((!raw.is_empty()).then(|| raw.to_vec()), expected);
                    for cut in 0..bytes.len() {
                        // A cut record never reads past its end: at most a shorter payload.
                        if let Some((cut_id, cut_raw)) = Record::decode_id_payload(&bytes[..cut]) {
                            assert_eq!(cut_id, r.id);
                            assert!(raw.starts_with(cut_raw));
                        }
                    }
                }
            }
        }
        assert_eq!(Record::decode(&[1, 2, 3]), None);
        assert_eq!(Record::decode_id_payload(&[1, 2, 3]), None);
    }

    /// A record as format 1 wrote it (no tenant field) still decodes, with no tenant.
    #[test]
    fn records_written_before_tenants_decode() {
        let mut old = Vec::new();
        old.extend_from_slice(&7u64.to_le_bytes());
        old.extend_from_slice(&9u64.to_le_bytes());
        old.extend_from_slice(&1u32.to_le_bytes());
        old.extend_from_slice(b"x");
        old.extend_from_slice(br#"{"k":1}"#);
        let r = Record::decode(&old).expect("decodes");
        assert_eq!((r.ring, r.hlc, r.id.as_str()), (7, Hlc(9), "x"));
        assert_eq!(r.tenant, None);
        assert_eq!(r.origin, "");
        assert_eq!(r.payload, Some(serde_json::json!({"k": 1})));
    }

    /// Tombstones stored before origins (8 bytes) decode with an empty origin.
    #[test]
    fn tombstones_round_trip_and_old_ones_decode() {
        let t = encode_tombstone(Hlc(42), "east");
        assert_eq!(decode_tombstone(&t), Some((Hlc(42), "east")));
        assert_eq!(decode_tombstone(&42u64.to_be_bytes()), Some((Hlc(42), "")));
        assert_eq!(decode_tombstone(&[1, 2]), None);
    }

    #[test]
    fn store_keys_are_distinct_and_fit_lmdb() {
        let long_tenant = "t".repeat(256);
        let long_id = "i".repeat(256);
        let keys = [
            vector_store_key(None, "x"),
            vector_store_key(Some("a"), "x"),
            vector_store_key(Some("b"), "x"),
            vector_store_key(Some(&long_tenant), &long_id),
            vector_store_key(Some(&long_tenant), &"j".repeat(256)),
        ];
        assert_eq!(keys[0], b"x");
        for (i, a) in keys.iter().enumerate() {
            assert!(a.len() <= MAX_INLINE_KEY);
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(keys[3][0], HASHED_KEY);
    }
}

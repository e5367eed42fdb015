//! The hot graph's file: how an HNSW graph is saved next to its shard's LMDB environment
//! and read back, so that opening a shard loads its graph instead of rebuilding it.
//!
//! **What is in the file** (`hnsw.graph` in the shard's directory): the graph's
//! *structure* (every node's item, level, build epochs, layer-0 and upper-layer neighbour
//! lists, the entry point) and the rows of deleted nodes only. The rows of live nodes are
//! the shard's stored vectors: [`super::HnswEngine::open`] reads them from LMDB, so the
//! file adds about 10 % of the raw vectors to the disk (384-d, `m` = 16), not a copy.
//! int8 codes are recomputed from the rows.
//!
//! **Consistency with LMDB.** A file holds the graph as of one committed build epoch `C`
//! and names the *lineage* of the graph it belongs to (a random number stored in the
//! shard's `index` database at the first build, so a file can never be taken for another
//! graph's). Every build writes a *journal entry* (its epoch's changes) into LMDB in its
//! own transaction; a load replays the entries after `C`. A file is used only when its
//! lineage matches, `C` is not ahead of LMDB, and the journal has every entry after `C`;
//! otherwise the graph is rebuilt from the store, as if there were no file.
//!
//! **Crash safety.** A save writes `hnsw.graph.tmp`, syncs it, renames it over
//! `hnsw.graph` and syncs the directory; a CRC-32 over the whole file is checked on load.
//! A crash in the middle of a save leaves the previous file (or none) and a temporary one
//! that the next save overwrites; a torn or corrupted file fails its checksum and the
//! graph is rebuilt. Journal entries up to `C` are deleted only after the file is durable.
//!
//! Every number is little-endian. Layout, after the 8-byte magic: version, dimension, m,
//! distance, epoch, lineage, node count `n`, item-table length, entry, max level, live
//! count; then per node: level (`u8`), item, added epoch, deleted epoch; layer-0 lists
//! (`n × (1 + 2m)` `u32`s: count then slots); upper lists (`level × (1 + m)` per node);
//! the item → node table; the rows of deleted nodes in node order; the CRC-32 of all that.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use hektor_topics::record::Distance;

use super::{Block, Graph, BLOCK, LIVE, MAX_LEVEL, NONE};

/// The file's name in the shard's directory.
pub(crate) const FILE: &str = "hnsw.graph";
/// Where a save writes before it renames.
const TMP: &str = "hnsw.graph.tmp";
const MAGIC: &[u8; 8] = b"HKTRHNSW";
const VERSION: u32 = 1;

/// Where the graph file of the shard in `dir` lives.
pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

fn distance_code(distance: Distance) -> u32 {
    match distance {
        Distance::Cosine => 1,
        Distance::Dot => 2,
        Distance::Euclidean => 3,
    }
}

/// A writer that keeps the CRC-32 of what went through it.
struct Summed<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Summed<W> {
    fn u32(&mut self, x: u32) -> std::io::Result<()> {
        self.write_all(&x.to_le_bytes())
    }
    fn u64(&mut self, x: u64) -> std::io::Result<()> {
        self.write_all(&x.to_le_bytes())
    }
    fn u32s(&mut self, xs: &[u32]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(xs.len().min(1 << 16) * 4);
        for chunk in xs.chunks(1 << 16) {
            buf.clear();
            for x in chunk {
                buf.extend_from_slice(&x.to_le_bytes());
            }
            self.write_all(&buf)?;
        }
        Ok(())
    }
    /// Link slots, as [`Summed::u32s`] writes numbers (the caller makes sure no build
    /// changes them meanwhile).
    fn links(&mut self, xs: &[AtomicU32]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(xs.len().min(1 << 16) * 4);
        for chunk in xs.chunks(1 << 16) {
            buf.clear();
            for x in chunk {
                buf.extend_from_slice(&x.load(Ordering::Relaxed).to_le_bytes());
            }
            self.write_all(&buf)?;
        }
        Ok(())
    }
}

impl<W: Write> Write for Summed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What a save wrote.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Saved {
    pub epoch: u32,
    pub bytes: u64,
}

/// Save `g` (the graph as of committed build `epoch`, of graph `lineage`) into `dir`,
/// durably, replacing the previous file. The caller makes sure no build runs meanwhile.
pub(crate) fn save(
    g: &Graph,
    dir: &Path,
    dimension: usize,
    distance: Distance,
    epoch: u32,
    lineage: u64,
) -> std::io::Result<Saved> {
    let tmp = dir.join(TMP);
    let file = File::create(&tmp)?;
    let mut w = Summed {
        inner: BufWriter::with_capacity(1 << 20, file),
        crc: crc32fast::Hasher::new(),
    };
    let n = g.len();
    w.write_all(MAGIC)?;
    w.u32(VERSION)?;
    w.u32(dimension as u32)?;
    w.u32(g.m as u32)?;
    w.u32(distance_code(distance))?;
    w.u32(epoch)?;
    w.u64(lineage)?;
    w.u32(n as u32)?;
    w.u32(g.node_of_item.len() as u32)?;
    w.u32(g.entry)?;
    w.u32(g.max_level as u32)?;
    w.u64(g.live)?;
    w.write_all(&g.level)?;
    w.u32s(&g.item)?;
    w.u32s(&g.added)?;
    w.u32s(&g.deleted)?;
    w.links(&g.links0)?;
    for list in &g.upper {
        w.links(list)?;
    }
    w.u32s(&g.node_of_item)?;
    for node in 0..n {
        if g.deleted[node] != LIVE {
            let start = node * g.blocks_per_row;
            for block in &g.vectors[start..start + g.blocks_per_row] {
                for x in block.0 {
                    w.write_all(&x.to_le_bytes())?;
                }
            }
        }
    }
    let crc = w.crc.clone().finalize();
    let mut inner = w.inner;
    inner.write_all(&crc.to_le_bytes())?;
    let file = inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let bytes = file.metadata()?.len();
    drop(file);
    std::fs::rename(&tmp, path(dir))?;
    File::open(dir)?.sync_all()?;
    Ok(Saved { epoch, bytes })
}

/// Remove the graph file (and a leftover temporary one) of the shard in `dir`.
pub(crate) fn remove(dir: &Path) -> std::io::Result<()> {
    for name in [FILE, TMP] {
        match std::fs::remove_file(dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A graph read back from its file: the structure complete, the rows of deleted nodes
/// filled, the rows of live nodes still zero (the caller reads them from the store).
pub(crate) struct Loaded {
    pub graph: Graph,
    pub epoch: u32,
}

/// What a file must match to be this shard's graph.
pub(crate) struct Expect {
    pub dimension: usize,
    pub m: usize,
    pub distance: Distance,
    pub lineage: u64,
    /// The shard's committed build epoch: a file may not be newer.
    pub epoch: u32,
}

/// Bounds-checked little-endian reads over the file's bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| "the file ends early".to_string())?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn u32s(&mut self, n: usize) -> Result<Vec<u32>, String> {
        let bytes = self.take(n.checked_mul(4).ok_or("a length overflows")?)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect())
    }
}

/// Read the graph file of the shard in `dir` into `graph` (an empty graph of the engine's
/// shape). `Ok(None)`: there is no file. `Err`: the file is unusable, and why.
pub(crate) fn load(
    dir: &Path,
    mut graph: Graph,
    expect: &Expect,
) -> Result<Option<Loaded>, String> {
    let bytes = match std::fs::read(path(dir)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", path(dir).display())),
    };
    if bytes.len() < MAGIC.len() + 4 || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a hektor graph file".into());
    }
    let (body, sum) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(sum.try_into().expect("4 bytes")) {
        return Err("its checksum does not match (torn or corrupted)".into());
    }
    let mut c = Cursor {
        bytes: body,
        at: MAGIC.len(),
    };
    let version = c.u32()?;
    if version != VERSION {
        return Err(format!("format {version}, this build reads {VERSION}"));
    }
    let (dimension, m, distance) = (c.u32()?, c.u32()?, c.u32()?);
    if dimension as usize != expect.dimension
        || m as usize != expect.m
        || distance != distance_code(expect.distance)
    {
        return Err(format!(
            "it is a graph of dimension {dimension}, m {m}, distance code {distance}; \
             the shard wants {}, {}, {}",
            expect.dimension,
            expect.m,
            distance_code(expect.distance)
        ));
    }
    let epoch = c.u32()?;
    let lineage = c.u64()?;
    if lineage != expect.lineage {
        return Err("it belongs to another graph (lineage differs)".into());
    }
    if epoch > expect.epoch {
        return Err(format!(
            "it is at build {epoch}, ahead of the shard's committed build {}",
            expect.epoch
        ));
    }
    let n = c.u32()? as usize;
    let items = c.u32()? as usize;
    let entry = c.u32()?;
    let max_level = c.u32()? as usize;
    let live = c.u64()?;
    // Every node takes more than 4 (1 + 2m) bytes of the file: a count past that is a lie
    // that would allocate without limit.
    if n.saturating_mul(4 * (1 + 2 * m as usize)) > body.len()
        || items.saturating_mul(4) > body.len()
    {
        return Err("its counts exceed its size".into());
    }
    let level = c.take(n)?.to_vec();
    let item = c.u32s(n)?;
    let added = c.u32s(n)?;
    let deleted = c.u32s(n)?;
    let m0 = graph.m0;
    let links0 = c.u32s(n * (1 + m0))?;
    let mut upper = Vec::with_capacity(n);
    for &l in &level {
        if l as usize > MAX_LEVEL {
            return Err(format!("a node has level {l}, above {MAX_LEVEL}"));
        }
        upper.push(c.u32s(l as usize * (1 + graph.m))?.into_boxed_slice());
    }
    let node_of_item = c.u32s(items)?;
    // Check every reference, so that searches never index out of bounds.
    let in_graph = |x: u32| (x as usize) < n;
    for node in 0..n {
        let links = &links0[node * (1 + m0)..(node + 1) * (1 + m0)];
        if links[0] as usize > m0 || !links[1..=links[0] as usize].iter().all(|&x| in_graph(x)) {
            return Err(format!("node {node} has a bad layer-0 list"));
        }
        let up = &upper[node];
        for layer in 0..level[node] as usize {
            let base = layer * (1 + graph.m);
            let count = up[base] as usize;
            if count > graph.m || !up[base + 1..base + 1 + count].iter().all(|&x| in_graph(x)) {
                return Err(format!("node {node} has a bad list on layer {}", layer + 1));
            }
        }
        if item[node] as usize >= items
            || added[node] > epoch
            || (deleted[node] != LIVE && (deleted[node] > epoch || deleted[node] < added[node]))
        {
            return Err(format!("node {node} has a bad item or epochs"));
        }
    }
    if node_of_item.iter().any(|&x| x != NONE && !in_graph(x))
        || (n == 0) != (entry == NONE)
        || (n > 0 && (!in_graph(entry) || level[entry as usize] as usize != max_level))
        || live != deleted.iter().filter(|&&d| d == LIVE).count() as u64
    {
        return Err("its item table, entry point or live count is inconsistent".into());
    }
    let bpr = graph.blocks_per_row;
    let mut vectors = vec![Block([0.0; BLOCK]); n * bpr];
    for node in (0..n).filter(|&i| deleted[i] != LIVE) {
        let row = c.take(bpr * BLOCK * 4)?;
        for (b, block) in vectors[node * bpr..(node + 1) * bpr].iter_mut().enumerate() {
            for (i, x) in block.0.iter_mut().enumerate() {
                let at = (b * BLOCK + i) * 4;
                *x = f32::from_le_bytes(row[at..at + 4].try_into().expect("4 bytes"));
            }
        }
    }
    if c.at != body.len() {
        return Err("it has bytes past its last section".into());
    }
    graph.vectors = vectors;
    graph.links0 = links0.into_iter().map(AtomicU32::new).collect();
    graph.upper = upper
        .into_iter()
        .map(|list| list.into_vec().into_iter().map(AtomicU32::new).collect())
        .collect();
    graph.level = level;
    graph.item = item;
    graph.added = added;
    graph.deleted = deleted;
    graph.node_of_item = node_of_item;
    graph.entry = entry;
    graph.max_level = max_level;
    graph.live = live;
    Ok(Some(Loaded { graph, epoch }))
}

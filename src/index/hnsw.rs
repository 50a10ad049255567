//! The HNSW graph (Malkov & Yashunin), laid out the way hnswlib lays it out: flat `u32` link
//! lists (layer 0: `1 + 2M` slots per point, a count then ids; upper layers: `1 + M` slots per
//! point and level), a per-point lock taken only to change a point's own list, an
//! epoch-stamped visited array reused across searches, and no copy of the vectors: every
//! distance reads the caller's `&[f32]` (`vectors.f32`, memory-mapped for searches, read into
//! huge-page-backed memory for a build).
//!
//! Distance is `1 - dot` on unit vectors (ranks exactly as L2 and as cosine). Neighbours are
//! chosen by the paper's heuristic (hnswlib's `getNeighborsByHeuristic2`): M for a new point on
//! every layer; a full list of a neighbour (2M on layer 0, M above) is re-pruned by the same
//! heuristic when a back-link arrives.
//!
//! Links are `AtomicU32` read with relaxed loads (plain loads on x86): a search running
//! during a parallel build may see a list mid-update, which costs at most a missed or extra
//! candidate, never an invalid id (every slot always holds a valid id).

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::{
    AtomicU32, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::Mutex;

use super::simd::dot;
use crate::progress::Progress;

const DATA_MAGIC: &[u8; 8] = b"EXHNSWD1";
const GRAPH_MAGIC: &[u8; 8] = b"EXHNSWG1";
/// Levels above this are clamped (a level needs 1/M^16 odds).
const MAX_LEVEL: u8 = 15;

/// A candidate: distance to the query and point id, ordered by distance then id.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cand {
    pub d: f32,
    pub id: u32,
}

impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Cand {
    fn cmp(&self, o: &Self) -> Ordering {
        self.d.total_cmp(&o.d).then(self.id.cmp(&o.id))
    }
}

/// Rows a filtered search may return, as a bitset.
pub struct Allowed(Vec<u64>);

impl Allowed {
    pub fn new(rows: &[usize], n: usize) -> Self {
        let mut bits = vec![0u64; n.div_ceil(64)];
        for &r in rows.iter().filter(|&&r| r < n) {
            bits[r / 64] |= 1 << (r % 64);
        }
        Self(bits)
    }
    fn has(&self, id: u32) -> bool {
        self.0[id as usize / 64] & (1 << (id % 64)) != 0
    }
}

/// Epoch-stamped visited marks, one array per thread, reused by every search.
struct Visited {
    marks: Vec<u32>,
    epoch: u32,
    /// Scratch: the unvisited neighbours of the node being expanded.
    fresh: Vec<u32>,
}

impl Visited {
    fn reset(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.fill(0);
            self.epoch = 1;
        }
    }
    /// Mark `id`; false if it already was.
    fn insert(&mut self, id: u32) -> bool {
        let m = &mut self.marks[id as usize];
        let fresh = *m != self.epoch;
        *m = self.epoch;
        fresh
    }
}

thread_local! {
    static VISITED: RefCell<Visited> = const {
        RefCell::new(Visited { marks: Vec::new(), epoch: 0, fresh: Vec::new() })
    };
}

/// The vectors a graph links: n x dim, row-major.
#[derive(Clone, Copy)]
struct Sp<'v> {
    v: &'v [f32],
    dim: usize,
}

impl<'v> Sp<'v> {
    #[inline]
    fn at(&self, id: u32) -> &'v [f32] {
        &self.v[id as usize * self.dim..(id as usize + 1) * self.dim]
    }
}

/// Graph parameters.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub m: usize,
    pub ef_construction: usize,
    /// Seed of the level draw (levels depend only on the seed and the row).
    pub seed: u64,
}

pub struct Hnsw {
    n: usize,
    m: usize,
    m0: usize,
    ef_construction: usize,
    entry: u32,
    max_level: u8,
    levels: Vec<u8>,
    /// Per point: first upper slot block (level 1) in `upper`.
    upper_start: Vec<u32>,
    layer0: Vec<AtomicU32>,
    upper: Vec<AtomicU32>,
    locks: Vec<Mutex<()>>,
}

impl std::fmt::Debug for Hnsw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hnsw")
            .field("n", &self.n)
            .field("m", &self.m)
            .field("entry", &self.entry)
            .field("max_level", &self.max_level)
            .finish_non_exhaustive()
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The level of `row`: floor(-ln(U) / ln(M)), as in the paper and hnswlib.
fn draw_level(seed: u64, row: usize, m: usize) -> u8 {
    let u = (splitmix(seed ^ splitmix(row as u64)) >> 11) as f64 / (1u64 << 53) as f64;
    let level = -(u.max(1e-300)).ln() / (m as f64).ln();
    (level as u64).min(MAX_LEVEL as u64) as u8
}

fn atomics(n: usize) -> Vec<AtomicU32> {
    (0..n).map(|_| AtomicU32::new(0)).collect()
}

impl Hnsw {
    /// An empty graph over `n` points with their levels drawn.
    fn with_levels(n: usize, levels: Vec<u8>, p: &Params) -> Self {
        let (m, m0) = (p.m, 2 * p.m);
        let mut upper_start = vec![0u32; n];
        let mut blocks = 0usize;
        for (i, &l) in levels.iter().enumerate() {
            upper_start[i] = blocks as u32;
            blocks += l as usize;
        }
        let max_level = levels.iter().copied().max().unwrap_or(0);
        let entry = levels.iter().position(|&l| l == max_level).unwrap_or(0) as u32;
        Self {
            n,
            m,
            m0,
            ef_construction: p.ef_construction,
            entry,
            max_level,
            levels,
            upper_start,
            layer0: atomics(n * (1 + m0)),
            upper: atomics(blocks * (1 + m)),
            locks: (0..n).map(|_| Mutex::new(())).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    pub fn entry(&self) -> u32 {
        self.entry
    }
    /// The top layer of `id` (it has a list on every layer up to this one).
    pub fn level(&self, id: u32) -> u8 {
        self.levels[id as usize]
    }
    /// M: links per point on the upper layers (2M on layer 0).
    pub fn m(&self) -> usize {
        self.m
    }
    pub fn ef_construction(&self) -> usize {
        self.ef_construction
    }

    /// The slots of `id`'s list on `layer`: a count, then ids.
    fn slots(&self, id: u32, layer: u8) -> &[AtomicU32] {
        if layer == 0 {
            let s = id as usize * (1 + self.m0);
            &self.layer0[s..s + 1 + self.m0]
        } else {
            let s = (self.upper_start[id as usize] as usize + layer as usize - 1) * (1 + self.m);
            &self.upper[s..s + 1 + self.m]
        }
    }

    /// `id`'s neighbours on `layer` (a snapshot).
    pub fn neighbours(&self, id: u32, layer: u8) -> Vec<u32> {
        let s = self.slots(id, layer);
        let c = (s[0].load(Acquire) as usize).min(s.len() - 1);
        s[1..1 + c].iter().map(|x| x.load(Relaxed)).collect()
    }

    fn set_links(&self, id: u32, layer: u8, ids: &[u32]) {
        let s = self.slots(id, layer);
        for (slot, &v) in s[1..].iter().zip(ids) {
            slot.store(v, Relaxed);
        }
        s[0].store(ids.len().min(s.len() - 1) as u32, Release);
    }

    /// Build the graph over `vectors` (n x dim unit vectors), inserting in parallel.
    pub fn build(vectors: &[f32], dim: usize, p: &Params, progress: &dyn Progress) -> Self {
        let n = vectors.len() / dim;
        let levels = (0..n).map(|r| draw_level(p.seed, r, p.m)).collect();
        let g = Self::with_levels(n, levels, p);
        let bar = progress.task("linking", Some(n as u64), "vectors");
        let done = AtomicU64::new(0);
        (0..n as u32)
            .into_par_iter()
            .with_min_len(256)
            .filter(|&id| id != g.entry)
            .for_each(|id| {
                g.insert(Sp { v: vectors, dim }, id);
                if done.fetch_add(1, Relaxed) % 1024 == 1023 {
                    bar.inc(1024);
                }
            });
        bar.set_position(n as u64);
        g
    }

    /// Greedy descent from the entry point through the layers above `down_to`.
    fn descend(&self, sp: Sp, q: &[f32], down_to: u8) -> Cand {
        let mut cur = Cand {
            d: 1.0 - dot(q, sp.at(self.entry)),
            id: self.entry,
        };
        for layer in (down_to + 1..=self.max_level).rev() {
            loop {
                let mut moved = false;
                for e in self.neighbours(cur.id, layer) {
                    let d = 1.0 - dot(q, sp.at(e));
                    if d < cur.d {
                        cur = Cand { d, id: e };
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        cur
    }

    /// Best-first search of one layer from `entry`; returns up to `ef` candidates (allowed
    /// ones only, when filtered), nearest first.
    fn search_layer(
        &self,
        sp: Sp,
        q: &[f32],
        entry: &[Cand],
        ef: usize,
        layer: u8,
        allowed: Option<&Allowed>,
    ) -> Vec<Cand> {
        VISITED.with(|v| {
            let mut visited = v.borrow_mut();
            visited.reset(self.n);
            let mut cands: BinaryHeap<Reverse<Cand>> = BinaryHeap::with_capacity(ef * 4);
            let mut best: BinaryHeap<Cand> = BinaryHeap::with_capacity(ef + 1);
            let ok = |id: u32| allowed.is_none_or(|a| a.has(id));
            for &c in entry {
                visited.insert(c.id);
                cands.push(Reverse(c));
                if ok(c.id) {
                    best.push(c);
                }
            }
            let mut bound = best.peek().map_or(f32::INFINITY, |c| c.d);
            while let Some(Reverse(c)) = cands.pop() {
                if c.d > bound && (allowed.is_none() || best.len() >= ef) {
                    break;
                }
                let s = self.slots(c.id, layer);
                let count = (s[0].load(Acquire) as usize).min(s.len() - 1);
                // Unvisited neighbours first, their vectors prefetched, then the distances:
                // the memory loads overlap instead of waiting one by one.
                let mut fresh = std::mem::take(&mut visited.fresh);
                fresh.clear();
                for slot in &s[1..1 + count] {
                    let e = slot.load(Relaxed);
                    if visited.insert(e) {
                        super::simd::prefetch(sp.at(e));
                        fresh.push(e);
                    }
                }
                for &e in &fresh {
                    let d = 1.0 - dot(q, sp.at(e));
                    if best.len() < ef || d < bound {
                        cands.push(Reverse(Cand { d, id: e }));
                        if ok(e) {
                            best.push(Cand { d, id: e });
                            if best.len() > ef {
                                best.pop();
                            }
                        }
                        bound = best.peek().map_or(f32::INFINITY, |c| c.d);
                    }
                }
                visited.fresh = fresh;
            }
            best.into_sorted_vec()
        })
    }

    /// The k nearest points to `q` (distance `1 - dot`), nearest first.
    pub fn search(
        &self,
        vectors: &[f32],
        dim: usize,
        q: &[f32],
        k: usize,
        ef: usize,
        allowed: Option<&Allowed>,
    ) -> Vec<Cand> {
        if self.n == 0 {
            return Vec::new();
        }
        let sp = Sp { v: vectors, dim };
        let start = self.descend(sp, q, 0);
        let mut found = self.search_layer(sp, q, &[start], ef.max(k), 0, allowed);
        found.truncate(k);
        found
    }

    /// The paper's heuristic: keep a candidate (nearest first) unless it is closer to an
    /// already kept one than to the base point.
    fn select(&self, sp: Sp, sorted: &[Cand], m: usize) -> Vec<u32> {
        let mut kept: Vec<u32> = Vec::with_capacity(m);
        for c in sorted {
            if kept.len() >= m {
                break;
            }
            let v = sp.at(c.id);
            let good = kept.iter().all(|&k| 1.0 - dot(v, sp.at(k)) >= c.d);
            if good {
                kept.push(c.id);
            }
        }
        kept
    }

    fn insert(&self, sp: Sp, id: u32) {
        let q = sp.at(id);
        let level = self.levels[id as usize];
        let top = level.min(self.max_level);
        let mut entry = vec![self.descend(sp, q, top)];
        for layer in (0..=top).rev() {
            let found = self.search_layer(sp, q, &entry, self.ef_construction, layer, None);
            let found: Vec<Cand> = found.into_iter().filter(|c| c.id != id).collect();
            let chosen = self.select(sp, &found, self.m);
            {
                let _own = self.locks[id as usize]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                self.set_links(id, layer, &chosen);
            }
            for &nb in &chosen {
                self.add_link(sp, nb, id, layer);
            }
            if !found.is_empty() {
                entry = found;
            }
        }
    }

    /// Add `to` to `from`'s list on `layer`; a full list is re-pruned by the heuristic.
    fn add_link(&self, sp: Sp, from: u32, to: u32, layer: u8) {
        let _guard = self.locks[from as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut ids = self.neighbours(from, layer);
        if ids.contains(&to) {
            return;
        }
        let cap = if layer == 0 { self.m0 } else { self.m };
        if ids.len() < cap {
            ids.push(to);
            self.set_links(from, layer, &ids);
            return;
        }
        let base = sp.at(from);
        ids.push(to);
        let mut cands: Vec<Cand> = ids
            .iter()
            .map(|&e| Cand {
                d: 1.0 - dot(base, sp.at(e)),
                id: e,
            })
            .collect();
        cands.sort_unstable();
        let kept = self.select(sp, &cands, cap);
        self.set_links(from, layer, &kept);
    }

    /// Re-link an unreachable point on layer 0: fresh out-links by the heuristic, and an
    /// in-link from each of its nearest neighbours, which replaces their farthest link when
    /// their list is full (so the point cannot be pruned away again).
    pub fn relink(&self, vectors: &[f32], dim: usize, id: u32) {
        let sp = Sp { v: vectors, dim };
        let q = sp.at(id);
        let start = self.descend(sp, q, 0);
        let found = self.search_layer(sp, q, &[start], self.ef_construction, 0, None);
        let found: Vec<Cand> = found.into_iter().filter(|c| c.id != id).collect();
        let chosen = self.select(sp, &found, self.m);
        self.set_links(id, 0, &chosen);
        for &nb in &chosen {
            let _guard = self.locks[nb as usize]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let mut ids = self.neighbours(nb, 0);
            if ids.contains(&id) {
                continue;
            }
            if ids.len() >= self.m0 {
                let base = sp.at(nb);
                let far = (0..ids.len())
                    .max_by(|&a, &b| {
                        let da = dot(base, sp.at(ids[a]));
                        let db = dot(base, sp.at(ids[b]));
                        db.total_cmp(&da)
                    })
                    .unwrap_or(0);
                ids[far] = id;
            } else {
                ids.push(id);
            }
            self.set_links(nb, 0, &ids);
        }
    }

    /// Remove every link to `id` on every layer. A test hook that plants an unreachable point
    /// (as a contended build or pruning can leave one) for the reachability check to find.
    #[doc(hidden)]
    pub fn cut_in_links(&self, id: u32) {
        for other in 0..self.n as u32 {
            for layer in 0..=self.levels[other as usize] {
                let ids = self.neighbours(other, layer);
                if ids.contains(&id) {
                    let kept: Vec<u32> = ids.into_iter().filter(|&x| x != id).collect();
                    self.set_links(other, layer, &kept);
                }
            }
        }
    }
}

/// On-disk form: `graph.hnsw.data` (header and levels) and `graph.hnsw.graph` (links).
impl Hnsw {
    pub fn save(&self, data: &Path, graph: &Path) -> Result<()> {
        let mut w = BufWriter::new(std::fs::File::create(data)?);
        w.write_all(DATA_MAGIC)?;
        for v in [
            self.n as u64,
            self.m as u64,
            self.ef_construction as u64,
            self.entry as u64,
            self.max_level as u64,
        ] {
            w.write_all(&v.to_le_bytes())?;
        }
        w.write_all(&self.levels)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        let mut w = BufWriter::new(std::fs::File::create(graph)?);
        w.write_all(GRAPH_MAGIC)?;
        w.write_all(&(self.n as u64).to_le_bytes())?;
        for a in self.layer0.iter().chain(&self.upper) {
            w.write_all(&a.load(Relaxed).to_le_bytes())?;
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(())
    }

    /// Read a saved graph over `n` points, checking every header field, size, count and id, so
    /// that a damaged file is an error and never a panic in a later search.
    pub fn load(data: &Path, graph: &Path, n: usize) -> Result<Self> {
        let bytes = std::fs::read(data).with_context(|| format!("reading {}", data.display()))?;
        let bad = |p: &Path, why: &str| anyhow::anyhow!("{}: {why}", p.display());
        if bytes.len() < 48 || &bytes[..8] != DATA_MAGIC {
            return Err(bad(data, "not an exemplar HNSW graph (bad header)"));
        }
        let word = |i: usize| u64::from_le_bytes(bytes[8 + 8 * i..16 + 8 * i].try_into().unwrap());
        let (gn, m, efc, entry, max_level) = (word(0), word(1), word(2), word(3), word(4));
        if gn as usize != n || !(2..=255).contains(&m) || bytes.len() != 48 + n {
            return Err(bad(
                data,
                &format!("graph of {gn} points (M {m}), index has {n}"),
            ));
        }
        let levels = bytes[48..].to_vec();
        let p = Params {
            m: m as usize,
            ef_construction: efc as usize,
            seed: 0,
        };
        let g = Self::with_levels(n, levels, &p);
        if entry != g.entry as u64 || max_level != g.max_level as u64 {
            return Err(bad(data, "entry point does not match the levels"));
        }
        g.read_links(graph)?;
        Ok(g)
    }

    fn read_links(&self, graph: &Path) -> Result<()> {
        let mut f =
            std::fs::File::open(graph).with_context(|| format!("opening {}", graph.display()))?;
        let want = 16 + 4 * (self.layer0.len() + self.upper.len()) as u64;
        if f.metadata()?.len() != want {
            bail!("{}: size does not match its data file", graph.display());
        }
        let mut head = [0u8; 16];
        f.read_exact(&mut head)?;
        if &head[..8] != GRAPH_MAGIC || u64::from_le_bytes(head[8..].try_into()?) != self.n as u64 {
            bail!("{}: not the graph of this data file", graph.display());
        }
        let mut r = std::io::BufReader::with_capacity(1 << 20, f);
        let mut buf = [0u8; 4];
        for a in self.layer0.iter().chain(&self.upper) {
            r.read_exact(&mut buf)?;
            a.store(u32::from_le_bytes(buf), Relaxed);
        }
        self.check_links()
            .with_context(|| format!("{}: damaged links", graph.display()))
    }

    fn check_links(&self) -> Result<()> {
        for id in 0..self.n as u32 {
            for layer in 0..=self.levels[id as usize] {
                let s = self.slots(id, layer);
                let c = s[0].load(Relaxed) as usize;
                if c >= s.len() {
                    bail!("point {id} has {c} links on layer {layer}");
                }
                for e in &s[1..=c] {
                    let e = e.load(Relaxed) as usize;
                    if e >= self.n || self.levels[e] < layer {
                        bail!("point {id} links to {e}, which is not on layer {layer}");
                    }
                }
            }
        }
        Ok(())
    }
}

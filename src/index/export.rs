//! `index export --format hnsw_rs`: our graph and vectors written as the dump that hnsw_rs 0.3.5
//! reloads with `HnswIo::new(dir, basename).load_hnsw::<f32, DistDot>()`, so an index built here
//! stays readable by hnsw_rs (the crate that held the graph before `exemplar.index.v2`).
//!
//! The layout below was learnt from hnsw_rs's reader (`hnswio.rs`); all integers are
//! native-endian, `usize` is 8 bytes. `BASENAME.hnsw.graph`:
//!
//! ```text
//! description  u32 0x002a6779 (v4) | u8 mode 1 (full ids) | u8 M | f64 level scale 1.0
//!              | u8 16 layers | usize ef_construction | usize points | usize dim
//!              | usize len + distance type name | usize len + value type name ("f32")
//! u8 16, then per layer l (a point's layer is its top level):
//!              u32 0x000a676f | usize points on l | per point (rank r):
//!                u32 0x000a678f | usize row | u8 l | i32 r
//!                | per layer 0..16: usize count, then count x (usize row | u8 layer | i32 rank | f32 distance)
//! entry point  usize row | u8 layer | i32 rank
//! ```
//!
//! `BASENAME.hnsw.data`: u32 0xa67f0000 | usize dim, then per point in the graph file's order
//! u32 0xa67f0000 | u64 row | u64 byte length | the f32 values.
//!
//! A point's hnsw_rs id is its row in `vectors.f32`, the same id our searches return.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::hnsw::Hnsw;
use super::simd::dot;
use super::Index;
use crate::fsio::write_atomically;

/// hnsw_rs's fixed number of layers (`NB_LAYER_MAX`); our levels stop at 15 as well.
const LAYERS: u8 = 16;
const MAGIC_DESCR_V4: u32 = 0x002a_6779;
const MAGIC_LAYER: u32 = 0x000a_676f;
const MAGIC_POINT: u32 = 0x000a_678f;
const MAGIC_DATA: u32 = 0xa67f_0000;

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub graph: PathBuf,
    pub data: PathBuf,
    pub points: usize,
    /// Points per hnsw_rs layer (a point counts on its top level only).
    pub per_layer: Vec<usize>,
}

/// Each point's hnsw_rs identity: its top level and its rank among the points of that level
/// (rows in increasing order).
struct Ranks {
    rank: Vec<i32>,
    by_layer: Vec<Vec<u32>>,
}

impl Ranks {
    fn new(g: &Hnsw) -> Self {
        let mut by_layer = vec![Vec::new(); LAYERS as usize];
        let mut rank = vec![0i32; g.len()];
        for id in 0..g.len() as u32 {
            let l = &mut by_layer[g.level(id) as usize];
            rank[id as usize] = l.len() as i32;
            l.push(id);
        }
        Self { rank, by_layer }
    }
}

/// Write `out/BASENAME.hnsw.graph` and `out/BASENAME.hnsw.data` (each written atomically, so a
/// failed export leaves no half file under the final name).
pub fn hnsw_rs(index: &Index, out: &Path, basename: &str) -> Result<Exported> {
    if cfg!(not(target_pointer_width = "64")) {
        bail!("the hnsw_rs format stores usize fields as 8 bytes: export on a 64-bit machine");
    }
    if basename.is_empty() || basename.contains(['/', '\\']) {
        bail!("--basename {basename:?}: a plain file name prefix is needed");
    }
    let g = index.graph();
    if g.is_empty() {
        bail!(
            "{}: an empty index has no graph to export",
            index.dir.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let ranks = Ranks::new(g);
    let graph = out.join(format!("{basename}.hnsw.graph"));
    let data = out.join(format!("{basename}.hnsw.data"));
    write_atomically(&graph, |w| write_graph(w, index, &ranks))
        .with_context(|| format!("writing {}", graph.display()))?;
    write_atomically(&data, |w| write_data(w, index, &ranks))
        .with_context(|| format!("writing {}", data.display()))?;
    Ok(Exported {
        graph,
        data,
        points: g.len(),
        per_layer: ranks.by_layer.iter().map(Vec::len).collect(),
    })
}

fn put_usize(w: &mut dyn Write, v: usize) -> std::io::Result<()> {
    w.write_all(&(v as u64).to_ne_bytes())
}

fn put_name(w: &mut dyn Write, name: &str) -> std::io::Result<()> {
    put_usize(w, name.len())?;
    w.write_all(name.as_bytes())
}

/// The description hnsw_rs checks before anything else: its reader refuses another distance
/// or value type by name, so the names are taken from the very types it will be loaded with.
fn write_description(w: &mut dyn Write, index: &Index) -> Result<()> {
    let g = index.graph();
    w.write_all(&MAGIC_DESCR_V4.to_ne_bytes())?;
    w.write_all(&[1u8, g.m() as u8])?; // mode 1: every id carries its (layer, rank)
    w.write_all(&1.0f64.to_ne_bytes())?; // level scale: hnsw_rs's default draw for later inserts
    w.write_all(&[LAYERS])?;
    put_usize(w, g.ef_construction())?;
    put_usize(w, g.len())?;
    put_usize(w, index.dim())?;
    put_name(w, std::any::type_name::<hnsw_rs::prelude::DistDot>())?;
    put_name(w, std::any::type_name::<f32>())?;
    Ok(())
}

fn write_graph(w: &mut dyn Write, index: &Index, ranks: &Ranks) -> Result<()> {
    write_description(w, index)?;
    let g = index.graph();
    w.write_all(&[LAYERS])?;
    for (l, ids) in ranks.by_layer.iter().enumerate() {
        w.write_all(&MAGIC_LAYER.to_ne_bytes())?;
        put_usize(w, ids.len())?;
        for (r, &id) in ids.iter().enumerate() {
            w.write_all(&MAGIC_POINT.to_ne_bytes())?;
            put_usize(w, id as usize)?;
            w.write_all(&[l as u8])?;
            w.write_all(&(r as i32).to_ne_bytes())?;
            write_links(w, index, ranks, id)?;
        }
    }
    let entry = g.entry();
    put_usize(w, entry as usize)?;
    w.write_all(&[g.level(entry)])?;
    w.write_all(&ranks.rank[entry as usize].to_ne_bytes())?;
    Ok(())
}

/// One point's lists on all 16 layers (empty above its level), each link with its distance
/// (hnsw_rs keeps lists sorted by it).
fn write_links(w: &mut dyn Write, index: &Index, ranks: &Ranks, id: u32) -> Result<()> {
    let g = index.graph();
    let v = index.vector(id as usize);
    for layer in 0..LAYERS {
        let links = if layer <= g.level(id) {
            g.neighbours(id, layer)
        } else {
            Vec::new()
        };
        put_usize(w, links.len())?;
        for e in links {
            put_usize(w, e as usize)?;
            w.write_all(&[g.level(e)])?;
            w.write_all(&ranks.rank[e as usize].to_ne_bytes())?;
            let d = 1.0 - dot(v, index.vector(e as usize));
            w.write_all(&d.to_ne_bytes())?;
        }
    }
    Ok(())
}

fn write_data(w: &mut dyn Write, index: &Index, ranks: &Ranks) -> Result<()> {
    w.write_all(&MAGIC_DATA.to_ne_bytes())?;
    put_usize(w, index.dim())?;
    let bytes = (index.dim() * 4) as u64;
    for &id in ranks.by_layer.iter().flatten() {
        w.write_all(&MAGIC_DATA.to_ne_bytes())?;
        w.write_all(&(id as u64).to_ne_bytes())?;
        w.write_all(&bytes.to_ne_bytes())?;
        for x in index.vector(id as usize) {
            w.write_all(&x.to_ne_bytes())?;
        }
    }
    Ok(())
}

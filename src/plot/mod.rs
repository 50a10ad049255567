//! `embed plot`: 2D and 3D maps of an extraction or an index, PNG and SVG.
//!
//! ```text
//! source (extraction folder | index) ── ids + colour column ──► stratified sample (by id hash)
//!        └── vectors of the sampled rows only ──► PCA (exact) | UMAP-style layout (PCA init)
//!                                                   └──► Scene ──► plotters: PNG / SVG
//! ```
//!
//! The query of `--highlight-query` is embedded with the index's own model and recipe and
//! searched exactly as `embed index query` searches (full scan below 5,000 vectors, else the
//! HNSW graph at the default ef), so the ringed points are the neighbours `solve --rag` sees.

pub mod data;
pub mod font;
pub mod pca;
pub mod render;
pub mod sample;
pub mod umap;

use anyhow::{bail, Context, Result};
use ndarray::{Array2, ArrayView2};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

pub use data::{Dataset, Source};
use render::{Highlight, LegendEntry, Scene, OTHER, PALETTE};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Principal components (exact): axes are directions of largest variance.
    Pca,
    /// UMAP-style neighbour-preserving layout (kNN graph + SGD), initialised from PCA.
    Umap,
}
crate::named_enum!(Method { Pca => "pca", Umap => "umap" });

#[derive(Debug, Clone)]
pub enum HighlightSpec {
    /// Embed `text` as a query with the index's model and ring its `k` nearest neighbours.
    Query {
        text: String,
        k: usize,
        ef: usize,
        model: Option<String>,
        device: crate::encoder::Device,
    },
    /// Ring these ids; the first is the anchor, joined by lines to the others.
    Ids(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct PlotConfig {
    pub source: Source,
    pub method: Method,
    pub dims: usize,
    pub color_by: Option<String>,
    /// Image files to write (format from each extension).
    pub outputs: Vec<PathBuf>,
    /// At most this many points (stratified by the colour field); highlighted rows come on top.
    pub sample: usize,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    /// 3D view angles (azimuth, elevation) in degrees, one panel each.
    pub views: Vec<(f64, f64)>,
    pub neighbors: usize,
    pub epochs: usize,
    pub highlight: Option<HighlightSpec>,
    pub export_projector: Option<PathBuf>,
    /// Legend entries before the rest are folded into "other".
    pub legend_max: usize,
    pub title: Option<String>,
}

impl Default for PlotConfig {
    fn default() -> Self {
        Self {
            source: Source::Embeddings(PathBuf::new()),
            method: Method::Pca,
            dims: 2,
            color_by: None,
            outputs: Vec::new(),
            sample: 20_000,
            seed: 42,
            width: 1400,
            height: 1000,
            views: vec![(35.0, 25.0)],
            neighbors: 15,
            epochs: 0,
            highlight: None,
            export_projector: None,
            legend_max: 10,
            title: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Timings {
    pub read: f64,
    pub project: f64,
    pub draw: f64,
    pub total: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlotSummary {
    /// Points drawn (the sample, plus highlighted rows).
    pub points: usize,
    /// Rows in the source.
    pub total: usize,
    pub method: Method,
    pub dims: usize,
    pub outputs: Vec<PathBuf>,
    /// For --highlight-query: the neighbour ids, nearest first (what `embed index query`
    /// returns); for --highlight-ids: the ids given.
    pub highlighted: Vec<String>,
    /// "exact" or "hnsw" for a query highlight.
    pub search: Option<String>,
    /// PCA only: each axis's share of the variance.
    pub explained_variance: Option<Vec<f64>>,
    /// Legend: (label, points).
    pub legend: Vec<(String, usize)>,
    pub projector: Option<PathBuf>,
    pub seconds: Timings,
    /// The 2D/3D coordinates of the drawn points, in `ids` order (not serialised).
    #[serde(skip)]
    pub coords: Array2<f32>,
    #[serde(skip)]
    pub ids: Vec<String>,
}

/// Make the map(s) described by `cfg`.
pub fn plot(cfg: &PlotConfig, progress: &dyn crate::progress::Progress) -> Result<PlotSummary> {
    let start = Instant::now();
    font::register();
    if cfg.dims != 2 && cfg.dims != 3 {
        bail!("--dims must be 2 or 3, got {}", cfg.dims);
    }
    if cfg.outputs.is_empty() && cfg.export_projector.is_none() {
        bail!("nothing to write: give --out (and/or --export-projector)");
    }
    if cfg.width < 200 || cfg.height < 150 {
        bail!(
            "--width/--height {}x{} is too small (at least 200x150)",
            cfg.width,
            cfg.height
        );
    }
    if cfg.sample == 0 {
        bail!("--sample must be at least 1");
    }
    let ds = Dataset::open(&cfg.source)?;
    if let Some(f) = &cfg.color_by {
        ds.check_field(f, "--color-by")?;
    }
    let (ids, labels) = ds.read_labels(cfg.color_by.as_deref())?;

    // Highlight: resolve to rows before sampling, so they are always drawn.
    let mut loaded: Option<crate::index::Index> = None;
    let mut query: Option<(String, Vec<f32>)> = None;
    let mut anchor_row: Option<usize> = None;
    let mut neighbour_rows: Vec<usize> = Vec::new();
    let mut highlighted: Vec<String> = Vec::new();
    let mut search = None;
    match &cfg.highlight {
        None => {}
        Some(HighlightSpec::Query {
            text,
            k,
            ef,
            model,
            device,
        }) => {
            let Source::Index(dir) = &cfg.source else {
                bail!("--highlight-query needs --index: the query is searched in an index, as `solve --rag` does");
            };
            let idx = crate::index::Index::load(dir)?;
            let encoder = crate::index::query_encoder(&idx.manifest, model.as_deref(), *device)?;
            let v = encoder
                .encode(&[text.as_str()], crate::encoder::TextKind::Query)?
                .vectors
                .remove(0);
            // The same choice `embed index query` makes by default.
            let opts = crate::index::SearchOptions {
                ef: *ef,
                ..Default::default()
            };
            let found = idx.search(&v, *k, &opts);
            search = Some(found.method.to_string());
            neighbour_rows = found.hits.iter().map(|h| h.row).collect();
            highlighted = neighbour_rows.iter().map(|&r| ids[r].clone()).collect();
            query = Some((text.clone(), v));
            loaded = Some(idx);
        }
        Some(HighlightSpec::Ids(list)) => {
            if list.is_empty() {
                bail!("--highlight-ids: no ids given");
            }
            let by_id: HashMap<&str, usize> = ids
                .iter()
                .enumerate()
                .map(|(i, s)| (s.as_str(), i))
                .collect();
            let mut rows = Vec::new();
            for id in list {
                match by_id.get(id.as_str()) {
                    Some(&r) => rows.push(r),
                    None => bail!(
                        "--highlight-ids: no record with id {id:?} in {} (ids look like {:?})",
                        ds.source.dir().display(),
                        ids.iter().take(3).collect::<Vec<_>>()
                    ),
                }
            }
            anchor_row = Some(rows[0]);
            neighbour_rows = rows[1..].to_vec();
            highlighted = list.clone();
        }
    }
    let mut forced = neighbour_rows.clone();
    forced.extend(anchor_row);
    let rows = sample::stratified(&ids, &labels, cfg.sample, cfg.seed, &forced);
    let (vectors, meta) = ds.read_rows(
        &rows,
        cfg.export_projector.is_some(),
        loaded.as_ref().map(|i| i.vectors.as_slice()),
    )?;
    drop(loaded);
    let n = rows.len();
    let x = Array2::from_shape_vec((n, ds.dim), vectors).context("vector buffer")?;
    let need = match cfg.method {
        Method::Pca => cfg.dims + 1,
        Method::Umap => (cfg.dims + 3).max(6),
    };
    if n < need {
        bail!(
            "too few points: {n} in {} (after --sample {}); a {}D {} map needs at least {need}",
            ds.source.dir().display(),
            cfg.sample,
            cfg.dims,
            method_name(cfg.method)
        );
    }
    let read_seconds = start.elapsed().as_secs_f64();

    // Projection.
    let t_proj = Instant::now();
    let pca = pca::Pca::fit(x.view(), cfg.dims, cfg.seed)?;
    let pca_coords = pca.transform(x.view());
    let (coords, axis_names, explained) = match cfg.method {
        Method::Pca => {
            let names = (0..cfg.dims)
                .map(|i| {
                    if cfg.dims == 2 {
                        format!("PC{} ({:.1}% of variance)", i + 1, 100.0 * pca.explained[i])
                    } else {
                        format!("PC{} ({:.1}%)", i + 1, 100.0 * pca.explained[i])
                    }
                })
                .collect();
            (pca_coords, names, Some(pca.explained.clone()))
        }
        Method::Umap => {
            let k = cfg.neighbors.min(n - 1).max(2);
            let bar = progress.task("kNN graph", Some(n as u64), "points");
            let knn = if n <= umap::EXACT_KNN_MAX {
                umap::knn_exact(x.view(), k, &*bar)
            } else {
                umap::knn_hnsw(x.view(), k, &*bar)
            };
            drop(bar);
            let bar = progress.task("layout", Some(0), "epochs");
            let opts = umap::UmapOptions {
                neighbors: k,
                epochs: cfg.epochs,
                seed: cfg.seed,
                learning_rate: 1.0,
            };
            let y = umap::layout(&knn, &pca_coords, &opts, &*bar)?;
            drop(bar);
            let names = (0..cfg.dims).map(|i| format!("UMAP-{}", i + 1)).collect();
            (y, names, None)
        }
    };
    let position = |r: usize| {
        rows.binary_search(&r)
            .expect("highlighted rows are sampled")
    };
    let highlight = match (&query, anchor_row) {
        (Some((text, v)), _) => {
            let anchor = match cfg.method {
                Method::Pca => {
                    let q = ArrayView2::from_shape((1, v.len()), v.as_slice())?;
                    pca.transform(q).row(0).to_vec()
                }
                Method::Umap => umap::place(x.view(), &coords, v, cfg.neighbors.min(n)),
            };
            Some(Highlight {
                anchor,
                anchor_label: format!("query: {}", short(text, 40)),
                neighbours: neighbour_rows.iter().map(|&r| position(r)).collect(),
            })
        }
        (None, Some(a)) => Some(Highlight {
            anchor: coords.row(position(a)).to_vec(),
            anchor_label: format!("id {}", short(&ids[a], 40)),
            neighbours: neighbour_rows.iter().map(|&r| position(r)).collect(),
        }),
        (None, None) => None,
    };
    let project_seconds = t_proj.elapsed().as_secs_f64();

    // Legend: categories by drawn count, the tail folded into "other".
    let t_draw = Instant::now();
    let point_labels: Vec<String> = rows
        .iter()
        .map(|&r| match (&cfg.color_by, &labels[r]) {
            (None, _) => "all points".to_string(),
            (Some(_), Some(v)) => v.clone(),
            (Some(_), None) => "(none)".to_string(),
        })
        .collect();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &point_labels {
        *counts.entry(l.as_str()).or_default() += 1;
    }
    let mut by_count: Vec<(&str, usize)> = counts.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let keep = if by_count.len() <= cfg.legend_max + 1 {
        by_count.len()
    } else {
        cfg.legend_max
    };
    let mut legend: Vec<LegendEntry> = by_count[..keep]
        .iter()
        .enumerate()
        .map(|(i, (l, c))| LegendEntry {
            label: l.to_string(),
            count: *c,
            color: PALETTE[i % PALETTE.len()],
        })
        .collect();
    let slot: HashMap<&str, usize> = by_count[..keep]
        .iter()
        .enumerate()
        .map(|(i, (l, _))| (*l, i))
        .collect();
    if keep < by_count.len() {
        let rest: usize = by_count[keep..].iter().map(|e| e.1).sum();
        legend.push(LegendEntry {
            label: format!("other ({} categories)", by_count.len() - keep),
            count: rest,
            color: OTHER,
        });
    }
    let category: Vec<usize> = point_labels
        .iter()
        .map(|l| slot.get(l.as_str()).copied().unwrap_or(keep))
        .collect();
    // Paint in a shuffled (seeded) order so no category is always on top.
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = sample::Rng::new(cfg.seed ^ 0xd1ce);
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let title = cfg.title.clone().unwrap_or_else(|| {
        format!(
            "{} · {} · {} {}D · {} of {} points",
            model_name(&ds.manifest.model),
            corpus_name(&ds.manifest),
            method_name(cfg.method),
            cfg.dims,
            render::thousands(n),
            render::thousands(ds.rows)
        )
    });
    let scene = Scene {
        title,
        legend_title: cfg.color_by.clone().unwrap_or_else(|| "points".into()),
        axis_names,
        coords,
        category,
        legend,
        order,
        highlight,
        views: cfg.views.clone(),
        width: cfg.width,
        height: cfg.height,
    };
    for out in &cfg.outputs {
        render::write(&scene, out)?;
    }
    if let Some(dir) = &cfg.export_projector {
        write_projector(dir, &ds.fields, &ids, &rows, x.view(), &meta)?;
    }
    let draw_seconds = t_draw.elapsed().as_secs_f64();
    Ok(PlotSummary {
        points: n,
        total: ds.rows,
        method: cfg.method,
        dims: cfg.dims,
        outputs: cfg.outputs.clone(),
        highlighted,
        search,
        explained_variance: explained,
        legend: scene
            .legend
            .iter()
            .map(|e| (e.label.clone(), e.count))
            .collect(),
        projector: cfg.export_projector.clone(),
        seconds: Timings {
            read: read_seconds,
            project: project_seconds,
            draw: draw_seconds,
            total: start.elapsed().as_secs_f64(),
        },
        coords: scene.coords,
        ids: rows.iter().map(|&r| ids[r].clone()).collect(),
    })
}

pub fn method_name(m: Method) -> &'static str {
    match m {
        Method::Pca => "PCA",
        Method::Umap => "UMAP-style",
    }
}

fn short(s: &str, n: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > n {
        format!("{}…", flat.chars().take(n).collect::<String>())
    } else {
        flat
    }
}

/// The model's folder or hub name, without the path leading to it.
fn model_name(model: &str) -> String {
    model
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_string()
}

/// The input files as `folder/file`, joined by " + ".
fn corpus_name(m: &crate::extract::manifest::ExtractManifest) -> String {
    let names: Vec<String> = m
        .inputs
        .iter()
        .map(|i| {
            let p = std::path::Path::new(&i.path);
            let file = p.file_name().map(|f| f.to_string_lossy().into_owned());
            let parent = p
                .parent()
                .and_then(|d| d.file_name())
                .map(|f| f.to_string_lossy().into_owned());
            match (parent, file) {
                (Some(d), Some(f)) => format!("{d}/{f}"),
                (None, Some(f)) => f,
                _ => i.path.clone(),
            }
        })
        .collect();
    if names.is_empty() {
        "corpus".into()
    } else {
        names.join(" + ")
    }
}

/// TensorBoard Embedding Projector files: vectors.tsv (one vector per line, tab-separated) and
/// metadata.tsv (a header row of field names, then one row per vector; tabs and newlines in
/// values become spaces, long texts are cut at 300 characters).
fn write_projector(
    dir: &std::path::Path,
    fields: &[String],
    ids: &[String],
    rows: &[usize],
    x: ArrayView2<f32>,
    meta: &[Vec<Option<String>>],
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::fsio::write_atomically(&dir.join("vectors.tsv"), |w| {
        for row in x.outer_iter() {
            let line: Vec<String> = row.iter().map(|v| v.to_string()).collect();
            writeln!(w, "{}", line.join("\t"))?;
        }
        Ok(())
    })?;
    let clean = |s: &str| -> String {
        let flat: String = s
            .chars()
            .map(|c| {
                if c == '\t' || c == '\n' || c == '\r' {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        if flat.chars().count() > 300 {
            format!("{}…", flat.chars().take(300).collect::<String>())
        } else {
            flat
        }
    };
    crate::fsio::write_atomically(&dir.join("metadata.tsv"), |w| {
        if meta.len() == rows.len() && !fields.is_empty() {
            writeln!(
                w,
                "{}",
                fields
                    .iter()
                    .map(|f| clean(f))
                    .collect::<Vec<_>>()
                    .join("\t")
            )?;
            for m in meta {
                let cells: Vec<String> = m
                    .iter()
                    .map(|c| c.as_deref().map(clean).unwrap_or_default())
                    .collect();
                writeln!(w, "{}", cells.join("\t"))?;
            }
        } else {
            // One column: the projector wants no header then.
            for &r in rows {
                writeln!(w, "{}", clean(&ids[r]))?;
            }
        }
        Ok(())
    })?;
    Ok(())
}

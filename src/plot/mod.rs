//! `embed plot`: 2D and 3D maps of an extraction or an index: PNG and SVG (plotters), and a
//! self-contained interactive HTML page (`html.rs`, `assets/map/`).
//!
//! ```text
//! source (extraction folder | index) ── ids + colour column ──► stratified sample (by id hash)
//!        └── vectors of the sampled rows only ──► PCA (exact) | UMAP-style layout (PCA init)
//!                                                   └──► Scene ──► plotters: PNG / SVG
//!                       (HTML: + id, source, text of the drawn rows) ──► html: one page
//! ```
//!
//! The query of `--highlight-query` is embedded with the index's own model and recipe and
//! searched exactly as `embed index query` searches (full scan below 5,000 vectors, else the
//! HNSW graph at the default ef), so the ringed points are the neighbours `solve --rag` sees.

pub mod data;
pub mod font;
pub mod html;
mod labels;
pub mod pca;
mod projector;
pub mod render;
pub mod sample;
pub mod text;
pub mod umap;

use anyhow::{bail, Context, Result};
use ndarray::{Array2, ArrayView2};
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

pub use data::{Dataset, Source};
use labels::{default_title, legend, paint_order, point_info, point_labels, text_field};
use projector::write_projector;
use render::{Highlight, Scene};

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
    check_config(cfg)?;
    let ds = Dataset::open(&cfg.source)?;
    if let Some(f) = &cfg.color_by {
        ds.check_field(f, "--color-by")?;
    }
    let (ids, labels) = ds.read_labels(cfg.color_by.as_deref())?;
    let mut marks = resolve_highlight(cfg, &ds, &ids)?;
    let drawn = read_sample(cfg, &ds, &ids, &labels, &mut marks)?;
    let read_seconds = start.elapsed().as_secs_f64();

    let t_proj = Instant::now();
    let proj = project(cfg, drawn.x.view(), progress)?;
    let highlight = place_highlight(cfg, &marks, &drawn, &proj, &ids)?;
    let project_seconds = t_proj.elapsed().as_secs_f64();

    let t_draw = Instant::now();
    let point_labels = point_labels(cfg, &drawn.rows, &labels);
    let (legend, category) = legend(&point_labels, cfg.legend_max);
    let scene = Scene {
        title: cfg
            .title
            .clone()
            .unwrap_or_else(|| default_title(cfg, &ds, drawn.rows.len())),
        legend_title: cfg.color_by.clone().unwrap_or_else(|| "points".into()),
        axis_names: proj.axis_names,
        coords: proj.coords,
        category,
        legend,
        order: paint_order(drawn.rows.len(), cfg.seed),
        highlight,
        views: cfg.views.clone(),
        width: cfg.width,
        height: cfg.height,
    };
    write_outputs(cfg, &ds, &ids, &drawn, &scene, &point_labels)?;
    let draw_seconds = t_draw.elapsed().as_secs_f64();
    Ok(PlotSummary {
        points: drawn.rows.len(),
        total: ds.rows,
        method: cfg.method,
        dims: cfg.dims,
        outputs: cfg.outputs.clone(),
        highlighted: marks.highlighted,
        search: marks.search,
        explained_variance: proj.explained,
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
        ids: drawn.rows.iter().map(|&r| ids[r].clone()).collect(),
    })
}

/// The images, HTML pages and projector files `cfg` asks for.
fn write_outputs(
    cfg: &PlotConfig,
    ds: &Dataset,
    ids: &[String],
    drawn: &Drawn,
    scene: &Scene,
    point_labels: &[String],
) -> Result<()> {
    if let Some(fields) = &drawn.tooltip {
        let info = point_info(cfg, ids, drawn, point_labels, fields);
        for out in cfg.outputs.iter().filter(|o| is_html(o)) {
            html::write(scene, &info, out)?;
        }
    }
    for out in cfg.outputs.iter().filter(|o| !is_html(o)) {
        render::write(scene, out)?;
    }
    if let Some(dir) = &cfg.export_projector {
        let x = drawn.x.view();
        write_projector(dir, &ds.fields, ids, &drawn.rows, x, &drawn.meta)?;
    }
    Ok(())
}

/// Refuse settings that cannot make a map, before anything is read.
fn check_config(cfg: &PlotConfig) -> Result<()> {
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
    Ok(())
}

/// What the highlight resolved to, in source rows. Resolved before sampling so that the marked
/// rows are always drawn.
#[derive(Default)]
struct Marks {
    /// The loaded index of a query highlight: its vectors are reused for the sampled rows.
    index: Option<crate::index::Index>,
    /// The query text and its embedding.
    query: Option<(String, Vec<f32>)>,
    /// `--highlight-ids`: the first id's row (the anchor).
    anchor_row: Option<usize>,
    /// Rows ringed and numbered, best first.
    neighbour_rows: Vec<usize>,
    /// What the summary reports as highlighted.
    highlighted: Vec<String>,
    /// "exact" or "hnsw" for a query.
    search: Option<String>,
}

fn resolve_highlight(cfg: &PlotConfig, ds: &Dataset, ids: &[String]) -> Result<Marks> {
    match &cfg.highlight {
        None => Ok(Marks::default()),
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
            let neighbour_rows: Vec<usize> = found.hits.iter().map(|h| h.row).collect();
            Ok(Marks {
                highlighted: neighbour_rows.iter().map(|&r| ids[r].clone()).collect(),
                neighbour_rows,
                search: Some(found.method.to_string()),
                query: Some((text.clone(), v)),
                index: Some(idx),
                anchor_row: None,
            })
        }
        Some(HighlightSpec::Ids(list)) => {
            let rows = rows_of_ids(list, ds, ids)?;
            Ok(Marks {
                anchor_row: Some(rows[0]),
                neighbour_rows: rows[1..].to_vec(),
                highlighted: list.clone(),
                ..Default::default()
            })
        }
    }
}

/// The rows of `--highlight-ids`, in the order given; an unknown id is an error naming it.
fn rows_of_ids(list: &[String], ds: &Dataset, ids: &[String]) -> Result<Vec<usize>> {
    if list.is_empty() {
        bail!("--highlight-ids: no ids given");
    }
    let by_id: HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    list.iter()
        .map(|id| match by_id.get(id.as_str()) {
            Some(&r) => Ok(r),
            None => bail!(
                "--highlight-ids: no record with id {id:?} in {} (ids look like {:?})",
                ds.source.dir().display(),
                ids.iter().take(3).collect::<Vec<_>>()
            ),
        })
        .collect()
}

/// The drawn rows and what was read of them.
struct Drawn {
    /// Source rows, ascending.
    rows: Vec<usize>,
    /// Their vectors, one row each.
    x: Array2<f32>,
    /// The fields read for each row: `columns`, in that order (empty when none are needed).
    meta: data::FieldColumns,
    columns: Vec<String>,
    /// HTML output: which of `columns` the tooltips show.
    tooltip: Option<TooltipFields>,
}

/// The fields an HTML map's tooltips show besides the id and the colour field.
struct TooltipFields {
    source: Option<String>,
    text: Option<String>,
}

/// Sample the rows (the highlighted ones always kept) and read their vectors: from the index
/// already loaded for a query, else from the source.
fn read_sample(
    cfg: &PlotConfig,
    ds: &Dataset,
    ids: &[String],
    labels: &[Option<String>],
    marks: &mut Marks,
) -> Result<Drawn> {
    let mut forced = marks.neighbour_rows.clone();
    forced.extend(marks.anchor_row);
    let rows = sample::stratified(ids, labels, cfg.sample, cfg.seed, &forced);
    let loaded = marks.index.take();
    let tooltip = cfg
        .outputs
        .iter()
        .any(|o| is_html(o))
        .then(|| TooltipFields {
            source: ds
                .fields
                .iter()
                .find(|f| *f == "source" && cfg.color_by.as_deref() != Some("source"))
                .cloned(),
            text: text_field(ds),
        });
    let columns: Vec<String> = if cfg.export_projector.is_some() {
        ds.fields.clone()
    } else {
        let t = tooltip.as_ref();
        t.into_iter()
            .flat_map(|t| t.source.iter().chain(&t.text).cloned())
            .collect()
    };
    let (vectors, meta) = ds.read_rows(
        &rows,
        &columns,
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
    Ok(Drawn {
        rows,
        x,
        meta,
        columns,
        tooltip,
    })
}

/// The projected points and how to label the axes.
struct Projection {
    coords: Array2<f32>,
    axis_names: Vec<String>,
    /// PCA: each axis's share of the variance.
    explained: Option<Vec<f64>>,
    /// Also fitted for the UMAP-style layout (its initial positions).
    pca: pca::Pca,
}

fn project(
    cfg: &PlotConfig,
    x: ArrayView2<f32>,
    progress: &dyn crate::progress::Progress,
) -> Result<Projection> {
    let pca = pca::Pca::fit(x, cfg.dims, cfg.seed)?;
    let pca_coords = pca.transform(x);
    Ok(match cfg.method {
        Method::Pca => Projection {
            coords: pca_coords,
            axis_names: (0..cfg.dims)
                .map(|i| {
                    let share = 100.0 * pca.explained[i];
                    if cfg.dims == 2 {
                        format!("PC{} ({share:.1}% of variance)", i + 1)
                    } else {
                        format!("PC{} ({share:.1}%)", i + 1)
                    }
                })
                .collect(),
            explained: Some(pca.explained.clone()),
            pca,
        },
        Method::Umap => Projection {
            coords: umap_layout(cfg, x, &pca_coords, progress)?,
            axis_names: (0..cfg.dims).map(|i| format!("UMAP-{}", i + 1)).collect(),
            explained: None,
            pca,
        },
    })
}

/// kNN graph (exact up to `EXACT_KNN_MAX` points, else HNSW), then the SGD layout from `init`.
fn umap_layout(
    cfg: &PlotConfig,
    x: ArrayView2<f32>,
    init: &Array2<f32>,
    progress: &dyn crate::progress::Progress,
) -> Result<Array2<f32>> {
    let n = x.nrows();
    let k = cfg.neighbors.min(n - 1).max(2);
    let bar = progress.task("kNN graph", Some(n as u64), "points");
    let knn = if n <= umap::EXACT_KNN_MAX {
        umap::knn_exact(x, k, &*bar)
    } else {
        umap::knn_hnsw(x, k, &*bar)
    };
    drop(bar);
    let bar = progress.task("layout", Some(0), "epochs");
    let opts = umap::UmapOptions {
        neighbors: k,
        epochs: cfg.epochs,
        seed: cfg.seed,
        learning_rate: 1.0,
    };
    umap::layout(&knn, init, &opts, &*bar)
}

/// Where the marks go on the map: a query is projected like a point (PCA) or placed among its
/// nearest drawn points (UMAP-style, which has no transform); an id anchor is its own point.
fn place_highlight(
    cfg: &PlotConfig,
    marks: &Marks,
    drawn: &Drawn,
    proj: &Projection,
    ids: &[String],
) -> Result<Option<Highlight>> {
    let position = |r: usize| {
        drawn
            .rows
            .binary_search(&r)
            .expect("highlighted rows are sampled")
    };
    let neighbours = marks.neighbour_rows.iter().map(|&r| position(r)).collect();
    Ok(match (&marks.query, marks.anchor_row) {
        (Some((text, v)), _) => {
            let anchor = match cfg.method {
                Method::Pca => {
                    let q = ArrayView2::from_shape((1, v.len()), v.as_slice())?;
                    proj.pca.transform(q).row(0).to_vec()
                }
                Method::Umap => {
                    let k = cfg.neighbors.min(drawn.rows.len());
                    umap::place(drawn.x.view(), &proj.coords, v, k)
                }
            };
            Some(Highlight {
                anchor,
                anchor_label: format!("query: {}", text::short(text, 40)),
                neighbours,
            })
        }
        (None, Some(a)) => Some(Highlight {
            anchor: proj.coords.row(position(a)).to_vec(),
            anchor_label: format!("id {}", text::short(&ids[a], 40)),
            neighbours,
        }),
        (None, None) => None,
    })
}

fn is_html(path: &std::path::Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"))
}

pub fn method_name(m: Method) -> &'static str {
    match m {
        Method::Pca => "PCA",
        Method::Umap => "UMAP-style",
    }
}

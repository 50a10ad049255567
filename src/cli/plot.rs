//! `embed plot` arguments and glue.

use anyhow::{bail, Result};
use clap::{ArgGroup, Args};
use std::io::Write;
use std::path::PathBuf;

use super::names;
use super::progress::Bars;
use crate::encoder::Device;
use crate::plot::{HighlightSpec, Method, PlotConfig, Source};

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("source").required(true).args(["embeddings", "index"])))]
#[command(group(ArgGroup::new("mark").args(["highlight_query", "highlight_ids"])))]
pub struct PlotArgs {
    /// An `embed extract` output folder (manifest.json + shard-*.parquet).
    #[arg(long)]
    pub embeddings: Option<PathBuf>,
    /// An index folder (`embed index build`), e.g. indexes/math.
    #[arg(long)]
    pub index: Option<PathBuf>,
    /// Projection: exact PCA, or a UMAP-style neighbour-preserving layout.
    #[arg(long, default_value = "pca", value_parser = names::<Method>(Method::NAMES))]
    pub method: Method,
    /// 2 or 3 dimensions.
    #[arg(long, default_value_t = 2)]
    pub dims: usize,
    /// Field that colours the points (e.g. subject, source, level). Without it, one colour.
    #[arg(long)]
    pub color_by: Option<String>,
    /// File to write; .png, .svg or .html (an interactive page) by extension (see --formats).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write these formats beside --out, e.g. `png,svg,html` (replaces --out's extension).
    #[arg(long, value_delimiter = ',')]
    pub formats: Vec<String>,
    /// At most this many points, stratified by the colour field (deterministic; highlighted
    /// points are always drawn).
    #[arg(long, default_value_t = 20_000)]
    pub sample: usize,
    /// Seed of the sample, the layout and the paint order.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[command(flatten)]
    pub look: LookArgs,
    /// UMAP-style: neighbours per point in the kNN graph.
    #[arg(long, default_value_t = 15)]
    pub neighbors: usize,
    /// UMAP-style: optimisation epochs [default: 500 up to 10,000 points, else 200].
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub epochs: usize,
    #[command(flatten)]
    pub highlight: HighlightArgs,
    /// Also write vectors.tsv + metadata.tsv (the sampled rows) for the TensorBoard Embedding
    /// Projector into this folder.
    #[arg(long)]
    pub export_projector: Option<PathBuf>,
    /// Print the summary (points, outputs, highlighted ids, timings) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// Marking a query's neighbours or given ids on the map.
#[derive(Args, Debug)]
pub struct HighlightArgs {
    /// Embed this text as a query with the index's model and mark it and its --k neighbours
    /// (needs --index).
    #[arg(long, requires = "index")]
    pub highlight_query: Option<String>,
    /// Neighbours of --highlight-query to mark.
    #[arg(long, default_value_t = 4)]
    pub k: usize,
    /// HNSW candidate list size for the query search (indexes of 5,000+ vectors).
    #[arg(long, default_value_t = crate::index::DEFAULT_EF)]
    pub ef: usize,
    /// Mark these ids (comma-separated); the first is joined by lines to the others.
    #[arg(long, value_delimiter = ',')]
    pub highlight_ids: Vec<String>,
    /// Model folder for --highlight-query, when it moved since the index was built.
    #[arg(long)]
    pub model: Option<String>,
    /// Device for --highlight-query's embedding: `cpu`, or `cuda:N` with a `cuda` build.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
}

/// The picture: size, 3D angles, legend and title.
#[derive(Args, Debug)]
pub struct LookArgs {
    /// Image width in pixels.
    #[arg(long, default_value_t = 1400)]
    pub width: u32,
    /// Image height in pixels.
    #[arg(long, default_value_t = 1000)]
    pub height: u32,
    /// 3D view angle in degrees: azimuth (about the vertical axis), elevation.
    #[arg(long, value_name = "AZ,EL", default_value = "35,25")]
    pub view: String,
    /// 3D: number of views in one image (1, 2 or 4; 4 = a 2x2 grid of angles around --view).
    #[arg(long, default_value_t = 1)]
    pub views: usize,
    /// Legend entries shown; smaller categories are folded into "other".
    #[arg(long, default_value_t = 10)]
    pub legend_max: usize,
    /// Title [default: model · corpus · method · points].
    #[arg(long)]
    pub title: Option<String>,
}

fn parse_view(s: &str) -> Result<(f64, f64)> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    match parts.as_slice() {
        [a, e] => match (a.parse::<f64>(), e.parse::<f64>()) {
            (Ok(a), Ok(e)) => Ok((a, e)),
            _ => bail!("--view {s:?}: expected AZ,EL in degrees, e.g. 35,25"),
        },
        _ => bail!("--view {s:?}: expected AZ,EL in degrees, e.g. 35,25"),
    }
}

/// The angles of `count` views starting at `base`: 2 = also 90 degrees round; 4 = also from the
/// opposite side below, and from high above (a 2x2 grid).
pub fn view_grid(base: (f64, f64), count: usize) -> Result<Vec<(f64, f64)>> {
    let (az, el) = base;
    Ok(match count {
        1 => vec![(az, el)],
        2 => vec![(az, el), (az + 90.0, el)],
        4 => vec![
            (az, el),
            (az + 90.0, el),
            (az + 180.0, -el),
            (az + 45.0, (el + 50.0).min(89.0)),
        ],
        n => bail!("--views {n}: choose 1, 2 or 4"),
    })
}

impl PlotArgs {
    pub fn to_config(&self) -> Result<PlotConfig> {
        let source = match (&self.embeddings, &self.index) {
            (Some(e), None) => Source::Embeddings(e.clone()),
            (None, Some(i)) => Source::Index(i.clone()),
            _ => bail!("give one of --embeddings DIR or --index DIR"),
        };
        let mut outputs = Vec::new();
        if let Some(out) = &self.out {
            if self.formats.is_empty() {
                outputs.push(out.clone());
            } else {
                for f in &self.formats {
                    let f = f.trim().to_ascii_lowercase();
                    if !["png", "svg", "html"].contains(&f.as_str()) {
                        bail!("--formats: unknown format {f:?}; use png, svg and/or html");
                    }
                    outputs.push(out.with_extension(&f));
                }
            }
        } else if !self.formats.is_empty() {
            bail!("--formats needs --out (the file name to use)");
        }
        if self.look.views != 1 && self.dims != 3 {
            bail!("--views applies to 3D maps (--dims 3)");
        }
        let highlight = if let Some(text) = &self.highlight.highlight_query {
            if self.highlight.k == 0 {
                bail!("--k must be at least 1");
            }
            Some(HighlightSpec::Query {
                text: text.clone(),
                k: self.highlight.k,
                ef: self.highlight.ef,
                model: self.highlight.model.clone(),
                device: self.highlight.device,
            })
        } else if !self.highlight.highlight_ids.is_empty() {
            Some(HighlightSpec::Ids(self.highlight.highlight_ids.clone()))
        } else {
            None
        };
        Ok(PlotConfig {
            source,
            method: self.method,
            dims: self.dims,
            color_by: self.color_by.clone(),
            outputs,
            sample: self.sample,
            seed: self.seed,
            width: self.look.width,
            height: self.look.height,
            views: view_grid(parse_view(&self.look.view)?, self.look.views)?,
            neighbors: self.neighbors,
            epochs: self.epochs,
            highlight,
            export_projector: self.export_projector.clone(),
            legend_max: self.look.legend_max,
            title: self.look.title.clone(),
        })
    }
}

pub fn run(a: PlotArgs) -> Result<()> {
    let cfg = a.to_config()?;
    let s = crate::plot::plot(&cfg, &Bars::new(a.quiet))?;
    if a.json {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", serde_json::to_string(&s)?)?;
    }
    let outs: Vec<String> = s
        .outputs
        .iter()
        .map(|p| p.display().to_string())
        .chain(
            s.projector
                .iter()
                .map(|p| format!("{}/{{vectors,metadata}}.tsv", p.display())),
        )
        .collect();
    eprintln!(
        "plot: {} of {} points, {} {}D in {:.2} s (read {:.2} s, project {:.2} s, draw {:.2} s) -> {}",
        s.points,
        s.total,
        crate::plot::method_name(s.method),
        s.dims,
        s.seconds.total,
        s.seconds.read,
        s.seconds.project,
        s.seconds.draw,
        outs.join(", ")
    );
    if !s.highlighted.is_empty() {
        eprintln!("highlighted: {}", s.highlighted.join(", "));
    }
    Ok(())
}

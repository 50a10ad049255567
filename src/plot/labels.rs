//! What the map says about its points: legend labels and categories, paint order, tooltip
//! fields and the default title.

use std::collections::{BTreeMap, HashMap};

use super::render::{self, LegendEntry, OTHER, PALETTE};
use super::{html, method_name, sample, text, Dataset, Drawn, PlotConfig, TooltipFields};
/// The colour-field value of each drawn point as its legend label.
pub(super) fn point_labels(
    cfg: &PlotConfig,
    rows: &[usize],
    labels: &[Option<String>],
) -> Vec<String> {
    rows.iter()
        .map(|&r| match (&cfg.color_by, &labels[r]) {
            (None, _) => "all points".to_string(),
            (Some(_), Some(v)) => v.clone(),
            (Some(_), None) => "(none)".to_string(),
        })
        .collect()
}

/// Legend entries (categories by drawn count, largest first; past `legend_max` the tail is
/// folded into one grey "other" entry) and each point's entry.
pub(super) fn legend(point_labels: &[String], legend_max: usize) -> (Vec<LegendEntry>, Vec<usize>) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for l in point_labels {
        *counts.entry(l.as_str()).or_default() += 1;
    }
    let mut by_count: Vec<(&str, usize)> = counts.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    // Folding a single category into "other" would save no line.
    let keep = if by_count.len() <= legend_max + 1 {
        by_count.len()
    } else {
        legend_max
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
    if keep < by_count.len() {
        legend.push(LegendEntry {
            label: format!("other ({} categories)", by_count.len() - keep),
            count: by_count[keep..].iter().map(|e| e.1).sum(),
            color: OTHER,
        });
    }
    let slot: HashMap<&str, usize> = by_count[..keep]
        .iter()
        .enumerate()
        .map(|(i, (l, _))| (*l, i))
        .collect();
    let category = point_labels
        .iter()
        .map(|l| slot.get(l.as_str()).copied().unwrap_or(keep))
        .collect();
    (legend, category)
}

/// A shuffled (seeded) paint order, so that no category is always on top.
pub(super) fn paint_order(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = sample::Rng::new(seed ^ 0xd1ce);
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    order
}

/// The field holding the problem text: the first field of the extraction's text template
/// (`{problem}`) that the records kept, else a field with a usual name.
pub(super) fn text_field(ds: &Dataset) -> Option<String> {
    let has = |f: &str| ds.fields.iter().any(|g| g == f) && f != "id";
    ds.manifest
        .text
        .fields()
        .into_iter()
        .find(|f| has(f))
        .or_else(|| {
            ["problem", "text", "question"]
                .into_iter()
                .find(|f| has(f))
                .map(String::from)
        })
}

/// What the HTML map's tooltips show for each drawn point: its id, the colour field, the
/// source field and the first `html::TEXT_CHARS` characters of its text.
pub(super) fn point_info(
    cfg: &PlotConfig,
    ids: &[String],
    drawn: &Drawn,
    point_labels: &[String],
    tooltip: &TooltipFields,
) -> html::PointInfo {
    let column = |name: &str| -> Vec<Option<String>> {
        let c = drawn.columns.iter().position(|f| f == name);
        (0..drawn.rows.len())
            .map(|i| c.and_then(|c| drawn.meta[i][c].clone()))
            .collect()
    };
    let mut fields = Vec::new();
    if let Some(f) = &cfg.color_by {
        fields.push((f.clone(), point_labels.iter().cloned().map(Some).collect()));
    }
    if let Some(s) = &tooltip.source {
        fields.push((s.clone(), column(s)));
    }
    let text = tooltip.text.as_ref().map(|t| {
        let texts = column(t)
            .iter()
            .map(|v| text::short(v.as_deref().unwrap_or(""), html::TEXT_CHARS))
            .collect();
        (t.clone(), texts)
    });
    html::PointInfo {
        ids: drawn.rows.iter().map(|&r| ids[r].clone()).collect(),
        fields,
        text,
    }
}

/// "model · corpus files · method nD · drawn of total points".
pub(super) fn default_title(cfg: &PlotConfig, ds: &Dataset, n: usize) -> String {
    format!(
        "{} · {} · {} {}D · {} of {} points",
        model_name(&ds.manifest.model),
        corpus_name(&ds.manifest),
        method_name(cfg.method),
        cfg.dims,
        render::thousands(n),
        render::thousands(ds.rows)
    )
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

//! Drawing a projected scene with plotters, to PNG or SVG.
//!
//! 2D maps use a plotters cartesian chart (mesh, ticks, axis descriptions). 3D maps are drawn as
//! an orthographic projection computed here (rotate by azimuth about the vertical axis, tilt by
//! elevation) so the points can be painted far to near (correct occlusion) and the axes carry
//! their names, which plotters' own 3D chart does not offer. Text uses the DejaVu Sans face
//! registered by `super::font`, so nothing depends on system fonts.

use anyhow::{anyhow, bail, Context, Result};
use ndarray::Array2;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

pub const FONT: &str = "sans-serif";

/// Category colours (colour-blind friendly order); "other" is grey.
pub const PALETTE: [RGBColor; 12] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
    RGBColor(57, 59, 121),
    RGBColor(255, 187, 120),
    RGBColor(152, 223, 138),
];
pub const OTHER: RGBColor = RGBColor(170, 170, 170);

#[derive(Debug, Clone)]
pub struct LegendEntry {
    pub label: String,
    pub count: usize,
    pub color: RGBColor,
}

#[derive(Debug, Clone)]
pub struct Highlight {
    /// Position of the query (or first highlighted id) in projected coordinates.
    pub anchor: Vec<f32>,
    pub anchor_label: String,
    /// Indices (into the scene's points) of the neighbours, best first.
    pub neighbours: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct Scene {
    pub title: String,
    pub legend_title: String,
    /// One name per projected dimension (axis descriptions).
    pub axis_names: Vec<String>,
    /// n x dims (2 or 3).
    pub coords: Array2<f32>,
    /// Legend entry of each point.
    pub category: Vec<usize>,
    pub legend: Vec<LegendEntry>,
    /// Order in which points are painted (2D; 3D paints far to near).
    pub order: Vec<usize>,
    pub highlight: Option<Highlight>,
    /// (azimuth, elevation) in degrees, one panel each (3D only).
    pub views: Vec<(f64, f64)>,
    pub width: u32,
    pub height: u32,
}

fn de<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing failed: {e:?}")
}

/// Write the scene to `path` (format from the extension: png or svg), atomically.
pub fn write(scene: &Scene, path: &Path) -> Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .unwrap_or_default();
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plot".into());
    // The temporary name keeps the extension: the PNG encoder picks the format from it.
    let tmp = dir.join(format!(".{stem}.tmp-{}.{ext}", std::process::id()));
    let size = (scene.width, scene.height);
    let result = match ext.as_str() {
        "png" => draw(BitMapBackend::new(&tmp, size).into_drawing_area(), scene),
        "svg" => draw(SVGBackend::new(&tmp, size).into_drawing_area(), scene),
        other => bail!(
            "{}: unknown format {other:?}; use .png, .svg or .html (or --formats png,svg,html)",
            path.display()
        ),
    };
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("moving {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

fn text(size: f64) -> TextStyle<'static> {
    (FONT, size).into_font().color(&BLACK)
}

fn point_radius(n: usize) -> i32 {
    match n {
        0..=1_000 => 4,
        1_001..=5_000 => 3,
        _ => 2,
    }
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, scene: &Scene) -> Result<()> {
    super::font::register();
    let (w, h) = (scene.width as f64, scene.height as f64);
    let f = (w.min(h) / 55.0).clamp(10.0, 22.0);
    root.fill(&WHITE).map_err(de)?;
    let (title_area, body) = root.split_vertically((f * 2.6) as u32);
    title_area
        .draw(&Text::new(
            scene.title.clone(),
            ((scene.width / 2) as i32, (f * 1.4) as i32),
            text(f * 1.3).pos(Pos::new(HPos::Center, VPos::Center)),
        ))
        .map_err(de)?;
    let longest = scene
        .legend
        .iter()
        .map(|e| e.label.chars().count() + 8 + e.count.to_string().len())
        .chain([scene.legend_title.chars().count(), 16])
        .chain(
            scene
                .highlight
                .iter()
                .flat_map(|hl| [hl.anchor_label.chars().count() + 3, 33]),
        )
        .max()
        .unwrap_or(16);
    let legend_w = ((longest as f64 * f * 0.62 + f * 3.0) as u32).min((w * 0.35) as u32);
    let (plot_area, legend_area) = body.split_horizontally(scene.width - legend_w);
    match scene.coords.ncols() {
        2 => draw_2d(&plot_area, scene, f)?,
        3 => {
            let views = if scene.views.is_empty() {
                vec![(35.0, 25.0)]
            } else {
                scene.views.clone()
            };
            let panels = match views.len() {
                1 => vec![plot_area.clone()],
                2 => plot_area.split_evenly((1, 2)),
                3 | 4 => plot_area.split_evenly((2, 2)),
                n => bail!("{n} views: choose 1, 2 or 4"),
            };
            for (panel, &view) in panels.iter().zip(&views) {
                draw_3d(panel, scene, view, f, views.len() > 1)?;
            }
        }
        d => bail!("cannot draw {d} dimensions"),
    }
    draw_legend(&legend_area, scene, f)?;
    root.present().map_err(de)?;
    Ok(())
}

fn padded(lo: f32, hi: f32) -> std::ops::Range<f64> {
    let (lo, hi) = (lo as f64, hi as f64);
    let span = (hi - lo).max(1e-9);
    (lo - 0.04 * span)..(hi + 0.04 * span)
}

fn draw_2d<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, scene: &Scene, f: f64) -> Result<()> {
    let c = &scene.coords;
    let mut xs: Vec<f32> = c.column(0).to_vec();
    let mut ys: Vec<f32> = c.column(1).to_vec();
    if let Some(hl) = &scene.highlight {
        xs.push(hl.anchor[0]);
        ys.push(hl.anchor[1]);
    }
    let (x0, x1) = min_max(xs);
    let (y0, y1) = min_max(ys);
    let mut chart = ChartBuilder::on(area)
        .margin((f * 0.8) as i32)
        .x_label_area_size((f * 3.2) as i32)
        .y_label_area_size((f * 4.2) as i32)
        .build_cartesian_2d(padded(x0, x1), padded(y0, y1))
        .map_err(de)?;
    chart
        .configure_mesh()
        .x_desc(scene.axis_names[0].as_str())
        .y_desc(scene.axis_names[1].as_str())
        .label_style(text(f * 0.85))
        .axis_desc_style(text(f))
        .bold_line_style(RGBColor(228, 228, 228))
        .light_line_style(RGBColor(244, 244, 244))
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&|v| tick(*v, (x1 - x0) as f64))
        .y_label_formatter(&|v| tick(*v, (y1 - y0) as f64))
        .draw()
        .map_err(de)?;
    let r = point_radius(c.nrows());
    chart
        .draw_series(scene.order.iter().map(|&i| {
            let color = scene.legend[scene.category[i]].color;
            Circle::new(
                (c[[i, 0]] as f64, c[[i, 1]] as f64),
                r,
                color.mix(0.72).filled(),
            )
        }))
        .map_err(de)?;
    if let Some(hl) = &scene.highlight {
        // Marks are drawn in the area's pixels, as in 3D: chart coordinates -> backend pixels
        // -> relative to the area.
        let base = area.get_base_pixel();
        let px = |x: f32, y: f32| {
            let (bx, by) = chart.backend_coord(&(x as f64, y as f64));
            (bx - base.0, by - base.1)
        };
        let neighbours: Vec<(i32, i32)> = hl
            .neighbours
            .iter()
            .map(|&i| px(c[[i, 0]], c[[i, 1]]))
            .collect();
        let style = MarkStyle {
            radius: r,
            rank_size: f * 0.9,
            inner_ring: true,
        };
        draw_marks(area, px(hl.anchor[0], hl.anchor[1]), &neighbours, &style)?;
    }
    Ok(())
}

/// How the highlight is drawn: ring sizes follow the point radius.
struct MarkStyle {
    radius: i32,
    rank_size: f64,
    /// A white ring inside the black one (2D, where points are dense under it).
    inner_ring: bool,
}

/// The highlight, in `area`'s pixels: lines from the anchor to the neighbours, each neighbour
/// ringed and numbered by rank (1 = nearest), then the anchor as a cross on a white disc on top.
fn draw_marks<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    anchor: (i32, i32),
    neighbours: &[(i32, i32)],
    style: &MarkStyle,
) -> Result<()> {
    let r = style.radius;
    for &p in neighbours {
        area.draw(&PathElement::new(
            vec![anchor, p],
            BLACK.mix(0.8).stroke_width(2),
        ))
        .map_err(de)?;
    }
    for (rank, &p) in neighbours.iter().enumerate() {
        area.draw(&Circle::new(p, r + 5, BLACK.stroke_width(2)))
            .map_err(de)?;
        if style.inner_ring {
            area.draw(&Circle::new(p, r + 3, WHITE.stroke_width(1)))
                .map_err(de)?;
        }
        area.draw(&Text::new(
            format!("{}", rank + 1),
            p,
            text(style.rank_size).pos(Pos::new(HPos::Left, VPos::Bottom)),
        ))
        .map_err(de)?;
    }
    area.draw(&Circle::new(anchor, r + 6, WHITE.filled()))
        .map_err(de)?;
    area.draw(&Circle::new(anchor, r + 6, BLACK.stroke_width(2)))
        .map_err(de)?;
    area.draw(&Cross::new(anchor, r + 4, BLACK.stroke_width(3)))
        .map_err(de)?;
    Ok(())
}

/// A tick label with as many decimals as the axis span needs, and no "-0".
fn tick(v: f64, span: f64) -> String {
    let decimals = if span >= 20.0 {
        0
    } else if span >= 2.0 {
        1
    } else if span >= 0.2 {
        2
    } else {
        3
    };
    let s = format!("{v:.decimals$}");
    if s.trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        s.trim_start_matches('-').to_string()
    } else {
        s
    }
}

/// The smallest and largest value.
pub(super) fn min_max(v: impl IntoIterator<Item = f32>) -> (f32, f32) {
    v.into_iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        })
}

/// Orthographic view: (screen x, screen y, depth; larger depth = farther).
fn project(p: [f64; 3], az: f64, el: f64) -> (f64, f64, f64) {
    let (sa, ca) = az.to_radians().sin_cos();
    let (se, ce) = el.to_radians().sin_cos();
    let xr = p[0] * ca - p[1] * sa;
    let yr = p[0] * sa + p[1] * ca;
    (xr, yr * se + p[2] * ce, yr * ce - p[2] * se)
}

/// One 3D panel's mapping from data to the panel's pixels: one common scale on all axes (so
/// distances stay comparable), the data centred in the cube [-1, 1]³, then `project`.
struct View3 {
    centre: [f64; 3],
    half: f64,
    az: f64,
    el: f64,
    /// Pixel position of the cube's centre, and pixels per unit.
    cx: f64,
    cy: f64,
    scale: f64,
}

impl View3 {
    fn new(coords: &Array2<f32>, (aw, ah): (u32, u32), top: f64, (az, el): (f64, f64)) -> Self {
        let mut centre = [0f64; 3];
        let mut half = 1e-9f64;
        for (t, centre_t) in centre.iter_mut().enumerate() {
            let (lo, hi) = min_max(coords.column(t).iter().copied());
            *centre_t = (lo as f64 + hi as f64) / 2.0;
            half = half.max((hi as f64 - lo as f64) / 2.0);
        }
        Self {
            centre,
            half,
            az,
            el,
            cx: aw as f64 / 2.0,
            cy: top + (ah as f64 - top) / 2.0,
            // The cube's diagonal stays inside the panel at every angle.
            scale: (aw as f64).min(ah as f64 - top) / 2.0 / 2.15,
        }
    }

    /// Pixel position and depth of a point of the unit cube.
    fn px(&self, p: [f64; 3]) -> ((i32, i32), f64) {
        let (x, y, d) = project(p, self.az, self.el);
        (
            (
                (self.cx + x * self.scale) as i32,
                (self.cy - y * self.scale) as i32,
            ),
            d,
        )
    }

    /// Pixel position and depth of a data point.
    fn data(&self, p: [f32; 3]) -> ((i32, i32), f64) {
        let unit = |t: usize| (p[t] as f64 - self.centre[t]) / self.half;
        self.px([unit(0), unit(1), unit(2)])
    }

    fn row(&self, c: &Array2<f32>, i: usize) -> ((i32, i32), f64) {
        self.data([c[[i, 0]], c[[i, 1]], c[[i, 2]]])
    }
}

fn draw_3d<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    scene: &Scene,
    (az, el): (f64, f64),
    f: f64,
    caption: bool,
) -> Result<()> {
    let top = if caption { f * 1.8 } else { f * 0.5 };
    let view = View3::new(&scene.coords, area.dim_in_pixel(), top, (az, el));
    if caption {
        area.draw(&Text::new(
            format!("azimuth {az:.0}°, elevation {el:.0}°"),
            ((area.dim_in_pixel().0 / 2) as i32, (f * 0.4) as i32),
            text(f * 0.95).pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(de)?;
    }
    draw_cube(area, &view, &scene.axis_names, f)?;
    let c = &scene.coords;
    let r = point_radius(c.nrows());
    // Far to near, so nearer points cover farther ones.
    let mut placed: Vec<((i32, i32), f64, usize)> = (0..c.nrows())
        .map(|i| {
            let (px, d) = view.row(c, i);
            (px, d, i)
        })
        .collect();
    placed.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
    for (px, _, i) in &placed {
        let color = scene.legend[scene.category[*i]].color;
        area.draw(&Circle::new(*px, r, color.mix(0.72).filled()))
            .map_err(de)?;
    }
    if let Some(hl) = &scene.highlight {
        let anchor = view.data([hl.anchor[0], hl.anchor[1], hl.anchor[2]]).0;
        let neighbours: Vec<(i32, i32)> = hl.neighbours.iter().map(|&i| view.row(c, i).0).collect();
        let style = MarkStyle {
            radius: r,
            rank_size: f * 0.85,
            inner_ring: false,
        };
        draw_marks(area, anchor, &neighbours, &style)?;
    }
    Ok(())
}

/// The bounding cube in light grey, and three of its edges darker with the axis names: x and y
/// from the bottom corner nearest the viewer (the front edges), z up the bottom corner that
/// appears leftmost; each label just outside the middle of its edge, pushed away from the
/// cube's centre on screen.
fn draw_cube<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    view: &View3,
    axis_names: &[String],
    f: f64,
) -> Result<()> {
    let sign = |b: usize, bit: usize| if b & bit == 0 { -1.0 } else { 1.0 };
    let corners: Vec<[f64; 3]> = (0..8)
        .map(|b| [sign(b, 1), sign(b, 2), sign(b, 4)])
        .collect();
    for a in 0..8usize {
        for bit in [1usize, 2, 4] {
            let b = a | bit;
            if b != a {
                area.draw(&PathElement::new(
                    vec![view.px(corners[a]).0, view.px(corners[b]).0],
                    RGBColor(215, 215, 215).stroke_width(1),
                ))
                .map_err(de)?;
            }
        }
    }
    let bottom: Vec<[f64; 3]> = corners.iter().copied().filter(|c| c[2] < 0.0).collect();
    let front = *bottom
        .iter()
        .min_by(|a, b| view.px(**a).1.total_cmp(&view.px(**b).1))
        .unwrap();
    let left = *bottom.iter().min_by_key(|c| view.px(**c).0 .0).unwrap();
    let centre_px = view.px([0.0, 0.0, 0.0]).0;
    for (t, name) in axis_names.iter().enumerate().take(3) {
        let from = if t == 2 { left } else { front };
        let mut to = from;
        to[t] = -from[t];
        let (a, b) = (view.px(from).0, view.px(to).0);
        area.draw(&PathElement::new(
            vec![a, b],
            RGBColor(90, 90, 90).stroke_width(2),
        ))
        .map_err(de)?;
        let mid = ((a.0 + b.0) / 2, (a.1 + b.1) / 2);
        let (dx, dy) = ((mid.0 - centre_px.0) as f64, (mid.1 - centre_px.1) as f64);
        let len = (dx * dx + dy * dy).sqrt().max(1.0);
        let at = (
            mid.0 + (dx / len * f * 1.6) as i32,
            mid.1 + (dy / len * f * 1.2) as i32,
        );
        area.draw(&Text::new(
            name.clone(),
            at,
            text(f * 0.85).pos(Pos::new(HPos::Center, VPos::Center)),
        ))
        .map_err(de)?;
    }
    Ok(())
}

fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    scene: &Scene,
    f: f64,
) -> Result<()> {
    let x0 = (f * 0.6) as i32;
    let mut y = (f * 2.5) as i32;
    let step = (f * 1.6) as i32;
    area.draw(&Text::new(
        scene.legend_title.clone(),
        (x0, y),
        text(f * 1.05).pos(Pos::new(HPos::Left, VPos::Center)),
    ))
    .map_err(de)?;
    // A marker at x0, its label to the right.
    let line = |marker: &dyn Fn((i32, i32)) -> Result<()>, label: String, y: i32| {
        marker((x0 + (f * 0.5) as i32, y))?;
        area.draw(&Text::new(
            label,
            (x0 + (f * 1.4) as i32, y),
            text(f * 0.9).pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(de)
    };
    let size = (f * 0.45) as i32;
    for e in &scene.legend {
        y += step;
        let dot = |at| {
            area.draw(&Circle::new(at, (f * 0.4) as i32, e.color.filled()))
                .map_err(de)
        };
        line(&dot, format!("{} ({})", e.label, thousands(e.count)), y)?;
    }
    if let Some(hl) = &scene.highlight {
        y += step + step / 2;
        let cross = |at| {
            area.draw(&Cross::new(at, size, BLACK.stroke_width(3)))
                .map_err(de)
        };
        line(&cross, hl.anchor_label.clone(), y)?;
        y += step;
        let ring = |at| {
            area.draw(&Circle::new(at, size, BLACK.stroke_width(2)))
                .map_err(de)
        };
        let label = format!("its {} neighbours (1 = nearest)", hl.neighbours.len());
        line(&ring, label, y)?;
    }
    Ok(())
}

/// 12500 -> "12,500".
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

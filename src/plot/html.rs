//! `embed plot --out map.html`: one self-contained interactive page (pan, zoom, 3D rotation,
//! hover, pin, legend toggles, search), opened offline from the file alone.
//!
//! The page is `assets/map/map.html` with the stylesheet, the script and the data inlined; the
//! script (`assets/map/map.js`) is hand-written on a canvas, see its header for why no library.
//!
//! Data: one JSON blob in `<script type="application/json">`, read with `JSON.parse`. Points
//! are written in paint order (the seeded shuffle of the static maps), so no order array is
//! needed; coordinates are quantised to u16 per axis (1/65,535 of the axis span, far below a
//! pixel) and base64-encoded, categories and field values are small ints (1, 2 or 4 bytes) into
//! tables of distinct values; texts are cut to `TEXT_CHARS` characters.
//!
//! Escaping: every `<`, `>`, `&`, U+2028 and U+2029 in the JSON is written as a `\u` escape,
//! so no data (a problem containing `</script>` or `<!--`) can end the script element or
//! change how it is parsed; the title in `<title>` is HTML-escaped; the script only ever puts
//! data into the page with `textContent`. A Content-Security-Policy allows only the page's own
//! script and stylesheet (by sha256) and no network at all, so even a mistake in the above
//! could not run injected script or load anything.

use anyhow::{bail, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::Path;

use super::render::Scene;

/// Characters of problem text kept per point for the tooltip.
pub const TEXT_CHARS: usize = 300;

const TEMPLATE: &str = include_str!("../../assets/map/map.html");
const STYLE: &str = include_str!("../../assets/map/map.css");
const SCRIPT: &str = include_str!("../../assets/map/map.js");

/// What the tooltips show, per drawn point (in the scene's point order, not paint order).
#[derive(Debug, Clone, Default)]
pub struct PointInfo {
    pub ids: Vec<String>,
    /// Fields shown under the id, e.g. the colour field and `source`: (name, value per point).
    pub fields: Vec<(String, Vec<Option<String>>)>,
    /// The text field's name and each point's text (already cut).
    pub text: Option<(String, Vec<String>)>,
}

/// Write the page for `scene` to `path`, atomically.
pub fn write(scene: &Scene, info: &PointInfo, path: &Path) -> Result<()> {
    let html = page(scene, info)?;
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    crate::fsio::write_atomically(path, |w| {
        w.write_all(html.as_bytes())?;
        Ok(())
    })
}

/// The whole page as a string.
pub fn page(scene: &Scene, info: &PointInfo) -> Result<String> {
    let n = scene.coords.nrows();
    if info.ids.len() != n {
        bail!("{} ids for {n} points", info.ids.len());
    }
    let data = script_safe_json(&MapData::new(scene, info))?;
    let hash = |s: &str| base64(Sha256::digest(s));
    let csp = format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'",
        hash(SCRIPT),
        hash(STYLE)
    );
    let mut out = String::with_capacity(data.len() + SCRIPT.len() + STYLE.len() + 2048);
    // Fill the template's slots in order, one pass: nothing inserted is searched again.
    let mut rest = TEMPLATE;
    for (slot, value) in [
        ("{{CSP}}", csp.as_str()),
        ("{{TITLE}}", &html_escape(&scene.title)),
        ("{{STYLE}}", STYLE),
        ("{{DATA}}", &data),
        ("{{SCRIPT}}", SCRIPT),
    ] {
        let at = rest
            .find(slot)
            .unwrap_or_else(|| panic!("assets/map/map.html has no {slot} after the previous slot"));
        out.push_str(&rest[..at]);
        out.push_str(value);
        rest = &rest[at + slot.len()..];
    }
    out.push_str(rest);
    Ok(out)
}

#[derive(Serialize)]
struct MapData<'a> {
    title: &'a str,
    dims: usize,
    n: usize,
    axes: &'a [String],
    /// Per axis, the values that u16 0 and 65535 stand for.
    lo: Vec<f64>,
    hi: Vec<f64>,
    /// base64 of u16 little-endian, axis after axis (all x, then all y, then all z).
    coords: String,
    legend_title: &'a str,
    legend: Vec<Legend<'a>>,
    /// Legend entry of each point.
    category: Ints,
    ids: Vec<&'a str>,
    fields: Vec<Field<'a>>,
    text_field: Option<&'a str>,
    texts: Vec<&'a str>,
    highlight: Option<Mark<'a>>,
    /// 3D: the first view's azimuth and elevation in degrees.
    view: (f64, f64),
}

#[derive(Serialize)]
struct Legend<'a> {
    label: &'a str,
    count: usize,
    color: String,
}

/// Small non-negative ints: base64 of `width`-byte little-endian values.
#[derive(Serialize)]
struct Ints {
    width: usize,
    data: String,
}

/// A field as a table of its distinct values and an index into it per point.
#[derive(Serialize)]
struct Field<'a> {
    name: &'a str,
    values: Vec<Option<&'a str>>,
    index: Ints,
}

#[derive(Serialize)]
struct Mark<'a> {
    anchor: Vec<f64>,
    label: &'a str,
    /// Point numbers (paint order) of the neighbours, best first.
    neighbours: Vec<usize>,
}

impl<'a> MapData<'a> {
    fn new(scene: &'a Scene, info: &'a PointInfo) -> Self {
        let order = &scene.order;
        let n = order.len();
        let mut rank = vec![0usize; n];
        for (k, &i) in order.iter().enumerate() {
            rank[i] = k;
        }
        let (lo, hi, coords) = quantise(scene);
        let fields = info
            .fields
            .iter()
            .map(|(name, values)| table(name, values, order))
            .collect();
        MapData {
            title: &scene.title,
            dims: scene.coords.ncols(),
            n,
            axes: &scene.axis_names,
            lo,
            hi,
            coords,
            legend_title: &scene.legend_title,
            legend: scene
                .legend
                .iter()
                .map(|e| Legend {
                    label: &e.label,
                    count: e.count,
                    color: format!("#{:02x}{:02x}{:02x}", e.color.0, e.color.1, e.color.2),
                })
                .collect(),
            category: ints(order.iter().map(|&i| scene.category[i] as u32)),
            ids: order.iter().map(|&i| info.ids[i].as_str()).collect(),
            fields,
            text_field: info.text.as_ref().map(|(name, _)| name.as_str()),
            texts: match &info.text {
                Some((_, texts)) => order.iter().map(|&i| texts[i].as_str()).collect(),
                None => Vec::new(),
            },
            highlight: scene.highlight.as_ref().map(|h| Mark {
                anchor: h.anchor.iter().map(|&v| v as f64).collect(),
                label: &h.anchor_label,
                neighbours: h.neighbours.iter().map(|&i| rank[i]).collect(),
            }),
            view: scene.views.first().copied().unwrap_or((35.0, 25.0)),
        }
    }
}

/// Coordinates in paint order as u16 per axis over [lo, hi] (the highlight anchor included,
/// so it lies inside too).
fn quantise(scene: &Scene) -> (Vec<f64>, Vec<f64>, String) {
    let c = &scene.coords;
    let mut lo = Vec::new();
    let mut hi = Vec::new();
    let mut bytes = Vec::with_capacity(c.len() * 2);
    for t in 0..c.ncols() {
        let anchor = scene.highlight.as_ref().map(|h| h.anchor[t]);
        let (a, b) = super::render::min_max(c.column(t).iter().copied().chain(anchor));
        let (a, b) = (a as f64, (b as f64).max(a as f64 + 1e-9));
        for &i in &scene.order {
            let q = ((c[[i, t]] as f64 - a) / (b - a) * 65535.0).round();
            bytes.extend_from_slice(&(q.clamp(0.0, 65535.0) as u16).to_le_bytes());
        }
        lo.push(a);
        hi.push(b);
    }
    let b64 = base64(bytes);
    (lo, hi, b64)
}

/// `values` in paint order as a table of distinct values (first-seen order) and indices.
fn table<'a>(name: &'a str, values: &'a [Option<String>], order: &[usize]) -> Field<'a> {
    let mut distinct: Vec<Option<&'a str>> = Vec::new();
    let mut seen: std::collections::HashMap<Option<&'a str>, u32> = Default::default();
    let index: Vec<u32> = order
        .iter()
        .map(|&i| {
            let v = values[i].as_deref();
            *seen.entry(v).or_insert_with(|| {
                distinct.push(v);
                distinct.len() as u32 - 1
            })
        })
        .collect();
    Field {
        name,
        values: distinct,
        index: ints(index.into_iter()),
    }
}

/// The narrowest little-endian width (1, 2 or 4 bytes) that holds every value.
fn ints(values: impl Iterator<Item = u32> + Clone) -> Ints {
    let max = values.clone().max().unwrap_or(0);
    let width = if max < 1 << 8 {
        1
    } else if max < 1 << 16 {
        2
    } else {
        4
    };
    let mut bytes = Vec::new();
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes()[..width]);
    }
    Ints {
        width,
        data: base64(bytes),
    }
}

/// JSON that is safe inside a `<script>` element: `<`, `>`, `&`, U+2028 and U+2029 only occur
/// inside JSON strings, where their `\u` escapes mean the same characters.
fn script_safe_json(value: &impl Serialize) -> Result<String> {
    let json = serde_json::to_string(value)?;
    Ok(replace_chars(&json, |c| match c {
        '<' => Some("\\u003c"),
        '>' => Some("\\u003e"),
        '&' => Some("\\u0026"),
        '\u{2028}' => Some("\\u2028"),
        '\u{2029}' => Some("\\u2029"),
        _ => None,
    }))
}

fn html_escape(s: &str) -> String {
    replace_chars(s, |c| match c {
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        '&' => Some("&amp;"),
        '"' => Some("&quot;"),
        '\'' => Some("&#39;"),
        _ => None,
    })
}

/// `s` with each character for which `with` gives a replacement replaced.
fn replace_chars(s: &str, with: impl Fn(char) -> Option<&'static str>) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 32);
    for ch in s.chars() {
        match with(ch) {
            Some(r) => out.push_str(r),
            None => out.push(ch),
        }
    }
    out
}

/// Standard base64 with padding (RFC 4648), which the browser's `atob` reads. Written here: the
/// crate has no base64 dependency and this is the whole of it.
fn base64(bytes: impl AsRef<[u8]>) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = bytes.as_ref();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[(v >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_cannot_close_the_script_element() {
        let s = script_safe_json(&serde_json::json!({
            "t": "</script><script>alert(1)</script> <!-- & \u{2028}\u{2029}"
        }))
        .unwrap();
        for bad in ["<", ">", "&", "\u{2028}", "\u{2029}"] {
            assert!(!s.contains(bad), "{bad:?} in {s}");
        }
        let back: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(
            back["t"],
            "</script><script>alert(1)</script> <!-- & \u{2028}\u{2029}"
        );
    }

    #[test]
    fn assets_hold_no_script_end_and_every_slot() {
        assert!(!SCRIPT.to_ascii_lowercase().contains("</script"));
        assert!(!STYLE.to_ascii_lowercase().contains("</style"));
        let mut rest = TEMPLATE;
        for slot in [
            "{{CSP}}",
            "{{TITLE}}",
            "{{STYLE}}",
            "{{DATA}}",
            "{{SCRIPT}}",
        ] {
            let at = rest.find(slot).expect(slot);
            rest = &rest[at + slot.len()..];
        }
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw), enc);
        }
        assert_eq!(base64([0xffu8, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn ints_pick_the_narrowest_width() {
        assert_eq!(ints([1u32, 255].into_iter()).width, 1);
        assert_eq!(ints([256u32].into_iter()).width, 2);
        assert_eq!(ints([70_000u32].into_iter()).width, 4);
        assert_eq!(ints([1u32, 2].into_iter()).data, "AQI=");
    }
}

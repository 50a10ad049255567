//! `embed plot`: projections keep known structure apart, images are written at the requested
//! size in both formats, the highlight marks exactly what `embed index query` returns, and the
//! errors name what is wrong.

use crate::util::*;
use exemplar::plot::{self, HighlightSpec, Method, PlotConfig, Source};
use exemplar::progress::Silent;
use std::path::{Path, PathBuf};

/// An `embed extract`-shaped folder (one shard) with `group` = "g{i % groups}" and `problem`.
fn write_grouped(dir: &Path, vectors: &[Vec<f32>], groups: usize) {
    write_extraction(dir, vectors, |i| {
        let fields = serde_json::json!({"problem": format!("problem\t{i}\nline two"), "group": format!("g{}", i % groups)});
        (format!("v{i}"), fields)
    });
}

fn config(source: Source, out: Vec<PathBuf>) -> PlotConfig {
    PlotConfig {
        source,
        color_by: Some("group".into()),
        outputs: out,
        width: 640,
        height: 480,
        ..Default::default()
    }
}

/// The clusters stay apart: every point's nearest drawn neighbour (and 9 of its 10 nearest)
/// come from its own cluster, and the gap between cluster centres exceeds the clusters' size.
fn assert_clusters_apart(s: &plot::PlotSummary, clusters: usize, what: &str) {
    let n = s.points;
    let dims = s.coords.ncols();
    let group: Vec<usize> = s
        .ids
        .iter()
        .map(|id| id[1..].parse::<usize>().unwrap() % clusters)
        .collect();
    let p = |i: usize| s.coords.row(i).to_vec();
    let d = |a: &[f32], b: &[f32]| -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f32>()
            .sqrt()
    };
    let mut pure = 0usize;
    for i in 0..n {
        let mut near: Vec<(f32, usize)> = (0..n)
            .filter(|&j| j != i)
            .map(|j| (d(&p(i), &p(j)), j))
            .collect();
        near.sort_by(|a, b| a.0.total_cmp(&b.0));
        pure += near[..10]
            .iter()
            .filter(|(_, j)| group[*j] == group[i])
            .count();
    }
    let purity = pure as f64 / (10 * n) as f64;
    assert!(purity >= 0.99, "{what}: 10-NN purity {purity}");
    let centre = |g: usize| -> Vec<f32> {
        let members: Vec<usize> = (0..n).filter(|&i| group[i] == g).collect();
        (0..dims)
            .map(|t| members.iter().map(|&i| s.coords[[i, t]]).sum::<f32>() / members.len() as f32)
            .collect()
    };
    let centres: Vec<Vec<f32>> = (0..clusters).map(centre).collect();
    let radius = (0..n)
        .map(|i| d(&p(i), &centres[group[i]]))
        .fold(0f32, f32::max);
    for a in 0..clusters {
        for b in (a + 1)..clusters {
            let gap = d(&centres[a], &centres[b]);
            assert!(
                gap > 2.0 * radius,
                "{what}: centres {a} and {b} are {gap} apart, cluster radius {radius}"
            );
        }
    }
}

#[test]
fn three_separated_clusters_stay_apart_with_pca_and_umap_in_2d_and_3d() {
    let tmp = tempfile::tempdir().unwrap();
    let emb = tmp.path().join("emb");
    write_grouped(&emb, &clustered(450, 48, 3, 0.25, 5), 3);
    for method in [Method::Pca, Method::Umap] {
        for dims in [2, 3] {
            let out = tmp.path().join(format!("{method:?}-{dims}.png"));
            let cfg = PlotConfig {
                method,
                dims,
                ..config(Source::Embeddings(emb.clone()), vec![out.clone()])
            };
            let s = plot::plot(&cfg, &Silent).unwrap();
            assert_eq!(s.points, 450);
            assert_eq!(s.coords.dim(), (450, dims));
            assert_clusters_apart(&s, 3, &format!("{method:?} {dims}D"));
            assert!(std::fs::metadata(&out).unwrap().len() > 1000);
            if method == Method::Pca {
                let ev = s.explained_variance.as_ref().unwrap();
                assert!(ev[0] >= ev[1] && ev[0] < 1.0 && ev[1] > 0.0, "{ev:?}");
            }
        }
    }
}

#[test]
fn umap_layout_is_deterministic_for_a_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let emb = tmp.path().join("emb");
    write_grouped(&emb, &clustered(300, 32, 4, 0.5, 9), 4);
    let run = |seed: u64| {
        let cfg = PlotConfig {
            method: Method::Umap,
            seed,
            ..config(
                Source::Embeddings(emb.clone()),
                vec![tmp.path().join("u.svg")],
            )
        };
        plot::plot(&cfg, &Silent).unwrap().coords
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

/// (width, height) from a PNG's IHDR chunk.
fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(
        &b[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    assert_eq!(&b[12..16], b"IHDR");
    let be = |s: &[u8]| u32::from_be_bytes([s[0], s[1], s[2], s[3]]);
    (be(&b[16..20]), be(&b[20..24]))
}

/// (width, height) attributes of an SVG's root element.
fn svg_size(path: &Path) -> (u32, u32) {
    let text = std::fs::read_to_string(path).unwrap();
    let start = text.find("<svg").expect("an <svg> element");
    let tag = &text[start..start + text[start..].find('>').unwrap()];
    let attr = |name: &str| -> u32 {
        let key = format!(" {name}=\"");
        let at = tag
            .find(&key)
            .unwrap_or_else(|| panic!("no {name} in {tag}"))
            + key.len();
        tag[at..at + tag[at..].find('"').unwrap()].parse().unwrap()
    };
    (attr("width"), attr("height"))
}

#[test]
fn cli_writes_png_and_svg_of_the_requested_size_with_text_and_3d_views() {
    let tmp = tempfile::tempdir().unwrap();
    let emb = tmp.path().join("emb");
    write_grouped(&emb, &clustered(600, 32, 6, 0.4, 3), 6);
    let out = tmp.path().join("maps/pca.png");
    let (stdout, _) = embed_ok(&[
        "plot",
        "--embeddings",
        emb.to_str().unwrap(),
        "--color-by",
        "group",
        "--out",
        out.to_str().unwrap(),
        "--formats",
        "png,svg",
        "--width",
        "640",
        "--height",
        "480",
        "--legend-max",
        "4",
        "--json",
    ]);
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["points"], 600);
    // Four categories, then the rest folded into "other".
    let legend = summary["legend"].as_array().unwrap();
    assert_eq!(legend.len(), 5, "{legend:?}");
    assert_eq!(legend[4][0], "other (2 categories)");
    assert_eq!(legend[4][1], 200);
    let png = tmp.path().join("maps/pca.png");
    let svg = tmp.path().join("maps/pca.svg");
    assert_eq!(png_size(&png), (640, 480));
    assert_eq!(svg_size(&svg), (640, 480));
    assert!(std::fs::metadata(&png).unwrap().len() > 5_000);
    let svg_text = std::fs::read_to_string(&svg).unwrap();
    // Text is drawn with the bundled font: the title, axis labels and legend are there.
    assert!(svg_text.contains("PC1 ("), "no axis label");
    assert!(svg_text.contains("% of variance"));
    assert!(svg_text.contains("g0 (100)"), "no legend count");
    assert!(
        svg_text.contains("tiny-llama-embed"),
        "no model in the title"
    );
    assert!(svg_text.matches("<circle").count() >= 600);
    // No temporary files left beside the images.
    let names: Vec<String> = std::fs::read_dir(tmp.path().join("maps"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // 3D, four views in one image, UMAP-style, a single SVG by extension.
    let out3 = tmp.path().join("maps/umap3d.svg");
    embed_ok(&[
        "plot",
        "--embeddings",
        emb.to_str().unwrap(),
        "--method",
        "umap",
        "--dims",
        "3",
        "--views",
        "4",
        "--view",
        "20,30",
        "--color-by",
        "group",
        "--out",
        out3.to_str().unwrap(),
        "--width",
        "800",
        "--height",
        "700",
        "--sample",
        "300",
        "--quiet",
    ]);
    assert_eq!(svg_size(&out3), (800, 700));
    let t = std::fs::read_to_string(&out3).unwrap();
    assert!(t.contains("azimuth 20°, elevation 30°"));
    assert!(t.contains("azimuth 110°"));
    assert!(t.contains("UMAP-3"));
    // 300 sampled points in each of four panels (plus legend markers).
    assert!(t.matches("<circle").count() >= 1200);

    // A PNG by extension, PCA 3D, one view.
    let out4 = tmp.path().join("maps/pca3d.png");
    embed_ok(&[
        "plot",
        "--embeddings",
        emb.to_str().unwrap(),
        "--dims",
        "3",
        "--out",
        out4.to_str().unwrap(),
        "--width",
        "500",
        "--height",
        "400",
    ]);
    assert_eq!(png_size(&out4), (500, 400));
}

#[test]
fn sample_is_stratified_deterministic_and_keeps_highlighted_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let emb = tmp.path().join("emb");
    write_grouped(&emb, &clustered(1000, 16, 5, 0.4, 2), 5);
    let cfg = PlotConfig {
        sample: 100,
        highlight: Some(HighlightSpec::Ids(vec![
            "v7".into(),
            "v123".into(),
            "v999".into(),
        ])),
        export_projector: Some(tmp.path().join("proj")),
        ..config(
            Source::Embeddings(emb.clone()),
            vec![tmp.path().join("s.png")],
        )
    };
    let a = plot::plot(&cfg, &Silent).unwrap();
    let b = plot::plot(&cfg, &Silent).unwrap();
    assert_eq!(a.ids, b.ids);
    assert_eq!(a.highlighted, vec!["v7", "v123", "v999"]);
    for id in ["v7", "v123", "v999"] {
        assert!(a.ids.iter().any(|i| i == id), "{id} not drawn");
    }
    // 100 sampled (20 per group) plus the highlighted ones the sample did not already hold.
    assert!(a.points >= 100 && a.points <= 103, "{}", a.points);
    for (label, count) in &a.legend {
        assert!((20..=21).contains(count), "{label}: {count}");
    }
    // Projector files: one line per drawn point, tab-separated, metadata with a header.
    let vectors = std::fs::read_to_string(tmp.path().join("proj/vectors.tsv")).unwrap();
    let meta = std::fs::read_to_string(tmp.path().join("proj/metadata.tsv")).unwrap();
    assert_eq!(vectors.lines().count(), a.points);
    assert_eq!(vectors.lines().next().unwrap().split('\t').count(), 16);
    let mlines: Vec<&str> = meta.lines().collect();
    assert_eq!(mlines[0], "id\tproblem\tgroup");
    assert_eq!(mlines.len(), a.points + 1);
    assert!(mlines[1..].iter().all(|l| l.split('\t').count() == 3));
    let ids: Vec<&str> = mlines[1..]
        .iter()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(ids, a.ids);
}

/// The ids of `embed index query --json`, in rank order.
fn query_ids(index: &Path, text: &str, k: usize) -> Vec<String> {
    let (out, _) = embed_ok(&[
        "index",
        "query",
        "--index",
        index.to_str().unwrap(),
        "--text",
        text,
        "-k",
        &k.to_string(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

fn plot_highlight_ids(
    index: &Path,
    text: &str,
    k: usize,
    extra: &[&str],
    out: &Path,
) -> (Vec<String>, String) {
    let mut args = vec![
        "plot",
        "--index",
        index.to_str().unwrap(),
        "--highlight-query",
        text,
        "--out",
        out.to_str().unwrap(),
        "--json",
        "--quiet",
    ];
    let k = k.to_string();
    args.extend(["--k", k.as_str()]);
    args.extend(extra);
    let s: serde_json::Value = serde_json::from_str(embed_ok(&args).0.trim()).unwrap();
    let ids = s["highlighted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    (ids, s["search"].as_str().unwrap().to_string())
}

#[test]
fn highlight_marks_exactly_the_ids_index_query_returns() {
    let tmp = tempfile::tempdir().unwrap();
    // A real extraction of 150 sample problems with the tiny model: exact search.
    let input = sample_corpus(tmp.path(), 150);
    let (emb, idx) = (tmp.path().join("emb"), tmp.path().join("idx"));
    extract(&tiny_llama(), &input, &emb, 2);
    build_index(&emb, &idx);
    let q = "How many positive divisors does 36 have?";
    for (k, method, extra) in [
        (4, "pca", vec!["--color-by", "subject"]),
        (6, "umap", vec!["--sample", "40"]),
    ] {
        let want = query_ids(&idx, q, k);
        assert_eq!(want.len(), k);
        let mut e = extra.clone();
        e.extend(["--method", method]);
        let (got, search) =
            plot_highlight_ids(&idx, q, k, &e, &tmp.path().join(format!("h-{method}.svg")));
        assert_eq!(got, want, "{method}");
        assert_eq!(search, "exact");
        let svg = std::fs::read_to_string(tmp.path().join(format!("h-{method}.svg"))).unwrap();
        assert!(svg.contains("query: How many positive divisors"));
        assert!(svg.contains(&format!("its {k} neighbours")));
    }

    // A 6,000-vector index (synthetic vectors in the tiny model's space): HNSW search, as
    // `embed index query` does at that size.
    let big = tmp.path().join("big-emb");
    write_grouped(&big, &clustered(6000, 64, 30, 0.6, 4), 30);
    let big_idx = tmp.path().join("big-idx");
    build_index(&big, &big_idx);
    let want = query_ids(&big_idx, q, 5);
    let (got, search) = plot_highlight_ids(
        &big_idx,
        q,
        5,
        &["--sample", "500", "--color-by", "group"],
        &tmp.path().join("big.png"),
    );
    assert_eq!(search, "hnsw");
    assert_eq!(got, want);
}

#[test]
fn unknown_colour_field_lists_the_fields_and_too_few_points_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let emb = tmp.path().join("emb");
    write_grouped(&emb, &clustered(30, 16, 3, 0.3, 1), 3);
    let o = embed(&[
        "plot",
        "--embeddings",
        emb.to_str().unwrap(),
        "--color-by",
        "subjekt",
        "--out",
        tmp.path().join("x.png").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--color-by \"subjekt\""), "{err}");
    assert!(
        err.contains("fields that exist: id, problem, group"),
        "{err}"
    );
    assert!(!tmp.path().join("x.png").exists());

    let mut cfg = config(
        Source::Embeddings(emb.clone()),
        vec![tmp.path().join("y.png")],
    );
    cfg.sample = 3;
    cfg.dims = 3;
    let err = plot::plot(&cfg, &Silent).unwrap_err().to_string();
    assert!(err.contains("too few points: 3"), "{err}");
    assert!(err.contains("needs at least 4"), "{err}");
    cfg.method = Method::Umap;
    cfg.sample = 5;
    let err = plot::plot(&cfg, &Silent).unwrap_err().to_string();
    assert!(err.contains("too few points: 5"), "{err}");

    // --highlight-query needs an index; an unknown highlight id is named.
    let o = embed(&[
        "plot",
        "--embeddings",
        emb.to_str().unwrap(),
        "--highlight-query",
        "x",
        "--out",
        tmp.path().join("z.png").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let mut cfg = config(Source::Embeddings(emb), vec![tmp.path().join("z.png")]);
    cfg.highlight = Some(HighlightSpec::Ids(vec!["v1".into(), "nope".into()]));
    let err = plot::plot(&cfg, &Silent).unwrap_err().to_string();
    assert!(err.contains("no record with id \"nope\""), "{err}");
}

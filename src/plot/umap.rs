//! A compact UMAP-style layout (McInnes, Healy & Melville 2018), written here rather than taken
//! from a crate.
//!
//! Why not `annembed` (the UMAP-like crate built on hnsw_rs): it links LAPACK through `lax`
//! (its spectral initialisation and randomised SVD), so it builds only with openblas/netlib/MKL:
//! the `*-static` features download and compile a Fortran library (no network or gfortran here),
//! `*-system` needs a system BLAS/LAPACK on every developer and CI machine, against the
//! project's rule of nothing beyond a C compiler. It would also add bson, sprs, pyo3-era
//! dependencies to a build that already takes ~15 CPU-minutes. The algorithm itself is small:
//!
//! 1. k nearest neighbours in the original space: exact (blocked matrix products, rayon) up to
//!    `EXACT_KNN_MAX` points, else the hnsw_rs graph the index already uses;
//! 2. fuzzy memberships: per point, rho = distance to the nearest neighbour and sigma found by
//!    bisection so that sum_j exp(-(d_ij - rho) / sigma) = log2(k); symmetrised with the fuzzy
//!    union w = a + b - ab;
//! 3. layout: initialised from the PCA projection (scaled to +-10, so the global arrangement of
//!    PCA is kept), then stochastic gradient descent on the fuzzy cross-entropy with the
//!    low-dimensional kernel 1 / (1 + a d^2b) (a, b for min_dist 0.1, spread 1), each edge
//!    sampled in proportion to its weight, 5 negative samples per positive, learning rate
//!    decaying linearly to 0. Single-threaded with a seeded generator: the same seed gives the
//!    same map, bit for bit.

use crate::progress::Task;
use anyhow::{bail, Result};
use ndarray::{s, Array2, ArrayView2};
use rayon::prelude::*;

use super::sample::Rng;

/// Above this many points the kNN graph comes from hnsw_rs instead of an exact scan.
pub const EXACT_KNN_MAX: usize = 25_000;
/// Curve parameters of the low-dimensional similarity for min_dist = 0.1, spread = 1.0
/// (least-squares fit of 1 / (1 + a x^2b) to the offset exponential, as UMAP does).
const A: f32 = 1.577;
const B: f32 = 0.8951;
const NEGATIVE_RATE: usize = 5;

#[derive(Debug, Clone)]
pub struct UmapOptions {
    pub neighbors: usize,
    /// 0 = automatic (500 up to 10,000 points, else 200).
    pub epochs: usize,
    pub seed: u64,
    pub learning_rate: f32,
}

impl Default for UmapOptions {
    fn default() -> Self {
        Self {
            neighbors: 15,
            epochs: 0,
            seed: 42,
            learning_rate: 1.0,
        }
    }
}

/// Nearest neighbours of every row (itself excluded): n x k indices and distances, nearest first.
pub struct Knn {
    pub k: usize,
    pub indices: Vec<u32>,
    pub distances: Vec<f32>,
}

/// Exact kNN by blocked matrix products (rows of 256 against all), in parallel over blocks.
pub fn knn_exact(x: ArrayView2<f32>, k: usize, bar: &dyn Task) -> Knn {
    let n = x.nrows();
    let norms: Vec<f32> = x.outer_iter().map(|r| r.dot(&r)).collect();
    const BLOCK: usize = 256;
    let starts: Vec<usize> = (0..n).step_by(BLOCK).collect();
    let xt = x.t();
    let parts: Vec<(Vec<u32>, Vec<f32>)> = starts
        .par_iter()
        .map(|&s0| {
            let e = (s0 + BLOCK).min(n);
            let g = x.slice(s![s0..e, ..]).dot(&xt);
            let mut idx = Vec::with_capacity((e - s0) * k);
            let mut dist = Vec::with_capacity((e - s0) * k);
            let mut cand: Vec<(f32, u32)> = Vec::with_capacity(n);
            for (r, row) in g.outer_iter().enumerate() {
                let i = s0 + r;
                cand.clear();
                for (j, &dot) in row.iter().enumerate() {
                    if j != i {
                        cand.push(((norms[i] + norms[j] - 2.0 * dot).max(0.0), j as u32));
                    }
                }
                let cmp = |a: &(f32, u32), b: &(f32, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
                if cand.len() > k {
                    cand.select_nth_unstable_by(k, cmp);
                    cand.truncate(k);
                }
                cand.sort_unstable_by(cmp);
                for &(d2, j) in &cand {
                    idx.push(j);
                    dist.push(d2.sqrt());
                }
            }
            bar.inc((e - s0) as u64);
            (idx, dist)
        })
        .collect();
    let mut indices = Vec::with_capacity(n * k);
    let mut distances = Vec::with_capacity(n * k);
    for (i, d) in parts {
        indices.extend(i);
        distances.extend(d);
    }
    Knn {
        k,
        indices,
        distances,
    }
}

/// Approximate kNN through an hnsw_rs graph (large samples). Distances are recomputed exactly.
pub fn knn_hnsw(x: ArrayView2<f32>, k: usize, bar: &dyn Task) -> Knn {
    use hnsw_rs::prelude::*;
    let n = x.nrows();
    let rows: Vec<Vec<f32>> = x.outer_iter().map(|r| r.to_vec()).collect();
    let mut graph: Hnsw<f32, DistL2> = Hnsw::new(16, n, 16, 100, DistL2 {});
    let items: Vec<(&[f32], usize)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r.as_slice(), i))
        .collect();
    graph.parallel_insert_slice(&items);
    graph.set_searching_mode(true);
    let found = graph.parallel_search(&rows, k + 1, (2 * k).max(64));
    let mut indices = Vec::with_capacity(n * k);
    let mut distances = Vec::with_capacity(n * k);
    for (i, nb) in found.iter().enumerate() {
        let mut c: Vec<(f32, u32)> = nb
            .iter()
            .filter(|h| h.d_id != i)
            .map(|h| {
                let d2: f32 = rows[i]
                    .iter()
                    .zip(&rows[h.d_id])
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum();
                (d2.sqrt(), h.d_id as u32)
            })
            .collect();
        c.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        c.truncate(k);
        // A point the graph found too few neighbours for repeats its last one.
        while c.len() < k {
            let last = c.last().copied().unwrap_or((0.0, ((i + 1) % n) as u32));
            c.push(last);
        }
        for (d, j) in c {
            indices.push(j);
            distances.push(d);
        }
        bar.inc(1);
    }
    Knn {
        k,
        indices,
        distances,
    }
}

/// rho (distance to the nearest neighbour) and sigma of one point's membership function.
fn smooth_knn(dists: &[f32]) -> (f32, f32) {
    let k = dists.len();
    let target = (k as f64).log2();
    let rho = dists.iter().copied().find(|&d| d > 0.0).unwrap_or(0.0) as f64;
    let (mut lo, mut hi, mut mid) = (0.0f64, f64::INFINITY, 1.0f64);
    for _ in 0..64 {
        let psum: f64 = dists
            .iter()
            .map(|&d| {
                let e = d as f64 - rho;
                if e > 0.0 {
                    (-e / mid).exp()
                } else {
                    1.0
                }
            })
            .sum();
        if (psum - target).abs() < 1e-5 {
            break;
        }
        if psum > target {
            hi = mid;
            mid = (lo + hi) / 2.0;
        } else {
            lo = mid;
            mid = if hi.is_infinite() {
                mid * 2.0
            } else {
                (lo + hi) / 2.0
            };
        }
    }
    let mean = dists.iter().map(|&d| d as f64).sum::<f64>() / k.max(1) as f64;
    (rho as f32, mid.max(1e-3 * mean) as f32)
}

/// Symmetric fuzzy graph as directed edges (both directions of every pair): (head, tail, w).
pub fn fuzzy_graph(knn: &Knn) -> Vec<(u32, u32, f32)> {
    let n = knn.indices.len() / knn.k.max(1);
    let k = knn.k;
    let mut directed: Vec<(u32, u32, f32)> = Vec::with_capacity(n * k);
    for i in 0..n {
        let d = &knn.distances[i * k..(i + 1) * k];
        let (rho, sigma) = smooth_knn(d);
        for (t, &j) in knn.indices[i * k..(i + 1) * k].iter().enumerate() {
            if j as usize == i {
                continue;
            }
            let e = d[t] - rho;
            let w = if e <= 0.0 { 1.0 } else { (-e / sigma).exp() };
            directed.push((i as u32, j, w));
        }
    }
    // Fuzzy union of w(i->j) and w(j->i), keyed by the unordered pair.
    let mut keyed: Vec<((u32, u32), f32)> = directed
        .into_iter()
        .map(|(i, j, w)| ((i.min(j), i.max(j)), w))
        .collect();
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut edges = Vec::with_capacity(keyed.len() * 2);
    let mut t = 0;
    while t < keyed.len() {
        let (pair, a) = keyed[t];
        let mut w = a;
        let mut u = t + 1;
        while u < keyed.len() && keyed[u].0 == pair {
            w = w + keyed[u].1 - w * keyed[u].1;
            u += 1;
        }
        t = u;
        if w > 0.0 {
            edges.push((pair.0, pair.1, w));
            edges.push((pair.1, pair.0, w));
        }
    }
    edges
}

/// Run the layout: `init` (n x dims, e.g. the PCA projection) is optimised in place.
pub fn layout(
    knn: &Knn,
    init: &Array2<f32>,
    opts: &UmapOptions,
    bar: &dyn Task,
) -> Result<Array2<f32>> {
    let (n, dims) = init.dim();
    if n < 3 {
        bail!("the UMAP-style layout needs at least 3 points, got {n}");
    }
    let epochs = if opts.epochs > 0 {
        opts.epochs
    } else if n <= 10_000 {
        500
    } else {
        200
    };
    let mut schedule = Schedule::new(fuzzy_graph(knn), epochs);
    // Initial positions: the init scaled so that its largest coordinate is 10, plus a tiny
    // jitter so coincident points separate.
    let mut rng = Rng::new(opts.seed);
    let maxabs = init.iter().fold(0.0f32, |a, &v| a.max(v.abs())).max(1e-12);
    let mut y: Vec<f32> = init
        .iter()
        .map(|&v| v / maxabs * 10.0 + (rng.normal() * 1e-4) as f32)
        .collect();
    bar.set_length(epochs as u64);
    for epoch in 0..epochs {
        let alpha = opts.learning_rate * (1.0 - epoch as f32 / epochs as f32);
        schedule.epoch(&mut y, dims, epoch as f64, alpha, &mut rng);
        bar.inc(1);
    }
    Ok(Array2::from_shape_vec((n, dims), y)?)
}

/// The edges and when each is next sampled: an edge of weight w is sampled every wmax / w
/// epochs, with NEGATIVE_RATE negative samples per sample (UMAP's epochs_per_sample).
struct Schedule {
    edges: Vec<(u32, u32, f32)>,
    per_sample: Vec<f64>,
    per_negative: Vec<f64>,
    next_sample: Vec<f64>,
    next_negative: Vec<f64>,
}

impl Schedule {
    fn new(edges: Vec<(u32, u32, f32)>, epochs: usize) -> Self {
        let wmax = edges.iter().map(|e| e.2).fold(0.0f32, f32::max);
        // Edges too weak to be sampled once in the whole run are dropped (as UMAP does).
        let edges: Vec<(u32, u32, f32)> = edges
            .into_iter()
            .filter(|e| e.2 >= wmax / epochs as f32)
            .collect();
        let per_sample: Vec<f64> = edges.iter().map(|e| (wmax / e.2) as f64).collect();
        let per_negative: Vec<f64> = per_sample
            .iter()
            .map(|p| p / NEGATIVE_RATE as f64)
            .collect();
        Self {
            next_sample: per_sample.clone(),
            next_negative: per_negative.clone(),
            edges,
            per_sample,
            per_negative,
        }
    }

    /// One SGD epoch over the edges due: pull each edge's ends together, push the head away
    /// from random points.
    fn epoch(&mut self, y: &mut [f32], dims: usize, ep: f64, alpha: f32, rng: &mut Rng) {
        let n = y.len() / dims;
        let clip = |g: f32| g.clamp(-4.0, 4.0);
        let mut cur = [0f32; 3];
        let mut oth = [0f32; 3];
        for e in 0..self.edges.len() {
            if self.next_sample[e] > ep + 1.0 {
                continue;
            }
            let (i, j) = (self.edges[e].0 as usize, self.edges[e].1 as usize);
            cur[..dims].copy_from_slice(&y[i * dims..(i + 1) * dims]);
            oth[..dims].copy_from_slice(&y[j * dims..(j + 1) * dims]);
            let d2: f32 = (0..dims).map(|t| (cur[t] - oth[t]).powi(2)).sum();
            if d2 > 0.0 {
                let coeff = -2.0 * A * B * d2.powf(B - 1.0) / (1.0 + A * d2.powf(B));
                for t in 0..dims {
                    let g = clip(coeff * (cur[t] - oth[t])) * alpha;
                    cur[t] += g;
                    y[j * dims + t] -= g;
                }
            }
            self.next_sample[e] += self.per_sample[e];
            let negatives = ((ep + 1.0 - self.next_negative[e]) / self.per_negative[e])
                .floor()
                .max(0.0) as usize;
            for _ in 0..negatives {
                let kk = rng.below(n);
                if kk == i {
                    continue;
                }
                let other = &y[kk * dims..(kk + 1) * dims];
                let d2: f32 = (0..dims).map(|t| (cur[t] - other[t]).powi(2)).sum();
                for t in 0..dims {
                    let g = if d2 > 0.0 {
                        let coeff = 2.0 * B / ((0.001 + d2) * (1.0 + A * d2.powf(B)));
                        clip(coeff * (cur[t] - other[t]))
                    } else {
                        4.0
                    };
                    cur[t] += g * alpha;
                }
            }
            self.next_negative[e] += negatives as f64 * self.per_negative[e];
            y[i * dims..(i + 1) * dims].copy_from_slice(&cur[..dims]);
        }
    }
}

/// Place new points (not part of the layout) at the membership-weighted mean of the layout
/// positions of their nearest neighbours among `x`'s rows, as UMAP initialises a transform.
pub fn place(x: ArrayView2<f32>, layout: &Array2<f32>, q: &[f32], k: usize) -> Vec<f32> {
    let mut c: Vec<(f32, usize)> = x
        .outer_iter()
        .enumerate()
        .map(|(i, r)| {
            let d2: f32 = r.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum();
            (d2.sqrt(), i)
        })
        .collect();
    c.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    c.truncate(k.max(1));
    let dists: Vec<f32> = c.iter().map(|p| p.0).collect();
    let (rho, sigma) = smooth_knn(&dists);
    let dims = layout.ncols();
    let mut out = vec![0f32; dims];
    let mut total = 0f32;
    for &(d, i) in &c {
        let e = d - rho;
        let w = if e <= 0.0 { 1.0 } else { (-e / sigma).exp() };
        total += w;
        for t in 0..dims {
            out[t] += w * layout[[i, t]];
        }
    }
    out.iter_mut().for_each(|v| *v /= total.max(1e-12));
    out
}

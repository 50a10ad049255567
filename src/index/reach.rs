//! Reachability after a build: every point (below [`FULL_CHECK_BELOW`] points; an even sample
//! above) must be found by a graph search for its own vector. Neighbour pruning (and, in
//! hnsw_rs, contended parallel inserts) can leave a point with no in-links; such a point is
//! invisible to every query. Unreachable points are re-linked (`Hnsw::relink`: fresh links out,
//! and an in-link from each of its nearest neighbours that pruning cannot take away) and
//! checked once more.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::Graph;
use crate::progress::Progress;

/// Check every point below this many; above, an even sample of [`SAMPLE`] points.
pub const FULL_CHECK_BELOW: usize = 1_000_000;
pub const SAMPLE: usize = 100_000;
/// Neighbours a self-search asks for: duplicates of a vector share its answer.
const K: usize = 10;
/// The cheap first passes (a point searched for by its own vector is nearly always found at
/// once); points they miss are searched again at the deciding ef.
const FIRST_EFS: [usize; 2] = [16, 64];

/// What the check found, recorded in the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reachability {
    /// Points searched for.
    pub checked: usize,
    /// Whether `checked` is a sample rather than every point.
    pub sampled: bool,
    /// ef of the deciding search: max(ef_construction, 64).
    pub ef: usize,
    /// Points a search for their own vector did not find.
    pub unreachable: usize,
    /// Of those, re-linked.
    pub repaired: usize,
    /// Still not found after re-linking.
    pub still_unreachable: usize,
}

/// The rows to check among `n`: all, or an even sample.
pub fn rows_to_check(n: usize) -> (Vec<usize>, bool) {
    if n < FULL_CHECK_BELOW {
        ((0..n).collect(), false)
    } else {
        ((0..SAMPLE).map(|i| i * n / SAMPLE).collect(), true)
    }
}

/// Whether a search for row `row`'s vector finds it (or an identical vector).
pub fn found(graph: &Graph, vectors: &[f32], dim: usize, row: usize, ef: usize) -> bool {
    let v = &vectors[row * dim..(row + 1) * dim];
    graph
        .search(vectors, dim, v, K, ef.max(K), None)
        .iter()
        .map(|c| c.id as usize)
        .any(|id| id == row || vectors.get(id * dim..(id + 1) * dim) == Some(v))
}

/// The rows of `rows` that searches at ef 16, 64 and then `ef` all miss.
pub fn unreachable(
    graph: &Graph,
    vectors: &[f32],
    dim: usize,
    rows: &[usize],
    ef: usize,
    progress: &dyn Progress,
) -> Vec<usize> {
    let bar = progress.task("checking reachability", Some(rows.len() as u64), "points");
    let mut missed: Vec<usize> = rows
        .par_chunks(1024)
        .flat_map_iter(|chunk| {
            let out: Vec<usize> = chunk
                .iter()
                .copied()
                .filter(|&r| {
                    !FIRST_EFS
                        .iter()
                        .chain([&ef])
                        .any(|&e| found(graph, vectors, dim, r, e))
                })
                .collect();
            bar.inc(chunk.len() as u64);
            out
        })
        .collect();
    missed.sort_unstable();
    missed
}

/// Check the graph and re-insert what is unreachable; reports the counts on `progress`.
pub fn check_and_repair(
    graph: &Graph,
    vectors: &[f32],
    dim: usize,
    ef_construction: usize,
    progress: &dyn Progress,
) -> Reachability {
    let n = vectors.len() / dim;
    let (rows, sampled) = rows_to_check(n);
    let ef = ef_construction.max(64);
    let missed = unreachable(graph, vectors, dim, &rows, ef, progress);
    let mut r = Reachability {
        checked: rows.len(),
        sampled,
        ef,
        unreachable: missed.len(),
        ..Default::default()
    };
    if !missed.is_empty() {
        repair(graph, vectors, dim, &missed);
        r.repaired = missed.len();
        r.still_unreachable = unreachable(graph, vectors, dim, &missed, ef, progress).len();
    }
    progress.log(&summary(&r));
    r
}

/// Re-link the rows (one at a time: each may become another's neighbour).
pub fn repair(graph: &Graph, vectors: &[f32], dim: usize, rows: &[usize]) {
    for &row in rows {
        graph.relink(vectors, dim, row as u32);
    }
}

/// One line for stderr and `index info`.
pub fn summary(r: &Reachability) -> String {
    let what = if r.sampled {
        format!("a sample of {} points", r.checked)
    } else {
        format!("all {} points", r.checked)
    };
    if r.unreachable == 0 {
        format!(
            "reachability: {what} found by searching for their own vectors (ef {})",
            r.ef
        )
    } else {
        format!(
            "reachability: {} of {what} were unreachable (ef {}); re-linked {}, still unreachable {}",
            r.unreachable, r.ef, r.repaired, r.still_unreachable
        )
    }
}

//! Exact search: a full scan of dot products over unit vectors. The ground truth for recall, and
//! the right tool for small indexes.

use super::Hit;

/// The k rows with the highest dot product with `query`, best first (ties by row). `allowed`, if
/// given, is a sorted list of the rows that may be returned.
pub fn top_k(
    vectors: &[f32],
    dim: usize,
    query: &[f32],
    k: usize,
    allowed: Option<&Vec<usize>>,
) -> Vec<Hit> {
    let score =
        |row: usize| -> f32 { super::simd::dot(&vectors[row * dim..(row + 1) * dim], query) };
    let mut hits: Vec<Hit> = match allowed {
        Some(rows) => rows
            .iter()
            .map(|&row| Hit {
                row,
                score: score(row),
            })
            .collect(),
        None => (0..vectors.len() / dim)
            .map(|row| Hit {
                row,
                score: score(row),
            })
            .collect(),
    };
    let better = |a: &Hit, b: &Hit| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row));
    if hits.len() > k {
        hits.select_nth_unstable_by(k, better);
        hits.truncate(k);
    }
    hits.sort_by(better);
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_best_rows_in_order() {
        let vectors = vec![1.0, 0.0, 0.0, 1.0, 0.6, 0.8, -1.0, 0.0];
        let hits = top_k(&vectors, 2, &[1.0, 0.0], 2, None);
        assert_eq!(hits.iter().map(|h| h.row).collect::<Vec<_>>(), vec![0, 2]);
        assert!((hits[1].score - 0.6).abs() < 1e-6);
        let only = top_k(&vectors, 2, &[1.0, 0.0], 2, Some(&vec![1, 3]));
        assert_eq!(only.iter().map(|h| h.row).collect::<Vec<_>>(), vec![1, 3]);
    }
}

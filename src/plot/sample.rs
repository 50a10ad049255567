//! Deterministic stratified sampling and the small random generator the projections use.
//!
//! A row's place in the sample depends only on its id and the seed (a hash), never on row order
//! or shard count, so the same corpus gives the same map however it was extracted.

use std::collections::BTreeMap;

/// SplitMix64: tiny, fast, and the same sequence on every platform and crate version.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    /// Uniform in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-300);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stable per-id key: FNV-1a of the id, mixed with the seed.
pub fn id_key(id: &str, seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h ^ mix(seed))
}

/// Choose at most `cap` rows, stratified by `labels`: each category keeps its share of the
/// corpus (largest-remainder rounding, at least one row per category while the cap allows), and
/// within a category the rows with the smallest `id_key` are taken. `forced` rows are always
/// included (on top of the cap). Returns sorted row numbers.
pub fn stratified(
    ids: &[String],
    labels: &[Option<String>],
    cap: usize,
    seed: u64,
    forced: &[usize],
) -> Vec<usize> {
    let n = ids.len();
    let mut chosen: Vec<usize> = if cap >= n {
        (0..n).collect()
    } else {
        let mut groups: BTreeMap<Option<&str>, Vec<usize>> = BTreeMap::new();
        for (i, l) in labels.iter().enumerate() {
            groups.entry(l.as_deref()).or_default().push(i);
        }
        let groups: Vec<Vec<usize>> = groups.into_values().collect();
        let quotas = quotas(&groups.iter().map(Vec::len).collect::<Vec<_>>(), cap);
        let mut out = Vec::with_capacity(cap);
        for (rows, q) in groups.into_iter().zip(quotas) {
            let mut keyed: Vec<(u64, usize)> = rows
                .into_iter()
                .map(|r| (id_key(&ids[r], seed), r))
                .collect();
            keyed.sort_unstable();
            out.extend(keyed.into_iter().take(q).map(|(_, r)| r));
        }
        out
    };
    chosen.extend_from_slice(forced);
    chosen.sort_unstable();
    chosen.dedup();
    chosen
}

/// Split `cap` over groups of the given sizes in proportion (largest remainder), giving every
/// non-empty group at least one when `cap` is at least the number of groups.
fn quotas(sizes: &[usize], cap: usize) -> Vec<usize> {
    let total: usize = sizes.iter().sum();
    let mut q: Vec<usize> = sizes.iter().map(|&s| s * cap / total.max(1)).collect();
    let mut left = cap.saturating_sub(q.iter().sum());
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    // Largest fractional part first; ties by group order (deterministic).
    order.sort_by_key(|&g| std::cmp::Reverse((sizes[g] * cap) % total.max(1)));
    for &g in order.iter().cycle().take(sizes.len() * 2) {
        if left == 0 {
            break;
        }
        if q[g] < sizes[g] {
            q[g] += 1;
            left -= 1;
        }
    }
    if cap >= sizes.len() {
        // Small categories get at least one row, taken from the largest quota.
        for g in 0..sizes.len() {
            if q[g] == 0 && sizes[g] > 0 {
                let big = (0..sizes.len())
                    .max_by_key(|&h| (q[h], std::cmp::Reverse(h)))
                    .unwrap();
                if q[big] > 1 {
                    q[big] -= 1;
                    q[g] = 1;
                }
            }
        }
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_are_proportional_and_sum_to_cap() {
        let q = quotas(&[900, 90, 10], 100);
        assert_eq!(q.iter().sum::<usize>(), 100);
        assert_eq!(q, vec![90, 9, 1]);
        let q = quotas(&[1000, 1], 10);
        assert_eq!(q, vec![9, 1]);
    }

    #[test]
    fn sample_is_stable_and_stratified() {
        let ids: Vec<String> = (0..1000).map(|i| format!("r{i}")).collect();
        let labels: Vec<Option<String>> = (0..1000)
            .map(|i| Some(if i % 10 == 0 { "a" } else { "b" }.to_string()))
            .collect();
        let s1 = stratified(&ids, &labels, 100, 7, &[3]);
        let s2 = stratified(&ids, &labels, 100, 7, &[3]);
        assert_eq!(s1, s2);
        assert!(s1.contains(&3));
        let a = s1.iter().filter(|&&r| r % 10 == 0).count();
        assert_eq!(a, 10);
        assert_ne!(s1, stratified(&ids, &labels, 100, 8, &[3]));
    }
}

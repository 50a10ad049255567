//! The statistics of `--compare-rag`: paired comparisons of two arms on the same problems.
//!
//! - the exact two-sided McNemar test on per-problem correctness: under "the arms are equally
//!   good" each discordant problem (one arm right, the other wrong) is a fair coin, so the
//!   p-value is a binomial tail on the discordant pairs, doubled;
//! - a percentile bootstrap interval for a paired difference: problems are resampled with
//!   replacement (both arms' results of a problem travel together), with a seeded generator so
//!   the same data always gives the same interval.

/// Exact two-sided McNemar p-value: `b` problems only the first arm got right, `c` only the
/// second. `p = min(1, 2 * P[X <= min(b, c)])`, X ~ Binomial(b + c, 1/2); 1 with no discordant
/// pair (nothing to tell the arms apart).
pub fn mcnemar_exact(b: usize, c: usize) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    // Sum C(n, i) / 2^n in log space: n can be in the thousands.
    let ln_half_n = n as f64 * 0.5f64.ln();
    let tail: f64 = (0..=b.min(c))
        .map(|i| (ln_choose(n, i) + ln_half_n).exp())
        .sum();
    (2.0 * tail).min(1.0)
}

/// ln C(n, k) by summing logs (exact enough for p-values; no gamma function needed).
fn ln_choose(n: usize, k: usize) -> f64 {
    let k = k.min(n - k);
    (0..k)
        .map(|i| ((n - i) as f64).ln() - ((i + 1) as f64).ln())
        .sum()
}

/// A 95% percentile bootstrap interval of a paired statistic over items (problems).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

impl Interval {
    /// Whether 0 is inside: the data cannot tell the arms apart.
    pub fn covers_zero(&self) -> bool {
        self.low <= 0.0 && 0.0 <= self.high
    }
}

/// Resamples of the bootstrap.
pub const RESAMPLES: usize = 10_000;
/// Seed of the bootstrap's generator: the same data always gives the same interval.
pub const SEED: u64 = 0x5eed;

/// Percentile bootstrap (2.5% and 97.5%) of `stat` over `n` paired items: each resample draws
/// `n` item indices with replacement and `stat` turns them into the difference. None without
/// items.
pub fn bootstrap(
    n: usize,
    resamples: usize,
    seed: u64,
    stat: impl Fn(&[usize]) -> f64,
) -> Option<Interval> {
    if n == 0 || resamples == 0 {
        return None;
    }
    let mut rng = SplitMix64(seed);
    let mut picks = vec![0; n];
    let mut values: Vec<f64> = (0..resamples)
        .map(|_| {
            for p in picks.iter_mut() {
                *p = rng.below(n);
            }
            stat(&picks)
        })
        .collect();
    values.sort_unstable_by(f64::total_cmp);
    Some(Interval {
        low: quantile(&values, 0.025),
        high: quantile(&values, 0.975),
    })
}

/// The difference of means of paired values `(a_i, b_i)`: b - a, with its bootstrap interval.
pub fn paired_mean_difference(pairs: &[(f64, f64)], seed: u64) -> (f64, Option<Interval>) {
    let diff = |idx: &mut dyn Iterator<Item = usize>| {
        let (mut sum, mut n) = (0.0, 0usize);
        for i in idx {
            sum += pairs[i].1 - pairs[i].0;
            n += 1;
        }
        sum / n.max(1) as f64
    };
    let point = diff(&mut (0..pairs.len()));
    let interval = bootstrap(pairs.len(), RESAMPLES, seed, |picks| {
        diff(&mut picks.iter().copied())
    });
    (point, interval)
}

/// The difference of two ratios over paired items, `sum(b_num)/sum(b_den) -
/// sum(a_num)/sum(a_den)`, e.g. per-sample accuracy (right samples / samples) when problems
/// have different numbers of samples; the bootstrap resamples whole problems.
pub fn paired_ratio_difference(
    a: &[(f64, f64)],
    b: &[(f64, f64)],
    seed: u64,
) -> (f64, Option<Interval>) {
    let ratio = |v: &[(f64, f64)], idx: &mut dyn Iterator<Item = usize>| {
        let (mut num, mut den) = (0.0, 0.0);
        for i in idx {
            num += v[i].0;
            den += v[i].1;
        }
        if den > 0.0 {
            num / den
        } else {
            0.0
        }
    };
    let n = a.len().min(b.len());
    let point = ratio(b, &mut (0..n)) - ratio(a, &mut (0..n));
    let interval = bootstrap(n, RESAMPLES, seed, |p| {
        ratio(b, &mut p.iter().copied()) - ratio(a, &mut p.iter().copied())
    });
    (point, interval)
}

/// Linear interpolation between the order statistics of sorted `v`.
fn quantile(v: &[f64], q: f64) -> f64 {
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// SplitMix64: a small, well-mixed, seedable generator (the bootstrap needs reproducibility,
/// not cryptography).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (multiply-shift; the bias is below 2^-32 for any n we see).
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcnemar_matches_hand_computed_values() {
        // b=8, c=2: n=10, P[X<=2] = (1 + 10 + 45) / 1024, doubled = 112/1024.
        assert!((mcnemar_exact(8, 2) - 0.109375).abs() < 1e-12);
        assert!((mcnemar_exact(2, 8) - 0.109375).abs() < 1e-12, "symmetric");
        // b=10, c=0: 2 / 2^10.
        assert!((mcnemar_exact(10, 0) - 2.0 / 1024.0).abs() < 1e-12);
        // b=6, c=1: (1 + 7) / 128 * 2 = 0.125.
        assert!((mcnemar_exact(6, 1) - 0.125).abs() < 1e-12);
        // Balanced or empty: no evidence at all.
        assert_eq!(mcnemar_exact(5, 5), 1.0);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        // Large n stays finite: b=600, c=400 is far below 0.05.
        let p = mcnemar_exact(600, 400);
        assert!(p > 0.0 && p < 1e-8, "{p}");
    }

    #[test]
    fn bootstrap_is_seeded_and_exact_when_every_pair_differs_alike() {
        // Every problem gains exactly 0.25: every resample says 0.25.
        let same: Vec<(f64, f64)> = (0..30)
            .map(|i| (i as f64 / 30.0, i as f64 / 30.0 + 0.25))
            .collect();
        let (d, ci) = paired_mean_difference(&same, SEED);
        assert!((d - 0.25).abs() < 1e-12);
        let ci = ci.unwrap();
        assert!(
            (ci.low - 0.25).abs() < 1e-12 && (ci.high - 0.25).abs() < 1e-12,
            "{ci:?}"
        );
        assert!(!ci.covers_zero());
        // The same seed gives the same interval; another seed nearly the same one.
        let mixed: Vec<(f64, f64)> = (0..40)
            .map(|i| (f64::from(i % 3 == 0), f64::from(i % 2 == 0)))
            .collect();
        let a = paired_mean_difference(&mixed, SEED).1.unwrap();
        assert_eq!(a, paired_mean_difference(&mixed, SEED).1.unwrap());
        let b = paired_mean_difference(&mixed, 7).1.unwrap();
        assert!((a.low - b.low).abs() < 0.05 && (a.high - b.high).abs() < 0.05);
        assert!(bootstrap(0, 10, 1, |_| 0.0).is_none());
    }

    #[test]
    fn bootstrap_interval_has_the_normal_width_for_many_problems() {
        // 400 problems: 60 gain a point, 20 lose one, the rest tie. Mean 0.1, sd of the
        // differences sqrt(80/400 - 0.01) = 0.4359; the 95% interval is about
        // 0.1 +- 1.96 * 0.4359 / 20 = [0.0573, 0.1427].
        let pairs: Vec<(f64, f64)> = (0..400)
            .map(|i| match i {
                0..60 => (0.0, 1.0),
                60..80 => (1.0, 0.0),
                _ => (1.0, 1.0),
            })
            .collect();
        let (d, ci) = paired_mean_difference(&pairs, SEED);
        let ci = ci.unwrap();
        assert!((d - 0.1).abs() < 1e-12);
        assert!((ci.low - 0.0573).abs() < 0.01, "{ci:?}");
        assert!((ci.high - 0.1427).abs() < 0.01, "{ci:?}");
    }

    #[test]
    fn ratio_difference_weighs_problems_by_their_samples() {
        // Arm a: 1/4 and 3/4 right = 4/8; arm b: 2/2 and 2/6 = 4/8: no difference overall.
        let a = [(1.0, 4.0), (3.0, 4.0)];
        let b = [(2.0, 2.0), (2.0, 6.0)];
        let (d, ci) = paired_ratio_difference(&a, &b, SEED);
        assert!(d.abs() < 1e-12);
        assert!(ci.unwrap().covers_zero());
    }
}

//! Seeded percentile bootstrap: means, differences of means (paired and unpaired) and macro
//! averages over strata, each with a 95% interval.
//!
//! The generator is SplitMix64 (Steele, Lea and Flood 2014), written out here so that an interval
//! depends only on the seed and the values, never on a dependency's version. Callers derive one
//! seed per table cell from the report seed and the cell's identity ([`cell_seed`]), so a cell's
//! interval does not depend on which other cells the report holds or in which order they come:
//! merging shards gives the same numbers as the unsharded run.

/// A mean with its bootstrap interval and the number of values behind it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    pub mean: f64,
    /// Lower and upper ends of the 95% percentile interval (equal to `mean` when `n` is 1).
    pub lo: f64,
    pub hi: f64,
    pub n: usize,
}

/// Resampling settings shared by every interval of a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootstrapConfig {
    pub seed: u64,
    pub resamples: usize,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig {
            seed: 0,
            resamples: 2000,
        }
    }
}

/// SplitMix64.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform index in `0..n` (Lemire's multiply-shift; the bias is below 2^-32 for any n here).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 32) * n as u64 >> 32) as usize
    }
}

/// The seed of one cell: the report seed mixed with a stable hash (FNV-1a) of the cell's identity.
pub fn cell_seed(seed: u64, identity: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in identity.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// The 2.5th and 97.5th percentiles (linear interpolation between order statistics).
fn interval(mut stats: Vec<f64>) -> (f64, f64) {
    stats.sort_by(f64::total_cmp);
    let q = |p: f64| {
        let pos = p * (stats.len() - 1) as f64;
        let (i, frac) = (pos.floor() as usize, pos - pos.floor());
        let next = stats[(i + 1).min(stats.len() - 1)];
        stats[i] + frac * (next - stats[i])
    };
    (q(0.025), q(0.975))
}

/// Clamp the interval so that it always contains the point estimate (a percentile interval of a
/// skewed statistic can, by a hair, miss it; a report should never show that).
fn estimate(point: f64, (lo, hi): (f64, f64), n: usize) -> Estimate {
    Estimate {
        mean: point,
        lo: lo.min(point),
        hi: hi.max(point),
        n,
    }
}

/// Mean of `values` with a percentile bootstrap interval. None when there are no values.
pub fn mean_ci(values: &[f64], cfg: BootstrapConfig, seed: u64) -> Option<Estimate> {
    macro_average(&[values], cfg, seed)
}

/// Mean over strata of each stratum's mean (LongBench's and RULER's benchmark average: the mean
/// of the task scores), resampling within each stratum. Empty strata are ignored; None when all
/// are empty. `n` is the number of values in all strata.
pub fn macro_average(strata: &[&[f64]], cfg: BootstrapConfig, seed: u64) -> Option<Estimate> {
    let strata: Vec<&[f64]> = strata.iter().copied().filter(|s| !s.is_empty()).collect();
    if strata.is_empty() {
        return None;
    }
    let n = strata.iter().map(|s| s.len()).sum();
    let point = strata.iter().map(|s| mean(s)).sum::<f64>() / strata.len() as f64;
    if n == strata.len() {
        return Some(estimate(point, (point, point), n));
    }
    let mut rng = Rng::new(seed);
    let stats = (0..cfg.resamples.max(1))
        .map(|_| {
            let total: f64 = strata
                .iter()
                .map(|s| (0..s.len()).map(|_| s[rng.below(s.len())]).sum::<f64>() / s.len() as f64)
                .sum();
            total / strata.len() as f64
        })
        .collect();
    Some(estimate(point, interval(stats), n))
}

/// A weighted mean over strata of each stratum's mean (RULER's weighted averages over lengths,
/// LongBench's average of category averages), resampling within each stratum. Weights need not
/// sum to 1; empty strata and their weights are left out. None when all strata are empty.
pub fn weighted_macro_average(
    strata: &[(&[f64], f64)],
    cfg: BootstrapConfig,
    seed: u64,
) -> Option<Estimate> {
    let strata: Vec<(&[f64], f64)> = strata
        .iter()
        .copied()
        .filter(|(s, w)| !s.is_empty() && *w > 0.0)
        .collect();
    let total: f64 = strata.iter().map(|(_, w)| w).sum();
    if strata.is_empty() || total <= 0.0 {
        return None;
    }
    let n = strata.iter().map(|(s, _)| s.len()).sum();
    let point = strata.iter().map(|(s, w)| w * mean(s)).sum::<f64>() / total;
    if n == strata.len() {
        return Some(estimate(point, (point, point), n));
    }
    let mut rng = Rng::new(seed);
    let stats = (0..cfg.resamples.max(1))
        .map(|_| {
            strata
                .iter()
                .map(|(s, w)| {
                    w * (0..s.len()).map(|_| s[rng.below(s.len())]).sum::<f64>() / s.len() as f64
                })
                .sum::<f64>()
                / total
        })
        .collect();
    Some(estimate(point, interval(stats), n))
}

/// Mean of `a - b` over paired values (same sample and turn), resampling pairs.
pub fn paired_difference(
    pairs: &[(f64, f64)],
    cfg: BootstrapConfig,
    seed: u64,
) -> Option<Estimate> {
    let diffs: Vec<f64> = pairs.iter().map(|(a, b)| a - b).collect();
    mean_ci(&diffs, cfg, seed)
}

/// mean(a) - mean(b) for independent samples, resampling each; `n` is `a.len()`.
pub fn unpaired_difference(
    a: &[f64],
    b: &[f64],
    cfg: BootstrapConfig,
    seed: u64,
) -> Option<Estimate> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let point = mean(a) - mean(b);
    let mut rng = Rng::new(seed);
    let resample = |xs: &[f64], rng: &mut Rng| {
        (0..xs.len()).map(|_| xs[rng.below(xs.len())]).sum::<f64>() / xs.len() as f64
    };
    let stats = (0..cfg.resamples.max(1))
        .map(|_| resample(a, &mut rng) - resample(b, &mut rng))
        .collect();
    Some(estimate(point, interval(stats), a.len()))
}

#[cfg(test)]
mod tests {

    #[test]
    fn weighted_macro_average_weighs_strata_means() {
        let cfg = BootstrapConfig {
            seed: 3,
            resamples: 200,
        };
        let (a, b) = ([1.0, 0.0], [1.0, 1.0, 1.0]);
        // (1 x 0.5 + 3 x 1.0) / 4
        let e = weighted_macro_average(&[(&a, 1.0), (&b, 3.0)], cfg, 9).unwrap();
        assert!((e.mean - 0.875).abs() < 1e-12 && e.n == 5);
        assert!(e.lo <= e.mean && e.mean <= e.hi && e.lo < e.hi);
        // equal weights give the macro average, empty strata and zero weights drop out
        let m = macro_average(&[&a, &b], cfg, 9).unwrap();
        let w = weighted_macro_average(&[(&a, 2.0), (&b, 2.0), (&[], 5.0), (&[0.0], 0.0)], cfg, 9)
            .unwrap();
        assert_eq!((w.mean, w.lo, w.hi), (m.mean, m.lo, m.hi));
        assert_eq!(weighted_macro_average(&[(&[], 1.0)], cfg, 9), None);
    }
    use super::*;

    fn values() -> Vec<f64> {
        let mut rng = Rng::new(7);
        (0..57)
            .map(|_| (rng.next_u64() % 1000) as f64 / 1000.0)
            .collect()
    }

    #[test]
    fn interval_is_deterministic_for_a_seed_and_contains_the_mean() {
        let cfg = BootstrapConfig {
            seed: 3,
            resamples: 1000,
        };
        let xs = values();
        let a = mean_ci(&xs, cfg, 42).unwrap();
        let b = mean_ci(&xs, cfg, 42).unwrap();
        assert_eq!(a, b);
        assert!(a.lo <= a.mean && a.mean <= a.hi, "{a:?}");
        assert!(a.lo < a.hi);
        assert_eq!(a.n, 57);
        assert!((a.mean - xs.iter().sum::<f64>() / 57.0).abs() < 1e-12);
        let c = mean_ci(&xs, cfg, 43).unwrap();
        assert_ne!(
            (a.lo, a.hi),
            (c.lo, c.hi),
            "another seed resamples differently"
        );
    }

    #[test]
    fn interval_width_matches_the_normal_approximation() {
        // 0/1 values with p = 0.5 and n = 400: the 95% half-width is about 1.96 * 0.5 / 20 = 0.049.
        let xs: Vec<f64> = (0..400).map(|i| (i % 2) as f64).collect();
        let e = mean_ci(
            &xs,
            BootstrapConfig {
                seed: 0,
                resamples: 4000,
            },
            1,
        )
        .unwrap();
        let half = (e.hi - e.lo) / 2.0;
        assert!((half - 0.049).abs() < 0.006, "{e:?}");
    }

    #[test]
    fn degenerate_inputs() {
        let cfg = BootstrapConfig::default();
        assert!(mean_ci(&[], cfg, 0).is_none());
        let one = mean_ci(&[0.25], cfg, 0).unwrap();
        assert_eq!((one.mean, one.lo, one.hi, one.n), (0.25, 0.25, 0.25, 1));
        let constant = mean_ci(&[1.0; 10], cfg, 0).unwrap();
        assert_eq!((constant.lo, constant.hi), (1.0, 1.0));
    }

    #[test]
    fn macro_average_weights_strata_equally() {
        let a = [1.0; 10];
        let b = [0.0, 0.0];
        let e = macro_average(&[&a, &b, &[]], BootstrapConfig::default(), 5).unwrap();
        assert_eq!(e.mean, 0.5);
        assert_eq!(e.n, 12);
    }

    #[test]
    fn paired_difference_of_identical_runs_is_exactly_zero() {
        let xs = values();
        let pairs: Vec<(f64, f64)> = xs.iter().map(|&x| (x, x)).collect();
        let d = paired_difference(&pairs, BootstrapConfig::default(), 9).unwrap();
        assert_eq!((d.mean, d.lo, d.hi), (0.0, 0.0, 0.0));
        let shifted: Vec<(f64, f64)> = xs.iter().map(|&x| (x - 0.1, x)).collect();
        let d = paired_difference(&shifted, BootstrapConfig::default(), 9).unwrap();
        assert!(
            (d.mean + 0.1).abs() < 1e-12 && (d.hi - d.lo) < 1e-9,
            "{d:?}"
        );
        let u = unpaired_difference(&xs, &xs, BootstrapConfig::default(), 9).unwrap();
        assert!(
            u.mean == 0.0 && u.lo < 0.0 && u.hi > 0.0,
            "unpaired keeps the sampling noise: {u:?}"
        );
    }

    #[test]
    fn cell_seeds_differ_by_identity_and_seed() {
        assert_ne!(cell_seed(0, "a"), cell_seed(0, "b"));
        assert_ne!(cell_seed(0, "a"), cell_seed(1, "a"));
        assert_eq!(cell_seed(5, "x|y"), cell_seed(5, "x|y"));
    }
}

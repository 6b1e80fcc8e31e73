//! `expected_attention`: keep the entries that future queries are expected to attend to, with
//! future queries modelled as a Gaussian fitted to the prefill's queries.
//!
//! Paper: Devoto, Jeblick, Jégou, "Expected Attention: KV Cache Compression by Estimating Attention
//! from Future Queries Distribution", 2025, <https://arxiv.org/abs/2510.00636> (kvpress's
//! `ExpectedAttentionPress`). Per query head: mean `mu` and covariance `S` of the pre-RoPE queries
//! (the first `sinks` positions left out), both rotated by the RoPE matrix averaged over the next
//! `future_positions` positions (`R`): `mu' = R mu`, `S' = R S R^T`. With `q ~ N(mu', S')`,
//! `E[exp(q.k / sqrt d)] = exp(k.mu' / sqrt d + k^T S' k / 2d)`; the score is that logit softmaxed
//! over the entries, averaged over the query heads of the KV head, then (`use_vnorm`) multiplied by
//! the value's L2 norm (plus `epsilon`). The first `sinks` entries are always kept.
//!
//! Defaults: `future_positions = 512`, `sinks = 4`, `use_covariance = true`, `use_vnorm = true`,
//! `epsilon = 0`, as in kvpress (the paper's authors' implementation). The query statistics come
//! from the model during the prefill (`ObservationNeeds::query_statistics`), with its RoPE table.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::describe::{Describe, Description, Param};
use crate::selection::scoring::{config, host_scores, softmax_last, LayerInput, Scorer};
use crate::{MethodError, ObservationNeeds, Rope};

type Result<T> = std::result::Result<T, MethodError>;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExpectedAttention {
    /// Future positions the RoPE rotation is averaged over.
    #[serde(default = "default_future")]
    pub future_positions: usize,
    /// Leading entries always kept, and leading queries left out of the statistics.
    #[serde(default = "default_sinks")]
    pub sinks: usize,
    /// Include the query covariance term.
    #[serde(default = "yes")]
    pub use_covariance: bool,
    /// Multiply scores by the value norm.
    #[serde(default = "yes")]
    pub use_vnorm: bool,
    /// Added to the scores before the value-norm rescaling.
    #[serde(default)]
    pub epsilon: f64,
}

fn default_future() -> usize {
    512
}
fn default_sinks() -> usize {
    4
}
fn yes() -> bool {
    true
}

impl Default for ExpectedAttention {
    fn default() -> Self {
        Self {
            future_positions: default_future(),
            sinks: default_sinks(),
            use_covariance: true,
            use_vnorm: true,
            epsilon: 0.0,
        }
    }
}

/// RoPE rotation averaged over positions `start..start + n`: `[d, d]` f32, acting on column vectors.
pub fn average_rotation(rope: &Rope, d: usize, start: usize, n: usize) -> Vec<f32> {
    let half = d / 2;
    let mut r = vec![0f32; d * d];
    for (i, &theta) in rope.inv_freq.iter().enumerate().take(half) {
        let (c, s) = mean_cos_sin(theta as f64, start, n.max(1));
        let (c, s) = (c as f32, s as f32);
        let (a, b) = if rope.interleaved {
            (2 * i, 2 * i + 1)
        } else {
            (i, i + half)
        };
        r[a * d + a] = c;
        r[a * d + b] = -s;
        r[b * d + b] = c;
        r[b * d + a] = s;
    }
    r
}

/// Mean of `cos(p theta)` and `sin(p theta)` over `p` in `start..start + n`, in closed form: the
/// sum of `e^{i p theta}` is `e^{i (start + (n - 1) / 2) theta} sin(n theta / 2) / sin(theta / 2)`
/// (the Dirichlet kernel; `n` where `sin(theta / 2)` vanishes). A loop over the positions costs
/// `n` sines and cosines per frequency and layer (~1M at 512 positions on an 8B model).
fn mean_cos_sin(theta: f64, start: usize, n: usize) -> (f64, f64) {
    let half = (theta / 2.0).sin();
    let gain = if half.abs() < 1e-300 {
        n as f64
    } else {
        (n as f64 * theta / 2.0).sin() / half
    };
    let centre = (start as f64 + (n as f64 - 1.0) / 2.0) * theta;
    (centre.cos() * gain / n as f64, centre.sin() * gain / n as f64)
}

impl Scorer for ExpectedAttention {
    fn scorer_name(&self) -> &'static str {
        "expected_attention"
    }
    fn observation_needs(&self) -> ObservationNeeds {
        ObservationNeeds {
            query_statistics: Some(self.sinks),
            ..Default::default()
        }
    }
    fn validate(&self) -> std::result::Result<(), crate::ParamError> {
        // The rotation is averaged over these positions: 0 would divide by zero (NaN scores).
        crate::params::check_positive(
            "expected_attention",
            "future_positions",
            self.future_positions,
            "future positions the RoPE rotation is averaged over; the default is 512",
        )?;
        if !self.epsilon.is_finite() {
            return Err(crate::ParamError::new(
                "expected_attention",
                "epsilon",
                format!(
                    "= {} must be a finite number (the default is 0)",
                    self.epsilon
                ),
            ));
        }
        Ok(())
    }
    fn score(&self, input: &LayerInput) -> Result<Vec<Vec<f32>>> {
        host_scores(self, input)
    }
    fn score_groups(&self, input: &LayerInput) -> Result<Option<Vec<Tensor>>> {
        const NAME: &str = "expected_attention";
        let o = input.observation();
        let (mu, cov) = match (
            o.and_then(|o| o.query_mean.as_ref()),
            o.and_then(|o| o.query_cov.as_ref()),
        ) {
            (Some(m), Some(c)) => (m, c),
            _ => {
                return Err(config(
                    NAME,
                    &format!("layer {}: no query statistics were recorded", input.index),
                ))
            }
        };
        let rope = input
            .obs
            .rope
            .as_ref()
            .ok_or_else(|| config(NAME, "observations carry no RoPE table"))?;
        let g = input.q_per_kv(NAME)?;
        let d = mu.dim(1)?;
        let rotation = crate::profile::span("rotated statistics", mu.device());
        let r = Tensor::from_vec(
            average_rotation(rope, d, input.next_position, self.future_positions),
            (d, d),
            mu.device(),
        )?;
        let mu = mu.to_dtype(DType::F32)?.matmul(&r.t()?)?; // [q_heads, d]: rows are (R mu)^T
        let cov = r
            .broadcast_matmul(&cov.to_dtype(DType::F32)?)?
            .broadcast_matmul(&r.t()?)?; // [q_heads, d, d]
        let scale = (d as f64).sqrt();
        drop(rotation);
        let _logits = crate::profile::span("expected logits", mu.device());
        // Every head of a group at once on the device.
        let mut out = Vec::new();
        for grp in input.layer.groups() {
            let (nh, len) = (grp.n_heads(), grp.len());
            let sinks = self.sinks.min(len);
            let n = len - sinks;
            if n == 0 {
                out.push(Tensor::full(f32::INFINITY, (nh, sinks), mu.device())?);
                continue;
            }
            let (k, v) = grp.storage.keys_values()?;
            let k = k.to_dtype(DType::F32)?.narrow(1, sinks, n)?.contiguous()?; // [nh, n, d]
            let mu_g = mu.narrow(0, grp.first_head * g, nh * g)?.reshape((nh, g, d))?;
            let mut logits = (mu_g.matmul(&k.t()?)? / scale)?; // [nh, g, n]
            let quad_span = crate::profile::span("covariance term", mu.device());
            if self.use_covariance {
                // k_j^T S k_j for every query head of the group: one [n, d] x [d, g d] product
                // per KV head (its query heads' covariances side by side), then a row-wise dot
                // with k. No [nh, g, n, d] copy of the keys.
                let cov_cols = cov
                    .narrow(0, grp.first_head * g, nh * g)?
                    .reshape((nh, g, d, d))?
                    .transpose(1, 2)?
                    .contiguous()?
                    .reshape((nh, d, g * d))?;
                let kc = k.matmul(&cov_cols)?;
                // On CUDA one kernel (`kernels::row_quadratic_forms`, a warp per entry).
                let quad = match crate::kernels::row_quadratic_forms(&kc, &k, g)? {
                    Some(quad) => quad,
                    None => kc
                        .reshape((nh, n, g, d))?
                        .broadcast_mul(&k.unsqueeze(2)?)?
                        .sum(3)?
                        .transpose(1, 2)?, // [nh, g, n]
                };
                logits = (logits + (quad / (2.0 * d as f64))?)?;
            }
            drop(quad_span);
            let mut p = softmax_last(&logits)?.mean(1)?; // [nh, n]
            if self.use_vnorm {
                let vnorm = v
                    .to_dtype(DType::F32)?
                    .narrow(1, sinks, n)?
                    .sqr()?
                    .sum(2)?
                    .sqrt()?;
                p = (p + self.epsilon)?.mul(&vnorm)?;
            }
            let scores = Tensor::cat(
                &[&Tensor::full(f32::INFINITY, (nh, sinks), p.device())?, &p],
                1,
            )?;
            out.push(scores);
        }
        Ok(Some(out))
    }
}

crate::selection::select::uniform_scorer_method!(ExpectedAttention, "expected_attention");

impl Describe for ExpectedAttention {
    const DESCRIPTION: Description = Description {
        family: "scorer",
        summary: "Attention expected from future queries, modelled by the mean and covariance of the prefill's queries rotated to future positions.",
        paper: "https://arxiv.org/abs/2510.00636",
        params: &[
            Param::new("future_positions", "integer", "future positions the RoPE rotation is averaged over"),
            Param::new("sinks", "integer", "leading entries always kept (and queries left out of the statistics)"),
            Param::new("use_covariance", "boolean", "include the query covariance term"),
            Param::new("use_vnorm", "boolean", "multiply scores by the value norm"),
            Param::new("epsilon", "number", "added to scores before the value-norm rescaling"),
        ],
    };
}

#[cfg(test)]
mod tests {
    /// The closed form against the sum it replaced, over the frequencies and positions models use.
    #[test]
    fn mean_rotation_matches_the_sum_over_positions() {
        for theta in [0.0, 1e-7, 2e-3, 0.1, 1.0, 3.0, std::f64::consts::PI] {
            for (start, n) in [(0, 1), (7, 3), (4096, 512), (131_072, 512), (10, 1000)] {
                let (mut c, mut s) = (0f64, 0f64);
                for p in start..start + n {
                    c += (p as f64 * theta).cos();
                    s += (p as f64 * theta).sin();
                }
                let (c, s) = (c / n as f64, s / n as f64);
                let (gc, gs) = super::mean_cos_sin(theta, start, n);
                assert!((gc - c).abs() < 1e-9 && (gs - s).abs() < 1e-9, "{theta} {start} {n}");
            }
        }
    }

    use super::*;
    use crate::testing::{cache_with_keys, keep_of};
    use crate::LayerObservation;
    #[allow(unused_imports)]
    use crate::{Budget, KvCache, Method, ObservationNeeds, Observations};
    use candle_core::Device;

    fn obs(mu: [f32; 2], cov: [f32; 4], rope: Rope) -> Observations {
        let dev = Device::Cpu;
        Observations {
            layers: vec![LayerObservation {
                query_mean: Some(Tensor::from_vec(mu.to_vec(), (1, 2), &dev).unwrap()),
                query_cov: Some(Tensor::from_vec(cov.to_vec(), (1, 2, 2), &dev).unwrap()),
                ..Default::default()
            }],
            q_per_kv: 1,
            rope: Some(rope),
        }
    }

    fn keys() -> Vec<Vec<f32>> {
        // Entry 0 is the sink; then keys along +x, -x, +y, -y with unit norm, and a long +x key.
        vec![
            vec![0.0, 0.0],
            vec![1.0, 0.0],
            vec![-1.0, 0.0],
            vec![0.0, 1.0],
            vec![0.0, -1.0],
            vec![3.0, 0.0],
        ]
    }

    fn keep(m: &ExpectedAttention, o: &Observations, k: usize) -> Vec<u32> {
        let mut cache = cache_with_keys(&[keys()]);
        m.compress(&mut cache, o, &Budget::Tokens(k)).unwrap();
        keep_of(&cache, 0).remove(0)
    }

    #[test]
    fn mean_query_picks_aligned_keys_and_sinks_are_kept() {
        let no_rotation = Rope {
            inv_freq: vec![0.0],
            interleaved: false,
        };
        let m = ExpectedAttention {
            sinks: 1,
            use_covariance: false,
            use_vnorm: false,
            ..Default::default()
        };
        // Mean query along +x: the +x keys (1 and the long 5) beat the rest; the sink stays.
        assert_eq!(
            keep(&m, &obs([4.0, 0.0], [0.0; 4], no_rotation.clone()), 3),
            vec![0, 1, 5]
        );
        // Covariance term: zero mean, variance along y only, so the +y and -y keys win.
        let m = ExpectedAttention {
            sinks: 1,
            use_covariance: true,
            use_vnorm: false,
            ..Default::default()
        };
        assert_eq!(
            keep(&m, &obs([0.0, 0.0], [0.0, 0.0, 0.0, 8.0], no_rotation), 3),
            vec![0, 3, 4]
        );
    }

    #[test]
    fn statistics_are_rotated_to_future_positions() {
        // One rotated pair; at the single future position 6 the angle is 6 x pi/12 = 90 degrees, so
        // a mean query along +x acts along +y: the +y key wins over the +x keys.
        let rope = Rope {
            inv_freq: vec![std::f32::consts::PI / 12.0],
            interleaved: false,
        };
        let m = ExpectedAttention {
            sinks: 1,
            future_positions: 1,
            use_covariance: false,
            use_vnorm: false,
            ..Default::default()
        };
        assert_eq!(keep(&m, &obs([6.0, 0.0], [0.0; 4], rope), 2), vec![0, 3]);
    }

    /// The per-head scorer `score` replaced (the test oracle), from the rotated statistics.
    fn oracle(m: &ExpectedAttention, input: &LayerInput, mu: &Tensor, cov: &Tensor) -> Vec<Vec<f32>> {
        let g = input.obs.q_per_kv;
        let d = mu.dim(1).unwrap();
        let scale = (d as f64).sqrt();
        input
            .heads()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(h, head)| {
                let len = head.k.dim(0).unwrap();
                let sinks = m.sinks.min(len);
                let n = len - sinks;
                let mut s = vec![f32::INFINITY; sinks];
                if n == 0 {
                    return s;
                }
                let k = head.k.narrow(0, sinks, n).unwrap().contiguous().unwrap();
                let mu_g = mu.narrow(0, h * g, g).unwrap();
                let mut logits = (mu_g.matmul(&k.t().unwrap()).unwrap() / scale).unwrap();
                if m.use_covariance {
                    let kg = k.unsqueeze(0).unwrap().broadcast_as((g, n, d)).unwrap().contiguous().unwrap();
                    let quad = kg
                        .matmul(&cov.narrow(0, h * g, g).unwrap().contiguous().unwrap())
                        .unwrap()
                        .mul(&kg)
                        .unwrap()
                        .sum(2)
                        .unwrap();
                    logits = (logits + (quad / (2.0 * d as f64)).unwrap()).unwrap();
                }
                let mut p = softmax_last(&logits).unwrap().mean(0).unwrap();
                if m.use_vnorm {
                    let vnorm = head.v.narrow(0, sinks, n).unwrap().sqr().unwrap().sum(1).unwrap().sqrt().unwrap();
                    p = (p + m.epsilon).unwrap().mul(&vnorm).unwrap();
                }
                s.extend(p.to_vec1::<f32>().unwrap());
                s
            })
            .collect()
    }

    /// Group scores against the per-head oracle (identity rotation: one future position at 0 with
    /// a zero frequency table), with and without covariance and value norms, ragged heads too:
    /// equal within 1e-6 relative (batched matmuls may round differently) and the same top half.
    #[test]
    fn group_scores_match_the_per_head_oracle() {
        use crate::selection::scoring::LayerInput;
        use crate::selection::select::top_k_sorted;
        let dev = Device::Cpu;
        let (g, d) = (2, 8);
        let mu = Tensor::randn(0f32, 1.0, (3 * g, d), &dev).unwrap();
        let a = Tensor::randn(0f32, 0.3, (3 * g, d, d), &dev).unwrap();
        let cov = a.matmul(&a.t().unwrap()).unwrap();
        let obs = Observations {
            layers: vec![LayerObservation {
                query_mean: Some(mu.clone()),
                query_cov: Some(cov.clone()),
                ..Default::default()
            }],
            q_per_kv: g,
            rope: Some(Rope {
                inv_freq: vec![0.0; d / 2],
                interleaved: false,
            }),
        };
        for ragged in [false, true] {
            let c = crate::testing::random_cache(ragged);
            let targets = vec![1; 3];
            let input = LayerInput {
                index: 0,
                layer: c.layer(0),
                obs: &obs,
                next_position: 40,
                targets: &targets,
            };
            for m in [
                ExpectedAttention::default(),
                ExpectedAttention {
                    use_covariance: false,
                    use_vnorm: false,
                    sinks: 0,
                    ..Default::default()
                },
                ExpectedAttention {
                    sinks: 50,
                    ..Default::default()
                },
            ] {
                let got = m.score(&input).unwrap();
                let want = oracle(&m, &input, &mu, &cov);
                for (gh, wh) in got.iter().zip(&want) {
                    assert_eq!(gh.len(), wh.len());
                    for (x, y) in gh.iter().zip(wh) {
                        assert!(x == y || (x - y).abs() <= 1e-6 * y.abs(), "{m:?}: {x} vs {y}");
                    }
                    assert_eq!(top_k_sorted(gh, gh.len() / 2), top_k_sorted(wh, wh.len() / 2));
                }
            }
        }
    }

    #[test]
    fn value_norm_rescales_scores() {
        // Zero mean, no covariance: uniform attention, so the value norm alone decides (values
        // equal keys here): the long key 5 wins.
        let rope = Rope {
            inv_freq: vec![0.0],
            interleaved: false,
        };
        let m = ExpectedAttention {
            sinks: 1,
            use_covariance: false,
            use_vnorm: true,
            ..Default::default()
        };
        assert_eq!(keep(&m, &obs([0.0, 0.0], [0.0; 4], rope), 2), vec![0, 5]);
    }
}

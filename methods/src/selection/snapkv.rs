//! `snapkv`: keep the entries the last `window` queries attend to most, smoothed by 1-D pooling,
//! plus the window itself.
//!
//! Paper: Li et al., "SnapKV: LLM Knows What You are Looking for Before Generation", 2024,
//! <https://arxiv.org/abs/2404.14469>. Score of a prefix entry: the attention it gets from the
//! observation window (the last `window` queries), summed over the window, averaged over the query
//! heads of its KV head (GQA), then pooled with `kernel`; the window's own entries are always kept
//! and count towards the budget.
//!
//! Defaults: `window = 32`, `kernel = 7`, `pooling = max`, the paper's setting (its LongBench
//! runs). Elsewhere: the SnapKV reference code defaults to kernel 5 with avg pooling; kvpress's
//! `SnapKVPress` uses window 64, kernel 5, avg pooling, and averages over query heads after
//! pooling; KVCache-Factory's scripts use window 8, kernel 7, max pooling and reduce the query
//! heads of a KV head (mean) before pooling, as here.
//!
//! Scored on the cache's device, all heads of a group at once, pooling included (the per-head
//! host version it replaced is the test oracle: the same scores bit for bit).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::describe::{Describe, Description, Param};
use crate::selection::scoring::{
    host_scores, pool_last, window_attention_sums, LayerInput, Pooling, Scorer,
};
use crate::{MethodError, ObservationNeeds};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SnapKv {
    /// Observation window: the last queries whose attention scores the prefix; always kept.
    #[serde(default = "default_window")]
    pub window: usize,
    /// Pooling kernel over neighbouring entries (odd; 1 disables pooling).
    #[serde(default = "default_kernel")]
    pub kernel: usize,
    #[serde(default)]
    pub pooling: Pooling,
}

fn default_window() -> usize {
    32
}
fn default_kernel() -> usize {
    7
}

impl Default for SnapKv {
    fn default() -> Self {
        Self {
            window: default_window(),
            kernel: default_kernel(),
            pooling: Pooling::Max,
        }
    }
}

impl Scorer for SnapKv {
    fn scorer_name(&self) -> &'static str {
        "snapkv"
    }
    fn validate(&self) -> Result<(), crate::ParamError> {
        crate::params::check_positive(
            "snapkv",
            "window",
            self.window,
            "observation window: last queries that score the prefix",
        )?;
        if self.kernel.is_multiple_of(2) {
            return Err(crate::ParamError::new(
                "snapkv",
                "kernel",
                format!(
                    "= {} must be odd (1 disables pooling; the default is 7)",
                    self.kernel
                ),
            ));
        }
        Ok(())
    }
    fn observation_needs(&self) -> ObservationNeeds {
        ObservationNeeds {
            window_queries: self.window.max(1),
            ..Default::default()
        }
    }
    fn window(&self) -> usize {
        self.window
    }
    fn score(&self, input: &LayerInput) -> Result<Vec<Vec<f32>>, MethodError> {
        host_scores(self, input)
    }
    fn scores_query_heads(&self) -> bool {
        true
    }
    /// Each query head's window attention, summed over the window and pooled, with no mean over
    /// its KV head's query heads.
    fn score_query_heads(&self, input: &LayerInput) -> Result<Option<Tensor>, MethodError> {
        let (q, pos) = input.window_queries(self.window.max(1), "snapkv")?;
        let g = input.q_per_kv("snapkv")?;
        let sums = window_attention_sums(input.layer, &q, &pos, g)?;
        let [a] = sums.as_slice() else {
            return Ok(None);
        };
        let (n, len) = (a.dim(0)?, a.dim(2)?);
        let a = a.reshape((n * g, len))?;
        Ok(Some(self.pooled_with_window(&a)?))
    }
    /// All heads of a group at once on the device (sum over the window, mean over the query
    /// heads, pooling).
    fn score_groups(&self, input: &LayerInput) -> Result<Option<Vec<Tensor>>, MethodError> {
        let (q, pos) = input.window_queries(self.window.max(1), "snapkv")?;
        let sums = crate::profile::phase("window attention", q.device(), || {
            window_attention_sums(input.layer, &q, &pos, input.q_per_kv("snapkv")?)
        })?;
        let _pool = crate::profile::span("snapkv pooling", q.device());
        let mut out = Vec::new();
        for a in &sums {
            out.push(self.pooled_with_window(&a.mean(1)?)?);
        }
        Ok(Some(out))
    }
}

impl SnapKv {
    /// Scores from window attention sums `[rows, len]`: the prefix pooled, the window's own
    /// entries pinned at `+inf`.
    fn pooled_with_window(&self, a: &Tensor) -> Result<Tensor, MethodError> {
        let (n, len) = a.dims2()?;
        let prefix = len.saturating_sub(self.window);
        let mut parts = Vec::new();
        if prefix > 0 {
            parts.push(pool_last(&a.narrow(1, 0, prefix)?, self.kernel, self.pooling)?);
        }
        if len > prefix {
            parts.push(Tensor::full(f32::INFINITY, (n, len - prefix), a.device())?);
        }
        Ok(Tensor::cat(&parts, 1)?)
    }
}

crate::selection::select::uniform_scorer_method!(SnapKv, "snapkv");

impl Describe for SnapKv {
    const DESCRIPTION: Description = Description {
        family: "scorer",
        summary: "Attention of the last `window` queries, pooled over neighbours, plus the window.",
        paper: "https://arxiv.org/abs/2404.14469",
        params: &[
            Param::new(
                "window",
                "integer",
                "observation window: last queries that score the prefix; always kept",
            ),
            Param::new(
                "kernel",
                "integer",
                "pooling kernel (odd; 1 disables pooling)",
            ),
            Param::new("pooling", "max|avg", "pooling over neighbouring entries"),
        ],
    };

    fn conformance() -> crate::describe::Conformance {
        crate::describe::Conformance::default().with_specs([
            serde_json::json!({"method": "snapkv", "window": 8, "kernel": 5, "pooling": "avg"}),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::scoring::LayerInput;
    use crate::testing::{keep_of, one_hot_cache};
    #[allow(unused_imports)]
    use crate::{Budget, KvCache, Method, ObservationNeeds, Observations};

    #[test]
    fn keeps_what_the_window_attends_to_plus_the_window() {
        // Keys are one-hot directions; the window queries point at key 2 (strongly) and key 5.
        let (mut cache, obs) = one_hot_cache(12, 2, &[(2, 8.0), (5, 4.0)]);
        let m = SnapKv {
            window: 2,
            kernel: 1,
            pooling: Pooling::Max,
        };
        m.compress(&mut cache, &obs, &Budget::Tokens(4)).unwrap();
        assert_eq!(keep_of(&cache, 0), vec![vec![2, 5, 10, 11]]);
    }

    /// The per-head host scorer `score` replaced (the test oracle).
    fn oracle_score(m: &SnapKv, input: &LayerInput) -> Vec<Vec<f32>> {
        use crate::selection::scoring::{gqa_mean, pool1d, window_attention};
        let (q, pos) = input.window_queries(m.window.max(1), "snapkv").unwrap();
        let att = window_attention(input.layer, &q, &pos, input.q_per_kv("snapkv").unwrap()).unwrap();
        att.iter()
            .map(|a| {
                let len = a.dim(2).unwrap();
                let prefix = len.saturating_sub(m.window);
                let summed = a.narrow(2, 0, prefix).unwrap().sum(1).unwrap();
                let mut s = pool1d(&gqa_mean(&summed).unwrap(), m.kernel, m.pooling);
                s.resize(len, f32::INFINITY);
                s
            })
            .collect()
    }

    #[test]
    fn device_scores_match_the_per_head_oracle() {
        use crate::testing::obs_with_queries;
        use candle_core::{DType, Device};
        let dev = Device::Cpu;
        let (h, g, d, len) = (3, 2, 8, 40);
        let k = Tensor::randn(0f32, 1.0, (h, len, d), &dev).unwrap();
        let mut cache = KvCache::new(1, h, d, DType::F32, &dev);
        cache
            .layer_mut(0)
            .append(&k, &k, &(0..len as u32).collect::<Vec<_>>())
            .unwrap();
        cache.advance(len);
        let q: Vec<Vec<Vec<f32>>> = Tensor::randn(0f32, 1.0, (h * g, 6, d), &dev)
            .unwrap()
            .to_vec3()
            .unwrap();
        let obs = obs_with_queries(&q, g);
        let mut ragged = cache.fork();
        ragged
            .layer_mut(0)
            .retain(&[(0..40).collect(), (3..40).collect(), (0..30).chain(35..40).collect()])
            .unwrap();
        for c in [&cache, &ragged] {
            for m in [
                SnapKv::default(),
                SnapKv { window: 4, kernel: 5, pooling: Pooling::Avg },
                SnapKv { window: 6, kernel: 1, pooling: Pooling::Max },
                SnapKv { window: 64, kernel: 3, pooling: Pooling::Max },
            ] {
                let targets = vec![10; h];
                let input = LayerInput {
                    index: 0,
                    layer: c.layer(0),
                    obs: &obs,
                    next_position: len,
                    targets: &targets,
                };
                assert_eq!(m.score(&input).unwrap(), oracle_score(&m, &input), "{m:?}");
            }
        }
    }

    #[test]
    fn pooling_keeps_neighbours_of_the_peak() {
        let (mut cache, obs) = one_hot_cache(12, 2, &[(5, 8.0)]);
        let m = SnapKv {
            window: 2,
            kernel: 3,
            pooling: Pooling::Max,
        };
        m.compress(&mut cache, &obs, &Budget::Tokens(5)).unwrap();
        assert_eq!(keep_of(&cache, 0), vec![vec![4, 5, 6, 10, 11]]);
    }
}

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

use serde::{Deserialize, Serialize};

use crate::describe::{Describe, Description, Param};
use crate::selection::scoring::{gqa_mean, pool1d, window_attention, LayerInput, Pooling, Scorer};
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
        let (q, pos) = input.window_queries(self.window.max(1), "snapkv")?;
        let att = window_attention(input.layer, &q, &pos, input.q_per_kv("snapkv")?)?;
        att.iter()
            .map(|a| {
                let len = a.dim(2)?;
                let prefix = len.saturating_sub(self.window);
                let summed = a.narrow(2, 0, prefix)?.sum(1)?; // [q_per_kv, prefix]
                let mut s = pool1d(&gqa_mean(&summed)?, self.kernel, self.pooling);
                s.resize(len, f32::INFINITY);
                Ok(s)
            })
            .collect()
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

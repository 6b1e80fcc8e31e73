//! `pyramidkv`: per-layer budgets that shrink linearly with depth, same average as the uniform
//! budget; a scorer (SnapKV by default) picks the entries within each layer.
//!
//! Paper: Cai et al., "PyramidKV: Dynamic KV Cache Compression based on Pyramidal Information
//! Funneling", 2024, <https://arxiv.org/abs/2406.02069>. Schedule (KVCache-Factory's
//! `PyramidKVCluster`): with `B` the uniform budget per head and `w` the scorer's window,
//! `min = (B - w) / beta`, `max = 2 (B - w) - min` (if `max` exceeds `len - w`, `max = len - w` and
//! `min = 2 (B - w) - max`); layer `l` of `L` keeps `w + max - l (max - min) / (L - 1)`. The per-layer
//! numbers are rounded so that they add up to exactly `L x B` per head: the total equals the
//! uniform budget's, which kvpress and KVCache-Factory only reach approximately (they round or
//! floor each layer). With `B <= w` or one layer the budget stays uniform.
//!
//! Defaults: `beta = 20` (the paper and both references); scorer `snapkv` with its own defaults
//! (window 32, kernel 7, max pooling). KVCache-Factory's PyramidKV scripts use SnapKV scoring with
//! window 8; kvpress's `PyramidKVPress` uses window 64, kernel 5, avg pooling.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::describe::{Describe, Description, Param};
use crate::registry::ScorerConfig;
use crate::selection::select::{evict_with, round_preserving_sum, TopK};
use crate::{Budget, KvCache, Method, MethodError, ObservationNeeds, Observations};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PyramidKv {
    /// Steepness: the smallest layer budget is `(B - window) / beta` plus the window.
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// Scorer choosing the entries within each layer.
    #[serde(default)]
    pub scorer: ScorerConfig,
}

fn default_beta() -> f64 {
    20.0
}

impl Default for PyramidKv {
    fn default() -> Self {
        Self {
            beta: default_beta(),
            scorer: ScorerConfig::default(),
        }
    }
}

/// Entries kept per layer for a head of `len` entries with uniform budget `kept` (see the header).
/// Sums to exactly `n_layers x kept`; every value is at most `len`.
pub fn pyramid_budgets(
    n_layers: usize,
    len: usize,
    kept: usize,
    window: usize,
    beta: f64,
) -> Vec<usize> {
    let kept = kept.min(len);
    if n_layers <= 1 || kept <= window || kept >= len {
        return vec![kept; n_layers];
    }
    let s = (kept - window) as f64;
    let mut min = s / beta.max(1.0);
    let mut max = 2.0 * s - min;
    if max > (len - window) as f64 {
        max = (len - window) as f64;
        min = 2.0 * s - max;
    }
    let step = (max - min) / (n_layers - 1) as f64;
    let per_layer: Vec<f64> = (0..n_layers)
        .map(|l| window as f64 + max - l as f64 * step)
        .collect();
    round_preserving_sum(&per_layer, n_layers * kept, len)
}

impl Method for PyramidKv {
    fn name(&self) -> &str {
        "pyramidkv"
    }
    fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn needs(&self) -> ObservationNeeds {
        self.scorer.scorer().observation_needs()
    }
    fn validate(&self) -> Result<(), crate::ParamError> {
        if !(self.beta >= 1.0 && self.beta.is_finite()) {
            return Err(crate::ParamError::new(
                "pyramidkv",
                "beta",
                format!(
                    "= {} must be a number >= 1 (steepness: the smallest layer budget is \
                     (B - window) / beta + window; the default is 20)",
                    self.beta
                ),
            ));
        }
        self.scorer.validate_within("pyramidkv", "scorer")
    }
    fn compress(
        &self,
        cache: &mut KvCache,
        obs: &Observations,
        budget: &Budget,
    ) -> Result<(), MethodError> {
        let scorer = self.scorer.scorer();
        let mut schedules: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut allocator = |l: usize, n_layers: usize, lens: &[usize]| -> Vec<usize> {
            lens.iter()
                .map(|&len| {
                    schedules.entry(len).or_insert_with(|| {
                        pyramid_budgets(n_layers, len, budget.kept(len), scorer.window(), self.beta)
                    })[l]
                })
                .collect()
        };
        evict_with(cache, obs, scorer, &mut allocator, &mut TopK)
    }
}

impl Describe for PyramidKv {
    const DESCRIPTION: Description = Description {
        family: "allocator",
        summary: "Per-layer budgets decreasing linearly with depth (same total), entries picked by a scorer.",
        paper: "https://arxiv.org/abs/2406.02069",
        params: &[
            Param::new("beta", "number", "steepness: the smallest layer budget is (B - window) / beta + window"),
            Param::new("scorer", "scorer", "scorer ranking the entries"),
        ],
    };

    fn conformance() -> crate::describe::Conformance {
        crate::describe::Conformance::expect(crate::describe::Expect::PerLayerTotal)
            .with_specs([serde_json::json!({"method": "pyramidkv", "scorer": {"method": "tova"}})])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::knorm::Knorm;
    use crate::testing::keep_of;
    use candle_core::{DType, Device, Tensor};

    #[test]
    fn schedule_is_linear_decreasing_and_exact() {
        // B = 40, w = 8: S = 32, min = 1.6, max = 62.4; 5 layers: 70.4, 55.2, 40, 24.8, 9.6.
        let b = pyramid_budgets(5, 1000, 40, 8, 20.0);
        assert_eq!(b.iter().sum::<usize>(), 200);
        assert_eq!(b, vec![70, 55, 40, 25, 10]);
        // max capped at len - w: len 100, B = 75, w = 8: S = 67, max = 92, min = 42.
        let b = pyramid_budgets(3, 100, 75, 8, 20.0);
        assert_eq!(b, vec![100, 75, 50]);
        // Budget within the window or the whole context: uniform.
        assert_eq!(pyramid_budgets(3, 100, 6, 8, 20.0), vec![6, 6, 6]);
        assert_eq!(pyramid_budgets(3, 100, 100, 8, 20.0), vec![100, 100, 100]);
    }

    #[test]
    fn layers_keep_their_share_chosen_by_the_scorer() {
        // 3 layers, 1 head, 10 entries whose key norm grows with the index; knorm keeps the
        // smallest; no window: min = 4/20 = 0.2, max = 7.8 -> 7.8, 4, 0.2 -> 8, 4, 0 (sum 12).
        let dev = Device::Cpu;
        let mut cache = KvCache::new(3, 1, 1, DType::F32, &dev);
        let k = Tensor::arange(1f32, 11.0, &dev)
            .unwrap()
            .reshape((1, 10, 1))
            .unwrap();
        for l in 0..3 {
            cache
                .layer_mut(l)
                .append(&k, &k, &(0..10).collect::<Vec<u32>>())
                .unwrap();
        }
        cache.advance(10);
        let m = PyramidKv {
            beta: 20.0,
            scorer: ScorerConfig::Knorm(Knorm::default()),
        };
        m.compress(&mut cache, &Observations::default(), &Budget::Tokens(4))
            .unwrap();
        assert_eq!(keep_of(&cache, 0), vec![(0..8).collect::<Vec<u32>>()]);
        assert_eq!(keep_of(&cache, 1), vec![vec![0, 1, 2, 3]]);
        assert_eq!(keep_of(&cache, 2), vec![Vec::<u32>::new()]);
    }
}

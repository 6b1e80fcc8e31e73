//! `pyramidkv`: per-layer budgets that shrink linearly with depth, same average as the uniform
//! budget; a scorer (SnapKV by default) picks the entries within each layer.
//!
//! Paper: Cai et al., "PyramidKV: Dynamic KV Cache Compression based on Pyramidal Information
//! Funneling", 2024, <https://arxiv.org/abs/2406.02069>. `B` is the uniform budget per head
//! (entries kept), `w` the scorer's window, `n` the head's length, `L` the number of layers. Two
//! references disagree on the schedule and on when it gives way to the uniform budget (plain
//! SnapKV); `schedule` picks one:
//!
//! - `kvpress` (default), kvpress's `PyramidKVPress.get_layer_budget`: with `S = B`,
//!   `min = S / beta`, `max = 2 S - min`; if `max >= n - w`, `max = n - w` and `min = 2 S - max`.
//!   Unless `n >= max >= min >= w`, every layer keeps `B` (uniform SnapKV); otherwise layer `l`
//!   keeps `max - l (max - min) / (L - 1)` entries, its window included. With `beta = 20` the
//!   pyramid therefore needs `B >= 20 w` (1280 entries for kvpress's window 64): below that,
//!   kvpress's PyramidKV is SnapKV.
//! - `kvcache_factory`, KVCache-Factory's `PyramidKVCluster.update_kv`: with `S = B - w`,
//!   `min = S / beta`, `max = 2 S - min`, the same cap (`max = n - w`, `min = 2 S - max`); layer
//!   `l` keeps `w + max - l (max - min) / (L - 1)`. If `n < B` nothing is evicted; if
//!   `n < 2 (B - w)` every layer keeps `B` (uniform SnapKV); otherwise the pyramid.
//!
//! Both: the per-layer numbers are rounded so that they add up to exactly `L x B` per head, which
//! kvpress (`round` per layer) and KVCache-Factory (integer `//` for `min` and the step) only reach
//! approximately. With one layer, or `B <= w` (which KVCache-Factory rejects), the budget stays
//! uniform.
//!
//! Defaults: `schedule = kvpress`; `beta = 20` (the paper and both references); scorer `snapkv`
//! with its own defaults (window 32, kernel 7, max pooling). KVCache-Factory's PyramidKV scripts
//! use SnapKV scoring with window 8, kernel 7, max pooling; kvpress's `PyramidKVPress` uses window
//! 64, kernel 5, avg pooling.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::describe::{Describe, Description, Param};
use crate::registry::ScorerConfig;
use crate::selection::select::{evict_with, round_preserving_sum, Allocator, TopK};
use crate::{Budget, KvCache, Method, MethodError, ObservationNeeds, Observations};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PyramidKv {
    /// Steepness: the smallest layer budget is `B / beta` (kvpress) or `(B - window) / beta` plus
    /// the window (KVCache-Factory).
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// Whose rule sets the layer budgets and when they fall back to uniform (see the header).
    #[serde(default)]
    pub schedule: Schedule,
    /// Scorer choosing the entries within each layer.
    #[serde(default)]
    pub scorer: ScorerConfig,
}

pub(crate) fn default_beta() -> f64 {
    20.0
}

/// The reference whose PyramidKV budgets `pyramidkv` follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// kvpress's `PyramidKVPress`: the pyramid only when its smallest layer holds the window.
    #[default]
    Kvpress,
    /// KVCache-Factory's `PyramidKVCluster`: the pyramid once `len >= 2 (B - window)`.
    KvcacheFactory,
}

impl Default for PyramidKv {
    fn default() -> Self {
        Self {
            beta: default_beta(),
            schedule: Schedule::default(),
            scorer: ScorerConfig::default(),
        }
    }
}

/// Entries kept per layer for a head of `len` entries with uniform budget `kept`, by `schedule`'s
/// rule (see the header). Sums to exactly `n_layers x kept`; every value is at most `len`.
pub fn pyramid_budgets(
    schedule: Schedule,
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
    let (n, b, w) = (len as f64, kept as f64, window as f64);
    // The span the pyramid spreads, and what every layer adds to it (KVCache-Factory's window).
    let (s, base) = match schedule {
        Schedule::Kvpress => (b, 0.0),
        Schedule::KvcacheFactory => (b - w, w),
    };
    let mut min = s / beta.max(1.0);
    let mut max = 2.0 * s - min;
    if max >= n - w {
        max = n - w;
        min = 2.0 * s - max;
    }
    let uniform = match schedule {
        Schedule::Kvpress => !(n >= max && max >= min && min >= w),
        Schedule::KvcacheFactory => len < 2 * (kept - window),
    };
    if uniform {
        return vec![kept; n_layers];
    }
    let step = (max - min) / (n_layers - 1) as f64;
    let per_layer: Vec<f64> = (0..n_layers)
        .map(|l| base + max - l as f64 * step)
        .collect();
    round_preserving_sum(&per_layer, n_layers * kept, len)
}

/// The pyramid as an [`Allocator`]: every head of layer `l` keeps its `l`-th share of
/// [`pyramid_budgets`] for the head's length (one schedule per distinct length). Shared by
/// `pyramidkv` and `query_heads` (KVCache-Factory's per-query-head layout).
pub struct PyramidAllocator<'a> {
    schedule: Schedule,
    beta: f64,
    window: usize,
    budget: &'a Budget,
    schedules: HashMap<usize, Vec<usize>>,
}

impl<'a> PyramidAllocator<'a> {
    pub fn new(schedule: Schedule, beta: f64, window: usize, budget: &'a Budget) -> Self {
        PyramidAllocator {
            schedule,
            beta,
            window,
            budget,
            schedules: HashMap::new(),
        }
    }
}

impl Allocator for PyramidAllocator<'_> {
    fn targets(&mut self, layer: usize, n_layers: usize, lens: &[usize]) -> Vec<usize> {
        lens.iter()
            .map(|&len| {
                self.schedules.entry(len).or_insert_with(|| {
                    pyramid_budgets(
                        self.schedule,
                        n_layers,
                        len,
                        self.budget.kept(len),
                        self.window,
                        self.beta,
                    )
                })[layer]
            })
            .collect()
    }
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
                     B / beta; the default is 20)",
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
        let mut allocator = PyramidAllocator::new(self.schedule, self.beta, scorer.window(), budget);
        evict_with(cache, obs, scorer, &mut allocator, &mut TopK)
    }
}

impl Describe for PyramidKv {
    const DESCRIPTION: Description = Description {
        family: "allocator",
        summary: "Per-layer budgets decreasing linearly with depth (same total), entries picked by a scorer; uniform where kvpress (or KVCache-Factory) falls back to SnapKV.",
        paper: "https://arxiv.org/abs/2406.02069",
        params: &[
            Param::new("beta", "number", "steepness: the smallest layer budget is B / beta (kvpress) or (B - window) / beta + window (kvcache_factory)"),
            Param::new("schedule", "kvpress|kvcache_factory", "whose rule sets the layer budgets and when they fall back to uniform SnapKV"),
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
    fn kvcache_factory_schedule_is_linear_decreasing_and_exact() {
        let f = |l, n, b, w| pyramid_budgets(Schedule::KvcacheFactory, l, n, b, w, 20.0);
        // B = 40, w = 8: S = 32, min = 1.6, max = 62.4; 5 layers: 70.4, 55.2, 40, 24.8, 9.6.
        let b = f(5, 1000, 40, 8);
        assert_eq!(b.iter().sum::<usize>(), 200);
        assert_eq!(b, vec![70, 55, 40, 25, 10]);
        // max capped at len - w: len 200, B = 108, w = 8: S = 100, max = 195 -> 192, min = 8.
        assert_eq!(f(3, 200, 108, 8), vec![200, 108, 16]);
        // Budget within the window or the whole context: uniform.
        assert_eq!(f(3, 100, 6, 8), vec![6, 6, 6]);
        assert_eq!(f(3, 100, 100, 8), vec![100, 100, 100]);
    }

    #[test]
    fn kvcache_factory_falls_back_to_snapkv_below_twice_the_budget() {
        // `q_len < 2 (max_capacity_prompt - window)`: uniform. len 100, B = 75, w = 8: 100 < 134.
        let f = |n, b| pyramid_budgets(Schedule::KvcacheFactory, 3, n, b, 8, 20.0);
        assert_eq!(f(100, 75), vec![75, 75, 75]);
        assert_eq!(f(115, 66), vec![66, 66, 66]); // 115 < 2 x 58
        assert_ne!(f(116, 66), vec![66, 66, 66]); // 116 = 2 x 58: the pyramid
    }

    #[test]
    fn kvpress_falls_back_to_snapkv_when_the_smallest_layer_misses_the_window() {
        let f = |n, b, beta| pyramid_budgets(Schedule::Kvpress, 3, n, b, 8, beta);
        // B = 40, beta 20: min = 2 < w = 8: every layer keeps 40 (PyramidKVPress returns
        // round(q_len (1 - compression_ratio))).
        assert_eq!(f(1000, 40, 20.0), vec![40, 40, 40]);
        assert_eq!(
            pyramid_budgets(Schedule::Kvpress, 5, 1000, 40, 8, 20.0),
            vec![40; 5]
        );
        // B = 160: min = 8 = w: the pyramid 312, 160, 8, its window included.
        assert_eq!(f(1000, 160, 20.0), vec![312, 160, 8]);
        // beta 4, B = 40: min = 10, max = 70: 70, 40, 10.
        assert_eq!(f(100, 40, 4.0), vec![70, 40, 10]);
        // Capped: B = 60, beta 4: max = 105 >= 92 -> 92, min = 28: 92, 60, 28.
        assert_eq!(f(100, 60, 4.0), vec![92, 60, 28]);
        // B = 95 > n - w: after the cap max = 92 < min = 98: uniform.
        assert_eq!(f(100, 95, 4.0), vec![95, 95, 95]);
    }

    #[test]
    fn default_schedule_is_kvpress_and_parses() {
        assert_eq!(PyramidKv::default().schedule, Schedule::Kvpress);
        let m: PyramidKv = serde_json::from_str(r#"{"schedule":"kvcache_factory"}"#).unwrap();
        assert_eq!(m.schedule, Schedule::KvcacheFactory);
        assert!(serde_json::from_str::<PyramidKv>(r#"{"schedule":"kvpres"}"#).is_err());
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
            ..Default::default()
        };
        m.compress(&mut cache, &Observations::default(), &Budget::Tokens(4))
            .unwrap();
        assert_eq!(keep_of(&cache, 0), vec![(0..8).collect::<Vec<u32>>()]);
        assert_eq!(keep_of(&cache, 1), vec![vec![0, 1, 2, 3]]);
        assert_eq!(keep_of(&cache, 2), vec![Vec::<u32>::new()]);
    }
}

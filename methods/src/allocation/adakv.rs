//! `adakv`: one budget per layer shared by its KV heads, spent by a single top-k across the heads,
//! with a per-head floor; heads end up with different lengths and are stored ragged.
//!
//! Paper: Feng et al., "Ada-KV: Optimizing KV Cache Eviction by Adaptive Budget Allocation for
//! Efficient LLM Inference", 2024, <https://arxiv.org/abs/2407.11550>. Per layer, with `B` the
//! uniform budget per head: every head first keeps its `floor(floor x B)` best entries (the
//! safeguard), then the remaining `sum(B) - sum(floors)` entries go to the best scores among all
//! heads' other entries. The layer keeps exactly `heads x B` entries, as the uniform budget would,
//! and the scorer's window (SnapKV's, by default) is kept in every head. Storage is ragged
//! (`LayerKv::retain` keeps one group per head), so the memory is really freed, where kvpress's
//! `AdaKVPress` only masks the evicted entries.
//!
//! Defaults: `floor = 0.2`, the paper's alpha, kvpress's `AdaKVPress.alpha_safeguard` default
//! (0.20, applied as `int(n_kept x alpha)` as here) and KVCache-Factory's `floor_ratio` default
//! (`init_adakv`; its `run_longbench.py --floor 0.2` writes `config.floor`, which `init_adakv`
//! does not read, so `floor_ratio`'s own 0.2 is what runs). Scorer `snapkv` with its defaults
//! (window 32, kernel 7, max pooling), the settings of the AdaKV repository's LongBench runs;
//! kvpress's `AdaKVPress` wraps any `ScorerPress` and has no default scorer; KVCache-Factory's
//! `init_adakv` defaults to window 32, kernel 5, max pooling, but its `run_longbench.py` runs
//! window 8, kernel 7, max pooling, and it averages the window's attention instead of summing it
//! (which ranks identically).
//!
//! KVCache-Factory's `AdaKVCluster` differs further: its floor is a share of `B - window` (its
//! `base_capacity`), the window being added to every head afterwards; with `normalize` (on by
//! default) each head's scores are scaled by the share of its attention in its top `B - window`
//! before the global top-k; and each head's count is rounded
//! (`round(count (1 - floor) + floor (B - window))`), so its total is only approximately
//! `heads x B`. The floor-then-global rule here is kvpress's.

use serde::{Deserialize, Serialize};

use crate::describe::{Describe, Description, Param};
use crate::registry::ScorerConfig;
use crate::selection::select::{evict_with, top_k_sorted, KeepRule, Uniform};
use crate::{Budget, KvCache, Method, MethodError, ObservationNeeds, Observations};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdaKv {
    /// Share of the uniform budget every head keeps whatever the other heads score (0 to 1).
    #[serde(default = "default_floor")]
    pub floor: f64,
    /// Scorer whose scores are compared across heads.
    #[serde(default)]
    pub scorer: ScorerConfig,
}

fn default_floor() -> f64 {
    0.2
}

impl Default for AdaKv {
    fn default() -> Self {
        Self {
            floor: default_floor(),
            scorer: ScorerConfig::default(),
        }
    }
}

/// Indices kept per head: each head's top `floors[h]`, then the best `sum(targets - floors)` of the
/// rest across heads (ties to the later entry, then the later head).
pub fn adaptive_keep(scores: &[Vec<f32>], targets: &[usize], floors: &[usize]) -> Vec<Vec<u32>> {
    let mut keep: Vec<Vec<u32>> = scores
        .iter()
        .zip(floors)
        .map(|(s, &f)| top_k_sorted(s, f))
        .collect();
    let total: usize = targets.iter().sum();
    let mut rest = total.saturating_sub(keep.iter().map(|k| k.len()).sum());
    let key = |s: f32| if s.is_nan() { f32::NEG_INFINITY } else { s };
    let mut pool: Vec<(f32, u32, usize)> = Vec::new();
    for (h, (s, k)) in scores.iter().zip(&keep).enumerate() {
        let mut taken = k.iter().peekable();
        for (i, &v) in s.iter().enumerate() {
            if taken.peek() == Some(&&(i as u32)) {
                taken.next();
            } else {
                pool.push((key(v), i as u32, h));
            }
        }
    }
    pool.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)));
    for &(_, i, h) in &pool {
        if rest == 0 {
            break;
        }
        keep[h].push(i);
        rest -= 1;
    }
    for k in &mut keep {
        k.sort_unstable();
    }
    keep
}

impl Method for AdaKv {
    fn name(&self) -> &str {
        "adakv"
    }
    fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn needs(&self) -> ObservationNeeds {
        self.scorer.scorer().observation_needs()
    }
    fn validate(&self) -> Result<(), crate::ParamError> {
        crate::params::check_range(
            "adakv",
            "floor",
            self.floor,
            0.0,
            1.0,
            true,
            "share of the uniform budget every head keeps",
        )?;
        self.scorer.validate_within("adakv", "scorer")
    }
    fn compress(
        &self,
        cache: &mut KvCache,
        obs: &Observations,
        budget: &Budget,
    ) -> Result<(), MethodError> {
        let mut rule = Adaptive {
            floor: self.floor.clamp(0.0, 1.0),
        };
        evict_with(
            cache,
            obs,
            self.scorer.scorer(),
            &mut Uniform(budget),
            &mut rule,
        )
    }
}

/// AdaKV's keep rule: each head keeps its `floor x target` best, the rest of the layer's total
/// goes to the best scores across heads.
struct Adaptive {
    floor: f64,
}

impl KeepRule for Adaptive {
    fn apply(
        &mut self,
        cache: &mut KvCache,
        layer: usize,
        _obs: &Observations,
        scores: Vec<Vec<f32>>,
        targets: &[usize],
    ) -> Result<(), MethodError> {
        let floors: Vec<usize> = targets
            .iter()
            .map(|&t| (t as f64 * self.floor).floor() as usize)
            .collect();
        let keep = adaptive_keep(&scores, targets, &floors);
        cache.layer_mut(layer).retain(&keep)
    }
}

impl Describe for AdaKv {
    const DESCRIPTION: Description = Description {
        family: "allocator",
        summary:
            "One top-k across the KV heads of a layer with a per-head floor; heads stored ragged.",
        paper: "https://arxiv.org/abs/2407.11550",
        params: &[
            Param::new(
                "floor",
                "number",
                "share of the uniform budget every head keeps",
            ),
            Param::new("scorer", "scorer", "scorer ranking the entries"),
        ],
    };

    fn conformance() -> crate::describe::Conformance {
        crate::describe::Conformance::expect(crate::describe::Expect::PerHeadTotal { floor: 0.2 })
            .with_specs([
                serde_json::json!({"method": "adakv", "scorer": {"method": "knorm"}}),
                serde_json::json!({"method": "adakv", "scorer": {"method": "h2o"}}),
            ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::knorm::Knorm;
    use crate::testing::{cache_with_keys, keep_of};

    #[test]
    fn global_top_k_with_per_head_floor() {
        let scores = vec![vec![0.9, 0.8, 0.7, 0.6], vec![0.1, 0.2, 0.05, 0.3]];
        // Budget 2 per head, no floor: head 0 takes all four best scores.
        assert_eq!(
            adaptive_keep(&scores, &[2, 2], &[0, 0]),
            vec![vec![0, 1, 2, 3], vec![]]
        );
        // Floor 1: head 1 keeps its best (3), head 0 the three best of the rest.
        assert_eq!(
            adaptive_keep(&scores, &[2, 2], &[1, 1]),
            vec![vec![0, 1, 2], vec![3]]
        );
    }

    #[test]
    fn ragged_heads_are_stored_per_head_with_exact_layer_total() {
        // Knorm scores: head 0's keys are all small (high scores), head 1's large but one.
        let head0: Vec<Vec<f32>> = (0..8).map(|i| vec![0.1 + 0.01 * i as f32]).collect();
        let mut head1: Vec<Vec<f32>> = (0..8).map(|i| vec![5.0 + i as f32]).collect();
        head1[6] = vec![0.01];
        let mut cache = cache_with_keys(&[head0, head1]);
        let m = AdaKv {
            floor: 0.25,
            scorer: ScorerConfig::Knorm(Knorm::default()),
        };
        m.compress(&mut cache, &Observations::default(), &Budget::Tokens(4))
            .unwrap();
        // Floors: 1 per head (head 0 keeps 0, head 1 keeps 6); the other 6 of the layer's 8 go
        // to head 0.
        assert_eq!(keep_of(&cache, 0), vec![vec![0, 1, 2, 3, 4, 5, 6], vec![6]]);
        assert_eq!(cache.layer(0).groups().len(), 2);
        // 8 entries x (key + value) x 1 dim x 4 bytes.
        assert_eq!(cache.bytes(), 8 * 2 * 4);
    }
}

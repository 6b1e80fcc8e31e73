//! Selection: top-k per head (indices returned sorted, as `LayerKv::retain` wants them), integer
//! budgets that add up exactly, and the driver that scores and evicts every layer.

use std::cmp::Ordering;

use candle_core::Tensor;

use crate::profile::phase;
use crate::selection::device_top_k::top_k_rows;
use crate::selection::scoring::{LayerInput, Scorer};
use crate::{Budget, KvCache, MethodError, Observations};

type Result<T> = std::result::Result<T, MethodError>;

/// Order for "keep first": higher score first, NaN last, ties to the later (more recent) entry.
fn keep_order(scores: &[f32], a: u32, b: u32) -> Ordering {
    let key = |i: u32| {
        let s = scores[i as usize];
        if s.is_nan() {
            f32::NEG_INFINITY
        } else {
            s
        }
    };
    key(b).total_cmp(&key(a)).then(b.cmp(&a))
}

/// Indices of the `k` highest scores, in increasing index order.
pub fn top_k_sorted(scores: &[f32], k: usize) -> Vec<u32> {
    let n = scores.len();
    if k >= n {
        return (0..n as u32).collect();
    }
    if k == 0 {
        return Vec::new();
    }
    let mut idx: Vec<u32> = (0..n as u32).collect();
    idx.select_nth_unstable_by(k - 1, |&a, &b| keep_order(scores, a, b));
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

/// Integers close to `values`, each in `0..=cap`, summing to exactly `total` (largest remainder).
/// `total` must be at most `values.len() * cap`.
pub fn round_preserving_sum(values: &[f64], total: usize, cap: usize) -> Vec<usize> {
    let mut out: Vec<usize> = values
        .iter()
        .map(|&v| (v.max(0.0).floor() as usize).min(cap))
        .collect();
    let frac = |i: usize| values[i] - values[i].floor();
    let mut order: Vec<usize> = (0..values.len()).collect();
    let mut sum: usize = out.iter().sum();
    if sum < total {
        order.sort_by(|&a, &b| frac(b).total_cmp(&frac(a)).then(a.cmp(&b)));
        while sum < total {
            let before = sum;
            for &i in &order {
                if sum < total && out[i] < cap {
                    out[i] += 1;
                    sum += 1;
                }
            }
            if sum == before {
                break;
            }
        }
    } else if sum > total {
        order.sort_by(|&a, &b| frac(a).total_cmp(&frac(b)).then(b.cmp(&a)));
        while sum > total {
            let before = sum;
            for &i in &order {
                if sum > total && out[i] > 0 {
                    out[i] -= 1;
                    sum -= 1;
                }
            }
            if sum == before {
                break;
            }
        }
    }
    out
}

/// How many entries each KV head of a layer keeps: the budgeting half of the eviction loop.
pub trait Allocator {
    /// Targets for layer `layer` of `n_layers`, whose heads hold `lens` entries.
    fn targets(&mut self, layer: usize, n_layers: usize, lens: &[usize]) -> Vec<usize>;
}

/// The uniform budget: every head keeps `budget.kept(len)`.
pub struct Uniform<'a>(pub &'a Budget);

impl Allocator for Uniform<'_> {
    fn targets(&mut self, _: usize, _: usize, lens: &[usize]) -> Vec<usize> {
        lens.iter().map(|&len| self.0.kept(len)).collect()
    }
}

/// Any closure `(layer, n_layers, lens) -> targets` is an allocator.
impl<F: FnMut(usize, usize, &[usize]) -> Vec<usize>> Allocator for F {
    fn targets(&mut self, layer: usize, n_layers: usize, lens: &[usize]) -> Vec<usize> {
        self(layer, n_layers, lens)
    }
}

/// What a scored layer keeps: the keeping half of the eviction loop. `TopK` keeps each head's best
/// `targets[h]` entries; other rules share the budget across heads, keep whole chunks or merge.
pub trait KeepRule {
    /// Shrink layer `layer` of `cache` (not yet modified) given its `scores` and `targets`.
    fn apply(
        &mut self,
        cache: &mut KvCache,
        layer: usize,
        obs: &Observations,
        scores: Vec<Vec<f32>>,
        targets: &[usize],
    ) -> Result<()>;
    /// Whether this rule keeps from scores left on the device ([`KeepRule::apply_on_device`]) for
    /// a layer stored as one group with these `targets`: the scorer then scores there when it can
    /// (`Scorer::score_groups`), and the scores never come to the host.
    fn takes_device_scores(&self, _targets: &[usize]) -> bool {
        false
    }
    /// Shrink layer `layer` (one group, not yet modified) given its `[heads, len]` f32 `scores`
    /// on the cache's device. Called only where [`KeepRule::takes_device_scores`] said yes.
    fn apply_on_device(
        &mut self,
        _cache: &mut KvCache,
        layer: usize,
        _obs: &Observations,
        _scores: &Tensor,
        _targets: &[usize],
    ) -> Result<()> {
        Err(MethodError::Cache(format!(
            "layer {layer}: this keep rule takes host scores"
        )))
    }
    /// Layer `layer` loses nothing (every target is at least the head's length): not scored.
    fn unchanged(
        &mut self,
        _cache: &mut KvCache,
        _layer: usize,
        _obs: &Observations,
        _targets: &[usize],
    ) -> Result<()> {
        Ok(())
    }
}

/// Keep each head's `targets[h]` best-scored entries.
pub struct TopK;

/// Each head's top `targets[h]` indices.
pub fn top_k_per_head(scores: &[Vec<f32>], targets: &[usize]) -> Vec<Vec<u32>> {
    scores
        .iter()
        .zip(targets)
        .map(|(s, &t)| top_k_sorted(s, t))
        .collect()
}

impl KeepRule for TopK {
    /// One target for every head: one radix select per head on the device.
    fn takes_device_scores(&self, targets: &[usize]) -> bool {
        targets.iter().all(|&t| t == targets[0])
    }
    fn apply_on_device(
        &mut self,
        cache: &mut KvCache,
        layer: usize,
        _obs: &Observations,
        scores: &Tensor,
        targets: &[usize],
    ) -> Result<()> {
        let dev = scores.device();
        let kept = phase("top-k", dev, || top_k_rows(scores, targets[0]))?;
        phase("retain", dev, || {
            cache.layer_mut(layer).retain_rows(&kept.local, &kept.flat)
        })
    }
    fn apply(
        &mut self,
        cache: &mut KvCache,
        layer: usize,
        _obs: &Observations,
        scores: Vec<Vec<f32>>,
        targets: &[usize],
    ) -> Result<()> {
        cache
            .layer_mut(layer)
            .retain(&top_k_per_head(&scores, targets))
    }
}

/// The one "targets per layer and head, then score, then keep" loop: for every layer, ask
/// `allocator` for each head's target; where some head shrinks, score the layer with `scorer` and
/// let `rule` keep (or merge) the entries; otherwise the layer is left as is, unscored. On a layer
/// stored as one group, a rule that takes device scores (a top-k with one target, AdaKV's shared
/// budget) gets them there when the scorer scores there: the scores never reach the host.
pub fn evict_with(
    cache: &mut KvCache,
    obs: &Observations,
    scorer: &dyn Scorer,
    allocator: &mut dyn Allocator,
    rule: &mut dyn KeepRule,
) -> Result<()> {
    let n_layers = cache.n_layers();
    for l in 0..n_layers {
        let targets = allocator.targets(l, n_layers, &cache.layer(l).head_lens());
        evict_layer_with(cache, l, obs, scorer, &targets, rule)?;
    }
    Ok(())
}

/// One layer of [`evict_with`], for callers that compute the targets themselves.
pub fn evict_layer_with(
    cache: &mut KvCache,
    index: usize,
    obs: &Observations,
    scorer: &dyn Scorer,
    targets: &[usize],
    rule: &mut dyn KeepRule,
) -> Result<()> {
    let lens = cache.layer(index).head_lens();
    if targets.iter().zip(&lens).all(|(&t, &l)| t >= l) {
        return rule.unchanged(cache, index, obs, targets);
    }
    if rule.takes_device_scores(targets) && cache.layer(index).groups().len() == 1 {
        let input = LayerInput {
            index,
            layer: cache.layer(index),
            obs,
            next_position: cache.next_position(),
            targets,
        };
        let dev = cache.device().clone();
        if let Some(groups) = phase("score (device)", &dev, || scorer.score_groups(&input))? {
            let [scores] = groups.as_slice() else {
                return Err(MethodError::Config {
                    method: scorer.scorer_name(),
                    message: format!("layer {index}: {} score tensors for one group", groups.len()),
                });
            };
            let want = (lens.len(), lens[0]);
            if scores.dims() != [want.0, want.1] {
                return Err(MethodError::Config {
                    method: scorer.scorer_name(),
                    message: format!("layer {index}: scores {:?} for heads {want:?}", scores.dims()),
                });
            }
            return phase("keep (device scores)", &dev, || {
                rule.apply_on_device(cache, index, obs, scores, targets)
            });
        }
    }
    let dev = cache.device().clone();
    let scores = phase("score (host)", &dev, || {
        score_layer(cache, index, obs, scorer, targets)
    })?;
    phase("keep (host scores)", &dev, || {
        rule.apply(cache, index, obs, scores, targets)
    })
}

/// Scores of layer `index`, checked to have one value per stored entry.
pub fn score_layer(
    cache: &KvCache,
    index: usize,
    obs: &Observations,
    scorer: &dyn Scorer,
    targets: &[usize],
) -> Result<Vec<Vec<f32>>> {
    let layer = cache.layer(index);
    let lens = layer.head_lens();
    let input = LayerInput {
        index,
        layer,
        obs,
        next_position: cache.next_position(),
        targets,
    };
    let scores = scorer.score(&input)?;
    let got: Vec<usize> = scores.iter().map(|s| s.len()).collect();
    if got != lens {
        return Err(MethodError::Config {
            method: scorer.scorer_name(),
            message: format!("layer {index}: scored {got:?} entries for heads of lengths {lens:?}"),
        });
    }
    Ok(scores)
}

/// Uniform budget: every layer and KV head keeps `budget.kept(len)` of its entries, chosen by `scorer`.
pub fn evict_uniform(
    cache: &mut KvCache,
    obs: &Observations,
    scorer: &dyn Scorer,
    budget: &Budget,
) -> Result<()> {
    evict_with(cache, obs, scorer, &mut Uniform(budget), &mut TopK)
}

/// One layer of [`evict_uniform`]: the same targets and keep rule, for compression layer by
/// layer during the prefill.
pub fn evict_one_layer_uniform(
    cache: &mut KvCache,
    layer: usize,
    obs: &Observations,
    scorer: &dyn Scorer,
    budget: &Budget,
) -> Result<()> {
    let targets = Uniform(budget).targets(layer, cache.n_layers(), &cache.layer(layer).head_lens());
    evict_layer_with(cache, layer, obs, scorer, &targets, &mut TopK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_returns_sorted_indices_and_prefers_recent_ties() {
        assert_eq!(top_k_sorted(&[0.1, 0.9, 0.5, 0.7], 2), vec![1, 3]);
        assert_eq!(top_k_sorted(&[1.0, 1.0, 1.0, 0.0], 2), vec![1, 2]);
        assert_eq!(top_k_sorted(&[f32::NAN, 0.0, f32::INFINITY], 2), vec![1, 2]);
        assert_eq!(top_k_sorted(&[0.3, 0.2], 5), vec![0, 1]);
        assert!(top_k_sorted(&[0.3, 0.2], 0).is_empty());
    }

    /// A one-group layer goes through `score_groups` and the device top-k; what it keeps must be
    /// the host path's choice: `score` then `top_k_per_head`.
    #[test]
    fn device_selection_keeps_the_host_selection() {
        use crate::selection::{keydiff::KeyDiff, knorm::Knorm};
        let scorers: [&dyn Scorer; 2] = [&Knorm::default(), &KeyDiff::default()];
        for scorer in scorers {
            for budget in [Budget::CompressionRatio(0.5), Budget::Tokens(7), Budget::Tokens(1)] {
                let mut cache = crate::testing::random_cache(false);
                let obs = Observations::default();
                let targets = Uniform(&budget).targets(0, 1, &cache.layer(0).head_lens());
                let input = LayerInput {
                    index: 0,
                    layer: cache.layer(0),
                    obs: &obs,
                    next_position: cache.next_position(),
                    targets: &targets,
                };
                let want = top_k_per_head(&scorer.score(&input).unwrap(), &targets);
                evict_uniform(&mut cache, &obs, scorer, &budget).unwrap();
                assert_eq!(crate::testing::keep_of(&cache, 0), want, "{}", scorer.scorer_name());
            }
        }
    }

    #[test]
    fn rounding_keeps_the_total_and_the_cap() {
        let r = round_preserving_sum(&[1.5, 1.5, 1.0], 4, 10);
        assert_eq!(r.iter().sum::<usize>(), 4);
        assert_eq!(r, vec![2, 1, 1]);
        let r = round_preserving_sum(&[5.0, 5.0, -1.0], 9, 4);
        assert_eq!(r, vec![4, 4, 1]);
        assert_eq!(round_preserving_sum(&[2.6, 2.6], 4, 10), vec![2, 2]);
    }
}

/// Implements `Method` for a `Scorer` that evicts every layer and KV head to the uniform budget
/// after prefill: the whole `Method` side of the single-scorer methods (SnapKV, TOVA, KNorm, ...).
macro_rules! uniform_scorer_method {
    ($ty:ty, $name:literal) => {
        impl $crate::Method for $ty {
            fn name(&self) -> &str {
                $name
            }
            fn params(&self) -> serde_json::Value {
                serde_json::to_value(self).unwrap_or_default()
            }
            fn needs(&self) -> $crate::ObservationNeeds {
                $crate::selection::scoring::Scorer::observation_needs(self)
            }
            fn validate(&self) -> std::result::Result<(), $crate::ParamError> {
                $crate::selection::scoring::Scorer::validate(self)
            }
            fn compress(
                &self,
                cache: &mut $crate::KvCache,
                obs: &$crate::Observations,
                budget: &$crate::Budget,
            ) -> std::result::Result<(), $crate::MethodError> {
                $crate::selection::scoring::Scorer::validate(self)?;
                $crate::selection::select::evict_uniform(cache, obs, self, budget)
            }
            fn compresses_by_layer(&self) -> bool {
                true
            }
            fn compress_layer(
                &self,
                cache: &mut $crate::KvCache,
                layer: usize,
                obs: &$crate::Observations,
                budget: &$crate::Budget,
            ) -> std::result::Result<(), $crate::MethodError> {
                $crate::selection::scoring::Scorer::validate(self)?;
                $crate::selection::select::evict_one_layer_uniform(cache, layer, obs, self, budget)
            }
        }
    };
}
pub(crate) use uniform_scorer_method;

//! `kvmerger`: merge runs of consecutive entries whose keys are similar into one entry each, by
//! Gaussian-kernel weights around the most attended entry; evict by score what merging leaves
//! above the budget.
//!
//! Paper: Wang, Jin, Yu and Zhang, "Model Tells You Where to Merge: Adaptive KV Cache Merging for
//! LLMs on Long-Context Tasks", 2024, <https://arxiv.org/abs/2407.08454> (no reference code found).
//! Per KV head:
//! 1. merging sets: the cosine similarity of every pair of adjacent stored keys; pairs at or above
//!    `threshold` link their entries, and runs of linked entries are the merging sets. At most
//!    `len - budget` links are used, the most similar first, so merging alone never takes a head
//!    below its budget (the threshold is raised until it meets the budget, never lowered);
//! 2. each set becomes one entry at the position of its pivot, the entry with the highest attention
//!    accumulated over the prefill (averaged over the query heads of the KV head, as in H2O); key
//!    and value are `sum_i w_i x_i` with `w_i` proportional to `exp(-|k_i - k_p|^2 / (2 sigma^2))`
//!    and `sigma = sum_i |k_i - k_p| / (sqrt(2) |S|)` over the set `S` (one sigma per set);
//! 3. if the head still holds more than its budget, `scorer` evicts: a merged entry scores the
//!    highest score of its members (so a scorer's pinned window stays pinned).
//!
//! The first `skip_first_layers` and last `skip_last_layers` layers are not merged (the paper
//! finds attention there spread over most keys, so merging would add noise); they reach the budget
//! by the scorer's eviction alone.
//!
//! Defaults: `threshold = 0.75`, `skip_first_layers = 2`, `skip_last_layers = 1` (the paper's
//! unmerged layers), scorer `h2o` (the eviction baseline the paper compares with, which also uses
//! the accumulated attention the pivots need).
//!
//! Reading of the paper, to be checked against its full text (only its abstract and secondary
//! summaries could be read here): sets link adjacent keys, scanned as runs (a run may drift if
//! each neighbour is similar to the next; the paper's greedy scan may compare with the set's
//! first key instead); the budget is met by capping the merges and then evicting, where the paper
//! may reach it through the layer-wise threshold alone; values take the same weights as keys; the
//! sigma formula, the unmerged layers and the threshold default are taken from secondary sources.
//!
//! Runs on the cache's device (tensor ops, `crate::device_ops`): similarities, the capped link
//! choice (an exact top-k with the same tie rule), sets as a cumulative sum of run starts, pivots
//! and set scores by a segmented arg-max, kernel weights in f64 and the weighted sums by
//! `run_sum_rows` (a CUDA kernel walking each set in order). On CUDA the top-k masks, the arg-max
//! and the per-set sums are kernels too (`crate::kernels`), and the scorer's scores stay on the
//! device (`KeepRule::apply_on_device`). Against the host implementation it replaced (kept as the test oracle in
//! `kvmerger_oracle.rs`): the same sets, pivots and kept entries, except where a similarity lies
//! within f32 rounding of the threshold or of another one competing for the cap (the sums are
//! ordered differently), and merged rows within 1e-5 (f32 weighted sums in another order).

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::describe::{Describe, Description, Param};
use crate::registry::ScorerConfig;
use crate::device_ops::{cumsum_last, run_argmax, run_sum, run_sum_rows, top_k_mask};
use crate::selection::h2o::H2o;
use crate::selection::scoring::LayerInput;
use crate::selection::select::{evict_with, KeepRule, TopK, Uniform};
use crate::{
    Budget, HeadGroup, KvCache, Method, MethodError, ObservationNeeds, Observations, Storage,
};

type Result<T> = std::result::Result<T, MethodError>;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KvMerger {
    /// Cosine similarity of adjacent keys at or above which their entries may merge.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Leading layers that are only evicted, never merged.
    #[serde(default = "default_skip_first")]
    pub skip_first_layers: usize,
    /// Trailing layers that are only evicted, never merged.
    #[serde(default = "default_skip_last")]
    pub skip_last_layers: usize,
    /// Scorer evicting what merging leaves above the budget.
    #[serde(default = "default_scorer")]
    pub scorer: ScorerConfig,
}

fn default_threshold() -> f64 {
    0.75
}
fn default_skip_first() -> usize {
    2
}
fn default_skip_last() -> usize {
    1
}
fn default_scorer() -> ScorerConfig {
    ScorerConfig::H2o(H2o::default())
}

impl Default for KvMerger {
    fn default() -> Self {
        Self {
            threshold: default_threshold(),
            skip_first_layers: default_skip_first(),
            skip_last_layers: default_skip_last(),
            scorer: default_scorer(),
        }
    }
}

impl Method for KvMerger {
    fn name(&self) -> &str {
        "kvmerger"
    }
    fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn needs(&self) -> ObservationNeeds {
        self.scorer
            .scorer()
            .observation_needs()
            .union(ObservationNeeds {
                accumulated_attention: true,
                ..Default::default()
            })
    }
    fn validate(&self) -> std::result::Result<(), crate::ParamError> {
        if self.threshold.is_nan() {
            return Err(crate::ParamError::new(
                "kvmerger",
                "threshold",
                "is NaN; give a cosine similarity in [-1, 1]",
            ));
        }
        self.scorer.validate_within("kvmerger", "scorer")
    }
    fn compress(&self, cache: &mut KvCache, obs: &Observations, budget: &Budget) -> Result<()> {
        self.validate()?;
        evict_with(
            cache,
            obs,
            self.scorer.scorer(),
            &mut Uniform(budget),
            &mut MergeSimilar(self),
        )
    }
}

/// KVMerger's keep rule: in the merged layers, runs of similar keys merge before the scorer evicts
/// what is left above the target; the skipped first and last layers are only evicted (top-k).
struct MergeSimilar<'a>(&'a KvMerger);

impl KeepRule for MergeSimilar<'_> {
    fn apply(
        &mut self,
        cache: &mut KvCache,
        l: usize,
        obs: &Observations,
        scores: Vec<Vec<f32>>,
        targets: &[usize],
    ) -> Result<()> {
        let n_layers = cache.n_layers();
        if l < self.0.skip_first_layers || l + self.0.skip_last_layers >= n_layers {
            return TopK.apply(cache, l, obs, scores, targets);
        }
        self.merge_layer(cache, l, obs, GroupScores::Host(&scores), targets)
    }
    /// A layer of one group: its scores stay on the device (the skipped layers' top-k too).
    fn takes_device_scores(&self, targets: &[usize]) -> bool {
        TopK.takes_device_scores(targets)
    }
    fn apply_on_device(
        &mut self,
        cache: &mut KvCache,
        l: usize,
        obs: &Observations,
        scores: &Tensor,
        targets: &[usize],
    ) -> Result<()> {
        let n_layers = cache.n_layers();
        if l < self.0.skip_first_layers || l + self.0.skip_last_layers >= n_layers {
            return TopK.apply_on_device(cache, l, obs, scores, targets);
        }
        self.merge_layer(cache, l, obs, GroupScores::Device(scores), targets)
    }
}

/// A layer's scores: per head on the host, or `[heads, len]` f32 on the device (a layer of one
/// group).
enum GroupScores<'a> {
    Host(&'a [Vec<f32>]),
    Device(&'a Tensor),
}

impl GroupScores<'_> {
    /// Group `g`'s rows, `[heads, len]` f32 on `dev`.
    fn of(&self, g: &HeadGroup, dev: &candle_core::Device) -> Result<Tensor> {
        let (h, n) = (g.n_heads(), g.len());
        Ok(match self {
            GroupScores::Host(rows) => {
                let flat: Vec<f32> = rows[g.first_head..g.first_head + h]
                    .iter()
                    .flatten()
                    .copied()
                    .collect();
                Tensor::from_vec(flat, (h, n), dev)?
            }
            GroupScores::Device(t) => t.narrow(0, g.first_head, h)?.to_dtype(DType::F32)?,
        })
    }
}

impl MergeSimilar<'_> {
    fn merge_layer(
        &mut self,
        cache: &mut KvCache,
        l: usize,
        obs: &Observations,
        scores: GroupScores,
        targets: &[usize],
    ) -> Result<()> {
        let layer = cache.layer(l);
        let input = LayerInput {
            index: l,
            layer,
            obs,
            next_position: cache.next_position(),
            targets,
        };
        let mut groups = Vec::new();
        for g in layer.groups() {
            let heads = g.first_head..g.first_head + g.n_heads();
            if heads.clone().all(|h| targets[h] >= g.len()) {
                groups.push(g.clone());
                continue;
            }
            let attention = crate::profile::phase("accumulated attention", &g.storage.device(), || {
                H2o::accumulated_group(&input, g, "kvmerger")
            })?;
            let dev = g.storage.device();
            groups.extend(merge_group(
                g,
                &attention,
                &scores.of(g, &dev)?,
                &targets[heads],
                self.0.threshold,
            )?);
        }
        cache.layer_mut(l).set_groups(groups)
    }
}

/// One group (`heads` KV heads of `len` entries) merged and evicted to each head's target, on the
/// cache's device. `attention` `[heads, len]`; `scores[h]` and `targets[h]` per head.
///
/// What comes to the host: per head, the number of links at or above the threshold (to cap them
/// at `len - target`), then the kept sets (a mask) and their pivots, which give the new entries'
/// positions (the cache keeps positions on the host). `scores`: `[heads, len]` f32 on the device.
fn merge_group(
    g: &HeadGroup,
    attention: &Tensor,
    scores: &Tensor,
    targets: &[usize],
    threshold: f64,
) -> Result<Vec<HeadGroup>> {
    let (k, v) = g.storage.keys_values()?;
    let (h, n, d) = k.dims3()?;
    let dev = k.device().clone();
    let kf = k.to_dtype(DType::F32)?;
    let vf = v.to_dtype(DType::F32)?;
    let step = crate::profile::span("links", &dev);
    // 1. Links: adjacent cosine similarity at or above the threshold (NaN never links), at most
    //    `len - target` per head, the most similar first, ties to the later pair.
    let (links, n_links) = if n >= 2 {
        let norm = kf.sqr()?.sum(2)?.sqrt()?;
        let dot = (kf.narrow(1, 0, n - 1)? * kf.narrow(1, 1, n - 1)?)?.sum(2)?;
        let sims = (dot / (norm.narrow(1, 0, n - 1)? * norm.narrow(1, 1, n - 1)?)?)?;
        let qualifying = sims.ge(threshold)?;
        let count: Vec<f32> = qualifying.to_dtype(DType::F32)?.sum(1)?.to_vec1()?;
        let cap: Vec<usize> = (0..h)
            .map(|i| (count[i] as usize).min(n.saturating_sub(targets[i])))
            .collect();
        let links = if cap.iter().zip(&count).all(|(&c, &q)| c == q as usize) {
            qualifying
        } else {
            top_k_mask(&sims, &cap, Some(&qualifying))?
        };
        (links.to_dtype(DType::F32)?, cap)
    } else {
        (Tensor::zeros((h, 0), DType::F32, &dev)?, vec![0; h])
    };
    drop(step);
    let step = crate::profile::span("sets and pivots", &dev);
    // 2. Sets: runs of linked entries; `set[i]` is entry i's set (0-based, along the head).
    let ones = Tensor::ones((h, 1), DType::F32, &dev)?;
    let unlinked = (1.0 - &links)?;
    let starts = Tensor::cat(&[&ones, &unlinked], 1)?;
    let ends = Tensor::cat(&[&unlinked, &ones], 1)?.ne(0.0)?;
    let set = (cumsum_last(&starts)? - 1.0)?.to_dtype(DType::U32)?;
    let n_sets: Vec<usize> = n_links.iter().map(|&c| n - c).collect();
    // Per set slot (`[h, n]`, slot s = set s), the value a set's last entry holds.
    let at_end = |x: &Tensor| -> Result<Tensor> {
        let x = ends.where_cond(x, &x.zeros_like()?)?;
        Ok(run_sum(&x, &set)?)
    };
    // 3. Pivots: the most attended entry of each set (ties to the later entry).
    let (best, _) = run_argmax(&attention.to_dtype(DType::F32)?, &set)?;
    let pivot_of_set = at_end(&best.to_dtype(DType::F32)?)?.to_dtype(DType::U32)?;
    let pivot = pivot_of_set.gather(&set, 1)?;
    drop(step);
    let step = crate::profile::span("weights and merges", &dev);
    // 4. Gaussian-kernel weights around the pivot key, one sigma per set, in f64 as on the host.
    let k64 = kf.to_dtype(DType::F64)?;
    let expand = |idx: &Tensor| idx.unsqueeze(2)?.broadcast_as((h, n, d))?.contiguous();
    let kp = k64.gather(&expand(&pivot)?, 1)?;
    let dist = (&k64 - kp)?.sqr()?.sum(2)?.sqrt()?;
    let size = run_sum(&Tensor::ones((h, n), DType::F64, &dev)?, &set)?;
    let sigma = (run_sum(&dist, &set)? / (size.maximum(1.0)? * 2f64.sqrt())?)?.gather(&set, 1)?;
    let spread = sigma.gt(0.0)?;
    let sigma_safe = spread.where_cond(&sigma, &sigma.ones_like()?)?;
    let kernel = (dist.sqr()? / (sigma_safe.sqr()? * 2.0)?)?.neg()?.exp()?;
    let kernel = spread.where_cond(&kernel, &kernel.ones_like()?)?;
    let w = (&kernel / run_sum(&kernel, &set)?.gather(&set, 1)?)?
        .to_dtype(DType::F32)?
        .unsqueeze(2)?;
    let merged_k = run_sum_rows(&kf.broadcast_mul(&w)?, &set)?;
    let merged_v = run_sum_rows(&vf.broadcast_mul(&w)?, &set)?;
    drop(step);
    let step = crate::profile::span("set eviction", &dev);
    // 5. Eviction of sets above the target: a set scores its best member (NaN ignored).
    let keep: Vec<usize> = (0..h).map(|i| n_sets[i].min(targets[i])).collect();
    let slot = Tensor::arange(0u32, n as u32, &dev)?.unsqueeze(0)?;
    let n_sets_t = Tensor::from_vec(
        n_sets.iter().map(|&c| c as u32).collect::<Vec<_>>(),
        (h, 1),
        &dev,
    )?;
    let real = slot.broadcast_lt(&n_sets_t)?;
    let kept = if keep == n_sets {
        real
    } else {
        let s = scores.clone();
        let s = s
            .ne(&s)?
            .where_cond(&Tensor::full(f32::NEG_INFINITY, (h, n), &dev)?, &s)?;
        let (_, best_score) = run_argmax(&s, &set)?;
        top_k_mask(&at_end(&best_score)?, &keep, Some(&real))?
    };
    drop(step);
    let _step = crate::profile::span("kept sets", &dev);
    // 6. The kept sets, in order, as the group's new entries at their pivots' positions.
    let kept: Vec<Vec<u8>> = kept.to_vec2()?;
    let pivots: Vec<Vec<u32>> = pivot_of_set.to_vec2()?;
    let slots: Vec<Vec<u32>> = kept
        .iter()
        .map(|row| (0..n as u32).filter(|&s| row[s as usize] != 0).collect())
        .collect();
    let positions: Vec<Vec<u32>> = slots
        .iter()
        .enumerate()
        .map(|(i, row)| {
            row.iter()
                .map(|&s| g.positions[i][pivots[i][s as usize] as usize])
                .collect()
        })
        .collect();
    let pick = |merged: &Tensor, i: usize| -> Result<Tensor> {
        let ids = Tensor::new(slots[i].as_slice(), &dev)?;
        Ok(merged.narrow(0, i, 1)?.index_select(&ids, 1)?.to_dtype(k.dtype())?)
    };
    let m = slots[0].len();
    if slots.iter().all(|s| s.len() == m) {
        let ids = Tensor::from_vec(slots.concat(), (h, m), &dev)?;
        let ids = ids.unsqueeze(2)?.broadcast_as((h, m, d))?.contiguous()?;
        let pick_all = |x: &Tensor| -> Result<Tensor> { Ok(x.gather(&ids, 1)?.to_dtype(k.dtype())?) };
        return Ok(vec![HeadGroup {
            first_head: g.first_head,
            storage: Storage {
                k: g.storage.k.encode_like(&pick_all(&merged_k)?, 0..h)?,
                v: g.storage.v.encode_like(&pick_all(&merged_v)?, 0..h)?,
            },
            positions,
        }]);
    }
    (0..h)
        .map(|i| {
            Ok(HeadGroup {
                first_head: g.first_head + i,
                storage: Storage {
                    k: g.storage.k.encode_like(&pick(&merged_k, i)?, i..i + 1)?,
                    v: g.storage.v.encode_like(&pick(&merged_v, i)?, i..i + 1)?,
                },
                positions: vec![positions[i].clone()],
            })
        })
        .collect()
}

impl Describe for KvMerger {
    const DESCRIPTION: Description = Description {
        family: "merging",
        summary: "Runs of adjacent entries with similar keys (cosine >= threshold) merged into one entry at the most attended one, Gaussian-kernel weighted; a scorer evicts what merging leaves above the budget.",
        paper: "https://arxiv.org/abs/2407.08454",
        params: &[
            Param::new("threshold", "number", "cosine similarity of adjacent keys at or above which their entries may merge"),
            Param::new("skip_first_layers", "integer", "leading layers only evicted, never merged"),
            Param::new("skip_last_layers", "integer", "trailing layers only evicted, never merged"),
            Param::new("scorer", "scorer", "scorer ranking the entries"),
        ],
    };

    fn conformance() -> crate::describe::Conformance {
        // Merged entries' keys and values are rewritten.
        crate::describe::Conformance::default()
            .with_rows(crate::describe::Rows::Rewritten)
            .with_specs([serde_json::json!({
            "method": "kvmerger",
            "threshold": 0.0,
            "skip_first_layers": 0,
            "skip_last_layers": 0,
        })])
    }
}

#[cfg(test)]
#[path = "kvmerger_oracle.rs"]
mod oracle;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::keep_of;
    use crate::LayerObservation;
    use candle_core::Device;

    /// One layer, one KV head (one query head), with the accumulated attention of each entry.
    fn cache_and_obs(
        keys: &[[f32; 2]],
        values: &[[f32; 2]],
        acc: &[f32],
    ) -> (KvCache, Observations) {
        let dev = Device::Cpu;
        let len = keys.len();
        let t = |x: &[[f32; 2]]| Tensor::from_vec(x.concat(), (1, len, 2), &dev).unwrap();
        let mut cache = KvCache::new(1, 1, 2, DType::F32, &dev);
        cache
            .layer_mut(0)
            .append(&t(keys), &t(values), &(0..len as u32).collect::<Vec<_>>())
            .unwrap();
        cache.advance(len);
        let obs = Observations {
            layers: vec![LayerObservation {
                accumulated_attention: Some(
                    Tensor::from_vec(acc.to_vec(), (1, len), &dev).unwrap(),
                ),
                ..Default::default()
            }],
            q_per_kv: 1,
            rope: None,
        };
        (cache, obs)
    }

    fn merging_only() -> KvMerger {
        KvMerger {
            skip_first_layers: 0,
            skip_last_layers: 0,
            ..Default::default()
        }
    }

    // Entries 1, 2, 3 have near-identical keys (adjacent cosine 0.995); 0, 4, 5 are dissimilar to
    // their neighbours (cosine 0, -0.2, 0).
    const KEYS: [[f32; 2]; 6] = [
        [0.0, 1.0],
        [1.0, 0.0],
        [1.0, 0.1],
        [1.0, 0.2],
        [0.0, -1.0],
        [-1.0, 0.0],
    ];
    const VALUES: [[f32; 2]; 6] = [
        [1.0, 1.0],
        [3.0, 0.0],
        [0.0, 6.0],
        [9.0, 3.0],
        [2.0, 2.0],
        [4.0, 5.0],
    ];
    // Entry 2 is the most attended of the run: the pivot.
    const ACC: [f32; 6] = [1.0, 0.2, 0.5, 0.3, 0.4, 0.6];

    fn stored(cache: &KvCache) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let (k, v) = cache.layer(0).dense().unwrap();
        (
            k.get(0).unwrap().to_vec2().unwrap(),
            v.get(0).unwrap().to_vec2().unwrap(),
        )
    }

    #[test]
    fn a_run_of_similar_keys_becomes_one_gaussian_weighted_entry() {
        let (mut cache, obs) = cache_and_obs(&KEYS, &VALUES, &ACC);
        merging_only()
            .compress(&mut cache, &obs, &Budget::Tokens(4))
            .unwrap();
        // The run 1..=3 merges at the pivot's position 2; nothing else needs to go.
        assert_eq!(keep_of(&cache, 0), vec![vec![0, 2, 4, 5]]);
        // Distances to the pivot key: 0.1, 0, 0.1, so sigma = 0.2 / (3 sqrt 2), 2 sigma^2 = 0.04 / 9
        // and each neighbour's kernel is exp(-0.01 / (0.04 / 9)) = exp(-9/4).
        let g = (-2.25f32).exp();
        let (w_side, w_pivot) = (g / (1.0 + 2.0 * g), 1.0 / (1.0 + 2.0 * g));
        let want_k = [1.0, w_side * 0.0 + w_pivot * 0.1 + w_side * 0.2];
        let want_v = [
            w_side * 3.0 + w_pivot * 0.0 + w_side * 9.0,
            w_side * 0.0 + w_pivot * 6.0 + w_side * 3.0,
        ];
        let (k, v) = stored(&cache);
        for c in 0..2 {
            assert!((k[1][c] - want_k[c]).abs() < 1e-5, "{:?}", k[1]);
            assert!((v[1][c] - want_v[c]).abs() < 1e-5, "{:?}", v[1]);
        }
        // Dissimilar entries are untouched.
        for (i, p) in [(0, 0), (2, 4), (3, 5)] {
            assert_eq!(k[i], KEYS[p].to_vec());
            assert_eq!(v[i], VALUES[p].to_vec());
        }
        // 4 entries x (key + value) x 2 dims x 4 bytes.
        assert_eq!(cache.bytes(), 4 * 2 * 2 * 4);
    }

    #[test]
    fn merging_stops_at_the_budget_and_eviction_completes_it() {
        // Budget 5: one link only, the most similar (entries 2 and 3, cosine 0.99523 > 0.99504);
        // pivot 2 (attention 0.5 > 0.3).
        let (mut cache, obs) = cache_and_obs(&KEYS, &VALUES, &ACC);
        merging_only()
            .compress(&mut cache, &obs, &Budget::Tokens(5))
            .unwrap();
        assert_eq!(keep_of(&cache, 0), vec![vec![0, 1, 2, 4, 5]]);
        // Budget 3: the run merges (4 entries), then h2o keeps the most recent (5) and the best
        // score of the rest: entry 0 (1.0) over the set (its best member 0.5) and entry 4 (0.4).
        let (mut cache, obs) = cache_and_obs(&KEYS, &VALUES, &ACC);
        merging_only()
            .compress(&mut cache, &obs, &Budget::Tokens(3))
            .unwrap();
        assert_eq!(keep_of(&cache, 0), vec![vec![0, 2, 5]]);
        assert_eq!(cache.layer(0).head_lens(), vec![3]);
        // Nothing similar enough: the budget is met by eviction alone, rows untouched.
        let (mut cache, obs) = cache_and_obs(&KEYS, &VALUES, &ACC);
        let strict = KvMerger {
            threshold: 0.999,
            ..merging_only()
        };
        strict
            .compress(&mut cache, &obs, &Budget::Tokens(4))
            .unwrap();
        let kept = keep_of(&cache, 0)[0].clone();
        assert_eq!(kept.len(), 4);
        let (k, v) = stored(&cache);
        for (i, &p) in kept.iter().enumerate() {
            assert_eq!(
                (k[i].clone(), v[i].clone()),
                (KEYS[p as usize].to_vec(), VALUES[p as usize].to_vec())
            );
        }
    }

    #[test]
    fn skipped_layers_are_evicted_not_merged() {
        // Default: layer 0 of a one-layer model is among the first two, so h2o alone decides.
        let (mut cache, obs) = cache_and_obs(&KEYS, &VALUES, &ACC);
        KvMerger::default()
            .compress(&mut cache, &obs, &Budget::Tokens(4))
            .unwrap();
        // h2o: recent 2 (4, 5), then the best two of the rest: 0 (1.0) and 2 (0.5).
        assert_eq!(keep_of(&cache, 0), vec![vec![0, 2, 4, 5]]);
        let (_, v) = stored(&cache);
        assert_eq!(v[1], VALUES[2].to_vec());
        // Within budget nothing changes.
        let (mut cache, obs) = cache_and_obs(&KEYS, &VALUES, &ACC);
        merging_only()
            .compress(&mut cache, &obs, &Budget::Tokens(6))
            .unwrap();
        assert_eq!(stored(&cache).1, VALUES.map(|r| r.to_vec()).to_vec());
    }
}

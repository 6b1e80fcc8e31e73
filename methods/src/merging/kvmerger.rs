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
//! The merge runs on the host, `O(len x head_dim)` per head.

use std::ops::Range;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::describe::{Describe, Description, Param};
use crate::registry::ScorerConfig;
use crate::selection::h2o::H2o;
use crate::selection::scoring::LayerInput;
use crate::selection::select::{evict_with, top_k_sorted, KeepRule, TopK, Uniform};
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

fn row(x: &[f32], d: usize, i: usize) -> &[f32] {
    &x[i * d..(i + 1) * d]
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// Merging sets of one head (`keys` is `[len, d]` row-major): runs of entries linked by adjacent
/// cosine similarity `>= threshold`, using at most `max_links` links, the most similar first (ties
/// to the later pair). Returns ranges covering `0..len` in order.
pub fn merging_sets(keys: &[f32], d: usize, threshold: f32, max_links: usize) -> Vec<Range<usize>> {
    let len = keys.len() / d;
    let mut links: Vec<(f32, usize)> = (0..len.saturating_sub(1))
        .map(|i| (cosine(row(keys, d, i), row(keys, d, i + 1)), i))
        .filter(|&(s, _)| s >= threshold) // NaN (a zero key) never links
        .collect();
    links.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
    let mut linked = vec![false; len];
    for &(_, i) in links.iter().take(max_links) {
        linked[i] = true;
    }
    let mut sets = Vec::new();
    let mut start = 0;
    for (i, &joined) in linked.iter().enumerate() {
        if !joined {
            sets.push(start..i + 1);
            start = i + 1;
        }
    }
    sets
}

/// One merging set as a single entry: `(pivot, key, value)`, the pivot being the set's entry with
/// the highest `attention` (ties to the later entry), key and value Gaussian-kernel weighted
/// averages around the pivot's key.
pub fn gaussian_merge(
    keys: &[f32],
    values: &[f32],
    d: usize,
    set: Range<usize>,
    attention: &[f32],
) -> (usize, Vec<f32>, Vec<f32>) {
    let pivot = set
        .clone()
        .reduce(|best, i| {
            if attention[i].total_cmp(&attention[best]).is_ge() {
                i
            } else {
                best
            }
        })
        .expect("merging sets are not empty");
    let kp = row(keys, d, pivot);
    let dist: Vec<f64> = set
        .clone()
        .map(|i| {
            row(keys, d, i)
                .iter()
                .zip(kp)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    let sigma = dist.iter().sum::<f64>() / (2f64.sqrt() * dist.len() as f64);
    // Identical keys (sigma 0): equal weights.
    let g: Vec<f64> = dist
        .iter()
        .map(|&r| {
            if sigma > 0.0 {
                (-r * r / (2.0 * sigma * sigma)).exp()
            } else {
                1.0
            }
        })
        .collect();
    let total: f64 = g.iter().sum();
    let mut k = vec![0f32; d];
    let mut v = vec![0f32; d];
    for (i, w) in set.zip(&g) {
        let w = (w / total) as f32;
        for c in 0..d {
            k[c] += w * keys[i * d + c];
            v[c] += w * values[i * d + c];
        }
    }
    (pivot, k, v)
}

/// One head's entries: keys and values (`[n, d]` row-major) and positions.
pub type HeadRows = (Vec<f32>, Vec<f32>, Vec<u32>);

/// One head as stored, on the host: keys and values `[len, d]` row-major, positions, and each
/// entry's accumulated attention and score.
pub struct HeadInput<'a> {
    pub keys: &'a [f32],
    pub values: &'a [f32],
    pub d: usize,
    pub positions: &'a [u32],
    pub attention: &'a [f32],
    pub scores: &'a [f32],
}

/// One head compressed to at most `target` entries: merged sets, then the best `target` of them by
/// `scores` (a set scores its best member).
pub fn merge_head(head: &HeadInput, threshold: f32, target: usize) -> HeadRows {
    let HeadInput {
        keys,
        values,
        d,
        positions,
        attention,
        scores,
    } = *head;
    let len = positions.len();
    let sets = merging_sets(keys, d, threshold, len.saturating_sub(target));
    let set_scores: Vec<f32> = sets
        .iter()
        .map(|s| {
            scores[s.clone()]
                .iter()
                .copied()
                .filter(|x| !x.is_nan())
                .fold(f32::NEG_INFINITY, f32::max)
        })
        .collect();
    let kept = top_k_sorted(&set_scores, target);
    let (mut k, mut v, mut p) = (Vec::new(), Vec::new(), Vec::new());
    for &s in &kept {
        let set = sets[s as usize].clone();
        if set.len() == 1 {
            k.extend_from_slice(row(keys, d, set.start));
            v.extend_from_slice(row(values, d, set.start));
            p.push(positions[set.start]);
        } else {
            let (pivot, mk, mv) = gaussian_merge(keys, values, d, set, attention);
            k.extend(mk);
            v.extend(mv);
            p.push(positions[pivot]);
        }
    }
    (k, v, p)
}

/// A group rebuilt from its heads' new entries, in the group's storage forms: one group when the
/// heads agree in length, else one group per head.
fn rebuild(g: &HeadGroup, heads: Vec<HeadRows>, like: &Tensor) -> Result<Vec<HeadGroup>> {
    let d = like.dim(2)?;
    let tensor = |x: Vec<f32>, n: usize, len: usize| -> Result<Tensor> {
        Ok(Tensor::from_vec(x, (n, len, d), like.device())?.to_dtype(like.dtype())?)
    };
    let len0 = heads[0].2.len();
    if heads.iter().all(|h| h.2.len() == len0) {
        let n = heads.len();
        let (mut k, mut v, mut pos) = (Vec::new(), Vec::new(), Vec::new());
        for (hk, hv, hp) in heads {
            k.extend(hk);
            v.extend(hv);
            pos.push(hp);
        }
        let storage = Storage {
            k: g.storage.k.encode_like(&tensor(k, n, len0)?, 0..n)?,
            v: g.storage.v.encode_like(&tensor(v, n, len0)?, 0..n)?,
        };
        return Ok(vec![HeadGroup {
            first_head: g.first_head,
            storage,
            positions: pos,
        }]);
    }
    heads
        .into_iter()
        .enumerate()
        .map(|(local, (hk, hv, hp))| {
            let len = hp.len();
            Ok(HeadGroup {
                first_head: g.first_head + local,
                storage: Storage {
                    k: g.storage
                        .k
                        .encode_like(&tensor(hk, 1, len)?, local..local + 1)?,
                    v: g.storage
                        .v
                        .encode_like(&tensor(hv, 1, len)?, local..local + 1)?,
                },
                positions: vec![hp],
            })
        })
        .collect()
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
        let layer = cache.layer(l);
        let input = LayerInput {
            index: l,
            layer,
            obs,
            next_position: cache.next_position(),
            targets,
        };
        let attention = H2o::accumulated(&input, "kvmerger")?;
        let mut groups = Vec::new();
        for g in layer.groups() {
            let heads = g.first_head..g.first_head + g.n_heads();
            if heads.clone().all(|h| targets[h] >= g.len()) {
                groups.push(g.clone());
                continue;
            }
            let (k, v) = g.storage.keys_values()?;
            let (_, len, d) = k.dims3()?;
            let hk = k.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let hv = v.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let per_head = heads
                .enumerate()
                .map(|(local, h)| {
                    let span = local * len * d..(local + 1) * len * d;
                    let head = HeadInput {
                        keys: &hk[span.clone()],
                        values: &hv[span],
                        d,
                        positions: &g.positions[local],
                        attention: &attention[h],
                        scores: &scores[h],
                    };
                    merge_head(&head, self.0.threshold as f32, targets[h])
                })
                .collect();
            groups.extend(rebuild(g, per_head, &k)?);
        }
        cache.layer_mut(l).set_groups(groups)
    }
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

    #[test]
    fn sets_follow_adjacent_similarity() {
        let flat: Vec<f32> = KEYS.concat();
        assert_eq!(
            merging_sets(&flat, 2, 0.75, 6),
            vec![0..1, 1..4, 4..5, 5..6]
        );
        assert_eq!(
            merging_sets(&flat, 2, 0.75, 1),
            vec![0..1, 1..2, 2..4, 4..5, 5..6]
        );
        assert_eq!(merging_sets(&flat, 2, 0.75, 0).len(), 6);
        // A zero key never links.
        assert_eq!(merging_sets(&[0.0, 0.0, 0.0, 0.0], 2, -1.0, 1).len(), 2);
    }
}

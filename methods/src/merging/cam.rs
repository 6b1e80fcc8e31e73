//! `cam`: cache merging. A scorer picks the entries to keep, as in eviction, but the values of the
//! evicted entries are merged into the entries that follow them instead of being dropped.
//!
//! Paper: Zhang et al., "CaM: Cache Merging for Memory-efficient LLMs Inference", ICML 2024,
//! <https://proceedings.mlr.press/v235/zhang24n.html>; reference code <https://github.com/zyxxmu/cam>.
//! Per KV head, the evicted entries are visited in position order; each one passes its value (with
//! what it has received so far) in equal shares `1/m` to the next `m` entries of the head, or
//! passes nothing, by a Bernoulli draw with probability `clamp(A_i / mean(A_j over those m), 0, 1)`,
//! `A` being the attention each entry received, accumulated over the prefill (averaged over the
//! query heads of the KV head, as in H2O). An evicted receiver passes the mass on in its turn, so
//! it ends up in the kept entries: this is the reference code's sequence, where the token leaving
//! the recent window merges into the `m` tokens after it, which leave the window later in turn.
//! Keys are unchanged and kept entries keep their positions; the draws are seeded per (`seed`,
//! layer, head), so runs are reproducible.
//!
//! Defaults: scorer `streaming_llm` (4 sinks plus the recent window): the reference code builds
//! CaM on the start + recent pattern (`start_ratio`, `recent_ratio`, compared with StreamingLLM
//! and H2O); `merge_budget = 0` = the kept entries after the last evicted one, i.e. the scorer's
//! recent window, as the reference code's `merge_budget = recent_budget`; `seed = 0`.
//!
//! Deviations from the reference code: the probability divides by the mean accumulated attention
//! of the receiving entries (the paper's rule, also kvpress's); the reference code divides by the
//! maximum over the sinks and the window. `A` is the full-attention prefill's accumulated
//! attention, where the reference code averages the masked (sinks + window) attention of the
//! queries seen so far. Merging happens once, on the prefilled context, with the budget axis (as
//! kvpress's prefill presses compress), not at every generated token. Near the end of a head fewer
//! than `m` entries may follow an evicted one; the shares then divide by the entries there are
//! (the reference code always divides by `m`). The merge runs on the host, `O(len x head_dim)`
//! per head.
//!
//! Not kvpress's `CAMPress`, which is a `DecodingPress` (kvpress/presses/cam_press.py): it leaves
//! the prefilled context alone and, during generation, every `compression_interval` (512) steps
//! cuts the cache to `target_size` (2048); its scores are averaged over the KV heads, so every KV
//! head evicts the same positions; only the `k` best-scored evicted entries (`k` = steps since the
//! last compression) are merged, each into the next `merge_budget` (32) *kept* entries, with no
//! cascade through evicted ones; and `A` sums the attention of the generated tokens only. For
//! kvpress-style decode-time compression use `decoding` (eviction without merging).

use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::describe::{Describe, Description, Param};
use crate::registry::ScorerConfig;
use crate::selection::h2o::H2o;
use crate::selection::scoring::LayerInput;
use crate::selection::select::{evict_with, top_k_per_head, KeepRule, Uniform};
use crate::selection::streaming_llm::StreamingLlm;
use crate::{Budget, KvCache, Method, MethodError, ObservationNeeds, Observations, Storage};

type Result<T> = std::result::Result<T, MethodError>;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Cam {
    /// Scorer choosing the kept entries.
    #[serde(default = "default_scorer")]
    pub scorer: ScorerConfig,
    /// Entries each evicted value is spread over; 0 = the kept entries after the last evicted one.
    #[serde(default)]
    pub merge_budget: usize,
    /// Seed of the per-layer, per-head Bernoulli draws.
    #[serde(default)]
    pub seed: u64,
}

fn default_scorer() -> ScorerConfig {
    ScorerConfig::StreamingLlm(StreamingLlm::default())
}

impl Default for Cam {
    fn default() -> Self {
        Self {
            scorer: default_scorer(),
            merge_budget: 0,
            seed: 0,
        }
    }
}

/// Probability that an evicted entry with accumulated attention `own` merges into receivers whose
/// mean accumulated attention is `receivers`: `own / receivers` clamped to `[0, 1]` (0 when both are
/// 0, 1 when only the receivers' is).
pub fn merge_probability(own: f32, receivers: f32) -> f32 {
    let p = own / receivers;
    if p.is_nan() {
        0.0
    } else {
        p.clamp(0.0, 1.0)
    }
}

/// Receivers per evicted entry when `merge_budget = 0`: the kept entries after the last evicted
/// one (at least 1). `kept` is sorted; `len` the head's length.
pub fn auto_merge_budget(kept: &[u32], len: usize) -> usize {
    let last_evicted = (0..len as u32)
        .rev()
        .find(|i| kept.binary_search(i).is_err());
    match last_evicted {
        Some(e) => (len - 1 - e as usize).max(1),
        None => 1,
    }
}

/// One head's values after merging: `values` is `[len, d]` row-major, `attention` one accumulated
/// score per entry, `kept` the sorted kept indices, `m` the receivers per evicted entry; `draw`
/// gives one uniform number in `[0, 1)` per evicted entry that has receivers (merge when below the
/// probability). Returns every entry's value, `[len, d]`: kept entries' final values; an evicted
/// entry holds what it had when it passed it on.
pub fn merge_values(
    values: &[f32],
    d: usize,
    attention: &[f32],
    kept: &[u32],
    m: usize,
    mut draw: impl FnMut() -> f32,
) -> Vec<f32> {
    let len = attention.len();
    let mut out = values.to_vec();
    // prefix[j] = sum of attention[..j], for the receivers' mean.
    let mut prefix = vec![0f64; len + 1];
    for (j, &a) in attention.iter().enumerate() {
        prefix[j + 1] = prefix[j] + a as f64;
    }
    // A share added to entries j+1..=j+count is added to the running `acc` after entry j and
    // removed again at j+1+count (`ends`), so the sweep is O(len x d) whatever m is.
    let mut acc = vec![0f32; d];
    let mut ends = vec![0f32; (len + 1) * d];
    let mut next_kept = kept.iter().peekable();
    for j in 0..len {
        for (a, e) in acc.iter_mut().zip(&ends[j * d..(j + 1) * d]) {
            *a -= e;
        }
        let row = &mut out[j * d..(j + 1) * d];
        for (x, a) in row.iter_mut().zip(&acc) {
            *x += a;
        }
        if next_kept.peek() == Some(&&(j as u32)) {
            next_kept.next();
            continue;
        }
        let count = m.min(len - 1 - j);
        if count == 0 {
            continue;
        }
        let mean = ((prefix[j + 1 + count] - prefix[j + 1]) / count as f64) as f32;
        if draw() >= merge_probability(attention[j], mean) {
            continue;
        }
        let end = j + 1 + count;
        for c in 0..d {
            let share = out[j * d + c] / count as f32;
            acc[c] += share;
            ends[end * d + c] += share;
        }
    }
    out
}

impl Cam {
    fn stream(&self, layer: usize, head: usize) -> rand::rngs::StdRng {
        let s =
            self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((layer as u64) << 20) ^ head as u64;
        rand::rngs::StdRng::seed_from_u64(s)
    }
}

impl Method for Cam {
    fn name(&self) -> &str {
        "cam"
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
        self.scorer.validate_within("cam", "scorer")
    }
    fn compress(&self, cache: &mut KvCache, obs: &Observations, budget: &Budget) -> Result<()> {
        evict_with(
            cache,
            obs,
            self.scorer.scorer(),
            &mut Uniform(budget),
            &mut MergeEvicted(self),
        )
    }
}

/// CaM's keep rule: each head's top-k, the evicted values first merged into the kept ones.
struct MergeEvicted<'a>(&'a Cam);

impl KeepRule for MergeEvicted<'_> {
    fn apply(
        &mut self,
        cache: &mut KvCache,
        l: usize,
        obs: &Observations,
        scores: Vec<Vec<f32>>,
        targets: &[usize],
    ) -> Result<()> {
        let keep = top_k_per_head(&scores, targets);
        let input = LayerInput {
            index: l,
            layer: cache.layer(l),
            obs,
            next_position: cache.next_position(),
            targets,
        };
        let attention = H2o::accumulated(&input, "cam")?;
        // Rewrite the values of every group that loses entries, then evict as usual.
        cache.layer_mut(l).restore(|g| {
            let (n, len) = (g.n_heads(), g.len());
            let heads = g.first_head..g.first_head + n;
            if heads.clone().all(|h| keep[h].len() >= len) {
                return Ok(g.storage.clone());
            }
            let v = g.storage.v.reconstruct()?;
            let d = v.dim(2)?;
            let host = v.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let mut merged = Vec::with_capacity(host.len());
            for (local, h) in heads.enumerate() {
                let rows = &host[local * len * d..(local + 1) * len * d];
                if keep[h].len() >= len {
                    merged.extend_from_slice(rows);
                    continue;
                }
                let m = match self.0.merge_budget {
                    0 => auto_merge_budget(&keep[h], len),
                    m => m,
                };
                let mut rng = self.0.stream(l, h);
                merged.extend(merge_values(rows, d, &attention[h], &keep[h], m, || {
                    rng.gen::<f32>()
                }));
            }
            let merged = Tensor::from_vec(merged, (n, len, d), v.device())?.to_dtype(v.dtype())?;
            Ok(Storage {
                k: g.storage.k.clone(),
                v: g.storage.v.encode_like(&merged, 0..n)?,
            })
        })?;
        cache.layer_mut(l).retain(&keep)
    }
}

impl Describe for Cam {
    const DESCRIPTION: Description = Description {
        family: "merging",
        summary: "After the prefill, a scorer picks the kept entries per head; each evicted value is spread over the next `merge_budget` entries (Bernoulli, probability its accumulated attention over theirs) instead of dropped; keys unchanged. Not kvpress's decode-time CAMPress.",
        paper: "https://proceedings.mlr.press/v235/zhang24n.html",
        params: &[
            Param::new("scorer", "scorer", "scorer ranking the entries"),
            Param::new("merge_budget", "integer", "entries each evicted value is spread over; 0 = the kept entries after the last evicted one (the scorer's recent window)"),
            Param::new("seed", "integer", "seed of the per-layer, per-head Bernoulli draws"),
        ],
    };

    fn conformance() -> crate::describe::Conformance {
        // The kept entries' values absorb the evicted ones.
        crate::describe::Conformance::default()
            .with_rows(crate::describe::Rows::ValuesRewritten)
            .with_specs([
            serde_json::json!({"method": "cam", "scorer": {"method": "h2o"}, "merge_budget": 4, "seed": 3}),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::keep_of;
    use crate::LayerObservation;
    use candle_core::Device;

    /// One layer, one KV head (one query head): keys `[len][d]`, values `[len][d]`, and the
    /// accumulated attention of each entry.
    fn cache_and_obs(
        keys: &[Vec<f32>],
        values: &[Vec<f32>],
        acc: &[f32],
    ) -> (KvCache, Observations) {
        let dev = Device::Cpu;
        let (len, d) = (keys.len(), keys[0].len());
        let t = |x: &[Vec<f32>]| Tensor::from_vec(x.concat(), (1, len, d), &dev).unwrap();
        let mut cache = KvCache::new(1, 1, d, DType::F32, &dev);
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

    #[test]
    fn evicted_values_cascade_into_the_following_entries() {
        // StreamingLLM with 1 sink keeps 0 and the window 4, 5 of 6 (budget 3); 1, 2, 3 are
        // evicted; auto merge budget m = 2 (the window). Attention [5, 4, 2, 0, 1, 1]:
        // - entry 1: p = 4 / mean(2, 0) -> 1: V2 += V1/2, V3 += V1/2;
        // - entry 2: p = 2 / mean(0, 1) -> 1: (V2 + V1/2) / 2 to entries 3 and 4;
        // - entry 3: p = 0: what it holds is dropped.
        // So V4' = V4 + (V2 + V1/2) / 2 = [1, 1] + ([2, 2] + [2, 4]) / 2 = [3, 4].
        let keys: Vec<Vec<f32>> = (0..6).map(|i| vec![i as f32, 1.0]).collect();
        let values = vec![
            vec![9.0, 9.0],
            vec![4.0, 8.0],
            vec![2.0, 2.0],
            vec![7.0, 7.0],
            vec![1.0, 1.0],
            vec![5.0, 6.0],
        ];
        let (mut cache, obs) = cache_and_obs(&keys, &values, &[5.0, 4.0, 2.0, 0.0, 1.0, 1.0]);
        let m = Cam {
            scorer: ScorerConfig::StreamingLlm(StreamingLlm { sinks: 1 }),
            ..Default::default()
        };
        assert!(m.needs().accumulated_attention);
        m.compress(&mut cache, &obs, &Budget::Tokens(3)).unwrap();
        assert_eq!(keep_of(&cache, 0), vec![vec![0, 4, 5]]);
        let (k, v) = cache.layer(0).dense().unwrap();
        let k: Vec<Vec<f32>> = k.get(0).unwrap().to_vec2().unwrap();
        let v: Vec<Vec<f32>> = v.get(0).unwrap().to_vec2().unwrap();
        assert_eq!(k, vec![keys[0].clone(), keys[4].clone(), keys[5].clone()]);
        assert_eq!(v, vec![vec![9.0, 9.0], vec![3.0, 4.0], vec![5.0, 6.0]]);
        // 3 entries x (key + value) x 2 dims x 4 bytes.
        assert_eq!(cache.bytes(), 3 * 2 * 2 * 4);
        // Within budget: nothing changes.
        let (mut full, obs) = cache_and_obs(&keys, &values, &[1.0; 6]);
        m.compress(&mut full, &obs, &Budget::Tokens(6)).unwrap();
        let v: Vec<Vec<f32>> = full
            .layer(0)
            .dense()
            .unwrap()
            .1
            .get(0)
            .unwrap()
            .to_vec2()
            .unwrap();
        assert_eq!(v, values);
    }

    #[test]
    fn the_draw_gates_each_merge_by_its_probability() {
        // Entry 0 evicted, one receiver (entry 1), m = 1: p = 1 / 2.
        let values = [2.0f32, 10.0];
        let attention = [1.0f32, 2.0];
        assert_eq!(merge_probability(1.0, 2.0), 0.5);
        assert_eq!(
            merge_values(&values, 1, &attention, &[1], 1, || 0.4),
            vec![2.0, 12.0]
        );
        assert_eq!(
            merge_values(&values, 1, &attention, &[1], 1, || 0.6),
            vec![2.0, 10.0]
        );
        // Edge cases: nothing received by anyone, or only by the receivers.
        assert_eq!(merge_probability(0.0, 0.0), 0.0);
        assert_eq!(merge_probability(1.0, 0.0), 1.0);
        // The last entry has no receivers: its value is dropped, no draw is taken.
        let out = merge_values(&[1.0, 3.0], 1, &[1.0, 1.0], &[0], 4, || panic!("no draw"));
        assert_eq!(out, vec![1.0, 3.0]);
    }

    #[test]
    fn auto_merge_budget_is_the_window_after_the_last_eviction() {
        assert_eq!(auto_merge_budget(&[0, 4, 5], 6), 2);
        assert_eq!(auto_merge_budget(&[0, 1, 2], 6), 1);
        assert_eq!(auto_merge_budget(&[1, 2, 3, 4, 5], 6), 5);
    }

    #[test]
    fn seeded_draws_are_reproducible() {
        // Fractional probabilities everywhere: results depend on the draws, which the seed fixes.
        let len = 40;
        let keys: Vec<Vec<f32>> = (0..len).map(|i| vec![i as f32]).collect();
        let values: Vec<Vec<f32>> = (0..len).map(|i| vec![1.0 + i as f32]).collect();
        let acc: Vec<f32> = (0..len).map(|i| 1.0 + (i % 3) as f32).collect();
        let run = |seed| {
            let (mut c, obs) = cache_and_obs(&keys, &values, &acc);
            Cam {
                seed,
                ..Default::default()
            }
            .compress(&mut c, &obs, &Budget::Tokens(10))
            .unwrap();
            c.layer(0)
                .dense()
                .unwrap()
                .1
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(run(0), run(0));
        assert_ne!(run(0), run(1));
    }
}

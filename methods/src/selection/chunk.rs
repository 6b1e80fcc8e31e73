//! `chunk` (ChunkKV): evict whole contiguous chunks of `chunk_size` entries instead of single
//! entries, so that kept text stays in semantically whole pieces.
//!
//! Paper: Liu et al., "ChunkKV: Semantic-Preserving KV Cache Compression for Efficient
//! Long-Context LLM Inference", 2025, <https://arxiv.org/abs/2502.00299>. Each layer's entries are
//! cut into consecutive chunks of `chunk_size` (the last one may be shorter); a chunk's score is
//! the mean over its entries of the scorer's scores summed over the layer's KV heads (kvpress's
//! `ChunkKVPress`); the best chunks are kept, the same chunks for every head of the layer.
//!
//! Defaults: `chunk_size = 20` and a `snapkv` scorer, as kvpress's `ChunkKVPress` (its
//! `chunk_length` default) wrapped around `SnapKVPress`; the paper uses SnapKV-style window
//! attention as the score. Difference from kvpress, which keeps `max(1, floor(n_chunks x (1 -
//! ratio)))` whole chunks: here the budget is exact, as for every kvbench method: whole chunks are
//! kept in score order while they fit, and the next chunk in that order fills the rest of the
//! budget with its best entries. Heads of different lengths (after a ragged method in a
//! composition) choose their chunks independently.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::describe::{Describe, Description, Param};
use crate::registry::ScorerConfig;
use crate::selection::select::{evict_with, top_k_sorted, KeepRule, Uniform};
use crate::{Budget, KvCache, Method, MethodError, ObservationNeeds, Observations};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Chunk {
    /// Entries per chunk, the unit of eviction.
    #[serde(default = "default_chunk_size")]
    pub chunk_size: usize,
    /// Scorer whose per-entry scores rank the chunks.
    #[serde(default)]
    pub scorer: ScorerConfig,
}

fn default_chunk_size() -> usize {
    20
}

impl Default for Chunk {
    fn default() -> Self {
        Chunk {
            chunk_size: default_chunk_size(),
            scorer: ScorerConfig::default(),
        }
    }
}

/// Entries to keep out of `scores` (one per entry): the chunks of `size` entries with the highest
/// mean score (ties to the later chunk), whole while they fit in `target`, the rest of `target`
/// from the next chunk's best entries. Returned in increasing order.
pub fn keep_chunks(scores: &[f32], size: usize, target: usize) -> Vec<u32> {
    let len = scores.len();
    if target >= len {
        return (0..len as u32).collect();
    }
    let size = size.max(1);
    let n = len.div_ceil(size);
    let range = |c: usize| c * size..((c + 1) * size).min(len);
    let means: Vec<f32> = (0..n)
        .map(|c| {
            let r = range(c);
            let count = r.len() as f32;
            scores[r].iter().sum::<f32>() / count
        })
        .collect();
    // Chunks best first, with `top_k_sorted`'s rule: NaN last, ties to the later chunk.
    let key = |c: usize| {
        if means[c].is_nan() {
            f32::NEG_INFINITY
        } else {
            means[c]
        }
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(b.cmp(&a)));
    let mut keep = Vec::with_capacity(target);
    for c in order {
        let left = target - keep.len();
        if left == 0 {
            break;
        }
        let r = range(c);
        if r.len() <= left {
            keep.extend(r.map(|i| i as u32));
        } else {
            let start = r.start;
            let best = top_k_sorted(&scores[r], left);
            keep.extend(best.into_iter().map(|i| i + start as u32));
        }
    }
    keep.sort_unstable();
    keep
}

impl Method for Chunk {
    fn name(&self) -> &str {
        "chunk"
    }
    fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn needs(&self) -> ObservationNeeds {
        self.scorer.scorer().observation_needs()
    }
    fn validate(&self) -> Result<(), crate::ParamError> {
        crate::params::check_positive(
            "chunk",
            "chunk_size",
            self.chunk_size,
            "entries per chunk, the unit of eviction",
        )?;
        self.scorer.validate_within("chunk", "scorer")
    }
    fn compress(
        &self,
        cache: &mut KvCache,
        obs: &Observations,
        budget: &Budget,
    ) -> Result<(), MethodError> {
        self.validate()?;
        let mut rule = Chunks(self.chunk_size);
        evict_with(
            cache,
            obs,
            self.scorer.scorer(),
            &mut Uniform(budget),
            &mut rule,
        )
    }
}

/// Keep whole chunks: one choice per layer from the summed scores when the heads are of one
/// length, else one per head.
struct Chunks(usize);

impl KeepRule for Chunks {
    fn apply(
        &mut self,
        cache: &mut KvCache,
        l: usize,
        _obs: &Observations,
        scores: Vec<Vec<f32>>,
        targets: &[usize],
    ) -> Result<(), MethodError> {
        let lens = cache.layer(l).head_lens();
        let keep: Vec<Vec<u32>> = if lens.iter().all(|&len| len == lens[0]) {
            // One choice for the layer, from the scores summed over its heads.
            let mut summed = vec![0f32; lens[0]];
            for s in &scores {
                for (a, b) in summed.iter_mut().zip(s) {
                    *a += b;
                }
            }
            let shared = keep_chunks(&summed, self.0, targets[0]);
            vec![shared; lens.len()]
        } else {
            scores
                .iter()
                .zip(targets)
                .map(|(s, &t)| keep_chunks(s, self.0, t))
                .collect()
        };
        cache.layer_mut(l).retain(&keep)
    }
    /// A layer of one group: its heads are of one length, so only the scores summed over the
    /// heads (on the device) come to the host, `len` values instead of `heads x len`.
    fn takes_device_scores(&self, _targets: &[usize]) -> bool {
        true
    }
    fn apply_on_device(
        &mut self,
        cache: &mut KvCache,
        l: usize,
        _obs: &Observations,
        scores: &Tensor,
        targets: &[usize],
    ) -> Result<(), MethodError> {
        let summed: Vec<f32> = scores.sum(0)?.to_vec1()?;
        let shared = keep_chunks(&summed, self.0, targets[0]);
        let keep = vec![shared; scores.dim(0)?];
        cache.layer_mut(l).retain(&keep)
    }
}

impl Describe for Chunk {
    const DESCRIPTION: Description = Description {
        family: "scorer",
        summary: "ChunkKV: whole chunks of `chunk_size` consecutive entries kept or evicted together, ranked by the mean of a scorer's scores summed over the layer's heads (one choice per layer).",
        paper: "https://arxiv.org/abs/2502.00299",
        params: &[
            Param::new("chunk_size", "integer", "entries per chunk, the unit of eviction"),
            Param::new("scorer", "scorer", "scorer whose per-entry scores rank the chunks"),
        ],
    };

    fn conformance() -> crate::describe::Conformance {
        crate::describe::Conformance::default().with_specs([
            serde_json::json!({"method": "chunk", "chunk_size": 5, "scorer": {"method": "h2o"}}),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::knorm::Knorm;
    use crate::testing::{cache_with_keys, keep_of};

    fn knorm_chunks(size: usize) -> Chunk {
        Chunk {
            chunk_size: size,
            scorer: ScorerConfig::Knorm(Knorm::default()),
        }
    }

    /// Key norms [1, 9, 2, 2, 8, 8, 1, 1]: knorm alone keeps entries 0, 6, 7 and one of 2 or 3;
    /// chunks of 2 (means -5, -2, -8, -1) keep chunks 3 and 1 whole.
    #[test]
    fn keeps_whole_chunks_by_mean_score() {
        let norms = [1.0f32, 9.0, 2.0, 2.0, 8.0, 8.0, 1.0, 1.0];
        let keys = vec![norms.iter().map(|&n| vec![n]).collect::<Vec<_>>()];
        let mut cache = cache_with_keys(&keys);
        knorm_chunks(2)
            .compress(
                &mut cache,
                &Observations::default(),
                &Budget::CompressionRatio(0.5),
            )
            .unwrap();
        assert_eq!(keep_of(&cache, 0), vec![vec![2, 3, 6, 7]]);
        // Exact budget: 5 kept = chunks 3 and 1, then the best entry of chunk 0 (the next best).
        let mut cache = cache_with_keys(&keys);
        knorm_chunks(2)
            .compress(&mut cache, &Observations::default(), &Budget::Tokens(5))
            .unwrap();
        assert_eq!(keep_of(&cache, 0), vec![vec![0, 2, 3, 6, 7]]);
    }

    #[test]
    fn last_chunk_may_be_short_and_heads_share_the_choice() {
        // Scores -norm; the short last chunk [6] has mean -1, the best.
        assert_eq!(
            keep_chunks(&[-3.0, -3.0, -2.0, -2.0, -9.0, -9.0, -1.0], 2, 3),
            vec![2, 3, 6]
        );
        assert_eq!(keep_chunks(&[1.0, 2.0], 4, 5), vec![0, 1]);
        // Two heads: head 0 prefers chunk 0, head 1 chunk 1 more strongly; the sum decides.
        let keys = vec![
            vec![vec![1.0], vec![1.0], vec![2.0], vec![2.0]],
            vec![vec![9.0], vec![9.0], vec![1.0], vec![1.0]],
        ];
        let mut cache = cache_with_keys(&keys);
        knorm_chunks(2)
            .compress(&mut cache, &Observations::default(), &Budget::Tokens(2))
            .unwrap();
        assert_eq!(keep_of(&cache, 0), vec![vec![2, 3], vec![2, 3]]);
    }

    #[test]
    fn chunk_size_zero_is_rejected() {
        let e = knorm_chunks(0).validate().unwrap_err();
        assert_eq!((e.method, e.field.as_str()), ("chunk", "chunk_size"));
    }
}

//! `lagkv`: score each chunk of `lag_size` entries against the next chunk ("lag" reference),
//! from keys and values alone: no attention, no queries.
//!
//! Paper: Liang et al., "LagKV: Lag-Relative Information of the KV Cache Tells Which Tokens Are
//! Important", 2025, <https://arxiv.org/abs/2504.04704>. After `sink` entries, the sequence is cut
//! into chunks of `lag_size`; every channel of a chunk is min-max normalised with the range of the
//! *next* chunk, an entry's raw score is the standard deviation of its normalised channels,
//! softmaxed within the chunk, for keys and values; their mean is turned into ranks within the
//! chunk (divided by `lag_size`), so every chunk keeps about the same share. Sinks and the last
//! chunk plus the remainder (no reference yet) score 1 and are kept first. A sequence shorter than
//! `sink + 2 lag_size` falls back to recency, as kvpress does.
//!
//! Defaults: `sink = 16` (the reference code, github AI-Lab-China-Merchants-Bank/LagKV) and
//! `lag_size = 128` (its README example; the class default is 1024). kvpress's `LagKVPress` uses
//! `n_sink = 4`, `lag_size = 128`. The reference code keeps a fixed fraction of every chunk; the
//! rank scores here (kvpress's rule) reach the same split under a global top-k. A channel whose
//! reference range is zero gets range 1e-6 (the reference divides by zero there).

use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

use crate::describe::{Describe, Description, Param};
use crate::selection::scoring::{softmax_last, LayerInput, Scorer};
use crate::MethodError;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LagKv {
    /// Leading entries always kept (attention sinks).
    #[serde(default = "default_sink")]
    pub sink: usize,
    /// Chunk length; each chunk is scored against the next.
    #[serde(default = "default_lag")]
    pub lag_size: usize,
}

fn default_sink() -> usize {
    16
}
fn default_lag() -> usize {
    128
}

impl Default for LagKv {
    fn default() -> Self {
        Self {
            sink: default_sink(),
            lag_size: default_lag(),
        }
    }
}

/// Raw lag-relative scores of `x` (`[chunks, lag, d]`, chunk `i` scored against chunk `i + 1`):
/// `[chunks - 1, lag]`, each row softmaxed.
fn lag_scores(x: &Tensor) -> Result<Tensor, MethodError> {
    let n = x.dim(0)?;
    let target = x.narrow(0, 0, n - 1)?;
    let reference = x.narrow(0, 1, n - 1)?;
    let min = reference.min_keepdim(1)?;
    let range = reference
        .max_keepdim(1)?
        .broadcast_sub(&min)?
        .clamp(1e-6f32, f32::MAX)?;
    let norm = target.broadcast_sub(&min)?.broadcast_div(&range)?;
    // Standard deviation over channels (unbiased, as torch.std).
    let d = norm.dim(D::Minus1)?;
    let centred = norm.broadcast_sub(&norm.mean_keepdim(D::Minus1)?)?;
    let std = (centred.sqr()?.sum(D::Minus1)? / (d.max(2) - 1) as f64)?.sqrt()?;
    softmax_last(&std)
}

impl Scorer for LagKv {
    fn scorer_name(&self) -> &'static str {
        "lagkv"
    }
    fn validate(&self) -> Result<(), crate::ParamError> {
        crate::params::check_positive(
            "lagkv",
            "lag_size",
            self.lag_size,
            "chunk length; each chunk is scored against the next",
        )
    }
    fn score(&self, input: &LayerInput) -> Result<Vec<Vec<f32>>, MethodError> {
        let lag = self.lag_size.max(1);
        input
            .heads()?
            .iter()
            .map(|h| {
                let len = h.k.dim(0)?;
                if len < self.sink + 2 * lag {
                    let rest = len.saturating_sub(self.sink);
                    return Ok((0..len)
                        .map(|i| {
                            if i < self.sink {
                                1.0
                            } else {
                                (i - self.sink) as f32 / rest as f32
                            }
                        })
                        .collect());
                }
                let chunks = (len - self.sink) / lag;
                let d = h.k.dim(1)?;
                let part = |t: &Tensor| -> Result<Tensor, MethodError> {
                    Ok(t.narrow(0, self.sink, chunks * lag)?
                        .reshape((chunks, lag, d))?)
                };
                let raw = ((lag_scores(&part(&h.k)?)? + lag_scores(&part(&h.v)?)?)? / 2.0)?;
                let raw: Vec<Vec<f32>> = raw.to_vec2()?;
                let mut s = vec![1.0f32; len];
                for (c, row) in raw.iter().enumerate() {
                    let mut order: Vec<usize> = (0..lag).collect();
                    order.sort_by(|&a, &b| row[a].total_cmp(&row[b]).then(a.cmp(&b)));
                    for (rank, &i) in order.iter().enumerate() {
                        s[self.sink + c * lag + i] = rank as f32 / lag as f32;
                    }
                }
                Ok(s)
            })
            .collect()
    }
}

crate::selection::select::uniform_scorer_method!(LagKv, "lagkv");

impl Describe for LagKv {
    const DESCRIPTION: Description = Description {
        family: "scorer",
        summary: "Lag-relative spread of keys and values, each chunk scored against the next; no attention needed.",
        paper: "https://arxiv.org/abs/2504.04704",
        params: &[
            Param::new("sink", "integer", "leading entries always kept"),
            Param::new("lag_size", "integer", "chunk length; each chunk is scored against the next"),
        ],
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{cache_with_keys, keep_of};
    #[allow(unused_imports)]
    use crate::{Budget, KvCache, Method, ObservationNeeds, Observations};

    #[test]
    fn keeps_sinks_tail_and_the_most_spread_entry_of_each_chunk() {
        // sink 1, lag 4, 13 entries: sink | chunk 0 (1..5) | chunk 1 (5..9) | tail (9..13).
        // Channels of a chunk are normalised by the next chunk's per-channel range [0, 1]; an entry
        // whose channels disagree ((1, 0)) spreads more than one whose channels agree ((x, x)).
        let agree = |x: f32| vec![x, x];
        let mut keys = vec![agree(0.5)];
        keys.extend([agree(0.2), vec![1.0, 0.0], agree(0.7), agree(0.4)]); // chunk 0: entry 2 spreads
        keys.extend([agree(0.0), agree(1.0), agree(0.3), vec![0.0, 1.0]]); // chunk 1: entry 8 spreads
        keys.extend([agree(0.0), agree(1.0), agree(0.5), agree(0.5)]); // tail, reference of chunk 1
        let mut cache = cache_with_keys(&[keys]);
        let m = LagKv {
            sink: 1,
            lag_size: 4,
        };
        // Keep sink + tail (5, score 1) + the top rank of each chunk (3/4).
        m.compress(&mut cache, &Observations::default(), &Budget::Tokens(7))
            .unwrap();
        assert_eq!(keep_of(&cache, 0), vec![vec![0, 2, 8, 9, 10, 11, 12]]);
    }

    #[test]
    fn short_sequences_fall_back_to_recency() {
        let keys: Vec<Vec<f32>> = (0..10).map(|i| vec![i as f32, 1.0]).collect();
        let mut cache = cache_with_keys(&[keys]);
        LagKv {
            sink: 2,
            lag_size: 8,
        }
        .compress(&mut cache, &Observations::default(), &Budget::Tokens(5))
        .unwrap();
        assert_eq!(keep_of(&cache, 0), vec![vec![0, 1, 7, 8, 9]]);
    }
}

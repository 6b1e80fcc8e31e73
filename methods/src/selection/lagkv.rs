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
//!
//! Scored on the cache's device, all heads of a group at once; the ranks within a chunk come from
//! one pairwise comparison (ties to the earlier entry, as the stable host sort they replaced, kept
//! as the test oracle). On CUDA one kernel does it all (`kernels::lagkv_scores`, a block per chunk
//! and head); its raw scores agree with these ops to float rounding (reductions in another order),
//! so entries whose raw scores tie to within rounding may swap ranks.

use candle_core::{DType, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::describe::{Describe, Description, Param};
use crate::selection::scoring::{host_scores, softmax_last, LayerInput, Scorer};
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

/// Raw lag-relative scores of `x` (`[heads, chunks, lag, d]`, chunk `i` scored against chunk
/// `i + 1`): `[heads, chunks - 1, lag]`, each row softmaxed.
fn lag_scores(x: &Tensor) -> Result<Tensor, MethodError> {
    let n = x.dim(1)?;
    let target = x.narrow(1, 0, n - 1)?;
    let reference = x.narrow(1, 1, n - 1)?;
    let min = reference.min_keepdim(2)?;
    let range = reference
        .max_keepdim(2)?
        .broadcast_sub(&min)?
        .clamp(1e-6f32, f32::MAX)?;
    let norm = target.broadcast_sub(&min)?.broadcast_div(&range)?;
    // Standard deviation over channels (unbiased, as torch.std).
    let d = norm.dim(D::Minus1)?;
    let centred = norm.broadcast_sub(&norm.mean_keepdim(D::Minus1)?)?;
    let std = (centred.sqr()?.sum(D::Minus1)? / (d.max(2) - 1) as f64)?.sqrt()?;
    softmax_last(&std)
}

/// Raw scores of a group's chunks (keys and values `[h, len, d]`, `len >= sink + 2 lag`): the
/// mean of the keys' and the values' [`lag_scores`], `[h, chunks - 1, lag]` f32, with candle ops
/// (the CUDA kernel's oracle in `kvbench bench --check-kernels`).
pub fn lag_raw(k: &Tensor, v: &Tensor, sink: usize, lag: usize) -> Result<Tensor, MethodError> {
    let (h, len, d) = k.dims3()?;
    let chunks = (len - sink) / lag;
    let part = |t: &Tensor| -> Result<Tensor, MethodError> {
        Ok(t.to_dtype(DType::F32)?
            .narrow(1, sink, chunks * lag)?
            .reshape((h, chunks, lag, d))?)
    };
    Ok(((lag_scores(&part(k)?)? + lag_scores(&part(v)?)?)? / 2.0)?)
}

/// Rank of every entry of each row of `x` (`[.., lag]`) among its row, ascending, ties to the
/// lower index (a stable sort's position): `#{j: x_j < x_i} + #{j < i: x_j = x_i}`, by one
/// `[.., lag, lag]` comparison on the device.
fn ranks(x: &Tensor) -> Result<Tensor, MethodError> {
    let lag = x.dim(D::Minus1)?;
    let xi = x.unsqueeze(D::Minus1)?; // [.., lag, 1]
    let xj = x.unsqueeze(D::Minus2)?; // [.., 1, lag]
    let below = xj.broadcast_lt(&xi)?.to_dtype(DType::F32)?;
    let idx = Tensor::arange(0u32, lag as u32, x.device())?;
    let earlier = idx
        .unsqueeze(0)?
        .broadcast_lt(&idx.unsqueeze(1)?)?
        .to_dtype(DType::F32)?; // [i, j] = j < i
    let tied = xj.broadcast_eq(&xi)?.to_dtype(DType::F32)?;
    Ok((below + tied.broadcast_mul(&earlier)?)?.sum(D::Minus1)?)
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
        host_scores(self, input)
    }
    /// Per group of heads (one length), on the cache's device.
    fn score_groups(&self, input: &LayerInput) -> Result<Option<Vec<Tensor>>, MethodError> {
        let lag = self.lag_size.max(1);
        let mut out = Vec::new();
        for g in input.layer.groups() {
            let (h, len) = (g.n_heads(), g.len());
            if len < self.sink + 2 * lag {
                let rest = len.saturating_sub(self.sink);
                let s: Vec<f32> = (0..len)
                    .map(|i| {
                        if i < self.sink {
                            1.0
                        } else {
                            (i - self.sink) as f32 / rest as f32
                        }
                    })
                    .collect();
                let row = Tensor::from_vec(s, (1, len), &g.storage.device())?;
                out.push(row.broadcast_as((h, len))?.contiguous()?);
                continue;
            }
            let (k, v) = g.storage.keys_values()?;
            if let Some((scores, _)) = crate::kernels::lagkv_scores(&k, &v, self.sink, lag, false)? {
                out.push(scores);
                continue;
            }
            let chunks = (len - self.sink) / lag;
            let raw = lag_raw(&k, &v, self.sink, lag)?;
            let ranked = (ranks(&raw)? / lag as f64)?.reshape((h, (chunks - 1) * lag))?;
            let dev = k.device();
            let tail = len - self.sink - (chunks - 1) * lag;
            let scores = Tensor::cat(
                &[
                    &Tensor::ones((h, self.sink), DType::F32, dev)?,
                    &ranked,
                    &Tensor::ones((h, tail), DType::F32, dev)?,
                ],
                1,
            )?;
            out.push(scores);
        }
        Ok(Some(out))
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
    use crate::selection::scoring::LayerInput;
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

    /// The per-head host scorer this file had before the device one (the test oracle).
    fn oracle_score(m: &LagKv, input: &LayerInput) -> Vec<Vec<f32>> {
        let lag = m.lag_size.max(1);
        let lag_scores_3d = |x: &Tensor| -> Tensor {
            lag_scores(&x.unsqueeze(0).unwrap()).unwrap().squeeze(0).unwrap()
        };
        input
            .heads()
            .unwrap()
            .iter()
            .map(|h| {
                let len = h.k.dim(0).unwrap();
                if len < m.sink + 2 * lag {
                    let rest = len.saturating_sub(m.sink);
                    return (0..len)
                        .map(|i| {
                            if i < m.sink {
                                1.0
                            } else {
                                (i - m.sink) as f32 / rest as f32
                            }
                        })
                        .collect();
                }
                let chunks = (len - m.sink) / lag;
                let d = h.k.dim(1).unwrap();
                let part = |t: &Tensor| {
                    t.narrow(0, m.sink, chunks * lag)
                        .unwrap()
                        .reshape((chunks, lag, d))
                        .unwrap()
                };
                let raw = ((lag_scores_3d(&part(&h.k)) + lag_scores_3d(&part(&h.v))).unwrap() / 2.0)
                    .unwrap();
                let raw: Vec<Vec<f32>> = raw.to_vec2().unwrap();
                let mut s = vec![1.0f32; len];
                for (c, row) in raw.iter().enumerate() {
                    let mut order: Vec<usize> = (0..lag).collect();
                    order.sort_by(|&a, &b| row[a].total_cmp(&row[b]).then(a.cmp(&b)));
                    for (rank, &i) in order.iter().enumerate() {
                        s[m.sink + c * lag + i] = rank as f32 / lag as f32;
                    }
                }
                s
            })
            .collect()
    }

    #[test]
    fn device_scores_match_the_per_head_oracle() {
        use candle_core::{DType, Device};
        let dev = Device::Cpu;
        // Three heads, 70 entries of dim 4; keys (and values, equal to them) on a coarse grid, so
        // many raw scores tie.
        let k = (Tensor::randn(0f32, 1.0, (3, 70, 4), &dev).unwrap() * 2.0)
            .unwrap()
            .round()
            .unwrap();
        let v = k.clone();
        let mut cache = KvCache::new(1, 3, 4, DType::F32, &dev);
        cache
            .layer_mut(0)
            .append(&k, &v, &(0..70u32).collect::<Vec<_>>())
            .unwrap();
        cache.advance(70);
        let obs = Observations::default();
        for (m, ragged) in [
            (LagKv { sink: 3, lag_size: 8 }, false),
            (LagKv { sink: 0, lag_size: 16 }, false),
            (LagKv { sink: 3, lag_size: 8 }, true),
            (LagKv { sink: 3, lag_size: 40 }, false),
        ] {
            let mut c = cache.fork();
            if ragged {
                let keep: Vec<Vec<u32>> = [60u32, 70, 33]
                    .iter()
                    .map(|&n| (0..n).collect())
                    .collect();
                c.layer_mut(0).retain(&keep).unwrap();
            }
            let targets = vec![1; 3];
            let input = LayerInput {
                index: 0,
                layer: c.layer(0),
                obs: &obs,
                next_position: 70,
                targets: &targets,
            };
            assert_eq!(m.score(&input).unwrap(), oracle_score(&m, &input), "{m:?} ragged {ragged}");
        }
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

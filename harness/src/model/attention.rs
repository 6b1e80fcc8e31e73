//! Eager attention over the stored cache, chunked over queries.
//!
//! A chunk of `c` queries scores against every stored key, so the score buffer is bounded by
//! `q_heads x c x len` instead of `len x len`. Query heads of one KV head are folded into the row
//! dimension (`[kv_heads, group x c, head_dim]`), so GQA never copies keys per query head.
//! Attention probabilities are what attention-score methods observe, which a fused kernel would
//! not give; the accumulated column sums are taken here, chunk by chunk. Over a dense cache, CUDA
//! builds take the fused kernel instead ([`super::fused`]), which computes those sums in a
//! second pass.

use candle_core::{DType, Device, Result, Tensor};
use kvbench_methods::storage::ATTENTION_BLOCK;
use kvbench_methods::LayerKv;

/// Upper bound on one chunk's score buffer (`q_heads x chunk x keys`), in bytes: long contexts
/// get shorter query chunks so peak memory stays bounded.
const SCORE_BUFFER_BYTES: usize = 128 << 20;

/// How one layer attends.
#[derive(Clone, Copy, Debug)]
pub struct AttentionParams {
    /// Query heads per KV head (GQA group size).
    pub q_per_kv: usize,
    /// Queries are multiplied by this (`1/sqrt(head_dim)` unless the family says otherwise).
    pub scale: f64,
    /// `Some(w)`: each query sees only the last `w` positions, itself included (sliding window).
    pub window: Option<usize>,
    /// `Some(c)`: scores become `c * tanh(score / c)` before the softmax (Gemma 2 style).
    pub softcap: Option<f64>,
    /// Queries per chunk.
    pub chunk: usize,
}

/// Additive masks for one forward pass, keyed by the chunk and the key range it scores: the same
/// for every layer whose heads share a length and window, so built once per forward.
#[derive(Default)]
pub struct MaskCache {
    masks: Vec<(MaskKey, Tensor)>,
}

/// (stored length, new tokens, chunk start, chunk size, first key, end key, window).
type MaskKey = (usize, usize, usize, usize, usize, usize, Option<usize>);

impl MaskCache {
    /// `[c, hi - lo]` in `dtype`: 0 where query `c0 + i` of the `t` new tokens (stored index
    /// `len - t + c0 + i`) may see key index `lo + j`, -inf elsewhere. Entries are in position
    /// order, and a sliding layer's entries are consecutive positions, so indices stand for
    /// positions.
    #[allow(clippy::too_many_arguments)]
    fn get(&mut self, key: MaskKey, dtype: DType, device: &Device) -> Result<Tensor> {
        if let Some((_, m)) = self.masks.iter().find(|(k, _)| *k == key) {
            return Ok(m.clone());
        }
        let (len, t, c0, c, lo, hi, window) = key;
        let first = (len - t + c0) as u32;
        let limit = Tensor::arange(first, first + c as u32, device)?.reshape((c, 1))?;
        let keys = Tensor::arange(lo as u32, hi as u32, device)?.reshape((1, hi - lo))?;
        let mut allowed = keys.broadcast_le(&limit)?;
        if let Some(w) = window {
            let lower: Vec<u32> = (0..c as u32)
                .map(|i| (first + i + 1).saturating_sub(w as u32))
                .collect();
            let lower = Tensor::from_vec(lower, (c, 1), device)?;
            allowed = (allowed * keys.broadcast_ge(&lower)?)?;
        }
        let zero = Tensor::zeros((c, hi - lo), dtype, device)?;
        let neg = Tensor::full(f32::NEG_INFINITY, (c, hi - lo), device)?.to_dtype(dtype)?;
        let m = allowed.where_cond(&zero, &neg)?;
        self.masks.push((key, m.clone()));
        Ok(m)
    }
}

/// Attend `q` (`[q_heads, t, head_dim]`, the `t` newest tokens, already appended to `layer`) to
/// the stored entries of `layer` it may see. Returns `[q_heads, t, head_dim]` in `q`'s dtype.
///
/// Scores stay in the compute dtype (f32 on CPU; bf16 on CUDA, where candle's softmax kernel
/// accumulates in f32), and a query chunk only scores the keys it can see: keys after its last
/// query (and, in a sliding layer, before its first query's window) are skipped, not masked.
///
/// When `accumulated` is given it receives the attention each stored key got from these queries,
/// summed over queries: `[q_heads, len]` f32 (uniform layers only).
pub fn attend(
    q: &Tensor,
    layer: &LayerKv,
    p: &AttentionParams,
    masks: &mut MaskCache,
    mut accumulated: Option<&mut Option<Tensor>>,
) -> Result<Tensor> {
    let (hq, t, d) = q.dims3()?;
    let q_per_kv = p.q_per_kv;
    let unscaled = q;
    // Scaled queries for the eager path, made once and only when some group needs them.
    let mut scaled: Option<Tensor> = None;
    let mut outs = Vec::with_capacity(layer.groups().len());
    if accumulated.is_some() && layer.groups().len() != 1 {
        candle_core::bail!("accumulated attention needs a uniform layer");
    }
    for group in layer.groups() {
        let (g, len) = (group.n_heads(), group.len());
        let storage = &group.storage;
        let cache_err = |e: kvbench_methods::MethodError| candle_core::Error::Msg(e.to_string());
        // The fused kernel where it applies (dense storage; CUDA builds).
        if storage.is_dense() {
            let qg = unscaled.narrow(0, group.first_head * q_per_kv, g * q_per_kv)?;
            let k = storage.k.block(0, len).map_err(cache_err)?;
            let v = storage.v.block(0, len).map_err(cache_err)?;
            let accumulate = accumulated.is_some();
            if let Some((out, acc)) = super::fused::attend(&qg, &k, &v, p, accumulate)? {
                if let Some(slot) = accumulated.as_deref_mut() {
                    *slot = acc;
                }
                outs.push(out);
                continue;
            }
        }
        let q = match &scaled {
            Some(q) => q.clone(),
            None => scaled.insert((unscaled * p.scale)?).clone(),
        };
        let elem = q.dtype().size_in_bytes();
        let span = p.window.map_or(len, |w| w.min(len) + p.chunk);
        let chunk = p
            .chunk
            .min((SCORE_BUFFER_BYTES / (hq * span * elem)).max(16));
        let qg = q.narrow(0, group.first_head * q_per_kv, g * q_per_kv)?;
        // Dense groups are read in one block; compressed ones are reconstructed block by block.
        let block = if storage.is_dense() {
            len
        } else {
            ATTENTION_BLOCK
        };
        let mut chunks = Vec::with_capacity(t.div_ceil(chunk));
        let mut c0 = 0;
        while c0 < t {
            let c = chunk.min(t - c0);
            // Keys up to this chunk's last query; later ones are invisible to every query here,
            // and so are those before the first query's window.
            let hi = len - t + c0 + c;
            let lo = p.window.map_or(0, |w| (len - t + c0 + 1).saturating_sub(w));
            let n_keys = hi - lo;
            let qc = qg.narrow(1, c0, c)?.reshape((g, q_per_kv * c, d))?;
            let mut parts = Vec::with_capacity(n_keys.div_ceil(block));
            for b0 in (lo..hi).step_by(block) {
                let n = block.min(hi - b0);
                let kb = storage.k.block(b0, n).map_err(cache_err)?;
                parts.push(qc.matmul(&kb.t()?)?);
            }
            let scores = if parts.len() == 1 {
                parts.pop().expect("one block")
            } else {
                Tensor::cat(&parts, 2)?
            };
            let mut scores = scores.reshape((g, q_per_kv, c, n_keys))?;
            if let Some(cap) = p.softcap {
                scores = ((scores / cap)?.tanh()? * cap)?;
            }
            if c > 1 {
                let key = (len, t, c0, c, lo, hi, p.window);
                let bias = masks.get(key, scores.dtype(), q.device())?;
                scores = scores.broadcast_add(&bias)?;
            }
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            if let Some(acc) = accumulated.as_deref_mut() {
                let part = probs
                    .to_dtype(DType::F32)?
                    .sum(2)?
                    .reshape((g * q_per_kv, n_keys))?
                    .pad_with_zeros(1, lo, len - hi)?;
                *acc = Some(match acc.take() {
                    Some(prev) => (prev + part)?,
                    None => part,
                });
            }
            let probs = probs.reshape((g, q_per_kv * c, n_keys))?;
            let mut out: Option<Tensor> = None;
            for b0 in (lo..hi).step_by(block) {
                let n = block.min(hi - b0);
                let vb = storage.v.block(b0, n).map_err(cache_err)?;
                let pb = if n == n_keys {
                    probs.clone()
                } else {
                    probs.narrow(2, b0 - lo, n)?.contiguous()?
                };
                let o = pb.matmul(&vb)?;
                out = Some(match out {
                    Some(prev) => (prev + o)?,
                    None => o,
                });
            }
            let out = out
                .expect("at least one block")
                .reshape((g * q_per_kv, c, d))?;
            chunks.push(out);
            c0 += c;
        }
        outs.push(if chunks.len() == 1 {
            chunks.pop().expect("one chunk")
        } else {
            Tensor::cat(&chunks, 1)?
        });
    }
    if outs.len() == 1 {
        Ok(outs.pop().expect("one group"))
    } else {
        Tensor::cat(&outs, 0)
    }
}

/// Reference attention for tests: materialises the full score matrix.
#[cfg(test)]
pub fn attend_naive(q: &Tensor, k: &Tensor, v: &Tensor, q_per_kv: usize) -> Result<Tensor> {
    let (hq, t, d) = q.dims3()?;
    let len = k.dim(1)?;
    let mut outs = Vec::new();
    for h in 0..hq {
        let kh = k.get(h / q_per_kv)?;
        let vh = v.get(h / q_per_kv)?;
        let s = (q.get(h)?.matmul(&kh.t()?)? / (d as f64).sqrt())?;
        let mut mask = vec![0f32; t * len];
        for i in 0..t {
            for j in 0..len {
                if j > len - t + i {
                    mask[i * len + j] = f32::NEG_INFINITY;
                }
            }
        }
        let s = (s + Tensor::from_vec(mask, (t, len), q.device())?)?;
        let p = candle_nn::ops::softmax(&s, candle_core::D::Minus1)?;
        outs.push(p.matmul(&vh)?);
    }
    Tensor::stack(&outs, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q_per_kv: usize, d: usize, chunk: usize) -> AttentionParams {
        AttentionParams {
            q_per_kv,
            scale: 1.0 / (d as f64).sqrt(),
            window: None,
            softcap: None,
            chunk,
        }
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn chunked_gqa_matches_naive_with_prefix() {
        let dev = Device::Cpu;
        let (hkv, g, d, prefix, t) = (2, 3, 8, 5, 11);
        let len = prefix + t;
        let q = Tensor::randn(0f32, 1.0, (hkv * g, t, d), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (hkv, len, d), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (hkv, len, d), &dev).unwrap();
        let mut layer = LayerKv::default();
        let pos: Vec<u32> = (0..len as u32).collect();
        layer.append(&k, &v, &pos).unwrap();
        let expected = attend_naive(&q, &k, &v, g).unwrap();
        for chunk in [1, 4, 64] {
            let mut acc = None;
            let got = attend(
                &q,
                &layer,
                &params(g, d, chunk),
                &mut MaskCache::default(),
                Some(&mut acc),
            )
            .unwrap();
            assert!(max_abs_diff(&got, &expected) < 1e-5, "chunk {chunk}");
            // Every query's probabilities sum to one, so the column sums total t per head.
            let total: f32 = acc
                .unwrap()
                .sum(1)
                .unwrap()
                .mean_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!((total - t as f32).abs() < 1e-3);
        }
    }

    #[test]
    fn ragged_heads_attend_their_own_entries() {
        let dev = Device::Cpu;
        let (hkv, g, d, len) = (2, 2, 4, 6);
        let k = Tensor::randn(0f32, 1.0, (hkv, len, d), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (hkv, len, d), &dev).unwrap();
        let mut layer = LayerKv::default();
        layer
            .append(&k, &v, &(0..len as u32).collect::<Vec<_>>())
            .unwrap();
        layer.retain(&[vec![0, 2, 5], vec![1, 3, 4, 5]]).unwrap();
        assert_eq!(layer.groups().len(), 2);
        let q = Tensor::randn(0f32, 1.0, (hkv * g, 1, d), &dev).unwrap();
        let got = attend(
            &q,
            &layer,
            &params(g, d, 8),
            &mut MaskCache::default(),
            None,
        )
        .unwrap();
        for (h, keep) in [(0usize, vec![0u32, 2, 5]), (1, vec![1, 3, 4, 5])] {
            let ids = Tensor::new(keep.as_slice(), &dev).unwrap();
            let kh = k
                .get(h)
                .unwrap()
                .index_select(&ids, 0)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let vh = v
                .get(h)
                .unwrap()
                .index_select(&ids, 0)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let qh = q.narrow(0, h * g, g).unwrap();
            let expected = attend_naive(&qh, &kh, &vh, g).unwrap();
            let got_h = got.narrow(0, h * g, g).unwrap();
            assert!(max_abs_diff(&got_h, &expected) < 1e-5);
        }
    }
}

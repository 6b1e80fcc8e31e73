//! Eager attention over the stored cache, chunked over queries.
//!
//! A chunk of `c` queries scores against every stored key, so the score buffer is bounded by
//! `q_heads x c x len` instead of `len x len`. Query heads of one KV head are folded into the row
//! dimension (`[kv_heads, group x c, head_dim]`), so GQA never copies keys per query head.
//! Attention probabilities are what attention-score methods observe, which a fused kernel would
//! not give; the accumulated column sums are taken here, chunk by chunk.

use candle_core::{DType, Device, Result, Tensor};
use kvbench_methods::storage::ATTENTION_BLOCK;
use kvbench_methods::LayerKv;

/// Upper bound on one chunk's score buffer (`q_heads x chunk x keys`), in bytes: long contexts
/// get shorter query chunks so peak memory stays bounded.
const SCORE_BUFFER_BYTES: usize = 128 << 20;

/// Additive causal masks for one forward pass, keyed by (keys visible, chunk start, chunk size,
/// stored length): the same for every layer whose heads share a length, so built once per forward.
#[derive(Default)]
pub struct MaskCache {
    masks: Vec<((usize, usize, usize, usize), Tensor)>,
}

impl MaskCache {
    /// `[c, visible]` in `dtype`: 0 where query `c0 + i` of the `t` new tokens may see key `j`,
    /// -inf elsewhere (only the last `c` columns can be masked).
    #[allow(clippy::too_many_arguments)]
    fn get(
        &mut self,
        len: usize,
        t: usize,
        c0: usize,
        c: usize,
        visible: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let key = (visible, c0, c, len);
        if let Some((_, m)) = self.masks.iter().find(|(k, _)| *k == key) {
            return Ok(m.clone());
        }
        let first = (len - t + c0) as u32;
        let limit = Tensor::arange(first, first + c as u32, device)?.reshape((c, 1))?;
        let keys = Tensor::arange(0u32, visible as u32, device)?.reshape((1, visible))?;
        let allowed = keys.broadcast_le(&limit)?;
        let zero = Tensor::zeros((c, visible), dtype, device)?;
        let neg = Tensor::full(f32::NEG_INFINITY, (c, visible), device)?.to_dtype(dtype)?;
        let m = allowed.where_cond(&zero, &neg)?;
        self.masks.push((key, m.clone()));
        Ok(m)
    }
}

/// Attend `q` (`[q_heads, t, head_dim]`, the `t` newest tokens, already appended to `layer`) to
/// every stored entry of `layer`. Returns `[q_heads, t, head_dim]` in `q`'s dtype.
///
/// Scores stay in the compute dtype (f32 on CPU; bf16 on CUDA, where candle's softmax kernel
/// accumulates in f32), and a query chunk only scores the keys it can see: keys after its last
/// query are skipped, not masked, which halves a causal prefill's work.
///
/// When `accumulated` is given it receives the attention each stored key got from these queries,
/// summed over queries: `[q_heads, len]` f32 (uniform layers only).
pub fn attend(
    q: &Tensor,
    layer: &LayerKv,
    q_per_kv: usize,
    chunk: usize,
    masks: &mut MaskCache,
    mut accumulated: Option<&mut Option<Tensor>>,
) -> Result<Tensor> {
    let (hq, t, d) = q.dims3()?;
    let q = (q * (1.0 / (d as f64).sqrt()))?;
    let mut outs = Vec::with_capacity(layer.groups().len());
    if accumulated.is_some() && layer.groups().len() != 1 {
        candle_core::bail!("accumulated attention needs a uniform layer");
    }
    for group in layer.groups() {
        let (g, len) = (group.n_heads(), group.len());
        let elem = q.dtype().size_in_bytes();
        let chunk = chunk.min((SCORE_BUFFER_BYTES / (hq * len * elem)).max(16));
        let qg = q.narrow(0, group.first_head * q_per_kv, g * q_per_kv)?;
        let storage = &group.storage;
        // Dense groups are read in one block; compressed ones are reconstructed block by block.
        let block = if storage.is_dense() {
            len
        } else {
            ATTENTION_BLOCK
        };
        let cache_err = |e: kvbench_methods::MethodError| candle_core::Error::Msg(e.to_string());
        let mut chunks = Vec::with_capacity(t.div_ceil(chunk));
        let mut c0 = 0;
        while c0 < t {
            let c = chunk.min(t - c0);
            // Keys up to this chunk's last query; later ones are invisible to every query here.
            let visible = len - t + c0 + c;
            let qc = qg.narrow(1, c0, c)?.reshape((g, q_per_kv * c, d))?;
            let mut parts = Vec::with_capacity(visible.div_ceil(block));
            for b0 in (0..visible).step_by(block) {
                let n = block.min(visible - b0);
                let kb = storage.k.block(b0, n).map_err(cache_err)?;
                parts.push(qc.matmul(&kb.t()?)?);
            }
            let scores = if parts.len() == 1 {
                parts.pop().expect("one block")
            } else {
                Tensor::cat(&parts, 2)?
            };
            let mut scores = scores.reshape((g, q_per_kv, c, visible))?;
            if c > 1 {
                let bias = masks.get(len, t, c0, c, visible, scores.dtype(), q.device())?;
                scores = scores.broadcast_add(&bias)?;
            }
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            if let Some(acc) = accumulated.as_deref_mut() {
                let part = probs
                    .to_dtype(DType::F32)?
                    .sum(2)?
                    .reshape((g * q_per_kv, visible))?
                    .pad_with_zeros(1, 0, len - visible)?;
                *acc = Some(match acc.take() {
                    Some(prev) => (prev + part)?,
                    None => part,
                });
            }
            let probs = probs.reshape((g, q_per_kv * c, visible))?;
            let mut out: Option<Tensor> = None;
            for b0 in (0..visible).step_by(block) {
                let n = block.min(visible - b0);
                let vb = storage.v.block(b0, n).map_err(cache_err)?;
                let pb = if n == visible {
                    probs.clone()
                } else {
                    probs.narrow(2, b0, n)?.contiguous()?
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
                g,
                chunk,
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
        let got = attend(&q, &layer, g, 8, &mut MaskCache::default(), None).unwrap();
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

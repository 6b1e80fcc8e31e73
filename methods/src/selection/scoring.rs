//! What the token-eviction methods share: the `Scorer` trait (one score per stored entry and KV
//! head, higher = keep), the layer a scorer sees, and the tensor helpers every attention-based
//! scorer uses (window attention over the stored entries, GQA aggregation, 1-D pooling).
//!
//! Scores are returned on the host, `[kv_heads][len_h]` f32, for selections that are not a top-k
//! per head (across heads, whole chunks, merges); scorers that compute on the device also leave
//! them there (`score_groups`) for the per-head top-k (`select`). `f32::INFINITY` pins an entry
//! (observation windows, sinks).

use candle_core::{DType, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::{LayerKv, LayerObservation, MethodError, ObservationNeeds, Observations, ParamError};

type Result<T> = std::result::Result<T, MethodError>;

/// Scores every stored entry of one layer, per KV head.
pub trait Scorer: Send + Sync {
    /// Registered name, for error messages.
    fn scorer_name(&self) -> &'static str;

    /// Check every parameter value (see `Method::validate`); nothing by default.
    fn validate(&self) -> std::result::Result<(), ParamError> {
        Ok(())
    }

    /// What the prefill must record for this scorer.
    fn observation_needs(&self) -> ObservationNeeds {
        ObservationNeeds::default()
    }

    /// Most recent entries this scorer always keeps (its observation window); budget allocators
    /// (PyramidKV) plan around it.
    fn window(&self) -> usize {
        0
    }

    /// One score per stored entry, `[kv_heads][len_h]`; higher = keep, `f32::INFINITY` = always keep.
    fn score(&self, input: &LayerInput) -> Result<Vec<Vec<f32>>>;

    /// The same scores left on the cache's device, one `[heads, len]` f32 tensor per head group,
    /// so that top-k selection runs there too (`select`). `None` (the default): the scorer
    /// scores on the host. Scorers that have it define `score` as [`host_scores`].
    fn score_groups(&self, _input: &LayerInput) -> Result<Option<Vec<Tensor>>> {
        Ok(None)
    }

    /// Whether [`Scorer::score_query_heads`] gives scores (`query_heads` then selects without
    /// repeating the cache per query head first).
    fn scores_query_heads(&self) -> bool {
        false
    }

    /// Scores of every query head on its own, `[kv_heads * q_per_kv, len]` f32 on the device (row
    /// `h * q_per_kv + i`: query head `i` of KV head `h`), for a layer stored per KV head as one
    /// group: the scores this scorer gives the same layer repeated per query head
    /// (`LayerKv::expand_heads`, `q_per_kv = 1`), without the repeat. `None` by default.
    fn score_query_heads(&self, _input: &LayerInput) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

/// `score` of a scorer that computes its scores on the device (`score_groups`): each group's
/// rows, in head order.
pub fn host_scores(scorer: &dyn Scorer, input: &LayerInput) -> Result<Vec<Vec<f32>>> {
    let groups = scorer.score_groups(input)?.ok_or_else(|| {
        config(
            scorer.scorer_name(),
            "score_groups gave no scores to bring to the host",
        )
    })?;
    let mut out = Vec::new();
    for g in groups {
        out.extend(g.to_dtype(DType::F32)?.to_vec2::<f32>()?);
    }
    Ok(out)
}

/// One layer as a scorer sees it.
pub struct LayerInput<'a> {
    pub index: usize,
    pub layer: &'a LayerKv,
    pub obs: &'a Observations,
    /// Position the next token takes: the sequence length so far, evictions included.
    pub next_position: usize,
    /// Entries each KV head is about to keep (H2O reserves a share of them for recent tokens).
    pub targets: &'a [usize],
}

/// Keys and values of one KV head, `[len, head_dim]` f32 each, with their original positions.
pub struct HeadKv<'a> {
    pub k: Tensor,
    pub v: Tensor,
    pub positions: &'a [u32],
}

impl<'a> LayerInput<'a> {
    pub fn observation(&self) -> Option<&'a LayerObservation> {
        self.obs.layers.get(self.index)
    }

    pub fn q_per_kv(&self, method: &'static str) -> Result<usize> {
        match self.obs.q_per_kv {
            0 => Err(config(
                method,
                "observations carry no GQA group size (q_per_kv = 0)",
            )),
            g => Ok(g),
        }
    }

    /// The last `min(w, recorded)` window queries as f32 `[q_heads, w', head_dim]`, with their
    /// positions (the last `w'` positions of the sequence).
    pub fn window_queries(&self, w: usize, method: &'static str) -> Result<(Tensor, Vec<u32>)> {
        let q = self
            .observation()
            .and_then(|o| o.window_queries.as_ref())
            .ok_or_else(|| {
                config(
                    method,
                    &format!(
                        "layer {}: no window queries were recorded (needs() asks for them)",
                        self.index
                    ),
                )
            })?;
        let w = w.min(q.dim(1)?);
        if w == 0 {
            return Err(config(
                method,
                &format!("layer {}: no window queries were recorded", self.index),
            ));
        }
        let recorded = q.dim(1)?;
        let q = q.narrow(1, recorded - w, w)?.to_dtype(DType::F32)?;
        let first = self.next_position.checked_sub(w).ok_or_else(|| {
            config(
                method,
                &format!(
                    "{w} window queries but the sequence has {} tokens",
                    self.next_position
                ),
            )
        })?;
        Ok((q, (first as u32..self.next_position as u32).collect()))
    }

    /// Keys and values of every KV head, in head order.
    pub fn heads(&self) -> Result<Vec<HeadKv<'a>>> {
        let mut out = Vec::new();
        for g in self.layer.groups() {
            let (k, v) = g.storage.keys_values()?;
            let (k, v) = (k.to_dtype(DType::F32)?, v.to_dtype(DType::F32)?);
            for local in 0..g.n_heads() {
                out.push(HeadKv {
                    k: k.get(local)?,
                    v: v.get(local)?,
                    positions: &g.positions[local],
                });
            }
        }
        Ok(out)
    }
}

pub(crate) fn config(method: &'static str, message: &str) -> MethodError {
    MethodError::Config {
        method,
        message: message.to_string(),
    }
}

/// Softmax over the last dimension (f32), written here because the methods crate depends on
/// candle-core only.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?;
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// Attention probabilities of `queries` (`[q_heads, w, head_dim]` f32, at positions `q_pos`) over
/// each KV head's stored entries: one `[q_per_kv, w, len_h]` f32 tensor per KV head. A query sees
/// the entries whose original position is at most its own (causal), as in the model's attention.
pub fn window_attention(
    layer: &LayerKv,
    queries: &Tensor,
    q_pos: &[u32],
    q_per_kv: usize,
) -> Result<Vec<Tensor>> {
    let mut out = Vec::new();
    for probs in window_attention_groups(layer, queries, q_pos, q_per_kv)? {
        for local in 0..probs.dim(0)? {
            out.push(probs.get(local)?);
        }
    }
    Ok(out)
}

/// [`window_attention`] per head group (heads of one length), unsplit: one
/// `[n_heads, q_per_kv, w, len]` f32 tensor per group of `layer.groups()`, for scorers that
/// reduce all heads of a group at once on the device.
pub fn window_attention_groups(
    layer: &LayerKv,
    queries: &Tensor,
    q_pos: &[u32],
    q_per_kv: usize,
) -> Result<Vec<Tensor>> {
    let (_, w, d) = queries.dims3()?;
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = Vec::new();
    for g in layer.groups() {
        let logits = window_logits(g, queries, q_pos, q_per_kv)?;
        let (n, len) = (g.n_heads(), g.len());
        let scores = (logits.logits * scale)?.reshape((n, q_per_kv, w, len))?;
        let scores = match logits.mask {
            Some(mask) => {
                let tail_start = logits.tail_start;
                let tail = len - tail_start;
                let mask = mask.reshape((n, 1, w, tail))?;
                let masked = scores.narrow(3, tail_start, tail)?.broadcast_add(&mask)?;
                if tail_start == 0 {
                    masked
                } else {
                    Tensor::cat(&[&scores.narrow(3, 0, tail_start)?, &masked], 3)?
                }
            }
            None => scores,
        };
        out.push(softmax_last(&scores)?);
    }
    Ok(out)
}

/// [`window_attention_groups`] summed over the window's queries: `[n_heads, q_per_kv, len]` f32
/// per group (SnapKV's score before pooling). On CUDA two kernels (`kernels::window_softmax_sums`)
/// take the logits from there: the scaling, mask, softmax and sum never materialise the
/// probabilities (the same per-element arithmetic; sums in another order).
pub fn window_attention_sums(
    layer: &LayerKv,
    queries: &Tensor,
    q_pos: &[u32],
    q_per_kv: usize,
) -> Result<Vec<Tensor>> {
    let (_, w, d) = queries.dims3()?;
    let scale = (1.0 / (d as f64).sqrt()) as f32;
    let mut out = Vec::new();
    for g in layer.groups() {
        let logits = window_logits(g, queries, q_pos, q_per_kv)?;
        let summed = crate::kernels::window_softmax_sums(
            &logits.logits,
            logits.mask.as_ref(),
            logits.tail_start,
            w,
            scale,
        )?;
        match summed {
            Some(s) => out.push(s),
            None => return Ok(window_attention_groups(layer, queries, q_pos, q_per_kv)?
                .iter()
                .map(|a| a.sum(2))
                .collect::<candle_core::Result<Vec<_>>>()?),
        }
    }
    Ok(out)
}

/// A group's unscaled window logits and the causal mask of its tail.
struct WindowLogits {
    /// `[n_heads, q_per_kv * w, len]` f32: row `gi * w + i` is query head `gi`'s window query `i`.
    logits: Tensor,
    /// Additive `[n_heads, w, len - tail_start]` f32 mask of the keys from `tail_start` on, if any
    /// key there is after some window query.
    mask: Option<Tensor>,
    tail_start: usize,
}

/// Window queries against one group's keys. Keys after the earliest query sit at the end of every
/// head (positions increase): only that tail is masked, per head, with -1e30 rather than -inf, so
/// that a row with nothing visible stays finite.
fn window_logits(
    g: &crate::HeadGroup,
    queries: &Tensor,
    q_pos: &[u32],
    q_per_kv: usize,
) -> Result<WindowLogits> {
    let (_, w, d) = queries.dims3()?;
    let min_q = q_pos.iter().copied().min().unwrap_or(0);
    let (n, len) = (g.n_heads(), g.len());
    let k = g.storage.keys_values()?.0.to_dtype(DType::F32)?;
    let q = queries
        .narrow(0, g.first_head * q_per_kv, n * q_per_kv)?
        .reshape((n, q_per_kv * w, d))?;
    let logits = q.contiguous()?.matmul(&k.t()?)?;
    let tail_start = g
        .positions
        .iter()
        .map(|p| p.partition_point(|&kp| kp <= min_q))
        .min()
        .unwrap_or(len);
    let mask = if tail_start < len {
        let tail = len - tail_start;
        let mut mask = vec![0f32; n * w * tail];
        for (h, pos) in g.positions.iter().enumerate() {
            for (i, &qp) in q_pos.iter().enumerate() {
                let row = &mut mask[(h * w + i) * tail..(h * w + i + 1) * tail];
                for (m, &kp) in row.iter_mut().zip(&pos[tail_start..]) {
                    if kp > qp {
                        *m = -1e30;
                    }
                }
            }
        }
        Some(Tensor::from_vec(mask, (n, w, tail), queries.device())?)
    } else {
        None
    };
    Ok(WindowLogits {
        logits,
        mask,
        tail_start,
    })
}

/// Mean over the query heads of a KV head: `[q_per_kv, len]` -> `len` values (GQA aggregation).
pub fn gqa_mean(per_query_head: &Tensor) -> Result<Vec<f32>> {
    Ok(per_query_head.mean(0)?.to_vec1()?)
}

/// 1-D pooling used to smooth attention scores (SnapKV's clustering).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    #[default]
    Max,
    Avg,
}

/// Stride-1 pooling with `kernel / 2` padding on each side, output as long as the input (odd
/// kernels): PyTorch's `max_pool1d` / `avg_pool1d` (padding counted in the average) as SnapKV uses them.
pub fn pool1d(x: &[f32], kernel: usize, pooling: Pooling) -> Vec<f32> {
    if kernel <= 1 {
        return x.to_vec();
    }
    let pad = kernel / 2;
    (0..x.len())
        .map(|i| {
            let lo = i.saturating_sub(pad);
            let hi = (i + kernel - pad).min(x.len());
            let win = &x[lo..hi];
            match pooling {
                Pooling::Max => win.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                Pooling::Avg => win.iter().sum::<f32>() / kernel as f32,
            }
        })
        .collect()
}

/// [`pool1d`] along the last dimension of `x` (`[r, n]` f32) on its device: the maximum (padding
/// -inf) or the sum divided by `kernel` (zero padding counted) of `kernel` shifted copies, added
/// left to right as the host loop adds them, so the results are the same bit for bit.
pub fn pool_last(x: &Tensor, kernel: usize, pooling: Pooling) -> Result<Tensor> {
    if kernel <= 1 {
        return Ok(x.clone());
    }
    let (r, n) = x.dims2()?;
    let pad = kernel / 2;
    let fill = match pooling {
        Pooling::Max => f32::NEG_INFINITY,
        Pooling::Avg => 0.0,
    };
    let left = Tensor::full(fill, (r, pad), x.device())?;
    let right = Tensor::full(fill, (r, kernel - 1 - pad), x.device())?;
    let padded = Tensor::cat(&[&left, &x.to_dtype(DType::F32)?, &right], 1)?;
    let mut acc = match pooling {
        Pooling::Max => padded.narrow(1, 0, n)?,
        Pooling::Avg => (padded.narrow(1, 0, n)? + 0.0)?,
    };
    for o in 1..kernel {
        let next = padded.narrow(1, o, n)?;
        acc = match pooling {
            Pooling::Max => acc.maximum(&next)?,
            Pooling::Avg => (acc + next)?,
        };
    }
    Ok(match pooling {
        Pooling::Max => acc,
        // A division (not `affine`'s multiplication by 1 / kernel), as on the host.
        Pooling::Avg => acc.broadcast_div(&Tensor::full(kernel as f32, (1, 1), x.device())?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn pooling_matches_torch_semantics() {
        let x = [0.0, 3.0, 0.0, 0.0, 1.0];
        assert_eq!(pool1d(&x, 3, Pooling::Max), vec![3.0, 3.0, 3.0, 1.0, 1.0]);
        // Average counts the zero padding: (0 + 0 + 3) / 3 at the left edge.
        assert_eq!(
            pool1d(&x, 3, Pooling::Avg),
            vec![1.0, 1.0, 1.0, 1.0 / 3.0, 1.0 / 3.0]
        );
        assert_eq!(pool1d(&x, 1, Pooling::Max), x.to_vec());
    }

    #[test]
    fn device_pooling_matches_the_host_pooling_bit_for_bit() {
        let dev = Device::Cpu;
        let x = Tensor::rand(0f32, 1.0, (3, 29), &dev).unwrap();
        let rows: Vec<Vec<f32>> = x.to_vec2().unwrap();
        for kernel in [1, 3, 5, 7, 31] {
            for pooling in [Pooling::Max, Pooling::Avg] {
                let got: Vec<Vec<f32>> = pool_last(&x, kernel, pooling).unwrap().to_vec2().unwrap();
                let want: Vec<Vec<f32>> =
                    rows.iter().map(|r| pool1d(r, kernel, pooling)).collect();
                assert_eq!(got, want, "kernel {kernel} {pooling:?}");
            }
        }
    }

    #[test]
    fn window_attention_is_causal_by_position_and_sums_to_one() {
        let dev = Device::Cpu;
        let (hkv, g, d, len) = (2, 2, 4, 6);
        let k = Tensor::randn(0f32, 1.0, (hkv, len, d), &dev).unwrap();
        let mut layer = LayerKv::default();
        layer
            .append(&k, &k, &(0..len as u32).collect::<Vec<_>>())
            .unwrap();
        let q = Tensor::randn(0f32, 1.0, (hkv * g, 2, d), &dev).unwrap();
        let att = window_attention(&layer, &q, &[4, 5], g).unwrap();
        let a: Vec<Vec<Vec<f32>>> = att[1].to_vec3().unwrap();
        for head in &a {
            // The query at position 4 cannot see position 5.
            assert_eq!(head[0][5], 0.0);
            assert!(head[1][5] > 0.0);
            for row in head {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            }
        }
        // Heads holding different positions are masked by their own positions.
        let mut kept = layer.clone();
        kept.retain(&[vec![0, 4, 5], vec![1, 2, 5]]).unwrap();
        let att = window_attention(&kept, &q, &[4, 5], g).unwrap();
        let h0: Vec<Vec<Vec<f32>>> = att[0].to_vec3().unwrap();
        let h1: Vec<Vec<Vec<f32>>> = att[1].to_vec3().unwrap();
        assert!(h0[0][0][1] > 0.0 && h0[0][0][2] == 0.0 && h0[0][1][2] > 0.0);
        assert!(h1[1][0][1] > 0.0 && h1[1][0][2] == 0.0);
        // Against a direct computation for query head 2 (KV head 1), query at position 5.
        let qh: Vec<f32> = q.get(2).unwrap().get(1).unwrap().to_vec1().unwrap();
        let kh: Vec<Vec<f32>> = k.get(1).unwrap().to_vec2().unwrap();
        let logits: Vec<f32> = kh
            .iter()
            .map(|kr| kr.iter().zip(&qh).map(|(a, b)| a * b).sum::<f32>() / 2.0)
            .collect();
        let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let z: f32 = logits.iter().map(|l| (l - m).exp()).sum();
        for j in 0..len {
            assert!((a[0][1][j] - (logits[j] - m).exp() / z).abs() < 1e-5);
        }
    }
}

//! The methods' own CUDA kernels (`methods/kernels/select.cu` and `compress.cu`, compiled to PTX
//! by build.rs in `--features cuda` builds), launched by `kernels/cuda.rs` on candle's stream over
//! the tensors' own device buffers.
//! Each function answers `None` where its kernel does not run (a CPU tensor, a CPU build); the
//! caller then takes its portable path, which is also the kernel's oracle.
//!
//! - [`top_k_rows`]: each row's `k` best scores, in index order (`selection::device_top_k`).
//! - [`top_k_mask`]: the same choice as a `[rows, len]` mask, with a count per row and entries
//!   marked invalid ranked last (`device_ops::top_k_mask`: AdaKV's shared budget, kvmerger).
//! - [`run_sum_rows`]: the sum of the rows of each run of consecutive entries (kvmerger's merges).
//! - [`run_argmax`]: the running arg-max within runs of consecutive entries (kvmerger's pivots).
//! - [`cam_cascade`]: CaM's merge cascade, `x_j = v_j + sum_{j - m <= i < j} a_i x_i`.
//! - [`slerp_coefficients`]: MiniCache's angles and SLERP weights (`cross_layer::minicache`).
//! - [`quantize_groups`]: codes, scales and zero points of `QuantScheme::quantize` (quant, kivi).
//! - [`lagkv_scores`]: LagKV's chunk-relative rank scores, one block per chunk and head.
//! - [`window_softmax_sums`]: window attention summed over the window's queries (SnapKV's score).
//! - [`row_quadratic_forms`]: expected attention's covariance term, `k_j^T S k_j` per query head.
//! - [`jacobi_eigen`]: parallel cyclic Jacobi on symmetric matrices, one block per matrix
//!   (lowrank's bases, `linalg::batched_symmetric_eigen`).

use candle_core::{Result, Tensor};

/// Kept indices of each row of `scores` (`[rows, len]` f32, `1 <= k < len`): `([rows, k]` local
/// indices, `[rows * k]` flat row numbers `row * len + index`), both u32 on the device.
pub fn top_k_rows(scores: &Tensor, k: usize) -> Result<Option<(Tensor, Tensor)>> {
    imp::top_k_rows(scores, k)
}

/// `[rows, len]` u8 mask of each row's `k[row]` best scores (`[rows, len]` f32), where entries
/// whose `valid` (`[rows, len]` u8) is 0 rank below every valid one and among themselves the
/// later first; `k[row] >= len` keeps the row.
pub fn top_k_mask(scores: &Tensor, k: &[usize], valid: Option<&Tensor>) -> Result<Option<Tensor>> {
    imp::top_k_mask(scores, k, valid)
}

/// `[r, n, d]`: row `s` of each `r` is the sum of the rows of `x` (`[r, n, d]` f32 or f64) whose
/// `run` (`[r, n]` u32, runs of consecutive entries numbered from 0) is `s`, added in order; rows
/// past the last run are 0.
pub fn run_sum_rows(x: &Tensor, run: &Tensor) -> Result<Option<Tensor>> {
    imp::run_sum_rows(x, run)
}

/// Arg-max over runs of consecutive entries (`device_ops::run_argmax`) of `values` (`[r, n]`
/// f32): at each entry, the index (u32) and value of the largest value from its run's start up to
/// it, ties to the later entry.
pub fn run_argmax(values: &Tensor, run: &Tensor) -> Result<Option<(Tensor, Tensor)>> {
    imp::run_argmax(values, run)
}

/// CaM's cascade (`merging::cam`): `x` (`[h, n, d]` f32) with `x_j = v_j + sum over i in
/// [max(0, j - m[h]), j) of a_i x_i`, for `v` `[h, n, d]` f32 and `a` `[h, n]` f32; `m[h] >= 1`.
pub fn cam_cascade(v: &Tensor, a: &Tensor, m: &[usize]) -> Result<Option<Tensor>> {
    imp::cam_cascade(v, a, m)
}

/// MiniCache's SLERP of `cosine` (`[n]` f32, the cosines between two layers' unit directions):
/// `(angle [n] f64, wa [n] f32, wb [n] f32)` with `angle = acos(clamp(cosine))`, `wa = sin((1 - t)
/// angle) / sin(angle)` and `wb = sin(t angle) / sin(angle)`, or `1 - t` and `t` where
/// `sin(angle) < parallel`; computed in f64.
pub fn slerp_coefficients(
    cosine: &Tensor,
    t: f64,
    parallel: f64,
) -> Result<Option<(Tensor, Tensor, Tensor)>> {
    imp::slerp_coefficients(cosine, t, parallel)
}

/// `QuantScheme::quantize` of `x` (`[h, m, d]` f32) in two launches, bit for bit: packed codes
/// (`[h, m, d * bits / 8]` u8), f16 scales and, unless `symmetric`, f16 zero points, both
/// `[h, m, d / group]` (`per_token`) or `[h, m / group, d]` (per channel; `m` a multiple of
/// `group`).
pub fn quantize_groups(
    x: &Tensor,
    bits: u32,
    group: usize,
    per_token: bool,
    symmetric: bool,
) -> Result<Option<QuantizedGroups>> {
    imp::quantize_groups(x, bits, group, per_token, symmetric)
}

/// Codes, scales and (asymmetric) zero points from [`quantize_groups`].
pub type QuantizedGroups = (Tensor, Tensor, Option<Tensor>);

/// LagKV's scores of one group (`selection::lagkv`): keys and values `[h, len, d]` (f32 or
/// narrower), `sink` leading entries, chunks of `lag` (`len >= sink + 2 lag`): `[h, len]` f32
/// scores (1 for the sinks and the unranked tail) and, with `want_raw`, the raw chunk scores
/// `[h, chunks - 1, lag]` the ranks come from.
pub fn lagkv_scores(
    k: &Tensor,
    v: &Tensor,
    sink: usize,
    lag: usize,
    want_raw: bool,
) -> Result<Option<(Tensor, Option<Tensor>)>> {
    imp::lagkv_scores(k, v, sink, lag, want_raw)
}

/// Window attention summed over the window (`scoring::window_attention_sums`): from unscaled
/// logits `[n, g * w, len]` f32 (row `gi * w + i`: query head `gi`, window query `i`), each row's
/// softmax of `logit * scale` (plus `mask[n, i, j - tail_start]`, `[n, w, len - tail_start]` f32,
/// for keys `j >= tail_start`), summed over `i`: `[n, g, len]` f32.
pub fn window_softmax_sums(
    logits: &Tensor,
    mask: Option<&Tensor>,
    tail_start: usize,
    w: usize,
    scale: f32,
) -> Result<Option<Tensor>> {
    imp::window_softmax_sums(logits, mask, tail_start, w, scale)
}

/// Expected attention's covariance term: `[nh, g, n]` f32 with `out[h, gi, j] = sum_a
/// kc[h, j, gi d + a] k[h, j, a]`, for `kc` `[nh, n, g d]` (the keys times the `g` covariances
/// side by side) and `k` `[nh, n, d]`, both f32.
pub fn row_quadratic_forms(kc: &Tensor, k: &Tensor, g: usize) -> Result<Option<Tensor>> {
    imp::row_quadratic_forms(kc, k, g)
}

/// Jacobi sweeps on `a` (`[b, m, m]` f64 symmetric, `m` even, at most 128) until each matrix's
/// off-diagonal norm is at most `tol` of its norm, or `max_sweeps`: `(a', v)` with `a'` nearly
/// diagonal and `a = v a' vᵀ`, both `[b, m, m]` f64.
pub fn jacobi_eigen(a: &Tensor, tol: f64, max_sweeps: usize) -> Result<Option<(Tensor, Tensor)>> {
    imp::jacobi_eigen(a, tol, max_sweeps)
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::{Result, Tensor};

    pub(super) fn top_k_rows(_: &Tensor, _: usize) -> Result<Option<(Tensor, Tensor)>> {
        Ok(None)
    }
    pub(super) fn top_k_mask(
        _: &Tensor,
        _: &[usize],
        _: Option<&Tensor>,
    ) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub(super) fn run_sum_rows(_: &Tensor, _: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub(super) fn run_argmax(_: &Tensor, _: &Tensor) -> Result<Option<(Tensor, Tensor)>> {
        Ok(None)
    }
    pub(super) fn row_quadratic_forms(_: &Tensor, _: &Tensor, _: usize) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub(super) fn cam_cascade(_: &Tensor, _: &Tensor, _: &[usize]) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub(super) fn jacobi_eigen(_: &Tensor, _: f64, _: usize) -> Result<Option<(Tensor, Tensor)>> {
        Ok(None)
    }
    pub(super) fn slerp_coefficients(
        _: &Tensor,
        _: f64,
        _: f64,
    ) -> Result<Option<(Tensor, Tensor, Tensor)>> {
        Ok(None)
    }
    pub(super) fn window_softmax_sums(
        _: &Tensor,
        _: Option<&Tensor>,
        _: usize,
        _: usize,
        _: f32,
    ) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub(super) fn lagkv_scores(
        _: &Tensor,
        _: &Tensor,
        _: usize,
        _: usize,
        _: bool,
    ) -> Result<Option<(Tensor, Option<Tensor>)>> {
        Ok(None)
    }
    pub(super) fn quantize_groups(
        _: &Tensor,
        _: u32,
        _: usize,
        _: bool,
        _: bool,
    ) -> Result<Option<super::QuantizedGroups>> {
        Ok(None)
    }
}

#[cfg(feature = "cuda")]
#[path = "cuda.rs"]
mod imp;

//! Quantized storage: packed integer codes plus per-group scales (and zero points), with a
//! full-precision residual of recent entries.
//!
//! Layout, for `nq` quantized and `nr` residual entries of `heads` heads:
//! - `codes` `[heads, nq, head_dim * bits / 8]` u8: `8 / bits` codes per byte along `head_dim`,
//!   the first code in the lowest bits;
//! - `scales` (and `zeros` when asymmetric) f16: `[heads, nq, head_dim / group]` per token,
//!   `[heads, nq / group, head_dim]` per channel;
//! - `residual` `[heads, nr, head_dim]` in the cache dtype, the most recent entries.
//!
//! Asymmetric: zero = group minimum, scale = (max - min) / (2^bits - 1), code = round((x - zero) /
//! scale). Symmetric: scale = max |x| / (2^(bits-1) - 1), code = round(x / scale) + 2^(bits-1).
//! The scale is rounded *up* to f16 (and kept at least 2^-14, the smallest normal f16, which also
//! guards constant groups) and the codes are computed with the stored f16 scale and zero, so every
//! value reads back within scale / 2 of the original (plus the f16 rounding of the zero point),
//! and values already on the grid read back exactly. Groups are assumed to fit f16's range
//! (|x| < 65504), as KIVI's and HF's fp16 scales do.
//!
//! Everything runs as tensor operations (packing is a weighted sum over a reshaped last axis,
//! unpacking floor divisions), so it works unchanged on CUDA; there, quantizing is two kernel
//! launches (`kernels::quantize_groups`, the same arithmetic bit for bit) instead of ~25 ops.

use std::ops::Range;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::{cat_entries, concat_blocks, expect_rank3, overlap, Form, Result, Stored};
use crate::MethodError;

/// Which entries share a scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuantAxis {
    /// Groups of `group` consecutive channels of one entry (KIVI's values, HF QuantizedCache).
    PerToken,
    /// Groups of `group` consecutive entries of one channel (KIVI's keys).
    PerChannel,
}

/// When entries leave the full-precision residual for the quantized part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResidualRule {
    /// The `residual` most recent entries stay full precision; older ones are quantized one by one
    /// (KIVI's values).
    Sliding,
    /// Entries are quantized `residual` at a time, once that many have accumulated; at most
    /// `residual - 1` stay full precision (KIVI's keys).
    Blocks,
    /// Everything present at encoding is quantized; later entries accumulate in the residual and are
    /// quantized together when `residual` of them have arrived (HF QuantizedCache).
    Accumulate,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantScheme {
    /// 2, 4 or 8.
    pub bits: u32,
    pub group: usize,
    pub axis: QuantAxis,
    /// Symmetric (scale only, codes centred) or asymmetric (scale and zero point = group minimum).
    pub symmetric: bool,
    pub residual: usize,
    pub rule: ResidualRule,
}

/// The smallest stored scale: the smallest normal f16, so that rounding up to f16 stays exact in
/// relative terms (and a constant group gets a usable scale).
const MIN_SCALE: f64 = 1.0 / 16384.0;

impl QuantScheme {
    /// Why this scheme can't store entries of `head_dim` channels, if it can't.
    pub fn check(&self, head_dim: usize) -> std::result::Result<(), String> {
        if !matches!(self.bits, 2 | 4 | 8) {
            return Err(format!("bits must be 2, 4 or 8 (got {})", self.bits));
        }
        if self.group == 0 {
            return Err("group must be at least 1".into());
        }
        if !(head_dim * self.bits as usize).is_multiple_of(8) {
            return Err(format!(
                "head_dim {head_dim} does not pack into bytes at {} bits",
                self.bits
            ));
        }
        match self.axis {
            QuantAxis::PerToken if !head_dim.is_multiple_of(self.group) => Err(format!(
                "group ({}) must divide head_dim ({head_dim}) for per-token quantization",
                self.group
            )),
            QuantAxis::PerChannel
                if self.rule == ResidualRule::Blocks
                    && !self.residual.is_multiple_of(self.group) =>
            {
                Err(format!(
                    "residual ({}) must be a multiple of group ({}) for per-channel blocks",
                    self.residual, self.group
                ))
            }
            _ => Ok(()),
        }
    }

    /// The largest count `<= n` quantizable at once: per channel, whole groups of entries.
    fn whole_groups(&self, n: usize) -> usize {
        match self.axis {
            QuantAxis::PerToken => n,
            QuantAxis::PerChannel => n / self.group * self.group,
        }
    }

    /// (quantized, residual) entries when `n` entries are encoded at once.
    pub fn split(&self, n: usize) -> (usize, usize) {
        let r = self.residual;
        let q = match self.rule {
            ResidualRule::Sliding => n.saturating_sub(r),
            ResidualRule::Blocks if r == 0 => n,
            ResidualRule::Blocks => n / r * r,
            ResidualRule::Accumulate => n,
        };
        let q = self.whole_groups(q);
        (q, n - q)
    }

    /// Entries of a residual of `nr` (just appended to) that leave it now, oldest first.
    fn leaving(&self, nr: usize) -> usize {
        let r = self.residual;
        let q = match self.rule {
            ResidualRule::Sliding => nr.saturating_sub(r),
            ResidualRule::Blocks if r == 0 => nr,
            ResidualRule::Blocks => nr / r * r,
            ResidualRule::Accumulate if nr >= r => nr,
            ResidualRule::Accumulate => 0,
        };
        self.whole_groups(q)
    }

    /// Bytes of `nq` quantized entries: codes plus f16 scales (and zeros).
    pub fn quantized_bytes(&self, heads: usize, nq: usize, head_dim: usize) -> usize {
        let codes = heads * nq * head_dim * self.bits as usize / 8;
        let params = match self.axis {
            QuantAxis::PerToken => heads * nq * (head_dim / self.group),
            QuantAxis::PerChannel => heads * (nq / self.group) * head_dim,
        };
        let per_param = if self.symmetric { 2 } else { 4 };
        codes + params * per_param
    }

    /// Exact bytes of `n` entries encoded at once, the residual in a dtype of `dtype_bytes`.
    pub fn bytes_for(&self, heads: usize, n: usize, head_dim: usize, dtype_bytes: usize) -> usize {
        let (nq, nr) = self.split(n);
        self.quantized_bytes(heads, nq, head_dim) + heads * nr * head_dim * dtype_bytes
    }

    fn levels(&self) -> f64 {
        ((1u32 << self.bits) - 1) as f64
    }

    /// Code of zero in symmetric quantization.
    fn mid(&self) -> f64 {
        (1u32 << (self.bits - 1)) as f64
    }

    /// `x` (`[h, m, d]`, f32) viewed with each group along one axis, and that axis.
    fn grouped(&self, x: &Tensor) -> Result<(Tensor, usize)> {
        let (h, m, d) = x.dims3()?;
        Ok(match self.axis {
            QuantAxis::PerToken => (x.reshape((h, m, d / self.group, self.group))?, 3),
            QuantAxis::PerChannel => (x.reshape((h, m / self.group, self.group, d))?, 2),
        })
    }

    /// Codes (u8, packed), scales and zeros (f16) of `x` (`[h, m, d]`; per channel, `m` a
    /// multiple of `group`).
    pub fn quantize(&self, x: &Tensor) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let (h, m, d) = x.dims3()?;
        if self.whole_groups(m) != m {
            return Err(MethodError::Cache(format!(
                "per-channel quantization of {m} entries: not a multiple of group {}",
                self.group
            )));
        }
        let x = x.to_dtype(DType::F32)?;
        let per_token = self.axis == QuantAxis::PerToken;
        if let Some(q) =
            crate::kernels::quantize_groups(&x, self.bits, self.group, per_token, self.symmetric)?
        {
            return Ok(q);
        }
        let (xg, axis) = self.grouped(&x)?;
        let (range, zero) = if self.symmetric {
            (xg.abs()?.max_keepdim(axis)?, None)
        } else {
            let mn = xg.min_keepdim(axis)?;
            let mx = xg.max_keepdim(axis)?;
            ((mx - &mn)?, Some(mn.to_dtype(DType::F16)?))
        };
        let steps = if self.symmetric {
            self.mid() - 1.0
        } else {
            self.levels()
        };
        // A true division (not a multiplication by 1 / steps), so a range of exactly `steps`
        // grid steps gives that step exactly.
        let steps = Tensor::new(steps as f32, x.device())?;
        let scale = f16_ceil(&range.broadcast_div(&steps)?.maximum(MIN_SCALE)?)?;
        let s = scale.to_dtype(DType::F32)?;
        let q = match &zero {
            Some(z) => xg
                .broadcast_sub(&z.to_dtype(DType::F32)?)?
                .broadcast_div(&s)?
                .round()?,
            None => (xg.broadcast_div(&s)?.round()? + self.mid())?,
        };
        let q = q.clamp(0f32, self.levels() as f32)?.reshape((h, m, d))?;
        Ok((
            pack(&q, self.bits)?,
            scale.squeeze(axis)?,
            zero.map(|z| z.squeeze(axis)).transpose()?,
        ))
    }

    /// Values (`[h, m, d]`, f32) of packed `codes` with their `scales` and `zeros`.
    fn dequantize(
        &self,
        codes: &Tensor,
        scales: &Tensor,
        zeros: Option<&Tensor>,
    ) -> Result<Tensor> {
        let q = unpack(codes, self.bits)?;
        let (h, m, d) = q.dims3()?;
        let (qg, axis) = self.grouped(&q)?;
        let s = scales.to_dtype(DType::F32)?.unsqueeze(axis)?;
        let x = match zeros {
            Some(z) => qg
                .broadcast_mul(&s)?
                .broadcast_add(&z.to_dtype(DType::F32)?.unsqueeze(axis)?)?,
            None => (qg - self.mid())?.broadcast_mul(&s)?,
        };
        Ok(x.reshape((h, m, d))?)
    }
}

/// `x` (f32, positive) rounded up to f16: the nearest f16 where that is not below `x`, otherwise
/// `x (1 + 2^-10)` rounded, which is above `x` for normal f16 values.
fn f16_ceil(x: &Tensor) -> Result<Tensor> {
    let nearest = x.to_dtype(DType::F16)?;
    let up = x.affine(1.0 + 1.0 / 1024.0, 0.0)?.to_dtype(DType::F16)?;
    let below = nearest.to_dtype(DType::F32)?.lt(x)?;
    Ok(below.where_cond(&up, &nearest)?)
}

/// Integer-valued f32 codes `[h, m, d]` in `0..2^bits` packed `8 / bits` per byte along `d`.
fn pack(q: &Tensor, bits: u32) -> Result<Tensor> {
    let (h, m, d) = q.dims3()?;
    let per = (8 / bits) as usize;
    if per == 1 {
        return Ok(q.to_dtype(DType::U8)?);
    }
    let weights: Vec<f32> = (0..per)
        .map(|j| (1u32 << (bits * j as u32)) as f32)
        .collect();
    let w = Tensor::from_vec(weights, per, q.device())?;
    // Sums of distinct powers of two times small integers: exact in f32, below 256.
    Ok(q.reshape((h, m, d / per, per))?
        .broadcast_mul(&w)?
        .sum(3)?
        .to_dtype(DType::U8)?)
}

/// Packed u8 codes `[h, m, b]` back to f32 codes `[h, m, b * 8 / bits]`.
fn unpack(codes: &Tensor, bits: u32) -> Result<Tensor> {
    let (h, m, b) = codes.dims3()?;
    let c = codes.to_dtype(DType::F32)?;
    let per = (8 / bits) as usize;
    if per == 1 {
        return Ok(c);
    }
    // Shift right by bits * j (exact: multiplication by a power of two, then floor), then keep the
    // low `bits` bits: y - 2^bits floor(y / 2^bits).
    let shifts: Vec<f32> = (0..per)
        .map(|j| 1.0 / (1u32 << (bits * j as u32)) as f32)
        .collect();
    let shifts = Tensor::from_vec(shifts, per, codes.device())?;
    let y = c.unsqueeze(3)?.broadcast_mul(&shifts)?.floor()?;
    let base = (1u32 << bits) as f64;
    let high = y.affine(1.0 / base, 0.0)?.floor()?.affine(base, 0.0)?;
    Ok((y - high)?.reshape((h, m, b * per))?)
}

#[derive(Clone, Debug)]
pub struct Quantized {
    pub(super) scheme: QuantScheme,
    pub(super) heads: usize,
    pub(super) head_dim: usize,
    /// The cache dtype: the residual's, and what blocks are reconstructed in.
    pub(super) dtype: DType,
    /// Entries in the quantized part.
    pub(super) nq: usize,
    pub(super) codes: Option<Tensor>,
    pub(super) scales: Option<Tensor>,
    pub(super) zeros: Option<Tensor>,
    pub(super) residual: Option<Tensor>,
}

impl Quantized {
    /// Encode `x` (`[heads, n, head_dim]`, the cache dtype): the part the scheme's residual rule
    /// quantizes at encoding (`QuantScheme::split`), the rest kept as the residual.
    pub fn encode(x: &Tensor, scheme: QuantScheme) -> Result<Self> {
        let (heads, n, head_dim) = expect_rank3(x, "quantization input")?;
        scheme.check(head_dim).map_err(MethodError::Cache)?;
        let mut form = Self {
            scheme,
            heads,
            head_dim,
            dtype: x.dtype(),
            nq: 0,
            codes: None,
            scales: None,
            zeros: None,
            residual: None,
        };
        let (nq, nr) = scheme.split(n);
        if nq > 0 {
            form.push_quantized(&x.narrow(1, 0, nq)?)?;
        }
        if nr > 0 {
            form.residual = Some(x.narrow(1, nq, nr)?.contiguous()?);
        }
        Ok(form)
    }

    pub fn scheme(&self) -> QuantScheme {
        self.scheme
    }
    pub fn quantized_len(&self) -> usize {
        self.nq
    }
    pub fn residual_len(&self) -> usize {
        self.residual.as_ref().map_or(0, |r| r.dims()[1])
    }

    /// Quantize `x` and append it to the quantized part.
    fn push_quantized(&mut self, x: &Tensor) -> Result<()> {
        let (codes, scales, zeros) = self.scheme.quantize(x)?;
        self.codes = Some(cat_entries(self.codes.as_ref(), &codes)?);
        self.scales = Some(cat_entries(self.scales.as_ref(), &scales)?);
        if let Some(z) = zeros {
            self.zeros = Some(cat_entries(self.zeros.as_ref(), &z)?);
        }
        self.nq += x.dims()[1];
        Ok(())
    }

    /// Quantized entries `start..start + n`, reconstructed in the cache dtype. Per channel, whole
    /// groups covering the range are decoded, then narrowed.
    fn dequantized(&self, start: usize, n: usize) -> Result<Tensor> {
        let (Some(codes), Some(scales)) = (&self.codes, &self.scales) else {
            return Err(MethodError::Cache("no quantized entries".into()));
        };
        let (lo, hi, p0, p1) = match self.scheme.axis {
            QuantAxis::PerToken => (start, start + n, start, start + n),
            QuantAxis::PerChannel => {
                let g = self.scheme.group;
                let (g0, g1) = (start / g, (start + n).div_ceil(g));
                (g0 * g, g1 * g, g0, g1)
            }
        };
        let x = self.scheme.dequantize(
            &codes.narrow(1, lo, hi - lo)?,
            &scales.narrow(1, p0, p1 - p0)?,
            self.zeros
                .as_ref()
                .map(|z| z.narrow(1, p0, p1 - p0))
                .transpose()?
                .as_ref(),
        )?;
        Ok(x.narrow(1, start - lo, n)?
            .to_dtype(self.dtype)?
            .contiguous()?)
    }
}

impl Form for Quantized {
    fn n_heads(&self) -> usize {
        self.heads
    }
    fn len(&self) -> usize {
        self.nq + self.residual_len()
    }
    fn block(&self, start: usize, n: usize) -> Result<Tensor> {
        let len = self.len();
        if start + n > len {
            return Err(MethodError::Cache(format!(
                "block {start}..{} past the {len} quantized entries",
                start + n
            )));
        }
        let mut parts = Vec::with_capacity(2);
        if let Some((s, c)) = overlap(start, n, 0..self.nq) {
            parts.push(self.dequantized(s, c)?);
        }
        if let (Some((s, c)), Some(r)) = (overlap(start, n, self.nq..len), &self.residual) {
            parts.push(r.narrow(1, s, c)?);
        }
        concat_blocks(parts)
    }
    fn append(&mut self, x: &Tensor) -> Result<()> {
        let (h, t, d) = expect_rank3(x, "quantized append")?;
        if (h, d) != (self.heads, self.head_dim) {
            return Err(MethodError::Cache(format!(
                "appending {:?} to quantized storage of {} heads x {} channels",
                x.shape(),
                self.heads,
                self.head_dim
            )));
        }
        if t == 0 {
            return Ok(());
        }
        let res = cat_entries(self.residual.as_ref(), &x.to_dtype(self.dtype)?)?;
        let nr = res.dims()[1];
        let k = self.scheme.leaving(nr);
        if k > 0 {
            self.push_quantized(&res.narrow(1, 0, k)?)?;
        }
        self.residual = if k < nr {
            Some(res.narrow(1, k, nr - k)?.contiguous()?)
        } else {
            None
        };
        Ok(())
    }
    fn tensors(&self) -> Vec<&Tensor> {
        [&self.codes, &self.scales, &self.zeros, &self.residual]
            .into_iter()
            .flatten()
            .collect()
    }
    fn encode_like(&self, x: &Tensor, _heads: Range<usize>) -> Result<Stored> {
        Ok(Stored::Quantized(Quantized::encode(x, self.scheme)?))
    }
}

#[cfg(test)]
#[path = "quantized_tests.rs"]
mod tests;

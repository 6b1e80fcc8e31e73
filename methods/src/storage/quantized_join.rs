//! A quantized form rebuilt from two halves, for Cake (harness `run::cake`): a dense front of
//! entries `0..s` recomputed by the model, and the rest (`s..n`) read from a stored form as its
//! rows lie in the file: codes, scales and zeros of quantized entries, then residual entries.
//!
//! Quantization groups never straddle the cut when `s` is a multiple of the scheme's group (per
//! channel; per token every entry is its own group), so quantizing the front here gives the codes,
//! scales and zeros the original encoding gave the same values: the rebuilt form is the stored
//! one wherever the recomputed front equals the original prefill (on CPU it does to the last
//! bit or within float rounding of chunked attention).

use std::ops::Range;

use candle_core::{DType, Tensor};

use super::{expect_rank3, QuantAxis, QuantScheme, Quantized, Result};
use crate::MethodError;

/// Everything a quantized form is besides its tensors (what its stored description says).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantLayout {
    pub scheme: QuantScheme,
    pub heads: usize,
    pub head_dim: usize,
    /// The cache dtype (residual and reconstruction).
    pub dtype: DType,
    /// Entries in the quantized part.
    pub nq: usize,
}

/// Rows of each stored tensor that entries `start..end` occupy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowRanges {
    /// Rows of `codes`: quantized entries in `start..end`.
    pub codes: Range<usize>,
    /// Rows of `scales` and `zeros`: entries per token, groups of entries per channel.
    pub params: Range<usize>,
    /// Rows of `residual`: residual entries in `start..end`.
    pub residual: Range<usize>,
}

impl QuantLayout {
    /// The rows entries `start..end` occupy. Per channel, the quantized part must be cut on group
    /// boundaries (a group's scale covers entries on both sides otherwise).
    pub fn rows(&self, start: usize, end: usize) -> Result<RowRanges> {
        let nq = self.nq;
        let codes = start.min(nq)..end.min(nq);
        let params = match self.scheme.axis {
            QuantAxis::PerToken => codes.clone(),
            QuantAxis::PerChannel => {
                let g = self.scheme.group;
                if !codes.start.is_multiple_of(g) || !codes.end.is_multiple_of(g) {
                    return Err(MethodError::Cache(format!(
                        "entries {start}..{end} cut a quantization group of {g} entries \
                         (per-channel keys are quantized {g} entries at a time)"
                    )));
                }
                codes.start / g..codes.end / g
            }
        };
        let residual = start.max(nq) - nq..end.max(nq) - nq;
        Ok(RowRanges {
            codes,
            params,
            residual,
        })
    }
}

/// Stored rows of a quantized form from entry `start` on (codes, scales and zeros of its
/// quantized entries, then its residual entries), `[heads, rows, ..]` each.
#[derive(Clone, Debug)]
pub struct QuantRows {
    pub start: usize,
    pub end: usize,
    pub codes: Option<Tensor>,
    pub scales: Option<Tensor>,
    pub zeros: Option<Tensor>,
    pub residual: Option<Tensor>,
}

/// `a` then `b` along the row axis, either possibly absent.
fn cat_rows(a: Option<Tensor>, b: Option<Tensor>) -> Result<Option<Tensor>> {
    Ok(match (a, b) {
        (Some(a), Some(b)) => Some(Tensor::cat(&[&a, &b], 1)?),
        (a, b) => a.or(b),
    })
}

/// `t`'s rows `r`, or nothing when `r` is empty.
fn rows_of(t: Option<&Tensor>, r: &Range<usize>) -> Result<Option<Tensor>> {
    Ok(match t {
        Some(t) if !r.is_empty() => Some(t.narrow(1, r.start, r.len())?),
        _ => None,
    })
}

impl QuantRows {
    /// Consecutive pieces (ascending, each starting where the last ended) joined into one.
    pub fn cat(pieces: Vec<QuantRows>) -> Result<Option<QuantRows>> {
        let mut out: Option<QuantRows> = None;
        for p in pieces {
            out = Some(match out {
                None => p,
                Some(a) => {
                    if a.end != p.start {
                        return Err(MethodError::Cache(format!(
                            "quantized rows {}..{} do not continue {}..{}",
                            p.start, p.end, a.start, a.end
                        )));
                    }
                    QuantRows {
                        start: a.start,
                        end: p.end,
                        codes: cat_rows(a.codes, p.codes)?,
                        scales: cat_rows(a.scales, p.scales)?,
                        zeros: cat_rows(a.zeros, p.zeros)?,
                        residual: cat_rows(a.residual, p.residual)?,
                    }
                }
            });
        }
        Ok(out)
    }

    /// The same rows from entry `at` on (`start <= at <= end`).
    pub fn from_entry(self, layout: &QuantLayout, at: usize) -> Result<QuantRows> {
        if at < self.start || at > self.end {
            return Err(MethodError::Cache(format!(
                "entry {at} is outside the rows {}..{}",
                self.start, self.end
            )));
        }
        let held = layout.rows(self.start, self.end)?;
        let kept = layout.rows(at, self.end)?;
        let local = |whole: &Range<usize>, part: &Range<usize>| {
            part.start - whole.start..part.end - whole.start
        };
        let (c, p, r) = (
            local(&held.codes, &kept.codes),
            local(&held.params, &kept.params),
            local(&held.residual, &kept.residual),
        );
        Ok(QuantRows {
            start: at,
            end: self.end,
            codes: rows_of(self.codes.as_ref(), &c)?,
            scales: rows_of(self.scales.as_ref(), &p)?,
            zeros: rows_of(self.zeros.as_ref(), &p)?,
            residual: rows_of(self.residual.as_ref(), &r)?,
        })
    }
}

impl Quantized {
    /// The form of `layout` whose entries `0..s` are `front` (`[heads, s, head_dim]`, dense,
    /// quantized here where they fall in the quantized part) and whose entries `s..` are `tail`
    /// (stored rows starting at `s`). Either may be absent; the quantized part must come out at
    /// `layout.nq` entries.
    pub fn join(
        layout: QuantLayout,
        front: Option<&Tensor>,
        tail: Option<QuantRows>,
    ) -> Result<Self> {
        let s = match front {
            Some(f) => {
                let (h, s, d) = expect_rank3(f, "recomputed front")?;
                if (h, d) != (layout.heads, layout.head_dim) {
                    return Err(MethodError::Cache(format!(
                        "recomputed front {:?} does not fit quantized storage of {} heads x {} \
                         channels",
                        f.shape(),
                        layout.heads,
                        layout.head_dim
                    )));
                }
                s
            }
            None => 0,
        };
        if let Some(t) = &tail {
            if t.start != s {
                return Err(MethodError::Cache(format!(
                    "loaded rows start at entry {}, the recomputed front ends at {s}",
                    t.start
                )));
            }
        }
        let mut form = Quantized {
            scheme: layout.scheme,
            heads: layout.heads,
            head_dim: layout.head_dim,
            dtype: layout.dtype,
            nq: 0,
            codes: None,
            scales: None,
            zeros: None,
            residual: None,
        };
        if let Some(f) = front {
            let at = layout.rows(0, s)?;
            if !at.codes.is_empty() {
                let x = f.narrow(1, 0, at.codes.end)?.to_dtype(layout.dtype)?;
                let (codes, scales, zeros) = layout.scheme.quantize(&x)?;
                form.codes = Some(codes);
                form.scales = Some(scales);
                form.zeros = zeros;
            }
            if s > layout.nq {
                let r = f
                    .narrow(1, layout.nq, s - layout.nq)?
                    .to_dtype(layout.dtype)?;
                form.residual = Some(r);
            }
        }
        if let Some(t) = tail {
            form.codes = cat_rows(form.codes, t.codes)?;
            form.scales = cat_rows(form.scales, t.scales)?;
            form.zeros = cat_rows(form.zeros, t.zeros)?;
            form.residual = cat_rows(form.residual, t.residual)?;
        }
        form.nq = form.codes.as_ref().map_or(0, |c| c.dims()[1]);
        if form.nq != layout.nq {
            return Err(MethodError::Cache(format!(
                "joined quantized part holds {} entries, the stored form {}",
                form.nq, layout.nq
            )));
        }
        form.residual = form.residual.map(|r| r.contiguous()).transpose()?;
        Ok(form)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::storage::{Form, ResidualRule};

    fn kivi_like(axis: QuantAxis, rule: ResidualRule) -> QuantScheme {
        QuantScheme {
            bits: 2,
            group: 4,
            axis,
            symmetric: false,
            residual: 8,
            rule,
        }
    }

    fn bits_of(t: &Option<Tensor>) -> Option<Vec<f32>> {
        t.as_ref().map(|t| {
            t.to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        })
    }

    /// Stored rows of `q` for entries `start..end`, as a loader reads them from the file.
    fn read(q: &Quantized, layout: &QuantLayout, start: usize, end: usize) -> QuantRows {
        let r = layout.rows(start, end).unwrap();
        QuantRows {
            start,
            end,
            codes: rows_of(q.codes.as_ref(), &r.codes).unwrap(),
            scales: rows_of(q.scales.as_ref(), &r.params).unwrap(),
            zeros: rows_of(q.zeros.as_ref(), &r.params).unwrap(),
            residual: rows_of(q.residual.as_ref(), &r.residual).unwrap(),
        }
    }

    #[test]
    fn a_front_and_loaded_rows_rebuild_the_stored_form_bit_for_bit_at_every_group_cut() {
        let (h, n, d) = (2, 37, 8);
        let v: Vec<f32> = (0..h * n * d)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let x = Tensor::from_vec(v, (h, n, d), &Device::Cpu).unwrap();
        for (axis, rule) in [
            (QuantAxis::PerChannel, ResidualRule::Blocks),
            (QuantAxis::PerToken, ResidualRule::Sliding),
        ] {
            let stored = Quantized::encode(&x, kivi_like(axis, rule)).unwrap();
            let layout = QuantLayout {
                scheme: stored.scheme,
                heads: h,
                head_dim: d,
                dtype: DType::F32,
                nq: stored.nq,
            };
            assert!(stored.nq > 0 && stored.residual_len() > 0, "{axis:?}");
            // Cuts in the quantized part, at its end, inside the residual and at both ends; the
            // tail read in two pieces that overlap the front (as a loader racing compute does).
            for s in [0, 4, 12, stored.nq, 36, n] {
                let from = s.saturating_sub(4) / 4 * 4;
                let mid = (from + n) / 2 / 4 * 4;
                let mid = mid.max(from);
                let pieces = vec![
                    read(&stored, &layout, from, mid),
                    read(&stored, &layout, mid, n),
                ];
                let tail = QuantRows::cat(pieces)
                    .unwrap()
                    .unwrap()
                    .from_entry(&layout, s)
                    .unwrap();
                let front = (s > 0).then(|| x.narrow(1, 0, s).unwrap());
                let tail = (s < n).then_some(tail);
                let joined = Quantized::join(layout, front.as_ref(), tail).unwrap();
                assert_eq!(joined.len(), n, "{axis:?} cut {s}");
                assert_eq!(joined.nq, stored.nq);
                for (a, b) in [
                    (&joined.codes, &stored.codes),
                    (&joined.scales, &stored.scales),
                    (&joined.zeros, &stored.zeros),
                    (&joined.residual, &stored.residual),
                ] {
                    assert_eq!(bits_of(a), bits_of(b), "{axis:?} cut {s}");
                }
            }
        }
    }

    #[test]
    fn a_cut_inside_a_per_channel_group_is_an_error() {
        let layout = QuantLayout {
            scheme: kivi_like(QuantAxis::PerChannel, ResidualRule::Blocks),
            heads: 1,
            head_dim: 8,
            dtype: DType::F32,
            nq: 16,
        };
        let e = layout.rows(6, 16).unwrap_err().to_string();
        assert!(e.contains("quantization group of 4"), "{e}");
        // In the residual, any cut is fine.
        assert_eq!(layout.rows(17, 19).unwrap().residual, 1..3);
    }
}

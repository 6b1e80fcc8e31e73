//! Top-k per head where the scores are: on CUDA a kernel (`crate::kernels::top_k_rows`, a radix
//! select per row) picks each head's kept entries without bringing the scores to the host; on
//! the CPU it is [`top_k_sorted`] per row. Both keep the same entries: the highest scores, NaN as
//! -inf, ties to the later entry, indices in increasing order.
//!
//! What comes back is what `LayerKv::retain_rows` needs: the kept indices on the host (the
//! cache's positions are host bookkeeping) and, on the scores' device, the flat row numbers
//! `head * len + index` for one `index_select` over the layer's `[heads * len, d]` keys and values.
//! Only those indices cross to the host: `[heads, k]` u32 per layer instead of `[heads, len]` f32
//! scores, and no upload of indices back.

use candle_core::{DType, Device, Tensor};

use crate::retain::flat_rows;
use crate::selection::select::top_k_sorted;
use crate::MethodError;

type Result<T> = std::result::Result<T, MethodError>;

/// Each head's kept entries (see the module doc).
pub struct KeptRows {
    /// `[heads][k]`, increasing.
    pub local: Vec<Vec<u32>>,
    /// `[heads * k]` u32 on the scores' device: `head * len + local[head][i]`.
    pub flat: Tensor,
}

/// The `k` best of every row of `scores` (`[heads, len]` f32), the same on every device.
pub fn top_k_rows(scores: &Tensor, k: usize) -> Result<KeptRows> {
    let (heads, len) = scores.dims2()?;
    let k = k.min(len);
    if heads == 0 || k == 0 || k == len {
        // Nothing or everything: no ranking to do.
        let local: Vec<Vec<u32>> = (0..heads).map(|_| (0..k as u32).collect()).collect();
        return flat_of(local, len, scores.device());
    }
    if let Some((local, flat)) = crate::kernels::top_k_rows(scores, k)? {
        let local = local.to_vec2::<u32>()?;
        return Ok(KeptRows { local, flat });
    }
    let rows = scores.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let local = rows.iter().map(|r| top_k_sorted(r, k)).collect();
    flat_of(local, len, scores.device())
}

/// [`KeptRows`] from host indices: the flat row numbers uploaded once.
fn flat_of(local: Vec<Vec<u32>>, len: usize, device: &Device) -> Result<KeptRows> {
    let flat = flat_rows(&local, len, device)?;
    Ok(KeptRows { local, flat })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows with ties, NaN, infinities and signed zeros: the kept indices are each row's
    /// `top_k_sorted`, and the flat numbers point at them.
    #[test]
    fn keeps_each_rows_top_k_in_order() {
        let rows = vec![
            vec![0.5, f32::NAN, 0.5, f32::INFINITY, -0.0, 0.0, 0.5, f32::NEG_INFINITY],
            vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            vec![-3.0, 2.0, -1.0, 7.0, 7.0, f32::NAN, f32::NAN, 0.25],
        ];
        let t = Tensor::new(rows.clone(), &Device::Cpu).unwrap();
        for k in 0..=9 {
            let kept = top_k_rows(&t, k).unwrap();
            let want: Vec<Vec<u32>> = rows.iter().map(|r| top_k_sorted(r, k)).collect();
            assert_eq!(kept.local, want, "k = {k}");
            let flat: Vec<u32> = kept.flat.to_vec1().unwrap();
            let expect: Vec<u32> = want
                .iter()
                .enumerate()
                .flat_map(|(h, r)| r.iter().map(move |&i| h as u32 * 8 + i))
                .collect();
            assert_eq!(flat, expect, "k = {k}");
        }
    }
}

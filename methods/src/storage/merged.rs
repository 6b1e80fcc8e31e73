//! Cross-layer merged storage (MiniCache): one layer of a pair of layers whose entries share a
//! direction.
//!
//! Each entry of either layer is `magnitude x direction`: the unit `direction` (`[heads, n,
//! head_dim]`) is ONE tensor held by both layers of the pair (so `KvCache::bytes` counts it once),
//! the `magnitude` (`[heads, n, 1]`) is this layer's own. Entries too different to share a
//! direction are *retained*: their flat indices (`head * n + entry`, u32, also one tensor shared by
//! the pair) and this layer's original vectors (`[m, head_dim]`) are stored beside, and read back
//! unchanged. Entries appended during generation go whole into a dense `tail`, as MiniCache merges
//! the prefill cache. How directions are chosen (SLERP) and which entries are retained is the
//! method's business (`crate::minicache`); this form only stores and reconstructs.

use std::ops::Range;
use std::sync::Arc;

use candle_core::{DType, Tensor};

use super::{cat_entries, concat_blocks, expect_rank3, overlap, Form, Result, Stored};
use crate::MethodError;

#[derive(Clone, Debug)]
pub struct Merged {
    /// Unit direction of every merged entry, `[heads, n, head_dim]`: shared by the pair.
    pub(super) direction: Tensor,
    /// This layer's length of every merged entry, `[heads, n, 1]`.
    pub(super) magnitude: Tensor,
    /// Flat indices `head * n + entry` of the retained entries, increasing, u32 `[m]`: shared.
    pub(super) retained_index: Option<Tensor>,
    /// This layer's original vectors of the retained entries, `[m, head_dim]`.
    pub(super) retained: Option<Tensor>,
    /// Host copy of `retained_index`, to find a block's retained entries without a device read
    /// (bookkeeping like the positions, not counted).
    pub(super) retained_flat: Arc<Vec<u32>>,
    /// Entries appended after merging, whole: `[heads, t, head_dim]`.
    pub(super) tail: Option<Tensor>,
}

impl Merged {
    /// Store `a` and `b` (the same heads and entries of two layers, `[heads, n, head_dim]`) as one
    /// shared unit `direction` (`[heads, n, head_dim]`) plus each layer's magnitudes, keeping the
    /// entries at flat indices `retained` (`head * n + entry`, strictly increasing) whole.
    /// Returns the forms of `a` and of `b`.
    pub fn pair(
        a: &Tensor,
        b: &Tensor,
        direction: &Tensor,
        retained: &[u32],
    ) -> Result<(Merged, Merged)> {
        let (h, n, d) = expect_rank3(a, "merged input")?;
        if b.dims() != a.dims() || direction.dims() != a.dims() {
            return Err(MethodError::Cache(format!(
                "merged layers {:?} and {:?} need one shape, and a direction of that shape (got {:?})",
                a.shape(),
                b.shape(),
                direction.shape()
            )));
        }
        let total = (h * n) as u32;
        if retained.windows(2).any(|w| w[0] >= w[1]) || retained.last().is_some_and(|&i| i >= total)
        {
            return Err(MethodError::Cache(format!(
                "retained entries must be strictly increasing flat indices below {total}"
            )));
        }
        let direction = direction.to_dtype(a.dtype())?.contiguous()?;
        let retained_index = if retained.is_empty() {
            None
        } else {
            Some(Tensor::new(retained, a.device())?)
        };
        let retained_flat = Arc::new(retained.to_vec());
        let one = |x: &Tensor| -> Result<Merged> {
            let magnitude = x
                .to_dtype(DType::F32)?
                .sqr()?
                .sum_keepdim(2)?
                .sqrt()?
                .to_dtype(x.dtype())?;
            let kept = match &retained_index {
                Some(idx) => Some(x.reshape((h * n, d))?.index_select(idx, 0)?),
                None => None,
            };
            Ok(Merged {
                direction: direction.clone(),
                magnitude,
                retained_index: retained_index.clone(),
                retained: kept,
                retained_flat: retained_flat.clone(),
                tail: None,
            })
        };
        Ok((one(a)?, one(b)?))
    }

    /// The direction tensor shared with the other layer of the pair.
    pub fn direction(&self) -> &Tensor {
        &self.direction
    }

    /// Entries stored whole instead of merged (per layer, over all heads).
    pub fn retained_count(&self) -> usize {
        self.retained_flat.len()
    }

    fn merged_len(&self) -> usize {
        self.direction.dims()[1]
    }

    /// Merged entries `o..o + m`, retained ones substituted: `[heads, m, head_dim]`.
    fn merged_block(&self, o: usize, m: usize) -> Result<Tensor> {
        let (h, n, d) = self.direction.dims3()?;
        let recon = self
            .direction
            .narrow(1, o, m)?
            .broadcast_mul(&self.magnitude.narrow(1, o, m)?)?;
        let Some(retained) = &self.retained else {
            return Ok(recon);
        };
        // Row `k` of the block reads row `k` of the reconstruction, or row `h * m + r` (retained
        // entry `r`, appended below the block) when retained: a gather, so retained rows come
        // back bit for bit.
        let flat = &self.retained_flat;
        let mut rows = Vec::new();
        let mut gather: Vec<u32> = (0..(h * m) as u32).collect();
        for head in 0..h {
            let lo = (head * n + o) as u32;
            let first = flat.partition_point(|&i| i < lo);
            let last = flat.partition_point(|&i| i < lo + m as u32);
            for (r, &i) in flat[first..last].iter().enumerate() {
                gather[head * m + (i - lo) as usize] = (h * m + rows.len()) as u32;
                rows.push((first + r) as u32);
            }
        }
        if rows.is_empty() {
            return Ok(recon);
        }
        let dev = recon.device();
        let picked = retained.index_select(&Tensor::new(rows.as_slice(), dev)?, 0)?;
        let all = Tensor::cat(&[&recon.reshape((h * m, d))?, &picked], 0)?;
        Ok(all
            .index_select(&Tensor::new(gather.as_slice(), dev)?, 0)?
            .reshape((h, m, d))?)
    }
}

impl Form for Merged {
    fn n_heads(&self) -> usize {
        self.direction.dims()[0]
    }
    fn len(&self) -> usize {
        self.merged_len() + self.tail.as_ref().map_or(0, |t| t.dims()[1])
    }
    fn block(&self, start: usize, n: usize) -> Result<Tensor> {
        let mut parts = Vec::new();
        let p = self.merged_len();
        if let Some((o, m)) = overlap(start, n, 0..p) {
            parts.push(self.merged_block(o, m)?);
        }
        if let (Some(tail), Some((o, m))) = (&self.tail, overlap(start, n, p..self.len())) {
            parts.push(tail.narrow(1, o, m)?);
        }
        concat_blocks(parts)
    }
    fn append(&mut self, x: &Tensor) -> Result<()> {
        self.tail = Some(cat_entries(self.tail.as_ref(), x)?);
        Ok(())
    }
    fn tensors(&self) -> Vec<&Tensor> {
        [
            Some(&self.direction),
            Some(&self.magnitude),
            self.retained_index.as_ref(),
            self.retained.as_ref(),
            self.tail.as_ref(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
    fn encode_like(&self, x: &Tensor, _heads: Range<usize>) -> Result<Stored> {
        // The direction is the pair's: survivors of one layer can't keep it alone.
        Ok(Stored::Dense(x.contiguous()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KvCache, Storage};
    use candle_core::Device;

    fn t3(v: &[[[f32; 2]; 3]; 2]) -> Tensor {
        let flat: Vec<f32> = v.iter().flatten().flatten().copied().collect();
        Tensor::from_vec(flat, (2, 3, 2), &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
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

    /// Layer `a`, and layer `b` pointing the same way as `a` except at flat entries 1 and 5,
    /// which are retained.
    fn pair() -> (Tensor, Tensor, Tensor, Vec<u32>) {
        let a = t3(&[
            [[3., 4.], [1., 0.], [0., -2.]],
            [[-1., 1.], [6., 8.], [0.5, 0.5]],
        ]);
        let b = t3(&[
            [[6., 8.], [0., 7.], [0., -0.5]],
            [[-3., 3.], [3., 4.], [-9., 2.]],
        ]);
        let norm = a.sqr().unwrap().sum_keepdim(2).unwrap().sqrt().unwrap();
        let dir = a.broadcast_div(&norm).unwrap();
        (a, b, dir, vec![1, 5])
    }

    #[test]
    fn reconstructs_retained_entries_exactly_and_aligned_ones_from_the_shared_direction() {
        let (a, b, dir, retained) = pair();
        let (mut fa, fb) = Merged::pair(&a, &b, &dir, &retained).unwrap();
        assert_eq!(fa.direction().id(), fb.direction().id());
        assert_eq!(fa.retained_count(), 2);
        assert!(max_diff(&fa.block(0, 3).unwrap(), &a) < 1e-6);
        assert!(max_diff(&fb.block(0, 3).unwrap(), &b) < 1e-6);
        // Retained entries come back bit for bit, also in a block that starts mid-way.
        let got: Vec<Vec<Vec<f32>>> = fb.block(1, 2).unwrap().to_vec3().unwrap();
        assert_eq!(got[0][0], vec![0., 7.]);
        assert_eq!(got[1][1], vec![-9., 2.]);
        // Without retention the non-aligned entries take the shared direction at their own length.
        let (_, fb0) = Merged::pair(&a, &b, &dir, &[]).unwrap();
        let got: Vec<Vec<Vec<f32>>> = fb0.block(1, 1).unwrap().to_vec3().unwrap();
        assert!((got[0][0][0] - 7.0).abs() < 1e-6 && got[0][0][1].abs() < 1e-6);
        // Appended entries stay whole in the tail; a block may straddle both parts.
        let y = Tensor::ones((2, 1, 2), DType::F32, &Device::Cpu).unwrap();
        fa.append(&y).unwrap();
        assert_eq!(fa.len(), 4);
        let got: Vec<Vec<Vec<f32>>> = fa.block(2, 2).unwrap().to_vec3().unwrap();
        assert!((got[0][0][1] + 2.0).abs() < 1e-6);
        assert_eq!(got[1][1], vec![1., 1.]);
        assert!(Merged::pair(&a, &b, &dir, &[5, 1]).is_err());
        assert!(Merged::pair(&a, &b, &dir, &[6]).is_err());
    }

    #[test]
    fn the_shared_direction_is_counted_once_across_the_pair() {
        let (a, b, dir, retained) = pair();
        let dev = Device::Cpu;
        let mut cache = KvCache::new(2, 2, 2, DType::F32, &dev);
        for (l, x) in [&a, &b].into_iter().enumerate() {
            cache.layer_mut(l).append(x, x, &[0, 1, 2]).unwrap();
        }
        let (ka, kb) = Merged::pair(&a, &b, &dir, &retained).unwrap();
        // Values get their own direction tensor (the same numbers, another tensor).
        let (va, vb) = Merged::pair(&a, &b, &dir.copy().unwrap(), &retained).unwrap();
        for (l, (k, v)) in [(ka, va), (kb, vb)].into_iter().enumerate() {
            let mut parts = Some((k, v));
            cache
                .layer_mut(l)
                .restore(|_| {
                    let (k, v) = parts.take().expect("one group");
                    Ok(Storage {
                        k: Stored::Merged(k),
                        v: Stored::Merged(v),
                    })
                })
                .unwrap();
        }
        let (h, n, d, m) = (2, 3, 2, 2);
        // Per component: direction once, two magnitudes, the index once, two retained sets.
        let per_component = (h * n * d + 2 * h * n + 2 * m * d) * 4 + m * 4;
        assert_eq!(cache.bytes(), 2 * per_component);
        // Each layer on its own counts the shared tensors in full.
        let layer_sum: usize = (0..2).map(|l| cache.layer(l).bytes()).sum();
        assert_eq!(layer_sum, cache.bytes() + 2 * (h * n * d * 4 + m * 4));
    }
}

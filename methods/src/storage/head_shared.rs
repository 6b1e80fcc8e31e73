//! One tensor shared by several KV heads (post-hoc grouped-query attention).
//!
//! `merged` holds one `[n, head_dim]` slab per head group; `group_of[h]` names the slab head `h`
//! reads. Entries appended during generation are averaged over each group the same way, so the
//! cache stays reduced.

use std::ops::Range;

use candle_core::Tensor;

use super::{cat_entries, expect_rank3, Form, Result, Stored};
use crate::MethodError;

#[derive(Clone, Debug)]
pub struct HeadShared {
    /// `[groups, n, head_dim]` in the cache dtype.
    pub(super) merged: Tensor,
    /// Group of every head, non-decreasing, covering `0..groups`.
    pub(super) group_of: Vec<u32>,
}

impl HeadShared {
    /// Average the heads of `x` (`[heads, n, head_dim]`) within each group of `group_of`.
    pub fn encode(x: &Tensor, group_of: Vec<u32>) -> Result<Self> {
        let (h, _, _) = expect_rank3(x, "head merge input")?;
        let ok = group_of.len() == h
            && group_of.first() == Some(&0)
            && group_of
                .windows(2)
                .all(|w| w[1] == w[0] || w[1] == w[0] + 1);
        if !ok {
            return Err(MethodError::Cache(format!(
                "head groups {group_of:?} must number {h} heads' groups consecutively from 0"
            )));
        }
        let merged = Self::average(x, &group_of)?;
        Ok(Self { merged, group_of })
    }

    fn average(x: &Tensor, group_of: &[u32]) -> Result<Tensor> {
        let groups = *group_of.last().expect("at least one head") as usize + 1;
        let mut slabs = Vec::with_capacity(groups);
        let mut first = 0;
        for g in 0..groups as u32 {
            let count = group_of.iter().filter(|&&x| x == g).count();
            slabs.push(x.narrow(0, first, count)?.mean_keepdim(0)?);
            first += count;
        }
        Ok(Tensor::cat(&slabs, 0)?.contiguous()?)
    }

    pub fn groups(&self) -> usize {
        self.merged.dims()[0]
    }
}

impl Form for HeadShared {
    fn n_heads(&self) -> usize {
        self.group_of.len()
    }
    fn len(&self) -> usize {
        self.merged.dims()[1]
    }
    fn block(&self, start: usize, n: usize) -> Result<Tensor> {
        let ids = Tensor::new(self.group_of.as_slice(), self.merged.device())?;
        Ok(self.merged.narrow(1, start, n)?.index_select(&ids, 0)?)
    }
    fn append(&mut self, x: &Tensor) -> Result<()> {
        let new = Self::average(x, &self.group_of)?;
        self.merged = cat_entries(Some(&self.merged), &new)?;
        Ok(())
    }
    fn tensors(&self) -> Vec<&Tensor> {
        vec![&self.merged]
    }
    fn encode_like(&self, x: &Tensor, heads: Range<usize>) -> Result<Stored> {
        // Still shared only if `heads` are exactly whole groups.
        let sub = &self.group_of[heads.clone()];
        let whole = heads.start == 0 || self.group_of[heads.start - 1] != sub[0];
        let whole = whole
            && (heads.end == self.group_of.len() || self.group_of[heads.end] != sub[sub.len() - 1]);
        if whole {
            let base = sub[0];
            let rel = sub.iter().map(|g| g - base).collect();
            Ok(Stored::HeadShared(HeadShared::encode(x, rel)?))
        } else {
            Ok(Stored::Dense(x.contiguous()?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn heads_of_a_group_read_their_average() {
        let dev = Device::Cpu;
        let x = Tensor::from_vec(vec![1f32, 2., 3., 5., 10., 20.], (3, 1, 2), &dev).unwrap();
        let mut f = HeadShared::encode(&x, vec![0, 0, 1]).unwrap();
        let got: Vec<Vec<Vec<f32>>> = f.block(0, 1).unwrap().to_vec3().unwrap();
        assert_eq!(
            got,
            vec![
                vec![vec![2., 3.5]],
                vec![vec![2., 3.5]],
                vec![vec![10., 20.]]
            ]
        );
        f.append(&x).unwrap();
        assert_eq!(f.len(), 2);
        // 2 slabs x 2 entries x 2 dims f32.
        assert_eq!(
            Stored::HeadShared(f).bytes(),
            8 * DType::F32.size_in_bytes()
        );
        assert!(HeadShared::encode(&x, vec![0, 2, 2]).is_err());
    }
}

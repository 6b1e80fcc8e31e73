//! Low-rank storage: each head's entries as `r`-dimensional codes on an orthonormal basis.
//!
//! `codes = x · basis` (`[heads, n, r]`), `basis` `[heads, head_dim, r]` with orthonormal columns;
//! the reconstruction is `codes · basisᵀ`, exact for entries in the basis's span. Appended entries
//! are projected on the same basis (as Palu does at decode time), so the form stays compressed.

use std::ops::Range;

use candle_core::Tensor;

use super::{cat_entries, expect_rank3, Form, Result, Stored};
use crate::MethodError;

#[derive(Clone, Debug)]
pub struct LowRank {
    /// `[heads, n, r]` in the cache dtype.
    pub(super) codes: Option<Tensor>,
    /// `[heads, head_dim, r]`, orthonormal columns, in the cache dtype.
    pub(super) basis: Tensor,
}

impl LowRank {
    /// Project `x` (`[heads, n, head_dim]`) on `basis` (`[heads, head_dim, r]`).
    pub fn encode(x: &Tensor, basis: Tensor) -> Result<Self> {
        let (h, _, d) = expect_rank3(x, "low-rank input")?;
        let (bh, bd, _) = expect_rank3(&basis, "low-rank basis")?;
        if (bh, bd) != (h, d) {
            return Err(MethodError::Cache(format!(
                "low-rank basis {:?} does not fit entries {:?}",
                basis.shape(),
                x.shape()
            )));
        }
        let basis = basis.to_dtype(x.dtype())?.contiguous()?;
        let mut form = Self { codes: None, basis };
        form.append(x)?;
        Ok(form)
    }

    pub fn rank(&self) -> usize {
        self.basis.dims()[2]
    }
    pub fn basis(&self) -> &Tensor {
        &self.basis
    }
}

impl Form for LowRank {
    fn n_heads(&self) -> usize {
        self.basis.dims()[0]
    }
    fn len(&self) -> usize {
        self.codes.as_ref().map_or(0, |c| c.dims()[1])
    }
    fn block(&self, start: usize, n: usize) -> Result<Tensor> {
        let codes = self
            .codes
            .as_ref()
            .ok_or_else(|| MethodError::Cache("empty low-rank storage".into()))?;
        Ok(codes
            .narrow(1, start, n)?
            .contiguous()?
            .matmul(&self.basis.t()?.contiguous()?)?)
    }
    fn append(&mut self, x: &Tensor) -> Result<()> {
        if x.dim(1)? == 0 {
            return Ok(());
        }
        let new = x.contiguous()?.matmul(&self.basis)?;
        self.codes = Some(cat_entries(self.codes.as_ref(), &new)?);
        Ok(())
    }
    fn tensors(&self) -> Vec<&Tensor> {
        self.codes
            .iter()
            .chain(std::iter::once(&self.basis))
            .collect()
    }
    fn encode_like(&self, x: &Tensor, heads: Range<usize>) -> Result<Stored> {
        let basis = self.basis.narrow(0, heads.start, heads.len())?;
        Ok(Stored::LowRank(LowRank::encode(x, basis)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn exact_for_entries_in_the_span_and_bytes_count_codes_and_basis() {
        let dev = Device::Cpu;
        // Basis: the first two coordinate axes of a 4-dim space, for each of 2 heads.
        let mut b = vec![0f32; 2 * 4 * 2];
        for h in 0..2 {
            b[h * 8] = 1.0; // (d0, r0)
            b[h * 8 + 3] = 1.0; // (d1, r1)
        }
        let basis = Tensor::from_vec(b, (2, 4, 2), &dev).unwrap();
        let x = Tensor::from_vec(
            vec![
                1f32, 2., 0., 0., 3., 4., 0., 0., 5., 6., 0., 0., //
                -1., 0., 0., 0., 0., 7., 0., 0., 2., 2., 0., 0.,
            ],
            (2, 3, 4),
            &dev,
        )
        .unwrap();
        let mut f = LowRank::encode(&x, basis).unwrap();
        let back = f.block(0, 3).unwrap();
        let diff: f32 = (back - &x)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(diff, 0.0);
        // Out of the span: the component on d2 is dropped, the rest kept.
        let y = Tensor::from_vec(vec![1f32, 1., 9., 0., 2., 2., 9., 0.], (2, 1, 4), &dev).unwrap();
        f.append(&y).unwrap();
        assert_eq!(f.len(), 4);
        let got: Vec<Vec<Vec<f32>>> = f.block(3, 1).unwrap().to_vec3().unwrap();
        assert_eq!(
            got,
            vec![vec![vec![1., 1., 0., 0.]], vec![vec![2., 2., 0., 0.]]]
        );
        // 2 heads x 4 entries x rank 2 codes + 2 x 4 x 2 basis, f32.
        assert_eq!(
            Stored::LowRank(f).bytes(),
            (2 * 4 * 2 + 2 * 4 * 2) * DType::F32.size_in_bytes()
        );
    }
}

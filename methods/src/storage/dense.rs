//! Plain tensors: the form every cache starts in.

use std::ops::Range;

use candle_core::Tensor;

use super::{Form, Result, Stored};

impl Form for Tensor {
    fn n_heads(&self) -> usize {
        self.dims().first().copied().unwrap_or(0)
    }
    fn len(&self) -> usize {
        self.dims().get(1).copied().unwrap_or(0)
    }
    fn block(&self, start: usize, n: usize) -> Result<Tensor> {
        Ok(self.narrow(1, start, n)?)
    }
    fn append(&mut self, x: &Tensor) -> Result<()> {
        *self = Tensor::cat(&[&*self, x], 1)?;
        Ok(())
    }
    fn tensors(&self) -> Vec<&Tensor> {
        vec![self]
    }
    fn encode_like(&self, x: &Tensor, _heads: Range<usize>) -> Result<Stored> {
        Ok(Stored::Dense(x.contiguous()?))
    }
}

//! Cross-layer merged storage (MiniCache). SKELETON: to be implemented.

use std::ops::Range;

use candle_core::Tensor;

use super::{Form, Result, Stored};

#[derive(Clone, Debug)]
pub struct Merged {
    direction: Tensor,
}

impl Form for Merged {
    fn n_heads(&self) -> usize {
        self.direction.dims()[0]
    }
    fn len(&self) -> usize {
        unimplemented!()
    }
    fn block(&self, _start: usize, _n: usize) -> Result<Tensor> {
        unimplemented!()
    }
    fn append(&mut self, _x: &Tensor) -> Result<()> {
        unimplemented!()
    }
    fn tensors(&self) -> Vec<&Tensor> {
        unimplemented!()
    }
    fn encode_like(&self, x: &Tensor, _heads: Range<usize>) -> Result<Stored> {
        Ok(Stored::Dense(x.contiguous()?))
    }
}

//! Quantized storage: packed integer codes plus per-group scales (and zero points), with a
//! full-precision residual of recent entries.
//!
//! SKELETON: to be implemented (see the design notes on each item).

use std::ops::Range;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::{Form, Result, Stored};

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

#[derive(Clone, Debug)]
pub struct Quantized {
    scheme: QuantScheme,
}

impl Quantized {
    pub fn encode(_x: &Tensor, _scheme: QuantScheme) -> Result<Self> {
        unimplemented!()
    }
}

impl Form for Quantized {
    fn n_heads(&self) -> usize {
        unimplemented!()
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
        Ok(Stored::Quantized(Quantized::encode(x, self.scheme)?))
    }
}

//! How a head group's keys and values are held in memory.
//!
//! Keys and values are stored independently (`Storage { k, v }`), each in one `Stored` form:
//! plain tensors, packed quantized integers, low-rank codes plus a basis, key channels pruned,
//! a direction shared with a neighbouring layer (MiniCache), or one tensor shared by several KV
//! heads. Attention never asks for the whole layer at once: it reads `block`s of entries
//! (`ATTENTION_BLOCK` at a time for compressed forms) and reconstructs each on the fly, so peak
//! memory follows the stored size plus one block, not a decompressed copy of the cache.
//!
//! Every form keeps itself compressed as tokens are appended during generation (each form's file
//! says how: a full-precision residual, projection on the stored basis, a dense tail).

mod dense;
pub mod head_shared;
pub mod low_rank;
pub mod merged;
pub mod parts;
pub mod pruned;
pub mod quantized;
pub mod quantized_join;

use std::ops::Range;

use candle_core::{Device, Tensor};

pub use head_shared::HeadShared;
pub use low_rank::LowRank;
pub use merged::Merged;
pub use pruned::ChannelPruned;
pub use quantized::{QuantAxis, QuantScheme, Quantized, ResidualRule};
pub use quantized_join::{QuantLayout, QuantRows, RowRanges};

use crate::MethodError;

pub(crate) type Result<T> = std::result::Result<T, MethodError>;

/// Entries reconstructed at a time when attention reads a compressed form.
pub const ATTENTION_BLOCK: usize = 2048;

/// What every stored form can do. `x` and blocks are `[heads, n, head_dim]` in the cache dtype.
pub trait Form {
    fn n_heads(&self) -> usize;
    /// Entries stored per head.
    fn len(&self) -> usize;
    /// Entries `start..start + n` of every head, reconstructed: `[heads, n, head_dim]`.
    fn block(&self, start: usize, n: usize) -> Result<Tensor>;
    /// Append new entries (`[heads, t, head_dim]`), keeping the form compressed.
    fn append(&mut self, x: &Tensor) -> Result<()>;
    /// Every tensor held. A tensor shared with another layer appears in both; `KvCache::bytes`
    /// counts it once.
    fn tensors(&self) -> Vec<&Tensor>;
    /// The same kind of storage for `x`, the surviving entries of heads `heads` (relative to this
    /// form's heads): used when entries are evicted from compressed storage. Forms that can't be
    /// rebuilt for a subset (cross-layer or cross-head sharing) fall back to dense.
    fn encode_like(&self, x: &Tensor, heads: Range<usize>) -> Result<Stored>;
}

/// One component (keys or values) of a head group.
#[derive(Clone, Debug)]
pub enum Stored {
    /// Plain tensor in the model's dtype: `[heads, len, head_dim]`.
    Dense(Tensor),
    Quantized(Quantized),
    LowRank(LowRank),
    ChannelPruned(ChannelPruned),
    Merged(Merged),
    HeadShared(HeadShared),
}

impl Stored {
    pub fn form(&self) -> &dyn Form {
        match self {
            Stored::Dense(t) => t,
            Stored::Quantized(f) => f,
            Stored::LowRank(f) => f,
            Stored::ChannelPruned(f) => f,
            Stored::Merged(f) => f,
            Stored::HeadShared(f) => f,
        }
    }

    fn form_mut(&mut self) -> &mut dyn Form {
        match self {
            Stored::Dense(t) => t,
            Stored::Quantized(f) => f,
            Stored::LowRank(f) => f,
            Stored::ChannelPruned(f) => f,
            Stored::Merged(f) => f,
            Stored::HeadShared(f) => f,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Stored::Dense(_) => "dense",
            Stored::Quantized(_) => "quantized",
            Stored::LowRank(_) => "low_rank",
            Stored::ChannelPruned(_) => "channel_pruned",
            Stored::Merged(_) => "merged",
            Stored::HeadShared(_) => "head_shared",
        }
    }

    pub fn is_dense(&self) -> bool {
        matches!(self, Stored::Dense(_))
    }
    pub fn len(&self) -> usize {
        self.form().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn n_heads(&self) -> usize {
        self.form().n_heads()
    }
    pub fn block(&self, start: usize, n: usize) -> Result<Tensor> {
        self.form().block(start, n)
    }
    /// Every entry reconstructed: `[heads, len, head_dim]`.
    pub fn reconstruct(&self) -> Result<Tensor> {
        match self {
            Stored::Dense(t) => Ok(t.clone()),
            _ => self.form().block(0, self.len()),
        }
    }
    pub fn append(&mut self, x: &Tensor) -> Result<()> {
        self.form_mut().append(x)
    }
    pub fn tensors(&self) -> Vec<&Tensor> {
        self.form().tensors()
    }
    /// Bytes of every tensor held (a tensor shared with another layer counted here in full).
    pub fn bytes(&self) -> usize {
        self.tensors().into_iter().map(tensor_bytes).sum()
    }
    pub fn encode_like(&self, x: &Tensor, heads: Range<usize>) -> Result<Stored> {
        self.form().encode_like(x, heads)
    }
}

/// A head group's keys and values.
#[derive(Clone, Debug)]
pub struct Storage {
    pub k: Stored,
    pub v: Stored,
}

impl Storage {
    pub fn dense(k: Tensor, v: Tensor) -> Self {
        Self {
            k: Stored::Dense(k),
            v: Stored::Dense(v),
        }
    }

    /// Keys and values reconstructed in the model's dtype, `[heads, len, head_dim]` each.
    pub fn keys_values(&self) -> Result<(Tensor, Tensor)> {
        Ok((self.k.reconstruct()?, self.v.reconstruct()?))
    }

    pub fn is_dense(&self) -> bool {
        self.k.is_dense() && self.v.is_dense()
    }

    /// Bytes held by this storage (packed integers, scales, codes and bases included).
    pub fn bytes(&self) -> usize {
        self.k.bytes() + self.v.bytes()
    }

    /// The device every tensor of this storage lives on.
    pub fn device(&self) -> Device {
        self.tensors()
            .first()
            .map_or(Device::Cpu, |t| t.device().clone())
    }

    pub fn tensors(&self) -> Vec<&Tensor> {
        let mut t = self.k.tensors();
        t.extend(self.v.tensors());
        t
    }

    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<()> {
        self.k.append(k)?;
        self.v.append(v)
    }
}

pub(crate) fn tensor_bytes(t: &Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
}

/// `a` then `b` along the entry axis, either possibly absent.
pub(crate) fn cat_entries(a: Option<&Tensor>, b: &Tensor) -> Result<Tensor> {
    Ok(match a {
        Some(a) => Tensor::cat(&[a, b], 1)?,
        None => b.contiguous()?,
    })
}

/// The part of `start..start + n` that falls in `range`, as (offset into the range, count).
pub(crate) fn overlap(start: usize, n: usize, range: Range<usize>) -> Option<(usize, usize)> {
    let lo = start.max(range.start);
    let hi = (start + n).min(range.end);
    (lo < hi).then(|| (lo - range.start, hi - lo))
}

/// Blocks `start..end` gathered from pieces covering consecutive ranges, concatenated.
pub(crate) fn concat_blocks(parts: Vec<Tensor>) -> Result<Tensor> {
    match parts.len() {
        0 => Err(MethodError::Cache("empty block requested".into())),
        1 => Ok(parts.into_iter().next().expect("one part")),
        _ => Ok(Tensor::cat(&parts, 1)?),
    }
}

/// `[heads, len, head_dim]` dims of `x`, or an error naming `what`.
pub(crate) fn expect_rank3(x: &Tensor, what: &str) -> Result<(usize, usize, usize)> {
    x.dims3().map_err(|_| {
        MethodError::Cache(format!(
            "{what}: expected [heads, len, head_dim], got {:?}",
            x.shape()
        ))
    })
}

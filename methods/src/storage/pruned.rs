//! Key channels pruned per head (ThinK): only the kept channels of each entry are stored.
//!
//! `kept` is `[heads, n, c]`, the values of each head's `c` kept channels (`channels`, `[heads, c]`
//! u32, counted in the bytes). A pruned channel reads back as zero, which is exactly what
//! attending with the pruned key gives (`q · k` over the kept channels). Entries appended during
//! generation are stored whole in a dense `tail`, as ThinK prunes only the prefill cache.

use std::ops::Range;

use candle_core::{DType, Tensor};

use super::{cat_entries, concat_blocks, expect_rank3, overlap, Form, Result, Stored};
use crate::MethodError;

#[derive(Clone, Debug)]
pub struct ChannelPruned {
    /// `[heads, n, c]` in the cache dtype.
    pub(super) kept: Tensor,
    /// Kept channel indices per head, increasing: `[heads, c]` u32.
    pub(super) channels: Tensor,
    /// Entries appended after pruning, whole: `[heads, t, head_dim]`.
    pub(super) tail: Option<Tensor>,
    pub(super) head_dim: usize,
}

impl ChannelPruned {
    /// Keep channels `channels[h]` (each strictly increasing, all of one length) of every head of
    /// `x` (`[heads, n, head_dim]`).
    pub fn encode(x: &Tensor, channels: &[Vec<u32>]) -> Result<Self> {
        let (h, _, d) = expect_rank3(x, "channel pruning input")?;
        let c = channels.first().map_or(0, |c| c.len());
        if channels.len() != h
            || channels.iter().any(|ch| {
                ch.len() != c
                    || ch.windows(2).any(|w| w[0] >= w[1])
                    || ch.iter().any(|&i| i as usize >= d)
            })
            || c == 0
        {
            return Err(MethodError::Cache(format!(
                "channel pruning needs {h} lists of equally many increasing channels below {d}"
            )));
        }
        let flat: Vec<u32> = channels.iter().flatten().copied().collect();
        let channels = Tensor::from_vec(flat, (h, c), x.device())?;
        let mut form = Self {
            kept: x.clone(),
            channels,
            tail: None,
            head_dim: d,
        };
        form.kept = x.contiguous()?.matmul(&form.selection(x.dtype())?.t()?)?;
        Ok(form)
    }

    /// One-hot `[heads, c, head_dim]`: row `i` of head `h` selects channel `channels[h][i]`.
    fn selection(&self, dtype: DType) -> Result<Tensor> {
        let (h, c) = self.channels.dims2()?;
        let axis = Tensor::arange(0u32, self.head_dim as u32, self.channels.device())?
            .reshape((1, 1, self.head_dim))?;
        Ok(self
            .channels
            .reshape((h, c, 1))?
            .broadcast_eq(&axis)?
            .to_dtype(dtype)?)
    }

    pub fn kept_channels(&self) -> usize {
        self.channels.dims()[1]
    }

    fn pruned_len(&self) -> usize {
        self.kept.dims()[1]
    }
}

impl Form for ChannelPruned {
    fn n_heads(&self) -> usize {
        self.kept.dims()[0]
    }
    fn len(&self) -> usize {
        self.pruned_len() + self.tail.as_ref().map_or(0, |t| t.dims()[1])
    }
    fn block(&self, start: usize, n: usize) -> Result<Tensor> {
        let mut parts = Vec::new();
        let p = self.pruned_len();
        if let Some((o, m)) = overlap(start, n, 0..p) {
            let sel = self.selection(self.kept.dtype())?;
            parts.push(self.kept.narrow(1, o, m)?.contiguous()?.matmul(&sel)?);
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
        [Some(&self.kept), Some(&self.channels), self.tail.as_ref()]
            .into_iter()
            .flatten()
            .collect()
    }
    fn encode_like(&self, x: &Tensor, heads: Range<usize>) -> Result<Stored> {
        let channels: Vec<Vec<u32>> = self
            .channels
            .narrow(0, heads.start, heads.len())?
            .to_vec2()?;
        Ok(Stored::ChannelPruned(ChannelPruned::encode(x, &channels)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn pruned_channels_read_as_zero_and_tail_stays_whole() {
        let dev = Device::Cpu;
        let x = Tensor::arange(1f32, 17., &dev)
            .unwrap()
            .reshape((2, 2, 4))
            .unwrap();
        let mut f = ChannelPruned::encode(&x, &[vec![0, 3], vec![1, 2]]).unwrap();
        let got: Vec<Vec<Vec<f32>>> = f.block(0, 2).unwrap().to_vec3().unwrap();
        assert_eq!(
            got,
            vec![
                vec![vec![1., 0., 0., 4.], vec![5., 0., 0., 8.]],
                vec![vec![0., 10., 11., 0.], vec![0., 14., 15., 0.]],
            ]
        );
        let y = Tensor::ones((2, 1, 4), DType::F32, &dev).unwrap();
        f.append(&y).unwrap();
        assert_eq!(f.len(), 3);
        let last: Vec<Vec<Vec<f32>>> = f.block(1, 2).unwrap().to_vec3().unwrap();
        assert_eq!(last[0], vec![vec![5., 0., 0., 8.], vec![1., 1., 1., 1.]]);
        // kept 2x2x2 f32 + channels 2x2 u32 + tail 2x1x4 f32.
        assert_eq!(Stored::ChannelPruned(f).bytes(), 8 * 4 + 4 * 4 + 8 * 4);
    }
}

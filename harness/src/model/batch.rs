//! One decode step of several sequences at once, each over its own `KvCache`.
//!
//! The dense layers (embedding, norms, q/k/v/o projections, MLP, LM head) run once on the
//! batch, `[B, hidden]`; attention runs per sequence over that sequence's own cache, whatever its
//! storage (ragged lengths, per-head ragged budgets, quantized, low-rank, merged), through the
//! same [`attend`] as unbatched decoding. Looping over the sequences inside the layer is the
//! first design: one launch group per sequence and layer, correct for every storage form; a fused
//! ragged kernel can replace the loop without changing the contract.
//!
//! Each row sees exactly what an unbatched step would: its own position (RoPE per row), its own
//! cache, its own observations. Only the dense matmuls change shape (`M = B` instead of 1), which
//! may change the last bits of a float sum (see [`Decoder::decode_batch`]).

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Tensor};
use kvbench_methods::{KvCache, ObservationNeeds, Observations};

use super::attention::{attend, MaskCache};
use super::decoder::{observe, Decoder, Projected};

/// What one batched step returns.
pub struct BatchOutput {
    /// `[B, vocab]` f32: row `i` is sequence `i`'s next-token logits.
    pub logits: Tensor,
    /// Per sequence, what its forward recorded for its method's decode hook.
    pub observations: Vec<Observations>,
}

impl Decoder {
    /// Append `tokens[i]` to `caches[i]` for every sequence at once, at each cache's own next
    /// position, recording `needs[i]` for sequence `i`, and return every sequence's logits.
    ///
    /// The result of row `i` equals [`Decoder::forward`] of `tokens[i]` alone on `caches[i]`
    /// except where the device's matrix multiply sums a `[B, k]` batch in another order than a
    /// single row (on the CPU, gemm takes a matrix-vector path for one row): a difference in the
    /// last bits of the logits, never in which entries are attended.
    pub fn decode_batch(
        &self,
        tokens: &[u32],
        caches: &mut [&mut KvCache],
        needs: &[ObservationNeeds],
        attention_chunk: usize,
    ) -> Result<BatchOutput> {
        let n = tokens.len();
        ensure!(n > 0, "a batched step needs at least one sequence");
        ensure!(
            caches.len() == n && needs.len() == n,
            "{n} tokens for {} caches and {} observation needs",
            caches.len(),
            needs.len()
        );
        let positions: Vec<u32> = caches.iter().map(|c| c.next_position() as u32).collect();
        // Every row's RoPE at its own position; dynamic scaling's base grows with each sequence's
        // own length, so then each row is computed alone.
        let tables = if self.dynamic_rope() {
            let rows = positions
                .iter()
                .map(|&p| self.rope_tables(&[p], p as usize + 1))
                .collect::<candle_core::Result<Vec<_>>>()?;
            (0..rows[0].len())
                .map(|r| {
                    let cos: Vec<&Tensor> = rows.iter().map(|t| &t[r].0).collect();
                    let sin: Vec<&Tensor> = rows.iter().map(|t| &t[r].1).collect();
                    Ok((Tensor::cat(&cos, 0)?, Tensor::cat(&sin, 0)?))
                })
                .collect::<candle_core::Result<Vec<_>>>()?
        } else {
            // The length only matters to dynamic scaling.
            self.rope_tables(&positions, 0)?
        };
        let mut observations: Vec<Observations> = positions
            .iter()
            .zip(needs)
            .map(|(&p, needs)| self.empty_observations(p as usize + 1, needs))
            .collect();
        let mut x = self.embed_tokens(tokens)?;
        for (l, b) in self.blocks.iter().enumerate() {
            let (cos, sin) = &tables[self.rope_index(l)];
            let Projected { q_pre, q, k, v } = self.project(b, &x, cos, sin)?;
            // Attention per sequence over its own cache (rows of the batch are sequences).
            let mut outs = Vec::with_capacity(n);
            for (i, cache) in caches.iter_mut().enumerate() {
                let row = |t: &Tensor| t.narrow(1, i, 1).and_then(|r| r.contiguous());
                let (qi, ki, vi) = (row(&q)?, row(&k)?, row(&v)?);
                cache.append(l, &ki, &vi, &[positions[i]])?;
                let mut acc = None;
                let acc_slot = needs[i].accumulated_attention.then_some(&mut acc);
                let params = self.attention_params(l, cache, attention_chunk);
                // One query per sequence: no mask is built, the cache is only read.
                let mut masks = MaskCache::default();
                let a = attend(&qi, cache.attention_layer(l), &params, &mut masks, acc_slot)
                    .with_context(|| format!("attention in layer {l}, sequence {i}"))?;
                cache.trim_to_window(l)?;
                // Pre-RoPE queries are only read for query statistics: copy the row only then.
                let q_pre_i = match needs[i].query_statistics {
                    Some(_) => row(&q_pre)?,
                    None => qi.clone(),
                };
                let mut obs = observe(&q_pre_i, &qi, positions[i] as usize, &needs[i])?;
                obs.accumulated_attention = acc;
                observations[i].layers.push(obs);
                outs.push(a);
            }
            let a = Tensor::cat(&outs, 1)?;
            x = self.finish_layer(b, &x, &a)?;
        }
        for cache in caches.iter_mut() {
            cache.advance(1);
        }
        let logits = self.head(&x)?;
        debug_assert_eq!(logits.dtype(), DType::F32);
        Ok(BatchOutput {
            logits,
            observations,
        })
    }
}

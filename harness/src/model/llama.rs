//! The Llama-family decoder (Llama, SmolLM, Mistral, Qwen2) over kvbench's own `KvCache`.
//!
//! Written against the cache rather than candle-transformers' models so that compression methods
//! see (and shrink) the real storage, observations are recorded during prefill, and new tokens take
//! their original positions whatever was evicted.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, D};
use kvbench_methods::{KvCache, LayerObservation, ObservationNeeds, Observations, Rope};

use super::attention::{attend, MaskCache};
use super::config::ModelConfig;
use super::weights::{LayerWeight as W, Weight, WeightSource};

struct Block {
    attn_norm: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    q_bias: Option<Tensor>,
    k_bias: Option<Tensor>,
    v_bias: Option<Tensor>,
    mlp_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

/// Which logits a forward pass returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    None,
    Last,
    All,
}

#[derive(Clone, Copy, Debug)]
pub struct ForwardOptions {
    pub logits: Logits,
    /// What to record for the compression methods (prefill of the context only).
    pub observe: ObservationNeeds,
    /// Queries per attention chunk: bounds the score buffer to `q_heads x chunk x len`.
    pub attention_chunk: usize,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        Self {
            logits: Logits::Last,
            observe: ObservationNeeds::default(),
            attention_chunk: 512,
        }
    }
}

pub struct ForwardOutput {
    /// `[n, vocab]` f32: the last position (`Logits::Last`) or every position (`Logits::All`).
    pub logits: Option<Tensor>,
    pub observations: Observations,
}

pub struct Llama {
    cfg: ModelConfig,
    embed: Tensor,
    blocks: Vec<Block>,
    final_norm: Tensor,
    lm_head: Tensor,
    /// RoPE inverse frequencies, `[head_dim / 2]` f32.
    inv_freq: Tensor,
    dtype: DType,
    device: Device,
}

fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let y = x.matmul(&w.t()?)?;
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

impl Llama {
    /// Load every weight from `src` in `dtype` (f32 on CPU, bf16 on CUDA) onto `device`.
    pub fn load(
        cfg: ModelConfig,
        src: &mut WeightSource,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let mut get = |w: Weight| src.load(w, dtype, device);
        let embed = get(Weight::Embed)?;
        let final_norm = get(Weight::FinalNorm)?;
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let l = |w| Weight::Layer(i, w);
            let bias = cfg.qkv_bias;
            blocks.push(Block {
                attn_norm: get(l(W::AttnNorm))?,
                q: get(l(W::Q))?,
                k: get(l(W::K))?,
                v: get(l(W::V))?,
                o: get(l(W::O))?,
                q_bias: if bias { Some(get(l(W::QBias))?) } else { None },
                k_bias: if bias { Some(get(l(W::KBias))?) } else { None },
                v_bias: if bias { Some(get(l(W::VBias))?) } else { None },
                mlp_norm: get(l(W::MlpNorm))?,
                gate: get(l(W::Gate))?,
                up: get(l(W::Up))?,
                down: get(l(W::Down))?,
            });
        }
        let lm_head = if cfg.tie_word_embeddings || !src.contains(Weight::LmHead) {
            embed.clone()
        } else {
            src.load(Weight::LmHead, dtype, device)?
        };
        let half = cfg.head_dim / 2;
        let inv: Vec<f32> = (0..half)
            .map(|i| (1.0 / cfg.rope_theta.powf(2.0 * i as f64 / cfg.head_dim as f64)) as f32)
            .collect();
        let inv_freq = Tensor::from_vec(inv, half, device)?;
        Ok(Self {
            cfg,
            embed,
            blocks,
            final_norm,
            lm_head,
            inv_freq,
            dtype,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Bytes of all weights on the device.
    pub fn weight_bytes(&self) -> usize {
        let t = |x: &Tensor| x.elem_count() * x.dtype().size_in_bytes();
        let mut n = t(&self.embed) + t(&self.final_norm);
        if !self.cfg.tie_word_embeddings {
            n += t(&self.lm_head);
        }
        for b in &self.blocks {
            for w in [
                &b.attn_norm,
                &b.q,
                &b.k,
                &b.v,
                &b.o,
                &b.mlp_norm,
                &b.gate,
                &b.up,
                &b.down,
            ] {
                n += t(w);
            }
        }
        n
    }

    /// An empty cache shaped for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(
            self.cfg.n_layers,
            self.cfg.n_kv_heads,
            self.cfg.head_dim,
            self.dtype,
            &self.device,
        )
    }

    /// cos/sin tables for positions `start..start + t`, `[t, head_dim / 2]` in the model dtype.
    fn rope_tables(&self, start: usize, t: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let pos = Tensor::arange(start as u32, (start + t) as u32, &self.device)?
            .to_dtype(DType::F32)?
            .reshape((t, 1))?;
        let freqs = pos.broadcast_mul(&self.inv_freq.reshape((1, self.cfg.head_dim / 2))?)?;
        Ok((
            freqs.cos()?.to_dtype(self.dtype)?,
            freqs.sin()?.to_dtype(self.dtype)?,
        ))
    }

    fn rotate(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
        let x = x.unsqueeze(0)?;
        let y = if self.cfg.rope_interleaved {
            candle_nn::rotary_emb::rope_i(&x, cos, sin)?
        } else {
            candle_nn::rotary_emb::rope(&x, cos, sin)?
        };
        y.squeeze(0)
    }

    /// Run `tokens` through the decoder, appending their keys and values to `cache` at positions
    /// continuing from `cache.next_position()`.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        opts: &ForwardOptions,
    ) -> Result<ForwardOutput> {
        let t = tokens.len();
        anyhow::ensure!(t > 0, "forward needs at least one token");
        let cfg = &self.cfg;
        let (hq, hkv, d) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
        let eps = cfg.rms_norm_eps as f32;
        let start = cache.next_position();
        let positions: Vec<u32> = (start as u32..(start + t) as u32).collect();
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embed.index_select(&ids, 0)?;
        let (cos, sin) = self.rope_tables(start, t)?;
        let mut masks = MaskCache::default();
        let mut observations = Observations {
            layers: Vec::new(),
            q_per_kv: cfg.q_per_kv(),
            rope: match opts.observe.query_statistics {
                Some(_) => Some(Rope {
                    inv_freq: self.inv_freq.to_vec1()?,
                    interleaved: cfg.rope_interleaved,
                }),
                None => None,
            },
        };
        for (l, b) in self.blocks.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &b.attn_norm, eps)?;
            let heads =
                |w: &Tensor, bias: Option<&Tensor>, n: usize| -> candle_core::Result<Tensor> {
                    linear(&h, w, bias)?
                        .reshape((t, n, d))?
                        .transpose(0, 1)?
                        .contiguous()
                };
            let q_pre = heads(&b.q, b.q_bias.as_ref(), hq)?;
            let q = self.rotate(&q_pre, &cos, &sin)?;
            let k = self.rotate(&heads(&b.k, b.k_bias.as_ref(), hkv)?, &cos, &sin)?;
            let v = heads(&b.v, b.v_bias.as_ref(), hkv)?;
            cache.append(l, &k, &v, &positions)?;
            let layer = cache.attention_layer(l);
            let mut obs = LayerObservation::default();
            let w = opts.observe.window_queries.min(t);
            if w > 0 {
                obs.window_queries = Some(q.narrow(1, t - w, w)?.contiguous()?);
            }
            // Pre-RoPE query mean and covariance (expected attention), positions below `skip` left out.
            if let Some(skip) = opts.observe.query_statistics {
                let from = skip.saturating_sub(start).min(t);
                if from < t {
                    let qs = q_pre.narrow(1, from, t - from)?.to_dtype(DType::F32)?;
                    let mean = qs.mean_keepdim(1)?;
                    let c = qs.broadcast_sub(&mean)?;
                    obs.query_cov = Some((c.t()?.matmul(&c)? / (t - from) as f64)?);
                    obs.query_mean = Some(mean.squeeze(1)?);
                }
            }
            let mut acc = None;
            let acc_slot = opts.observe.accumulated_attention.then_some(&mut acc);
            let a = attend(
                &q,
                layer,
                cfg.q_per_kv(),
                opts.attention_chunk.max(1),
                &mut masks,
                acc_slot,
            )
            .with_context(|| format!("attention in layer {l}"))?;
            obs.accumulated_attention = acc;
            observations.layers.push(obs);
            let a = a.transpose(0, 1)?.reshape((t, hq * d))?;
            x = (x + linear(&a, &b.o, None)?)?;
            let h = candle_nn::ops::rms_norm(&x, &b.mlp_norm, eps)?;
            let mlp = (linear(&h, &b.gate, None)?.silu()? * linear(&h, &b.up, None)?)?;
            x = (x + linear(&mlp, &b.down, None)?)?;
        }
        cache.advance(t);
        let logits = match opts.logits {
            Logits::None => None,
            Logits::Last => Some(self.head(&x.narrow(0, t - 1, 1)?)?),
            Logits::All => Some(self.head(&x)?),
        };
        Ok(ForwardOutput {
            logits,
            observations,
        })
    }

    /// Final norm and LM head: hidden `[n, hidden]` -> logits `[n, vocab]` f32.
    fn head(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = candle_nn::ops::rms_norm(x, &self.final_norm, self.cfg.rms_norm_eps as f32)?;
        linear(&h, &self.lm_head, None)?.to_dtype(DType::F32)
    }
}

/// Index of the largest logit of a `[vocab]` or `[1, vocab]` tensor.
pub fn argmax(logits: &Tensor) -> Result<u32> {
    Ok(logits
        .flatten_all()?
        .argmax(D::Minus1)?
        .to_scalar::<u32>()?)
}

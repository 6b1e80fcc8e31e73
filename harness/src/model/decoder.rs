//! The decoder (Llama 3.x, SmolLM, Mistral, Qwen2/2.5, Qwen3, Gemma 3, Phi-3) over kvbench's own
//! `KvCache`.
//!
//! Written against the cache rather than candle-transformers' models so that compression methods
//! see (and shrink) the real storage, observations are recorded during prefill, and new tokens take
//! their original positions whatever was evicted. The families differ only in the switches of
//! `ModelConfig` (biases, q/k norms, sandwich norms, activation, embedding and logit scaling,
//! RoPE per layer, sliding windows); the layer is one code path.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, D};
use kvbench_methods::{KvCache, LayerObservation, ObservationNeeds, Observations, Rope};

use super::attention::{attend, AttentionParams, MaskCache};
use super::config::{Activation, ModelConfig};
use super::rope::{RopeScaling, RopeSpec};
use super::weights::{LayerWeight as W, Weight, WeightSource};

/// One decoder layer's weights. The q, k and v projections are one matrix (and the gate and up
/// projections another), so each is one matrix multiply: fewer launches per decode step.
pub(super) struct Block {
    attn_norm: Tensor,
    /// `[(q_heads + 2 kv_heads) * head_dim, hidden]`: q, k, v stacked.
    qkv: Tensor,
    o: Tensor,
    qkv_bias: Option<Tensor>,
    o_bias: Option<Tensor>,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    post_attn_norm: Option<Tensor>,
    mlp_norm: Tensor,
    /// `[2 * intermediate, hidden]`: gate, then up.
    gate_up: Tensor,
    down: Tensor,
    post_mlp_norm: Option<Tensor>,
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

/// One layer's projections of its input, `[heads, t, head_dim]`.
pub(super) struct Projected {
    /// Queries before RoPE (after the q norm), what query statistics are taken of.
    pub q_pre: Tensor,
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
}

/// A hook of [`Decoder::forward_with`]: `(layer, cache, observations so far)`.
pub type AfterLayer<'h> = dyn FnMut(usize, &mut KvCache, &Observations) -> Result<()> + 'h;

pub struct ForwardOutput {
    /// `[n, vocab]` f32: the last position (`Logits::Last`) or every position (`Logits::All`).
    pub logits: Option<Tensor>,
    pub observations: Observations,
}

/// A RoPE with its frequencies on the device (recomputed per pass when `dynamic`).
struct RopeTable {
    spec: RopeSpec,
    inv_freq: Tensor,
}

pub struct Decoder {
    cfg: ModelConfig,
    embed: Tensor,
    pub(super) blocks: Vec<Block>,
    final_norm: Tensor,
    lm_head: Tensor,
    /// `ropes[0]`: full-attention layers; `ropes[1]`, when present: sliding layers.
    ropes: Vec<RopeTable>,
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

fn tensor_bytes(x: &Tensor) -> usize {
    x.elem_count() * x.dtype().size_in_bytes()
}

impl Decoder {
    /// Load every weight from `src` in `dtype` (f32 on CPU, bf16 on CUDA) onto `device`, checking
    /// each shape against the config.
    pub fn load(
        mut cfg: ModelConfig,
        src: &mut WeightSource,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let (h, d, inter) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
        let (qd, kd) = (cfg.n_heads * d, cfg.n_kv_heads * d);
        let fused = src.contains(Weight::Layer(0, W::Qkv));
        // Norm weights: Gemma's checkpoints store w and scale by 1 + w (in f32, as transformers).
        let plus_one = cfg.norm_plus_one;
        let norm = |src: &mut WeightSource, w: Weight, n: usize| -> Result<Tensor> {
            let t = src.load_shaped(w, &[n], DType::F32, device)?;
            let t = if plus_one { (t + 1.0)? } else { t };
            Ok(t.to_dtype(dtype)?)
        };
        let embed = src.load_shaped(Weight::Embed, &[cfg.vocab_size, h], dtype, device)?;
        let final_norm = norm(src, Weight::FinalNorm, h)?;
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let l = |w| Weight::Layer(i, w);
            let mut get = |w, shape: &[usize]| src.load_shaped(l(w), shape, dtype, device);
            let qkv = if fused {
                get(W::Qkv, &[qd + 2 * kd, h])?
            } else {
                let (q, k, v) = (
                    get(W::Q, &[qd, h])?,
                    get(W::K, &[kd, h])?,
                    get(W::V, &[kd, h])?,
                );
                Tensor::cat(&[q, k, v], 0)?
            };
            let o = get(W::O, &[h, qd])?;
            let gate_up = if src.contains(l(W::GateUp)) && !src.contains(l(W::Gate)) {
                src.load_shaped(l(W::GateUp), &[2 * inter, h], dtype, device)?
            } else {
                let gate = src.load_shaped(l(W::Gate), &[inter, h], dtype, device)?;
                let up = src.load_shaped(l(W::Up), &[inter, h], dtype, device)?;
                Tensor::cat(&[gate, up], 0)?
            };
            let down = src.load_shaped(l(W::Down), &[h, inter], dtype, device)?;
            let mut bias = |w, n: usize, on: bool| -> Result<Option<Tensor>> {
                Ok(if on {
                    Some(src.load_shaped(l(w), &[n], dtype, device)?)
                } else {
                    None
                })
            };
            let qkv_bias = match (
                bias(W::QBias, qd, cfg.qkv_bias)?,
                bias(W::KBias, kd, cfg.qkv_bias)?,
                bias(W::VBias, kd, cfg.qkv_bias)?,
            ) {
                (Some(q), Some(k), Some(v)) => Some(Tensor::cat(&[q, k, v], 0)?),
                _ => None,
            };
            let o_bias = bias(W::OBias, h, cfg.o_bias)?;
            let opt_norm = |src: &mut WeightSource, w, n, on: bool| -> Result<Option<Tensor>> {
                Ok(if on { Some(norm(src, l(w), n)?) } else { None })
            };
            blocks.push(Block {
                attn_norm: norm(src, l(W::AttnNorm), h)?,
                qkv,
                o,
                qkv_bias,
                o_bias,
                q_norm: opt_norm(src, W::QNorm, d, cfg.qk_norm)?,
                k_norm: opt_norm(src, W::KNorm, d, cfg.qk_norm)?,
                post_attn_norm: opt_norm(src, W::PostAttnNorm, h, cfg.sandwich_norms)?,
                mlp_norm: norm(src, l(W::MlpNorm), h)?,
                gate_up,
                down,
                post_mlp_norm: opt_norm(src, W::PostMlpNorm, h, cfg.sandwich_norms)?,
            });
        }
        let lm_head = if cfg.tie_word_embeddings || !src.contains(Weight::LmHead) {
            cfg.tie_word_embeddings = true;
            embed.clone()
        } else {
            src.load_shaped(Weight::LmHead, &[cfg.vocab_size, h], dtype, device)?
        };
        if let RopeScaling::FreqFactors { factors } = &mut cfg.rope.scaling {
            let n = factors.len();
            *factors = src
                .load_shaped(Weight::RopeFreqs, &[n], DType::F32, device)?
                .to_vec1()?;
        }
        let mut ropes = vec![RopeTable::new(cfg.rope.clone(), device)?];
        if let Some(local) = &cfg.rope_local {
            ropes.push(RopeTable::new(local.clone(), device)?);
        }
        Ok(Self {
            cfg,
            embed,
            blocks,
            final_norm,
            lm_head,
            ropes,
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
        let mut n = tensor_bytes(&self.embed) + tensor_bytes(&self.final_norm);
        if !self.cfg.tie_word_embeddings {
            n += tensor_bytes(&self.lm_head);
        }
        for b in &self.blocks {
            let required = [&b.attn_norm, &b.qkv, &b.o, &b.mlp_norm, &b.gate_up, &b.down];
            let optional = [
                &b.qkv_bias,
                &b.o_bias,
                &b.q_norm,
                &b.k_norm,
                &b.post_attn_norm,
                &b.post_mlp_norm,
            ];
            n += required.iter().map(|t| tensor_bytes(t)).sum::<usize>();
            n += optional
                .iter()
                .flat_map(|t| t.iter())
                .map(tensor_bytes)
                .sum::<usize>();
        }
        n
    }

    /// An empty cache shaped for this model; sliding-window layers keep at most their window.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(
            self.cfg.n_layers,
            self.cfg.n_kv_heads,
            self.cfg.head_dim,
            self.dtype,
            &self.device,
        )
        .with_windows(self.cfg.layer_windows.clone())
    }

    fn norm(&self, x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(x, w, self.cfg.rms_norm_eps as f32)
    }

    /// Run `tokens` through the decoder, appending their keys and values to `cache` at positions
    /// continuing from `cache.next_position()`.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        opts: &ForwardOptions,
    ) -> Result<ForwardOutput> {
        self.forward_with(tokens, cache, opts, &mut |_, _, _| Ok(()))
    }

    /// [`forward`](Self::forward), calling `after_layer(l, cache, observations)` once layer `l`
    /// has attended over its cache and recorded its observation (`observations.layers[..=l]`),
    /// before layer `l + 1` runs: what compresses each layer during the prefill, so the full
    /// cache of every layer never exists at once. The cache already counts the new tokens
    /// (`next_position`). Layer `l`'s cache is not read again by this forward.
    pub fn forward_with(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        opts: &ForwardOptions,
        after_layer: &mut AfterLayer,
    ) -> Result<ForwardOutput> {
        let t = tokens.len();
        anyhow::ensure!(t > 0, "forward needs at least one token");
        let start = cache.next_position();
        let positions: Vec<u32> = (start as u32..(start + t) as u32).collect();
        let mut x = self.embed_tokens(tokens)?;
        let tables = self.rope_tables(&positions, start + t)?;
        let mut masks = MaskCache::default();
        let mut observations = self.empty_observations(start + t, &opts.observe);
        cache.advance(t);
        for (l, b) in self.blocks.iter().enumerate() {
            let (cos, sin) = &tables[self.rope_index(l)];
            let Projected { q_pre, q, k, v } = self.project(b, &x, cos, sin)?;
            cache.append(l, &k, &v, &positions)?;
            let mut acc = None;
            let acc_slot = opts.observe.accumulated_attention.then_some(&mut acc);
            let params = self.attention_params(l, cache, opts.attention_chunk);
            let a = attend(&q, cache.attention_layer(l), &params, &mut masks, acc_slot)
                .with_context(|| format!("attention in layer {l}"))?;
            // A sliding layer never looks further back than its window: drop what fell out of it.
            cache.trim_to_window(l)?;
            let mut obs = observe(&q_pre, &q, start, &opts.observe)?;
            obs.accumulated_attention = acc;
            observations.layers.push(obs);
            after_layer(l, cache, &observations)
                .with_context(|| format!("compressing layer {l} during the forward"))?;
            x = self.finish_layer(b, &x, &a)?;
        }
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

    /// Token embeddings `[n, hidden]`, scaled where the family scales them.
    pub(super) fn embed_tokens(&self, tokens: &[u32]) -> candle_core::Result<Tensor> {
        let ids = Tensor::new(tokens, &self.device)?;
        let x = self.embed.index_select(&ids, 0)?;
        match self.cfg.embed_scale {
            Some(s) => {
                // transformers rounds the scale to the compute dtype first.
                let s = Tensor::new(s as f32, &self.device)?.to_dtype(self.dtype)?;
                x.broadcast_mul(&s)
            }
            None => Ok(x),
        }
    }

    /// cos/sin of every RoPE table at `positions`; `seq_len` is the sequence length after them
    /// (dynamic scaling depends on it).
    pub(super) fn rope_tables(
        &self,
        positions: &[u32],
        seq_len: usize,
    ) -> candle_core::Result<Vec<(Tensor, Tensor)>> {
        self.ropes
            .iter()
            .map(|r| r.cos_sin(positions, seq_len, self.dtype))
            .collect()
    }

    /// Whether some RoPE's base depends on the sequence length (dynamic scaling).
    pub(super) fn dynamic_rope(&self) -> bool {
        self.ropes.iter().any(|r| r.spec.is_dynamic())
    }

    /// Which of [`rope_tables`](Self::rope_tables)' entries layer `l` uses.
    pub(super) fn rope_index(&self, l: usize) -> usize {
        usize::from(self.cfg.window(l).is_some() && self.ropes.len() > 1)
    }

    /// Observations of a forward before its layers (the RoPE for query statistics).
    pub(super) fn empty_observations(
        &self,
        seq_len: usize,
        needs: &ObservationNeeds,
    ) -> Observations {
        Observations {
            layers: Vec::new(),
            q_per_kv: self.cfg.q_per_kv(),
            rope: needs.query_statistics.map(|_| Rope {
                inv_freq: self.ropes[0].spec.inv_freq(seq_len),
                interleaved: self.cfg.rope_interleaved,
            }),
        }
    }

    /// How layer `l` attends over `cache`'s storage of it.
    pub(super) fn attention_params(
        &self,
        l: usize,
        cache: &KvCache,
        chunk: usize,
    ) -> AttentionParams {
        AttentionParams {
            // Query heads per stored head: the model's GQA group, or 1 once a method stored the
            // layer per query head.
            q_per_kv: self.cfg.n_heads / cache.attention_layer(l).n_heads().max(1),
            scale: self.cfg.attn_scale,
            window: self.cfg.window(l),
            softcap: self.cfg.attn_logit_softcap,
            chunk: chunk.max(1),
        }
    }

    /// Queries, keys and values of `x` (`[t, hidden]`: `t` tokens of one sequence, or one token
    /// of each of `t` sequences), as `[heads, t, head_dim]`, rotated by row `i` of `cos`/`sin`.
    pub(super) fn project(
        &self,
        b: &Block,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
    ) -> candle_core::Result<Projected> {
        let cfg = &self.cfg;
        let (hq, hkv, d) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
        let t = x.dim(0)?;
        let h = self.norm(x, &b.attn_norm)?;
        // One multiply for q, k and v, one transpose into heads; q and k are views of it until
        // RoPE makes them new tensors. v is copied out so the cache holds v alone, not the
        // whole projection (`force_contiguous`: `copy` would clone the whole buffer under the view).
        let all = linear(&h, &b.qkv, b.qkv_bias.as_ref())?
            .reshape((t, hq + 2 * hkv, d))?
            .transpose(0, 1)?
            .contiguous()?;
        let mut q_pre = all.narrow(0, 0, hq)?;
        let mut k = all.narrow(0, hq, hkv)?;
        if let (Some(qn), Some(kn)) = (&b.q_norm, &b.k_norm) {
            q_pre = self.norm(&q_pre, qn)?;
            k = self.norm(&k, kn)?;
        }
        let q = self.rotate(&q_pre, cos, sin)?;
        let k = self.rotate(&k, cos, sin)?;
        let v = all.narrow(0, hq + hkv, hkv)?.force_contiguous()?;
        Ok(Projected { q_pre, q, k, v })
    }

    /// The rest of a layer after attention: output projection, residual, MLP. `x` is the
    /// layer's input `[t, hidden]`, `a` the attention output `[q_heads, t, head_dim]`.
    pub(super) fn finish_layer(
        &self,
        b: &Block,
        x: &Tensor,
        a: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let cfg = &self.cfg;
        let t = x.dim(0)?;
        let a = a
            .transpose(0, 1)?
            .reshape((t, cfg.n_heads * cfg.head_dim))?;
        let mut a = linear(&a, &b.o, b.o_bias.as_ref())?;
        if let Some(n) = &b.post_attn_norm {
            a = self.norm(&a, n)?;
        }
        let x = (x + a)?;
        let h = self.norm(&x, &b.mlp_norm)?;
        let gate_up = linear(&h, &b.gate_up, None)?;
        let inter = cfg.intermediate_size;
        let gate = gate_up.narrow(1, 0, inter)?;
        let gate = match cfg.activation {
            Activation::Silu => gate.silu()?,
            Activation::GeluTanh => gate.gelu()?,
        };
        let mut m = linear(&(gate * gate_up.narrow(1, inter, inter)?)?, &b.down, None)?;
        if let Some(n) = &b.post_mlp_norm {
            m = self.norm(&m, n)?;
        }
        x + m
    }

    /// Rotate the leading `rotary_dim` dimensions of `x` (`[heads, t, head_dim]`).
    fn rotate(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
        let d = self.cfg.head_dim;
        let rd = 2 * cos.dim(1)?;
        let (rot, pass) = if rd < d {
            (
                x.narrow(2, 0, rd)?.contiguous()?,
                Some(x.narrow(2, rd, d - rd)?),
            )
        } else {
            (x.clone(), None)
        };
        let rot = rot.unsqueeze(0)?;
        let y = if self.cfg.rope_interleaved {
            candle_nn::rotary_emb::rope_i(&rot, cos, sin)?
        } else {
            candle_nn::rotary_emb::rope(&rot, cos, sin)?
        };
        let y = y.squeeze(0)?;
        match pass {
            Some(p) => Tensor::cat(&[&y, &p], 2)?.contiguous(),
            None => Ok(y),
        }
    }

    /// Final norm and LM head: hidden `[n, hidden]` -> logits `[n, vocab]` f32.
    pub(super) fn head(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.norm(x, &self.final_norm)?;
        let logits = linear(&h, &self.lm_head, None)?.to_dtype(DType::F32)?;
        match self.cfg.final_logit_softcap {
            Some(cap) => (logits / cap)?.tanh()? * cap,
            None => Ok(logits),
        }
    }
}

impl RopeTable {
    fn new(spec: RopeSpec, device: &Device) -> candle_core::Result<Self> {
        let inv = spec.inv_freq(0);
        let n = inv.len();
        Ok(Self {
            inv_freq: Tensor::from_vec(inv, n, device)?,
            spec,
        })
    }

    /// cos/sin at `positions`, `[n, rotary_dim / 2]` in `dtype`, scaled by the attention factor
    /// (yarn); `seq_len` is the sequence length after them (dynamic scaling's base grows with
    /// it). Computed in f32 as transformers does.
    fn cos_sin(
        &self,
        positions: &[u32],
        seq_len: usize,
        dtype: DType,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let device = self.inv_freq.device();
        let inv_freq = if self.spec.is_dynamic() {
            let inv = self.spec.inv_freq(seq_len);
            let n = inv.len();
            Tensor::from_vec(inv, n, device)?
        } else {
            self.inv_freq.clone()
        };
        let half = inv_freq.dim(0)?;
        let n = positions.len();
        let pos = Tensor::new(positions, device)?
            .to_dtype(DType::F32)?
            .reshape((n, 1))?;
        let freqs = pos.broadcast_mul(&inv_freq.reshape((1, half))?)?;
        let (mut cos, mut sin) = (freqs.cos()?, freqs.sin()?);
        let factor = self.spec.attention_factor();
        if factor != 1.0 {
            cos = (cos * factor)?;
            sin = (sin * factor)?;
        }
        Ok((cos.to_dtype(dtype)?, sin.to_dtype(dtype)?))
    }
}

/// What one layer's forward records for the methods: the last `window_queries` queries, and the
/// pre-RoPE query mean and covariance over positions from the `query_statistics` skip on.
/// `q_pre`, `q`: `[q_heads, t, head_dim]` of `t` new tokens starting at position `start`.
pub(super) fn observe(
    q_pre: &Tensor,
    q: &Tensor,
    start: usize,
    needs: &ObservationNeeds,
) -> candle_core::Result<LayerObservation> {
    let t = q.dim(1)?;
    let mut obs = LayerObservation::default();
    let w = needs.window_queries.min(t);
    if w > 0 {
        obs.window_queries = Some(q.narrow(1, t - w, w)?.contiguous()?);
    }
    // Pre-RoPE query mean and covariance (expected attention), positions below `skip` left out.
    if let Some(skip) = needs.query_statistics {
        let from = skip.saturating_sub(start).min(t);
        if from < t {
            let qs = q_pre.narrow(1, from, t - from)?.to_dtype(DType::F32)?;
            let mean = qs.mean_keepdim(1)?;
            let c = qs.broadcast_sub(&mean)?;
            obs.query_cov = Some((c.t()?.matmul(&c)? / (t - from) as f64)?);
            obs.query_mean = Some(mean.squeeze(1)?);
        }
    }
    Ok(obs)
}

/// Index of the largest logit of a `[vocab]` or `[1, vocab]` tensor.
pub fn argmax(logits: &Tensor) -> Result<u32> {
    Ok(logits
        .flatten_all()?
        .argmax(D::Minus1)?
        .to_scalar::<u32>()?)
}

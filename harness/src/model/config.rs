//! Architecture hyper-parameters of a decoder, independent of where they were read from
//! (`hf_config` reads `config.json`, `gguf_config` reads GGUF metadata).

use anyhow::{bail, Result};

use super::rope::RopeSpec;

/// The decoder families kvbench runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// Llama 2/3.x and SmolLM.
    Llama,
    Mistral,
    /// Qwen2 and Qwen2.5: QKV bias.
    Qwen2,
    /// Qwen3: per-head q/k RMSNorm before RoPE.
    Qwen3,
    /// Gemma 3 text: sliding/global layers, (1 + w) norms, sandwich norms, GeGLU.
    Gemma3,
    /// Phi-3 / Phi-4-mini: fused qkv and gate/up projections.
    Phi3,
}

impl Architecture {
    /// The family of a `model_type` (config.json) or `general.architecture` (GGUF).
    pub fn parse(name: &str, source: &str, field: &str) -> Result<Self> {
        Ok(match name {
            "llama" | "smollm" => Self::Llama,
            "mistral" => Self::Mistral,
            "qwen2" => Self::Qwen2,
            "qwen3" => Self::Qwen3,
            "gemma3" | "gemma3_text" => Self::Gemma3,
            "phi3" => Self::Phi3,
            other => bail!(
                "{source}: `{field}` `{other}` is not supported; kvbench runs llama (SmolLM), \
                 mistral, qwen2, qwen3, gemma3 / gemma3_text and phi3 (`kvbench models` lists them)"
            ),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Gemma3 => "gemma3",
            Self::Phi3 => "phi3",
        }
    }
}

/// Feed-forward activation of the gated MLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Silu,
    /// GELU with the tanh approximation (`gelu_pytorch_tanh`).
    GeluTanh,
}

impl Activation {
    pub fn parse(name: &str, source: &str, field: &str) -> Result<Self> {
        Ok(match name {
            "silu" | "swish" => Self::Silu,
            "gelu_pytorch_tanh" | "gelu_tanh" | "gelu_new" => Self::GeluTanh,
            other => bail!(
                "{source}: `{field}` `{other}` is not supported; kvbench implements silu and \
                 gelu_pytorch_tanh"
            ),
        })
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    /// RoPE of full-attention layers (and of every layer unless `rope_local` is set).
    pub rope: RopeSpec,
    /// RoPE of sliding-window layers where it differs (Gemma 3's local base).
    pub rope_local: Option<RopeSpec>,
    /// GGUF llama checkpoints permute Q/K for interleaved (GPT-J style) rotation; Hugging Face
    /// checkpoints rotate halves.
    pub rope_interleaved: bool,
    /// Bias on the q, k and v projections.
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama/Qwen3 `attention_bias`, not Qwen2).
    pub o_bias: bool,
    /// Per-head RMSNorm of q and k before RoPE (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// RMSNorm scales by `1 + w` (Gemma's Hugging Face checkpoints; GGUF stores `1 + w`).
    pub norm_plus_one: bool,
    /// Norms after attention and around the MLP (Gemma 3).
    pub sandwich_norms: bool,
    /// Embeddings are multiplied by this (Gemma: sqrt(hidden_size)).
    pub embed_scale: Option<f64>,
    /// Queries are multiplied by this before the dot product (`1/sqrt(head_dim)`, or Gemma's
    /// `query_pre_attn_scalar^-1/2`).
    pub attn_scale: f64,
    pub attn_logit_softcap: Option<f64>,
    pub final_logit_softcap: Option<f64>,
    pub activation: Activation,
    /// Per layer: `Some(w)` when the layer only attends to its last `w` entries.
    pub layer_windows: Vec<Option<usize>>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
}

impl ModelConfig {
    pub fn q_per_kv(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// The RoPE layer `layer` uses.
    pub fn rope_for(&self, layer: usize) -> &RopeSpec {
        match (&self.rope_local, self.layer_windows[layer]) {
            (Some(local), Some(_)) => local,
            _ => &self.rope,
        }
    }

    /// The sliding window of `layer`, if it has one.
    pub fn window(&self, layer: usize) -> Option<usize> {
        self.layer_windows[layer]
    }

    pub(crate) fn validate(&self, source: &str) -> Result<()> {
        if self.n_kv_heads == 0 || self.n_heads % self.n_kv_heads != 0 {
            bail!(
                "{source}: {} attention heads are not a multiple of {} KV heads",
                self.n_heads,
                self.n_kv_heads
            );
        }
        if self.head_dim % 2 != 0 || self.rope.rotary_dim % 2 != 0 {
            bail!(
                "{source}: head_dim {} and its rotary part {} must be even for RoPE",
                self.head_dim,
                self.rope.rotary_dim
            );
        }
        if self.rope.rotary_dim > self.head_dim {
            bail!(
                "{source}: rotary dimension {} exceeds head_dim {}",
                self.rope.rotary_dim,
                self.head_dim
            );
        }
        if self.layer_windows.len() != self.n_layers {
            bail!(
                "{source}: {} layer types for {} layers",
                self.layer_windows.len(),
                self.n_layers
            );
        }
        if self.layer_windows.iter().flatten().any(|&w| w == 0) {
            bail!("{source}: a sliding window of 0 tokens; use null for full attention");
        }
        Ok(())
    }
}

//! Reading decoder weights from a GGUF file (dequantized) or from safetensors, under one naming.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::quantized::gguf_file;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use super::synthetic::SyntheticWeights;

/// A weight of the decoder, named independently of the file format.
#[derive(Clone, Copy, Debug)]
pub enum Weight {
    Embed,
    FinalNorm,
    LmHead,
    /// GGUF per-pair RoPE frequency factors (llama3 scaling as llama.cpp stores it).
    RopeFreqs,
    Layer(usize, LayerWeight),
}

#[derive(Clone, Copy, Debug)]
pub enum LayerWeight {
    AttnNorm,
    Q,
    K,
    V,
    O,
    QBias,
    KBias,
    VBias,
    OBias,
    /// Fused q, k and v projection (Phi-3), `[(heads + 2 kv_heads) x head_dim, hidden]`.
    Qkv,
    /// Per-head RMSNorm of q and of k (Qwen3, Gemma 3), `[head_dim]`.
    QNorm,
    KNorm,
    /// Norm after attention, before the residual add (Gemma 3).
    PostAttnNorm,
    /// Norm before the MLP (Llama's `post_attention_layernorm`, Gemma's `pre_feedforward_layernorm`).
    MlpNorm,
    Gate,
    Up,
    /// Fused gate and up projection (Phi-3), `[2 x intermediate, hidden]`, gate first.
    GateUp,
    Down,
    /// Norm after the MLP, before the residual add (Gemma 3).
    PostMlpNorm,
}

impl Weight {
    fn gguf_name(self) -> String {
        use LayerWeight::*;
        match self {
            Weight::Embed => "token_embd.weight".into(),
            Weight::FinalNorm => "output_norm.weight".into(),
            Weight::LmHead => "output.weight".into(),
            Weight::RopeFreqs => "rope_freqs.weight".into(),
            Weight::Layer(i, w) => {
                let s = match w {
                    AttnNorm => "attn_norm.weight",
                    Q => "attn_q.weight",
                    K => "attn_k.weight",
                    V => "attn_v.weight",
                    O => "attn_output.weight",
                    QBias => "attn_q.bias",
                    KBias => "attn_k.bias",
                    VBias => "attn_v.bias",
                    OBias => "attn_output.bias",
                    Qkv => "attn_qkv.weight",
                    QNorm => "attn_q_norm.weight",
                    KNorm => "attn_k_norm.weight",
                    PostAttnNorm => "post_attention_norm.weight",
                    MlpNorm => "ffn_norm.weight",
                    Gate => "ffn_gate.weight",
                    Up => "ffn_up.weight",
                    // llama.cpp's phi3 stores the fused gate/up projection as `ffn_up`.
                    GateUp => "ffn_up.weight",
                    Down => "ffn_down.weight",
                    PostMlpNorm => "post_ffw_norm.weight",
                };
                format!("blk.{i}.{s}")
            }
        }
    }

    /// The name in a Hugging Face checkpoint whose decoder lives under `prefix` (`model.`, or
    /// `model.language_model.` in a multimodal Gemma 3). `sandwich`: Gemma's four-norm layout,
    /// where `post_attention_layernorm` is the norm after attention, not before the MLP.
    fn hf_name(self, prefix: &str, sandwich: bool) -> String {
        use LayerWeight::*;
        match self {
            Weight::Embed => format!("{prefix}embed_tokens.weight"),
            Weight::FinalNorm => format!("{prefix}norm.weight"),
            Weight::LmHead => "lm_head.weight".into(),
            Weight::RopeFreqs => "rope_freqs.weight".into(),
            Weight::Layer(i, w) => {
                let s = match w {
                    AttnNorm => "input_layernorm.weight",
                    Q => "self_attn.q_proj.weight",
                    K => "self_attn.k_proj.weight",
                    V => "self_attn.v_proj.weight",
                    O => "self_attn.o_proj.weight",
                    QBias => "self_attn.q_proj.bias",
                    KBias => "self_attn.k_proj.bias",
                    VBias => "self_attn.v_proj.bias",
                    OBias => "self_attn.o_proj.bias",
                    Qkv => "self_attn.qkv_proj.weight",
                    QNorm => "self_attn.q_norm.weight",
                    KNorm => "self_attn.k_norm.weight",
                    PostAttnNorm => "post_attention_layernorm.weight",
                    MlpNorm if sandwich => "pre_feedforward_layernorm.weight",
                    MlpNorm => "post_attention_layernorm.weight",
                    Gate => "mlp.gate_proj.weight",
                    Up => "mlp.up_proj.weight",
                    GateUp => "mlp.gate_up_proj.weight",
                    Down => "mlp.down_proj.weight",
                    PostMlpNorm => "post_feedforward_layernorm.weight",
                };
                format!("{prefix}layers.{i}.{s}")
            }
        }
    }
}

/// An open checkpoint that hands out weights in the model's compute dtype.
pub enum WeightSource {
    Gguf {
        path: PathBuf,
        file: File,
        content: gguf_file::Content,
    },
    Safetensors {
        files: Vec<PathBuf>,
        tensors: MmapedSafetensors,
        /// Where the decoder's weights live (`model.`, `model.language_model.`, ...).
        prefix: String,
        /// Gemma's four-norm layer layout (see [`Weight::hf_name`]).
        sandwich: bool,
    },
    /// Random weights of a known shape, generated per tensor on the device.
    Synthetic(SyntheticWeights),
}

/// Prefixes under which checkpoints keep the decoder: text-only models, then multimodal
/// Gemma 3 as transformers 5 and 4 save it.
const HF_PREFIXES: &[&str] = &["model.", "model.language_model.", "language_model.model."];

impl WeightSource {
    pub fn open_gguf(path: &Path) -> Result<Self> {
        let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let content = gguf_file::Content::read(&mut file)
            .with_context(|| format!("{}: not a readable GGUF file", path.display()))?;
        Ok(Self::Gguf {
            path: path.to_path_buf(),
            file,
            content,
        })
    }

    pub fn open_safetensors(files: &[PathBuf], sandwich: bool) -> Result<Self> {
        // SAFETY: the files are memory-mapped read-only; kvbench never writes them while mapped.
        let tensors = unsafe { MmapedSafetensors::multi(files) }
            .with_context(|| format!("opening safetensors {files:?}"))?;
        let prefix = HF_PREFIXES
            .iter()
            .find(|p| tensors.get(&format!("{p}embed_tokens.weight")).is_ok())
            .with_context(|| {
                format!(
                    "{files:?}: no embedding tensor (looked for {})",
                    HF_PREFIXES
                        .iter()
                        .map(|p| format!("`{p}embed_tokens.weight`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?
            .to_string();
        Ok(Self::Safetensors {
            files: files.to_vec(),
            tensors,
            prefix,
            sandwich,
        })
    }

    pub fn gguf_content(&self) -> Option<&gguf_file::Content> {
        match self {
            Self::Gguf { content, .. } => Some(content),
            Self::Safetensors { .. } | Self::Synthetic(_) => None,
        }
    }

    pub fn contains(&self, w: Weight) -> bool {
        match self {
            Self::Gguf { content, .. } => content.tensor_infos.contains_key(&w.gguf_name()),
            Self::Safetensors {
                tensors,
                prefix,
                sandwich,
                ..
            } => tensors.get(&w.hf_name(prefix, *sandwich)).is_ok(),
            Self::Synthetic(s) => s.contains(w),
        }
    }

    /// Load one weight as [`load`](Self::load) does and check its shape against the config's.
    pub fn load_shaped(
        &mut self,
        w: Weight,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        if let Self::Synthetic(s) = self {
            return s.generate(w, shape, dtype, device);
        }
        let t = self.load(w, dtype, device)?;
        if t.dims() != shape {
            anyhow::bail!(
                "{}: tensor `{}` has shape {:?}, but the model config implies {shape:?}",
                self.describe(),
                self.name(w),
                t.dims()
            );
        }
        Ok(t)
    }

    fn describe(&self) -> String {
        match self {
            Self::Gguf { path, .. } => path.display().to_string(),
            Self::Safetensors { files, .. } => format!("{files:?}"),
            Self::Synthetic(_) => "synthetic model".into(),
        }
    }

    /// The tensor's name in this checkpoint.
    pub fn name(&self, w: Weight) -> String {
        match self {
            Self::Gguf { .. } => w.gguf_name(),
            Self::Safetensors {
                prefix, sandwich, ..
            } => w.hf_name(prefix, *sandwich),
            Self::Synthetic(_) => format!("{w:?}"),
        }
    }

    /// Load one weight, dequantized, in `dtype` on `device`. Matrices are `[out, in]`.
    pub fn load(&mut self, w: Weight, dtype: DType, device: &Device) -> Result<Tensor> {
        let t = match self {
            Self::Gguf {
                path,
                file,
                content,
            } => {
                let name = w.gguf_name();
                let q = content
                    .tensor(file, &name, device)
                    .with_context(|| format!("{}: tensor `{name}`", path.display()))?;
                q.dequantize(device)?
            }
            Self::Safetensors {
                files,
                tensors,
                prefix,
                sandwich,
            } => {
                let name = w.hf_name(prefix, *sandwich);
                tensors
                    .load(&name, device)
                    .with_context(|| format!("{files:?}: tensor `{name}`"))?
            }
            Self::Synthetic(_) => {
                anyhow::bail!("synthetic weight {w:?}: generated only with its shape (load_shaped)")
            }
        };
        Ok(t.to_dtype(dtype)?)
    }
}

//! The model runtime: configuration (from `config.json` or GGUF), RoPE variants, weights, and the
//! decoder over `KvCache`.

pub mod attention;
pub mod batch;
pub mod config;
pub mod decoder;
pub mod fused;
pub mod gguf_config;
pub mod hf_config;
pub mod rope;
pub mod synthetic;
pub mod weights;

pub use batch::BatchOutput;
pub use config::{Activation, Architecture, ModelConfig};
pub use decoder::{argmax, AfterLayer, Decoder, ForwardOptions, ForwardOutput, Logits};
pub use rope::{RopeScaling, RopeSpec};
pub use weights::WeightSource;

impl ModelConfig {
    /// Read a Hugging Face `config.json`.
    pub fn from_hf_config(path: &std::path::Path) -> anyhow::Result<Self> {
        hf_config::from_hf_config(path)
    }

    /// Read GGUF metadata; `source` names the file in errors.
    pub fn from_gguf(
        content: &candle_core::quantized::gguf_file::Content,
        source: &str,
    ) -> anyhow::Result<Self> {
        gguf_config::from_gguf(content, source)
    }
}

/// The decoder families kvbench runs, as `(model_type values, what is implemented)`, for
/// `kvbench models`.
pub fn supported_families() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "llama, smollm",
            "Llama 2/3.x, SmolLM; RoPE scaling llama3, linear, dynamic, yarn",
        ),
        ("mistral", "Mistral, with or without sliding_window"),
        ("qwen2", "Qwen2 / Qwen2.5: QKV bias, tied embeddings; yarn"),
        (
            "qwen3",
            "Qwen3: per-head q/k RMSNorm, explicit head_dim; yarn",
        ),
        (
            "gemma3_text, gemma3",
            "Gemma 3 text: interleaved sliding/global layers",
        ),
        (
            "phi3",
            "Phi-3 / Phi-4-mini: fused qkv_proj and gate_up_proj (no longrope)",
        ),
    ]
}

//! The model runtime: configuration, weights, and the Llama-family decoder over `KvCache`.

pub mod attention;
pub mod config;
pub mod llama;
pub mod weights;

pub use config::{Architecture, ModelConfig};
pub use llama::{argmax, ForwardOptions, ForwardOutput, Llama, Logits};
pub use weights::WeightSource;

/// The decoder families kvbench runs, as `(model_type values, what is implemented)`, for
/// `kvbench models`.
pub fn supported_families() -> Vec<(&'static str, &'static str)> {
    vec![
        ("llama, smollm", "Llama 2/3.x, SmolLM; RoPE scaling llama3, linear, dynamic, yarn"),
        ("mistral", "Mistral, with or without sliding_window"),
        ("qwen2", "Qwen2 / Qwen2.5: QKV bias, tied embeddings; yarn"),
        ("qwen3", "Qwen3: per-head q/k RMSNorm, explicit head_dim; yarn"),
        ("gemma3_text, gemma3", "Gemma 3 text: interleaved sliding/global layers"),
        ("phi3", "Phi-3 / Phi-4-mini: fused qkv_proj and gate_up_proj (no longrope)"),
    ]
}

//! The Hugging Face checkpoint path (config.json + safetensors + tokenizer.json, halves-style
//! RoPE) against the GGUF path (interleaved RoPE on llama.cpp's permuted Q/K) on the same weights:
//! the test writes the GGUF's weights as an HF checkpoint, undoing llama.cpp's Q/K permutation,
//! and both must give the same logits.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use kvbench::fetch::ModelFiles;
use kvbench::model::weights::{LayerWeight, Weight, WeightSource};
use kvbench::model::{ForwardOptions, Logits};
use kvbench::testing::smollm2_gguf;

/// Inverse of llama.cpp's `permute`: rows grouped per head as (head_dim/2, 2) -> (2, head_dim/2).
fn unpermute(w: &Tensor, n_heads: usize) -> Tensor {
    let (out, inp) = w.dims2().unwrap();
    let hd = out / n_heads;
    w.reshape((n_heads, hd / 2, 2, inp))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape((out, inp))
        .unwrap()
}

#[test]
fn hf_checkpoint_matches_gguf() {
    let gguf = smollm2_gguf();
    let dev = Device::Cpu;
    let gguf_model = kvbench::loader::load(&ModelFiles::Gguf { path: gguf.clone() }, &dev).unwrap();
    let cfg = gguf_model.model.config().clone();

    let dir = std::env::temp_dir().join(format!("kvbench-hf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut src = WeightSource::open_gguf(&gguf).unwrap();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut load = |w: Weight| src.load(w, DType::F32, &dev).unwrap();
    tensors.insert("model.embed_tokens.weight".into(), load(Weight::Embed));
    tensors.insert("model.norm.weight".into(), load(Weight::FinalNorm));
    use LayerWeight::*;
    for i in 0..cfg.n_layers {
        let names = [
            (AttnNorm, "input_layernorm.weight"),
            (Q, "self_attn.q_proj.weight"),
            (K, "self_attn.k_proj.weight"),
            (V, "self_attn.v_proj.weight"),
            (O, "self_attn.o_proj.weight"),
            (MlpNorm, "post_attention_layernorm.weight"),
            (Gate, "mlp.gate_proj.weight"),
            (Up, "mlp.up_proj.weight"),
            (Down, "mlp.down_proj.weight"),
        ];
        for (lw, name) in names {
            let mut t = load(Weight::Layer(i, lw));
            if matches!(lw, Q) {
                t = unpermute(&t, cfg.n_heads);
            }
            if matches!(lw, K) {
                t = unpermute(&t, cfg.n_kv_heads);
            }
            tensors.insert(format!("model.layers.{i}.{name}"), t);
        }
    }
    let weights = dir.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &weights).unwrap();
    drop(tensors);
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "model_type": "llama", "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
            "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
            "num_key_value_heads": cfg.n_kv_heads, "vocab_size": cfg.vocab_size, "rms_norm_eps": cfg.rms_norm_eps,
            "rope_theta": cfg.rope.theta, "max_position_embeddings": cfg.max_position_embeddings,
            "tie_word_embeddings": true, "rope_scaling": null
        })
        .to_string(),
    )
    .unwrap();
    let tokenizer = dir.join("tokenizer.json");
    gguf_model
        .tokenizer
        .inner()
        .save(&tokenizer, false)
        .unwrap();
    let files = ModelFiles::HfCheckpoint {
        config,
        weights: vec![weights],
        tokenizer,
        tokenizer_config: None,
        generation_config: None,
    };
    let hf_model = kvbench::loader::load(&files, &dev).unwrap();
    assert!(!hf_model.model.config().rope_interleaved);

    let ids = gguf_model
        .tokenizer
        .encode("The grass is green. The sky is blue. The capital of France is")
        .unwrap();
    assert_eq!(
        hf_model
            .tokenizer
            .encode("The grass is green. The sky is blue. The capital of France is")
            .unwrap(),
        ids
    );
    let opts = ForwardOptions {
        logits: Logits::All,
        ..Default::default()
    };
    let a = gguf_model
        .model
        .forward(&ids, &mut gguf_model.model.new_cache(), &opts)
        .unwrap()
        .logits
        .unwrap();
    let b = hf_model
        .model
        .forward(&ids, &mut hf_model.model.new_cache(), &opts)
        .unwrap()
        .logits
        .unwrap();
    let diff: f32 = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(diff < 1e-3, "max logit difference {diff}");
    std::fs::remove_dir_all(&dir).unwrap();
}

//! `ModelConfig` from GGUF metadata, where llama.cpp defines the layout (llama, qwen2, qwen3,
//! gemma3, phi3).
//!
//! RoPE scaling keys (`{arch}.rope.scaling.*`) and the `rope_freqs.weight` tensor are read;
//! a scaling type or key kvbench does not implement is an error naming it.

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file;

use super::config::{Activation, Architecture, ModelConfig};
use super::rope::{RopeScaling, RopeSpec};

/// Metadata keys under `rope.scaling.` that kvbench reads; any other is an error.
const KNOWN_SCALING_KEYS: &[&str] = &[
    "type",
    "factor",
    "original_context_length",
    "attn_factor",
    "finetuned",
];

pub fn from_gguf(content: &gguf_file::Content, source: &str) -> Result<ModelConfig> {
    let md = &content.metadata;
    let get = |key: &str| {
        md.get(key)
            .with_context(|| format!("{source}: GGUF metadata `{key}` is missing"))
    };
    let arch_name = get("general.architecture")?.to_string()?.clone();
    let architecture = Architecture::parse(&arch_name, source, "general.architecture")?;
    let p = |k: &str| format!("{arch_name}.{k}");
    let u = |k: &str| -> Result<usize> {
        let v = get(&p(k))?;
        Ok(v.to_u32()
            .or_else(|_| v.to_u64().map(|x| x as u32))
            .with_context(|| format!("{source}: `{}` is not an integer", p(k)))?
            as usize)
    };
    let f = |k: &str| -> Result<f64> {
        Ok(get(&p(k))?
            .to_f32()
            .with_context(|| format!("{source}: `{}` is not a float", p(k)))? as f64)
    };
    let hidden_size = u("embedding_length")?;
    let n_heads = u("attention.head_count")?;
    let n_layers = u("block_count")?;
    let n_kv_heads = u("attention.head_count_kv").unwrap_or(n_heads);
    let head_dim = u("attention.key_length").unwrap_or(hidden_size / n_heads);
    let vocab_size = match md.get(&p("vocab_size")) {
        Some(v) => v.to_u32()? as usize,
        None => get("tokenizer.ggml.tokens")?.to_vec()?.len(),
    };
    let has = |t: &str| content.tensor_infos.contains_key(t);
    let max_position_embeddings = u("context_length").unwrap_or(4096);
    let rotary_dim = u("rope.dimension_count").unwrap_or(head_dim);
    let theta = f("rope.freq_base").unwrap_or(10_000.0);
    let rope = RopeSpec {
        theta,
        rotary_dim,
        scaling: rope_scaling(content, &arch_name, source, max_position_embeddings)?,
    };
    let gemma = architecture == Architecture::Gemma3;
    let window = u("attention.sliding_window").ok();
    let layer_windows = match architecture {
        // llama.cpp: every 6th Gemma 3 layer is global, unless the file says otherwise.
        Architecture::Gemma3 => {
            let pattern = u("attention.sliding_window_pattern").unwrap_or(6).max(1);
            let w = window.with_context(|| {
                format!("{source}: `{}` is missing", p("attention.sliding_window"))
            })?;
            (0..n_layers)
                .map(|i| ((i + 1) % pattern != 0).then_some(w))
                .collect()
        }
        Architecture::Llama | Architecture::Mistral | Architecture::Phi3 => {
            vec![window; n_layers]
        }
        Architecture::Qwen2 | Architecture::Qwen3 => vec![None; n_layers],
    };
    if architecture == Architecture::Phi3 && !has("blk.0.attn_qkv.weight") {
        bail!("{source}: phi3 GGUF without `blk.0.attn_qkv.weight` is not supported");
    }
    // llama.cpp uses 1/sqrt(hidden/heads) for Gemma 3 27B and 1/sqrt(key_length) otherwise.
    let attn_scale = if gemma && hidden_size == 5376 {
        (hidden_size as f64 / n_heads as f64).powf(-0.5)
    } else {
        (head_dim as f64).powf(-0.5)
    };
    let cfg = ModelConfig {
        architecture,
        hidden_size,
        intermediate_size: u("feed_forward_length")?,
        n_layers,
        n_heads,
        n_kv_heads,
        head_dim,
        vocab_size,
        rms_norm_eps: f("attention.layer_norm_rms_epsilon")?,
        rope,
        // llama.cpp's default local base for Gemma 3, unless the file names one.
        rope_local: gemma
            .then(|| RopeSpec::plain(f("rope.freq_base_swa").unwrap_or(10_000.0), rotary_dim)),
        // llama.cpp's converter permutes llama/mistral Q and K for interleaved rotation; the
        // other families keep the NeoX (halves) layout.
        rope_interleaved: architecture == Architecture::Llama,
        qkv_bias: has("blk.0.attn_q.bias"),
        o_bias: has("blk.0.attn_output.bias"),
        qk_norm: has("blk.0.attn_q_norm.weight"),
        // The converter stores Gemma's norm weights as 1 + w.
        norm_plus_one: false,
        sandwich_norms: has("blk.0.post_attention_norm.weight"),
        embed_scale: gemma.then(|| (hidden_size as f64).sqrt()),
        attn_scale,
        attn_logit_softcap: f("attn_logit_softcapping").ok(),
        final_logit_softcap: f("final_logit_softcapping").ok(),
        activation: if gemma {
            Activation::GeluTanh
        } else {
            Activation::Silu
        },
        layer_windows,
        max_position_embeddings,
        tie_word_embeddings: !has("output.weight"),
    };
    cfg.validate(source)?;
    Ok(cfg)
}

/// `{arch}.rope.scaling.*` and `rope_freqs.weight`.
fn rope_scaling(
    content: &gguf_file::Content,
    arch: &str,
    source: &str,
    max_pos: usize,
) -> Result<RopeScaling> {
    let prefix = format!("{arch}.rope.scaling.");
    for key in content.metadata.keys() {
        if let Some(rest) = key.strip_prefix(&prefix) {
            if !KNOWN_SCALING_KEYS.contains(&rest) {
                bail!("{source}: GGUF metadata `{key}` is not supported by kvbench");
            }
        }
    }
    let md = |k: &str| content.metadata.get(&format!("{prefix}{k}"));
    let factor = md("factor").and_then(|v| v.to_f32().ok()).map(f64::from);
    let original = md("original_context_length")
        .and_then(|v| v.to_u32().ok())
        .map(|v| v as usize)
        .unwrap_or(max_pos);
    let kind = match md("type") {
        Some(v) => v.to_string()?.clone(),
        None => "none".into(),
    };
    let scaling = match (kind.as_str(), factor) {
        ("none", _) => RopeScaling::Default,
        (_, Some(f)) if f == 1.0 || f == 0.0 => RopeScaling::Default,
        ("linear", Some(factor)) => RopeScaling::Linear { factor },
        ("yarn", Some(factor)) => RopeScaling::Yarn {
            factor,
            original_max_position_embeddings: original,
            beta_fast: 32.0,
            beta_slow: 1.0,
            attention_factor: md("attn_factor")
                .and_then(|v| v.to_f32().ok())
                .map(f64::from)
                .unwrap_or(0.1 * factor.ln() + 1.0),
            truncate: true,
        },
        (other, _) => bail!(
            "{source}: GGUF metadata `{prefix}type` `{other}` (factor {factor:?}) is not supported; \
             kvbench reads none, linear and yarn"
        ),
    };
    if let Some(info) = content.tensor_infos.get("rope_freqs.weight") {
        if scaling != RopeScaling::Default {
            bail!("{source}: both `rope_freqs.weight` and `{prefix}type` {kind}: not supported");
        }
        let n = info.shape.elem_count();
        return Ok(RopeScaling::FreqFactors {
            factors: vec![f32::NAN; n],
        });
    }
    Ok(scaling)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gguf_file::Value as V;
    use std::collections::HashMap;

    fn content(arch: &str, extra: &[(&str, V)]) -> gguf_file::Content {
        let mut metadata = HashMap::new();
        let mut put = |k: &str, v: V| {
            metadata.insert(k.to_string(), v);
        };
        put("general.architecture", V::String(arch.into()));
        put(&format!("{arch}.embedding_length"), V::U32(64));
        put(&format!("{arch}.attention.head_count"), V::U32(4));
        put(&format!("{arch}.attention.head_count_kv"), V::U32(1));
        put(&format!("{arch}.attention.key_length"), V::U32(32));
        put(&format!("{arch}.block_count"), V::U32(12));
        put(&format!("{arch}.feed_forward_length"), V::U32(128));
        put(&format!("{arch}.vocab_size"), V::U32(100));
        put(
            &format!("{arch}.attention.layer_norm_rms_epsilon"),
            V::F32(1e-6),
        );
        put(&format!("{arch}.rope.freq_base"), V::F32(1e6));
        for (k, v) in extra {
            put(&format!("{arch}.{k}"), v.clone());
        }
        gguf_file::Content {
            magic: gguf_file::VersionedMagic::GgufV3,
            metadata,
            tensor_infos: HashMap::new(),
            tensor_data_offset: 0,
        }
    }

    #[test]
    fn gemma3_layers_and_ropes() {
        let c = content("gemma3", &[("attention.sliding_window", V::U32(512))]);
        let cfg = from_gguf(&c, "g.gguf").unwrap();
        let globals: Vec<usize> = (0..12).filter(|&l| cfg.window(l).is_none()).collect();
        assert_eq!(globals, vec![5, 11]);
        assert_eq!(cfg.rope_for(0).theta, 10_000.0);
        assert_eq!(cfg.rope_for(5).theta, 1e6);
        assert!(!cfg.norm_plus_one && !cfg.rope_interleaved);
        assert_eq!(cfg.embed_scale, Some(8.0));
        assert!((cfg.attn_scale - 32f64.powf(-0.5)).abs() < 1e-12);
    }

    #[test]
    fn rope_scaling_keys_are_read_or_refused() {
        let lin = content(
            "llama",
            &[
                ("rope.scaling.type", V::String("linear".into())),
                ("rope.scaling.factor", V::F32(4.0)),
            ],
        );
        let cfg = from_gguf(&lin, "l.gguf").unwrap();
        assert_eq!(cfg.rope.scaling, RopeScaling::Linear { factor: 4.0 });
        let odd = content(
            "llama",
            &[("rope.scaling.yarn_log_multiplier", V::F32(0.1))],
        );
        let e = from_gguf(&odd, "l.gguf").unwrap_err().to_string();
        assert!(
            e.contains("l.gguf") && e.contains("llama.rope.scaling.yarn_log_multiplier"),
            "{e}"
        );
        let longrope = content(
            "llama",
            &[
                ("rope.scaling.type", V::String("longrope".into())),
                ("rope.scaling.factor", V::F32(4.0)),
            ],
        );
        let e = from_gguf(&longrope, "l.gguf").unwrap_err().to_string();
        assert!(
            e.contains("longrope") && e.contains("rope.scaling.type"),
            "{e}"
        );
        let arch = content("mamba", &[]);
        let e = from_gguf(&arch, "m.gguf").unwrap_err().to_string();
        assert!(
            e.contains("general.architecture") && e.contains("mamba"),
            "{e}"
        );
    }
}

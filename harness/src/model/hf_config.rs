//! `ModelConfig` from a Hugging Face `config.json`, in the classic form (`rope_theta`,
//! `rope_scaling`) or transformers 5's (`rope_parameters`, per layer type for Gemma 3).
//!
//! Every field that changes the computation is read; one kvbench does not implement is an error
//! naming it, never ignored.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};

use super::config::{Activation, Architecture, ModelConfig};
use super::rope::RopeSpec;

struct Fields<'a> {
    obj: &'a Map<String, Value>,
    source: &'a str,
    /// Prefix of field names in errors (`text_config.` for a multimodal Gemma 3).
    prefix: &'a str,
}

impl Fields<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }
    fn usize(&self, key: &str) -> Result<Option<usize>> {
        self.get(key)
            .map(|v| {
                v.as_u64().map(|n| n as usize).with_context(|| {
                    format!(
                        "{}: `{}{key}` must be a non-negative integer, got {v}",
                        self.source, self.prefix
                    )
                })
            })
            .transpose()
    }
    fn need_usize(&self, key: &str) -> Result<usize> {
        self.usize(key)?
            .with_context(|| format!("{}: `{}{key}` is missing", self.source, self.prefix))
    }
    fn f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| {
                v.as_f64().with_context(|| {
                    format!(
                        "{}: `{}{key}` must be a number, got {v}",
                        self.source, self.prefix
                    )
                })
            })
            .transpose()
    }
    fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| {
                v.as_bool().with_context(|| {
                    format!(
                        "{}: `{}{key}` must be true or false, got {v}",
                        self.source, self.prefix
                    )
                })
            })
            .transpose()
    }
    fn str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
}

/// Read and validate `config.json` at `path`.
pub fn from_hf_config(path: &Path) -> Result<ModelConfig> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {source}"))?;
    let root: Value =
        serde_json::from_str(&text).with_context(|| format!("{source}: not valid JSON"))?;
    parse(&root, &source)
}

/// Parse a `config.json` value; `source` names the file in errors.
pub fn parse(root: &Value, source: &str) -> Result<ModelConfig> {
    let obj = root
        .as_object()
        .with_context(|| format!("{source}: config.json must be an object"))?;
    let model_type = obj
        .get("model_type")
        .and_then(Value::as_str)
        .with_context(|| format!("{source}: `model_type` is missing"))?;
    let architecture = Architecture::parse(model_type, source, "model_type")?;
    // Multimodal Gemma 3 (`gemma3`) keeps the decoder's fields in `text_config`.
    let (obj, prefix) = match (model_type, obj.get("text_config")) {
        ("gemma3", Some(Value::Object(text))) => (text, "text_config."),
        _ => (obj, ""),
    };
    let f = Fields {
        obj,
        source,
        prefix,
    };
    let gemma = architecture == Architecture::Gemma3;
    let hidden_size = f.need_usize("hidden_size")?;
    let n_heads = f.need_usize("num_attention_heads")?;
    let n_layers = f.need_usize("num_hidden_layers")?;
    let head_dim = f.usize("head_dim")?.unwrap_or(hidden_size / n_heads.max(1));
    let max_position_embeddings = f.usize("max_position_embeddings")?.unwrap_or(4096);

    if f.bool("mlp_bias")?.unwrap_or(false) {
        bail!("{source}: `{prefix}mlp_bias: true` is not supported");
    }
    let act_field = if f.get("hidden_activation").is_some() {
        "hidden_activation"
    } else {
        "hidden_act"
    };
    let activation = match f.str(act_field) {
        Some(name) => Activation::parse(name, source, act_field)?,
        None if gemma => Activation::GeluTanh,
        None => Activation::Silu,
    };

    let partial = match f.f64("partial_rotary_factor")? {
        Some(p) => p,
        None => f
            .get("rope_parameters")
            .and_then(|r| r.get("partial_rotary_factor"))
            .and_then(Value::as_f64)
            .unwrap_or(1.0),
    };
    let rotary_dim = (head_dim as f64 * partial) as usize;
    let (rope, rope_local) = rope_specs(&f, gemma, rotary_dim, max_position_embeddings)?;

    let layer_windows = layer_windows(&f, architecture, n_layers)?;
    let attention_bias = f.bool("attention_bias")?.unwrap_or(false);
    let (qkv_bias, o_bias) = match architecture {
        Architecture::Qwen2 => (true, false),
        Architecture::Mistral | Architecture::Phi3 => (false, false),
        _ => (attention_bias, attention_bias),
    };
    let attn_scale = match f.f64("query_pre_attn_scalar")? {
        Some(s) if gemma => s.powf(-0.5),
        _ => (head_dim as f64).powf(-0.5),
    };
    let cfg = ModelConfig {
        architecture,
        hidden_size,
        intermediate_size: f.need_usize("intermediate_size")?,
        n_layers,
        n_heads,
        n_kv_heads: f.usize("num_key_value_heads")?.unwrap_or(n_heads),
        head_dim,
        vocab_size: f.need_usize("vocab_size")?,
        rms_norm_eps: f.f64("rms_norm_eps")?.unwrap_or(1e-6),
        rope,
        rope_local,
        rope_interleaved: false,
        qkv_bias,
        o_bias,
        qk_norm: matches!(architecture, Architecture::Qwen3 | Architecture::Gemma3),
        norm_plus_one: gemma,
        sandwich_norms: gemma,
        embed_scale: gemma.then(|| (hidden_size as f64).sqrt()),
        attn_scale,
        attn_logit_softcap: f.f64("attn_logit_softcapping")?,
        final_logit_softcap: f.f64("final_logit_softcapping")?,
        activation,
        layer_windows,
        max_position_embeddings,
        // Gemma ties by default; the others untie unless told (their configs' defaults).
        tie_word_embeddings: f.bool("tie_word_embeddings")?.unwrap_or(gemma),
    };
    cfg.validate(source)?;
    Ok(cfg)
}

/// Global and (Gemma 3) local RoPE, from `rope_parameters` or `rope_theta` + `rope_scaling`.
fn rope_specs(
    f: &Fields,
    gemma: bool,
    rotary_dim: usize,
    max_pos: usize,
) -> Result<(RopeSpec, Option<RopeSpec>)> {
    let (source, p) = (f.source, f.prefix);
    let theta = f.f64("rope_theta")?.unwrap_or(10_000.0);
    if let Some(params) = f.get("rope_parameters") {
        // Per layer type (Gemma 3 in transformers 5) or one for all layers.
        if let Some(full) = params.get("full_attention") {
            let global = RopeSpec::from_json(
                Some(full),
                theta,
                rotary_dim,
                max_pos,
                source,
                &format!("{p}rope_parameters.full_attention"),
            )?;
            let local = match params.get("sliding_attention") {
                Some(s) => Some(RopeSpec::from_json(
                    Some(s),
                    theta,
                    rotary_dim,
                    max_pos,
                    source,
                    &format!("{p}rope_parameters.sliding_attention"),
                )?),
                None => None,
            };
            return Ok((global, local));
        }
        let spec = RopeSpec::from_json(
            Some(params),
            theta,
            rotary_dim,
            max_pos,
            source,
            &format!("{p}rope_parameters"),
        )?;
        let local = gemma.then(|| RopeSpec::plain(10_000.0, rotary_dim));
        return Ok((spec, local));
    }
    let global = RopeSpec::from_json(
        f.get("rope_scaling"),
        theta,
        rotary_dim,
        max_pos,
        source,
        &format!("{p}rope_scaling"),
    )?;
    let local = if gemma {
        let base = f.f64("rope_local_base_freq")?.unwrap_or(10_000.0);
        Some(RopeSpec::plain(base, rotary_dim))
    } else {
        None
    };
    Ok((global, local))
}

/// Which layers slide, and over how many tokens: `layer_types` where given, else each family's
/// rule (Mistral and Phi-3: every layer when `sliding_window` is set; Qwen2/3: layers from
/// `max_window_layers` on when `use_sliding_window`; Gemma 3: all but every
/// `sliding_window_pattern`-th layer).
fn layer_windows(f: &Fields, arch: Architecture, n_layers: usize) -> Result<Vec<Option<usize>>> {
    let (source, p) = (f.source, f.prefix);
    let window = f.usize("sliding_window")?;
    let need_window = || {
        window.with_context(|| {
            format!("{source}: sliding layers need `{p}sliding_window` (an integer)")
        })
    };
    if let Some(types) = f.get("layer_types") {
        let types = types
            .as_array()
            .with_context(|| format!("{source}: `{p}layer_types` must be a list"))?;
        if types.len() != n_layers {
            bail!(
                "{source}: `{p}layer_types` has {} entries for {n_layers} layers",
                types.len()
            );
        }
        return types
            .iter()
            .enumerate()
            .map(|(i, t)| match t.as_str() {
                Some("full_attention") => Ok(None),
                Some("sliding_attention") => Ok(Some(need_window()?)),
                _ => bail!(
                    "{source}: `{p}layer_types[{i}]` is {t}; kvbench implements \
                     full_attention and sliding_attention"
                ),
            })
            .collect();
    }
    Ok(match arch {
        Architecture::Mistral | Architecture::Phi3 => vec![window; n_layers],
        Architecture::Qwen2 | Architecture::Qwen3 => {
            if f.bool("use_sliding_window")?.unwrap_or(false) {
                let from = f.usize("max_window_layers")?.unwrap_or(n_layers);
                let w = need_window()?;
                (0..n_layers).map(|i| (i >= from).then_some(w)).collect()
            } else {
                vec![None; n_layers]
            }
        }
        Architecture::Gemma3 => {
            let pattern = f.usize("sliding_window_pattern")?.unwrap_or(6).max(1);
            let w = need_window()?;
            (0..n_layers)
                .map(|i| ((i + 1) % pattern != 0).then_some(w))
                .collect()
        }
        Architecture::Llama => vec![None; n_layers],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base(model_type: &str) -> Value {
        json!({"model_type": model_type, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 6, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 100, "rms_norm_eps": 1e-6})
    }

    #[test]
    fn classic_and_v5_rope_forms_agree() {
        let mut classic = base("llama");
        classic["rope_theta"] = json!(500000.0);
        classic["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let mut v5 = base("llama");
        v5["rope_parameters"] = json!({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let a = parse(&classic, "a").unwrap();
        let b = parse(&v5, "b").unwrap();
        assert_eq!(a.rope, b.rope);
        assert_eq!(a.rope.theta, 500000.0);
    }

    #[test]
    fn gemma3_layer_pattern_and_local_rope() {
        let mut c = base("gemma3_text");
        c["sliding_window"] = json!(512);
        c["rope_theta"] = json!(1e6);
        c["query_pre_attn_scalar"] = json!(256);
        let cfg = parse(&c, "c").unwrap();
        let w: Vec<_> = cfg.layer_windows.clone();
        assert_eq!(
            w,
            vec![Some(512), Some(512), Some(512), Some(512), Some(512), None]
        );
        assert_eq!(cfg.rope_for(0).theta, 10_000.0);
        assert_eq!(cfg.rope_for(5).theta, 1e6);
        assert!((cfg.attn_scale - 1.0 / 16.0).abs() < 1e-12);
        assert!(cfg.tie_word_embeddings && cfg.norm_plus_one);
        // transformers 5 per-layer-type RoPE.
        let mut v5 = base("gemma3_text");
        v5["sliding_window"] = json!(512);
        v5["rope_parameters"] = json!({
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}});
        let cfg = parse(&v5, "v5").unwrap();
        assert_eq!(cfg.rope_for(0).theta, 1e4);
        assert_eq!(cfg.rope_for(5).theta, 1e6);
        assert!(matches!(
            cfg.rope.scaling,
            super::super::rope::RopeScaling::Linear { .. }
        ));
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse(&base("mamba"), "cfg.json").unwrap_err().to_string();
        assert!(
            e.contains("cfg.json") && e.contains("model_type") && e.contains("mamba"),
            "{e}"
        );
        let mut c = base("llama");
        c["layer_types"] = json!(vec!["full_attention"; 6]);
        c["layer_types"][2] = json!("chunked_attention");
        let e = parse(&c, "cfg.json").unwrap_err().to_string();
        assert!(e.contains("layer_types[2]"), "{e}");
        let mut c = base("phi3");
        c["rope_scaling"] =
            json!({"type": "longrope", "short_factor": [1.0], "long_factor": [1.0]});
        let e = parse(&c, "cfg.json").unwrap_err().to_string();
        assert!(e.contains("rope_scaling") && e.contains("longrope"), "{e}");
        let mut c = base("llama");
        c["hidden_act"] = json!("relu2");
        let e = parse(&c, "cfg.json").unwrap_err().to_string();
        assert!(e.contains("hidden_act") && e.contains("relu2"), "{e}");
    }

    #[test]
    fn qwen_sliding_only_when_enabled() {
        let mut c = base("qwen2");
        c["sliding_window"] = json!(4096);
        c["use_sliding_window"] = json!(false);
        assert!(parse(&c, "c")
            .unwrap()
            .layer_windows
            .iter()
            .all(Option::is_none));
        c["use_sliding_window"] = json!(true);
        c["max_window_layers"] = json!(4);
        let w = parse(&c, "c").unwrap().layer_windows;
        assert_eq!(w[3], None);
        assert_eq!(w[4], Some(4096));
    }
}

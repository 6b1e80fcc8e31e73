//! Synthetic models: random weights of a real architecture's exact shape, built on the device,
//! for speed and memory measurements at realistic scale without downloading anything
//! (`kvbench bench --model synthetic:llama3-8b`, or `model: synthetic:llama3-8b` with a
//! `tokenizer:` in an experiment).
//!
//! The shape comes from the real model's `config.json` fields (parsed by the same
//! [`hf_config::parse`] as a downloaded checkpoint), and the weights go through the same
//! [`Decoder::load`] as a real checkpoint's: only the source of each tensor differs. Each tensor
//! is generated on its own, directly on the device (curand on CUDA), so the largest host or
//! temporary buffer is one tensor in f32, never the whole model.
//!
//! Matrices are N(0, 0.02) (the usual initialiser range), norm scales are one and biases zero,
//! so activations stay finite in bf16 through every layer. The tokens such a model produces mean
//! nothing: it measures time and memory, not accuracy.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::decoder::Decoder;
use super::hf_config;
use super::weights::{LayerWeight as W, Weight, WeightSource};
use super::ModelConfig;

/// The prefix that names a synthetic model on the command line.
pub const PREFIX: &str = "synthetic:";

/// Standard deviation of every random matrix.
const WEIGHT_STD: f32 = 0.02;

/// A known shape: its name after `synthetic:`, the model it copies, and that model's
/// `config.json` fields that set the shape.
struct Shape {
    name: &'static str,
    copies: &'static str,
    config: fn() -> Value,
}

const SHAPES: &[Shape] = &[
    Shape {
        name: "smollm2-135m",
        copies: "HuggingFaceTB/SmolLM2-135M-Instruct (30 layers, hidden 576, 9/3 heads, tied)",
        config: smollm2_135m,
    },
    Shape {
        name: "llama3-8b",
        copies: "meta-llama/Llama-3.1-8B-Instruct (32 layers, hidden 4096, 32/8 heads)",
        config: llama3_8b,
    },
    Shape {
        name: "qwen3-8b",
        copies: "Qwen/Qwen3-8B (36 layers, hidden 4096, 32/8 heads, q/k norm)",
        config: qwen3_8b,
    },
    Shape {
        name: "llama3-70b",
        copies: "meta-llama/Llama-3.1-70B-Instruct (80 layers, hidden 8192, 64/8 heads)",
        config: llama3_70b,
    },
];

fn smollm2_135m() -> Value {
    json!({
        "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
        "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
        "vocab_size": 49152, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
        "max_position_embeddings": 8192, "tie_word_embeddings": true, "hidden_act": "silu"
    })
}

fn llama3_rope() -> Value {
    json!({
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192
    })
}

fn llama3_8b() -> Value {
    json!({
        "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "vocab_size": 128256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": llama3_rope(), "max_position_embeddings": 131072,
        "tie_word_embeddings": false, "hidden_act": "silu"
    })
}

fn qwen3_8b() -> Value {
    json!({
        "model_type": "qwen3", "hidden_size": 4096, "intermediate_size": 12288,
        "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 128, "vocab_size": 151936, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "max_position_embeddings": 40960, "tie_word_embeddings": false, "hidden_act": "silu",
        "attention_bias": false
    })
}

fn llama3_70b() -> Value {
    json!({
        "model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672,
        "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
        "vocab_size": 128256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": llama3_rope(), "max_position_embeddings": 131072,
        "tie_word_embeddings": false, "hidden_act": "silu"
    })
}

/// The known shapes as `(name, what it copies)`, for docs and errors.
pub fn shapes() -> Vec<(&'static str, &'static str)> {
    SHAPES.iter().map(|s| (s.name, s.copies)).collect()
}

/// The shape named by `spec` (`synthetic:NAME`, or `NAME`), or an error listing the known ones.
pub fn config(spec: &str) -> Result<ModelConfig> {
    let name = spec.strip_prefix(PREFIX).unwrap_or(spec);
    let Some(shape) = SHAPES.iter().find(|s| s.name == name) else {
        let known: Vec<String> = SHAPES
            .iter()
            .map(|s| format!("{PREFIX}{}", s.name))
            .collect();
        bail!(
            "unknown synthetic model `{spec}`; the known shapes are {}",
            known.join(", ")
        );
    };
    hf_config::parse(&(shape.config)(), &format!("{PREFIX}{name}"))
}

/// Build the model named by `spec` with random weights in `dtype` on `device`. The same `seed`
/// gives the same weights on the CPU; on CUDA it seeds the device generator.
pub fn build(spec: &str, dtype: DType, device: &Device, seed: u64) -> Result<Decoder> {
    let cfg = config(spec)?;
    if device.is_cuda() {
        device.set_seed(seed)?;
    }
    let mut src = WeightSource::Synthetic(SyntheticWeights {
        cfg: cfg.clone(),
        seed,
        generated: 0,
    });
    Decoder::load(cfg, &mut src, dtype, device)
}

/// The weight source of a synthetic model: which tensors the architecture has, and each one
/// generated when asked for.
pub struct SyntheticWeights {
    cfg: ModelConfig,
    seed: u64,
    /// Tensors generated so far: on the CPU, tensor `i` is drawn from a generator seeded with
    /// `seed + i`, so the weights do not depend on the thread's random state.
    generated: u64,
}

impl SyntheticWeights {
    /// Whether the real architecture has this tensor (no fused projections, biases and q/k
    /// norms where the family has them, a separate LM head unless tied).
    pub fn contains(&self, w: Weight) -> bool {
        let c = &self.cfg;
        match w {
            Weight::Embed | Weight::FinalNorm => true,
            Weight::LmHead => !c.tie_word_embeddings,
            Weight::RopeFreqs => false,
            Weight::Layer(_, w) => match w {
                W::Qkv | W::GateUp => false,
                W::QBias | W::KBias | W::VBias => c.qkv_bias,
                W::OBias => c.o_bias,
                W::QNorm | W::KNorm => c.qk_norm,
                W::PostAttnNorm | W::PostMlpNorm => c.sandwich_norms,
                _ => true,
            },
        }
    }

    /// A tensor of `shape` for `w` in `dtype` on `device`: ones for norm scales, zeros for
    /// biases, N(0, 0.02) otherwise.
    pub fn generate(
        &mut self,
        w: Weight,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let index = self.generated;
        self.generated += 1;
        let t = match w {
            Weight::FinalNorm
            | Weight::Layer(
                _,
                W::AttnNorm | W::MlpNorm | W::QNorm | W::KNorm | W::PostAttnNorm | W::PostMlpNorm,
            ) => {
                // Gemma-style checkpoints store w and scale by 1 + w: w = 0 gives a scale of one.
                let fill: f32 = if self.cfg.norm_plus_one { 0.0 } else { 1.0 };
                Tensor::full(fill, shape, device)?
            }
            Weight::Layer(_, W::QBias | W::KBias | W::VBias | W::OBias) => {
                Tensor::zeros(shape, DType::F32, device)?
            }
            _ if device.is_cuda() => Tensor::randn(0f32, WEIGHT_STD, shape, device)?,
            _ => {
                let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed.wrapping_add(index));
                let n: usize = shape.iter().product();
                let values: Vec<f32> = (0..n).map(|_| normal(&mut rng) * WEIGHT_STD).collect();
                Tensor::from_vec(values, shape, device)?
            }
        };
        Ok(t.to_dtype(dtype)?)
    }
}

/// One standard normal draw (Box-Muller).
fn normal(rng: &mut impl Rng) -> f32 {
    let u1: f32 = rng.gen_range(f32::EPSILON..1.0);
    let u2: f32 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ForwardOptions, Logits};

    #[test]
    fn shapes_are_those_of_the_real_models() {
        let l8 = config("synthetic:llama3-8b").unwrap();
        assert_eq!(
            (
                l8.n_layers,
                l8.hidden_size,
                l8.n_heads,
                l8.n_kv_heads,
                l8.head_dim
            ),
            (32, 4096, 32, 8, 128)
        );
        assert_eq!((l8.intermediate_size, l8.vocab_size), (14336, 128256));
        assert!(!l8.tie_word_embeddings && !l8.qk_norm);
        let q = config("synthetic:qwen3-8b").unwrap();
        assert_eq!(
            (q.n_layers, q.intermediate_size, q.vocab_size),
            (36, 12288, 151936)
        );
        assert!(q.qk_norm && !q.qkv_bias);
        assert_eq!(q.rope.theta, 1e6);
        let l70 = config("synthetic:llama3-70b").unwrap();
        assert_eq!((l70.n_layers, l70.hidden_size, l70.n_heads), (80, 8192, 64));
        let s = config("synthetic:smollm2-135m").unwrap();
        assert!(s.tie_word_embeddings);
        assert_eq!((s.n_heads, s.n_kv_heads, s.head_dim), (9, 3, 64));
    }

    #[test]
    fn an_unknown_name_lists_the_known_shapes() {
        let e = config("synthetic:llama3-9b").unwrap_err().to_string();
        assert!(e.contains("`synthetic:llama3-9b`"), "{e}");
        for (name, _) in shapes() {
            assert!(e.contains(&format!("synthetic:{name}")), "{e}");
        }
    }

    #[test]
    fn a_synthetic_spec_resolves_only_with_a_tokenizer() {
        let spec = "synthetic:llama3-8b"
            .parse::<crate::fetch::ModelSpec>()
            .unwrap();
        let e = crate::fetch::resolve(&spec, &crate::fetch::FetchOptions::from_env())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`tokenizer:` field"), "{e}");
    }

    #[test]
    fn the_small_shape_builds_and_decodes_finite_logits() {
        let dev = Device::Cpu;
        let model = build("synthetic:smollm2-135m", DType::F32, &dev, 7).unwrap();
        // Tied embeddings are counted once: 134.5M parameters in f32.
        assert_eq!(model.weight_bytes(), 134_515_008 * 4);
        let mut cache = model.new_cache();
        let out = model
            .forward(&[1, 2, 3, 4], &mut cache, &ForwardOptions::default())
            .unwrap();
        let logits: Vec<f32> = out
            .logits
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(logits.len(), 49152);
        assert!(logits.iter().all(|x| x.is_finite()));
        // Random weights still give distinct logits, not a constant.
        let (lo, hi) = logits
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        assert!(hi - lo > 1e-3, "logits span {lo}..{hi}");
        // The same seed gives the same weights.
        let again = build("synthetic:smollm2-135m", DType::F32, &dev, 7).unwrap();
        let mut c2 = again.new_cache();
        let l2 = again
            .forward(
                &[1, 2, 3, 4],
                &mut c2,
                &ForwardOptions {
                    logits: Logits::Last,
                    ..Default::default()
                },
            )
            .unwrap()
            .logits
            .unwrap();
        let l2: Vec<f32> = l2.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(logits, l2);
    }
}

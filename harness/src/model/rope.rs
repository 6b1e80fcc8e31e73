//! Rotary position embeddings and their scaling variants, as transformers' `modeling_rope_utils`
//! defines them: the inverse frequency of each rotated pair and the factor cos/sin are scaled by.
//!
//! Variants: `default`, `linear` (positions divided by `factor`), `dynamic` (NTK-aware base that
//! grows with the sequence past the original context), `yarn` (per-pair blend of interpolated and
//! extrapolated frequencies plus an attention factor), `llama3` (Llama 3.1's smooth low/high
//! frequency split), and GGUF's per-pair frequency factors (`rope_freqs.weight`, how llama.cpp
//! stores `llama3` scaling). `longrope` and anything else is an error naming the field.

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// How the base frequencies are rescaled.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "rope_type", rename_all = "snake_case")]
pub enum RopeScaling {
    Default,
    Linear {
        factor: f64,
    },
    Dynamic {
        factor: f64,
        original_max_position_embeddings: usize,
    },
    Yarn {
        factor: f64,
        original_max_position_embeddings: usize,
        beta_fast: f64,
        beta_slow: f64,
        attention_factor: f64,
        truncate: bool,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
    /// Divide each pair's frequency by its own factor (GGUF `rope_freqs.weight`).
    FreqFactors {
        factors: Vec<f32>,
    },
}

/// One RoPE: base, how many dimensions rotate, and the scaling.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RopeSpec {
    pub theta: f64,
    /// Leading dimensions of each head that rotate (`head_dim x partial_rotary_factor`); the rest
    /// pass through.
    pub rotary_dim: usize,
    pub scaling: RopeScaling,
}

fn num(obj: &serde_json::Map<String, Value>, key: &str) -> Option<f64> {
    obj.get(key).and_then(Value::as_f64)
}

fn yarn_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

impl RopeSpec {
    pub fn plain(theta: f64, rotary_dim: usize) -> Self {
        Self {
            theta,
            rotary_dim,
            scaling: RopeScaling::Default,
        }
    }

    /// Parse a `rope_scaling` object (classic config) or a `rope_parameters` object
    /// (transformers 5: `rope_type`, `rope_theta` and the scaling fields together). `field` names
    /// where it came from in errors; `max_position_embeddings` is the fallback original context.
    pub fn from_json(
        value: Option<&Value>,
        theta: f64,
        rotary_dim: usize,
        max_position_embeddings: usize,
        source: &str,
        field: &str,
    ) -> Result<Self> {
        let mut spec = Self::plain(theta, rotary_dim);
        let Some(value) = value.filter(|v| !v.is_null()) else {
            return Ok(spec);
        };
        let obj = value
            .as_object()
            .with_context(|| format!("{source}: `{field}` must be an object, got {value}"))?;
        if let Some(t) = num(obj, "rope_theta") {
            spec.theta = t;
        }
        let kind = obj
            .get("rope_type")
            .or_else(|| obj.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let need = |key: &str| {
            num(obj, key).with_context(|| {
                format!("{source}: `{field}.{key}` is required for rope_type `{kind}`")
            })
        };
        let original = || {
            num(obj, "original_max_position_embeddings")
                .map(|v| v as usize)
                .unwrap_or(max_position_embeddings)
        };
        spec.scaling = match kind {
            "default" => RopeScaling::Default,
            "linear" => RopeScaling::Linear {
                factor: need("factor")?,
            },
            "dynamic" => RopeScaling::Dynamic {
                factor: need("factor")?,
                original_max_position_embeddings: original(),
            },
            "yarn" => {
                let factor = need("factor")?;
                let attention_factor = match num(obj, "attention_factor") {
                    Some(a) => a,
                    None => match (num(obj, "mscale"), num(obj, "mscale_all_dim")) {
                        (Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
                            yarn_mscale(factor, m) / yarn_mscale(factor, all)
                        }
                        _ => yarn_mscale(factor, 1.0),
                    },
                };
                RopeScaling::Yarn {
                    factor,
                    original_max_position_embeddings: original(),
                    beta_fast: num(obj, "beta_fast").unwrap_or(32.0),
                    beta_slow: num(obj, "beta_slow").unwrap_or(1.0),
                    attention_factor,
                    truncate: obj.get("truncate").and_then(Value::as_bool).unwrap_or(true),
                }
            }
            "llama3" => RopeScaling::Llama3 {
                factor: need("factor")?,
                low_freq_factor: need("low_freq_factor")?,
                high_freq_factor: need("high_freq_factor")?,
                original_max_position_embeddings: need("original_max_position_embeddings")?
                    as usize,
            },
            "longrope" | "su" => bail!(
                "{source}: `{field}` rope_type `{kind}` (Phi-3 long-context RoPE) is not supported; \
                 use a 4k-context checkpoint or one without `{field}`"
            ),
            other => bail!(
                "{source}: `{field}` rope_type `{other}` is not supported; kvbench implements \
                 default, linear, dynamic, yarn and llama3"
            ),
        };
        Ok(spec)
    }

    /// Unscaled inverse frequencies `theta^(-2i/dim)`, computed in f32 as torch does.
    fn base_inv_freq(theta: f64, dim: usize) -> Vec<f64> {
        (0..dim / 2)
            .map(|i| {
                let exp = (2 * i) as f32 / dim as f32;
                1.0 / (theta as f32).powf(exp) as f64
            })
            .collect()
    }

    /// Inverse frequency of each rotated pair, `[rotary_dim / 2]`. `seq_len` (the largest position
    /// + 1 of the forward pass) matters only to `dynamic`.
    pub fn inv_freq(&self, seq_len: usize) -> Vec<f32> {
        let dim = self.rotary_dim;
        let base = Self::base_inv_freq(self.theta, dim);
        let out: Vec<f64> = match &self.scaling {
            RopeScaling::Default => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::Dynamic {
                factor,
                original_max_position_embeddings: orig,
            } => {
                if seq_len <= *orig {
                    base
                } else {
                    let d = dim as f64;
                    let theta = self.theta
                        * ((factor * seq_len as f64 / *orig as f64) - (factor - 1.0))
                            .powf(d / (d - 2.0));
                    Self::base_inv_freq(theta, dim)
                }
            }
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: orig,
                beta_fast,
                beta_slow,
                truncate,
                ..
            } => {
                let d = dim as f64;
                let corr = |rot: f64| {
                    d * (*orig as f64 / (rot * 2.0 * std::f64::consts::PI)).ln()
                        / (2.0 * self.theta.ln())
                };
                let (mut low, mut high) = (corr(*beta_fast), corr(*beta_slow));
                if *truncate {
                    (low, high) = (low.floor(), high.ceil());
                }
                let (low, mut high) = (low.max(0.0), high.min(d - 1.0));
                if low == high {
                    high += 0.001;
                }
                base.iter()
                    .enumerate()
                    .map(|(i, &extra)| {
                        let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                        let extrapolation = 1.0 - ramp;
                        let inter = extra / factor;
                        inter * (1.0 - extrapolation) + extra * extrapolation
                    })
                    .collect()
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: orig,
            } => {
                let old = *orig as f64;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
            RopeScaling::FreqFactors { factors } => base
                .iter()
                .zip(factors)
                .map(|(f, &s)| f / s as f64)
                .collect(),
        };
        out.into_iter().map(|f| f as f32).collect()
    }

    /// Factor cos and sin are multiplied by (yarn's attention temperature; 1 otherwise).
    pub fn attention_factor(&self) -> f64 {
        match &self.scaling {
            RopeScaling::Yarn {
                attention_factor, ..
            } => *attention_factor,
            _ => 1.0,
        }
    }

    /// Whether the frequencies depend on the sequence length (recomputed per forward pass).
    pub fn is_dynamic(&self) -> bool {
        matches!(self.scaling, RopeScaling::Dynamic { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<RopeSpec> {
        RopeSpec::from_json(Some(&v), 10_000.0, 16, 4096, "config.json", "rope_scaling")
    }

    #[test]
    fn linear_divides_every_frequency() {
        let plain = RopeSpec::plain(10_000.0, 16).inv_freq(1);
        let lin = parse(json!({"rope_type": "linear", "factor": 8.0})).unwrap();
        for (a, b) in plain.iter().zip(lin.inv_freq(1)) {
            assert!((a / 8.0 - b).abs() <= 1e-7 * a.abs());
        }
    }

    #[test]
    fn dynamic_only_acts_past_the_original_context() {
        let s = parse(
            json!({"type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 100}),
        )
        .unwrap();
        assert_eq!(s.inv_freq(100), RopeSpec::plain(10_000.0, 16).inv_freq(1));
        // base' = base * (2 * 400 / 100 - 1)^(16 / 14): every non-constant frequency is lower.
        let grown = s.inv_freq(400);
        let expect = RopeSpec::plain(10_000.0 * 7f64.powf(16.0 / 14.0), 16).inv_freq(1);
        assert_eq!(grown, expect);
        assert!(grown[1] < s.inv_freq(1)[1]);
    }

    #[test]
    fn llama3_keeps_high_frequencies_and_divides_low_ones() {
        let s = parse(
            json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 32}),
        )
        .unwrap();
        let base = RopeSpec::plain(10_000.0, 16).inv_freq(1);
        let got = s.inv_freq(1);
        // Pair 0 has wavelength 2 pi < 32 / 4: unchanged. The last pair's wavelength is far over 32.
        assert_eq!(got[0], base[0]);
        assert!((got[7] - base[7] / 8.0).abs() < 1e-9);
    }

    #[test]
    fn yarn_default_attention_factor() {
        let s = parse(
            json!({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}),
        )
        .unwrap();
        assert!((s.attention_factor() - (0.1 * 4f64.ln() + 1.0)).abs() < 1e-12);
        let base = RopeSpec::plain(10_000.0, 16).inv_freq(1);
        let got = s.inv_freq(1);
        // Highest frequencies extrapolate (unchanged), lowest interpolate (divided by factor).
        assert_eq!(got[0], base[0]);
        assert!((got[7] - base[7] / 4.0).abs() < 1e-9);
    }

    #[test]
    fn gguf_frequency_factors_divide_each_pair() {
        let s = RopeSpec {
            theta: 10_000.0,
            rotary_dim: 4,
            scaling: RopeScaling::FreqFactors {
                factors: vec![1.0, 8.0],
            },
        };
        let base = RopeSpec::plain(10_000.0, 4).inv_freq(1);
        assert_eq!(s.inv_freq(1), vec![base[0], base[1] / 8.0]);
    }

    #[test]
    fn unsupported_types_name_the_field() {
        let e = parse(json!({"rope_type": "longrope", "short_factor": [1.0]})).unwrap_err();
        assert!(e.to_string().contains("rope_scaling") && e.to_string().contains("longrope"));
        let e = parse(json!({"rope_type": "mystery"})).unwrap_err();
        assert!(e.to_string().contains("mystery") && e.to_string().contains("yarn"));
        let e = parse(json!({"rope_type": "linear"})).unwrap_err();
        assert!(e.to_string().contains("rope_scaling.factor"), "{e}");
    }
}

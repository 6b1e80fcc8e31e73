//! `quant`: per-token quantization of keys and values with a full-precision residual, the scheme
//! of Hugging Face transformers' `QuantizedCache`.
//!
//! Reference: transformers' `QuantizedCache` / `QuantizedCacheConfig` (quanto backend by default),
//! <https://huggingface.co/docs/transformers/kv_cache#quantized-cache>, itself following KIVI
//! (<https://arxiv.org/abs/2402.02750>) but quantizing keys per token too. Every entry present
//! after the prefill is quantized, keys and values alike, in groups of `group` consecutive channels
//! of one entry (asymmetric: scale and zero point per group, both f16). Generated entries
//! accumulate in full precision and are quantized together once `residual` of them have arrived
//! (`ResidualRule::Accumulate`).
//!
//! Defaults: `bits = 4`, `group = 64`, `residual = 128`, asymmetric: `QuantizedCacheConfig`'s
//! `nbits`, `q_group_size`, `residual_length` and quanto's affine (scale + shift) int4.
//! `symmetric: true` stores scales only (codes centred on 2^(bits-1)), a kvbench option.
//!
//! Deviation: when the residual fills up, transformers re-quantizes the whole cache (the
//! dequantized old part plus the residual); here only the residual's entries are quantized and
//! appended. With per-token groups the old entries' groups are unchanged and already on their
//! grid, so re-quantizing them would reproduce them up to float rounding.

use serde::{Deserialize, Serialize};

use crate::describe::{Conformance, Describe, Description, Expect, Param, Rows};
use crate::params::check_positive;
use crate::storage::{QuantAxis, QuantScheme, Quantized, ResidualRule};
use crate::{Budget, KvCache, Method, MethodError, Observations, ParamError, Storage, Stored};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Quant {
    /// Bits per stored value: 2, 4 or 8.
    #[serde(default = "default_bits")]
    pub bits: u32,
    /// Consecutive channels of one entry sharing a scale (must divide head_dim).
    #[serde(default = "default_group")]
    pub group: usize,
    /// Generated entries kept in full precision until this many have accumulated.
    #[serde(default = "default_residual")]
    pub residual: usize,
    /// Scale only, no zero point.
    #[serde(default)]
    pub symmetric: bool,
}

fn default_bits() -> u32 {
    4
}
fn default_group() -> usize {
    64
}
fn default_residual() -> usize {
    128
}

impl Default for Quant {
    fn default() -> Self {
        Self {
            bits: default_bits(),
            group: default_group(),
            residual: default_residual(),
            symmetric: false,
        }
    }
}

impl Quant {
    /// The scheme of keys and values alike.
    pub fn scheme(&self) -> QuantScheme {
        QuantScheme {
            bits: self.bits,
            group: self.group,
            axis: QuantAxis::PerToken,
            symmetric: self.symmetric,
            residual: self.residual,
            rule: ResidualRule::Accumulate,
        }
    }
}

/// Whether codes of `bits` bits and groups of `group` channels fit entries of `head_dim` channels,
/// as an error naming the field: `bits` when a head's codes do not fill whole bytes, `group` when
/// it does not divide `head_dim` (for per-token groups).
pub(crate) fn check_scheme_shape(
    method: &'static str,
    bits: u32,
    group: usize,
    per_token: bool,
    head_dim: usize,
) -> Result<(), ParamError> {
    if !(head_dim * bits as usize).is_multiple_of(8) {
        return Err(ParamError::new(
            method,
            "bits",
            format!("({bits}): head_dim {head_dim} does not pack into bytes at {bits} bits"),
        ));
    }
    if per_token && group > 0 && !head_dim.is_multiple_of(group) {
        return Err(ParamError::new(
            method,
            "group",
            format!(
                "({group}) must divide head_dim ({head_dim}) for per-token quantization; \
                 use a divisor of {head_dim}"
            ),
        ));
    }
    Ok(())
}

/// Check `schemes` against the cache's `head_dim`, as configuration errors of `method`.
pub(crate) fn check_schemes(
    method: &'static str,
    schemes: &[QuantScheme],
    head_dim: usize,
) -> Result<(), MethodError> {
    for s in schemes {
        s.check(head_dim)
            .map_err(|message| MethodError::Config { method, message })?;
    }
    Ok(())
}

/// Re-encode every stored group of every layer: keys with `k`, values with `v`. Layers that share
/// another's cache (KVSharer) store nothing and are left alone.
pub(crate) fn quantize_cache(
    cache: &mut KvCache,
    k: QuantScheme,
    v: QuantScheme,
) -> Result<(), MethodError> {
    for l in 0..cache.n_layers() {
        if cache.shared_source(l).is_some() {
            continue;
        }
        cache.layer_mut(l).restore(|g| {
            if g.is_empty() {
                return Ok(g.storage.clone());
            }
            let (keys, values) = g.storage.keys_values()?;
            crate::profile::phase("quantize", &keys.device().clone(), || {
                Ok(Storage {
                    k: Stored::Quantized(Quantized::encode(&keys, k)?),
                    v: Stored::Quantized(Quantized::encode(&values, v)?),
                })
            })
        })?;
    }
    Ok(())
}

impl Method for Quant {
    fn name(&self) -> &str {
        "quant"
    }
    fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn uses_budget(&self) -> bool {
        false
    }
    fn validate(&self) -> Result<(), ParamError> {
        if !matches!(self.bits, 2 | 4 | 8) {
            return Err(ParamError::new(
                "quant",
                "bits",
                format!("must be 2, 4 or 8, got {}", self.bits),
            ));
        }
        check_positive(
            "quant",
            "group",
            self.group,
            "consecutive channels sharing a scale",
        )
    }
    fn check_model_shape(
        &self,
        _n_layers: usize,
        _n_kv_heads: usize,
        head_dim: usize,
    ) -> Result<(), ParamError> {
        check_scheme_shape("quant", self.bits, self.group, true, head_dim)
    }
    fn compress(
        &self,
        cache: &mut KvCache,
        _obs: &Observations,
        _budget: &Budget,
    ) -> Result<(), MethodError> {
        self.validate()?;
        self.check_model_shape(cache.n_layers(), 0, cache.head_dim())?;
        let s = self.scheme();
        check_schemes("quant", &[s], cache.head_dim())?;
        quantize_cache(cache, s, s)
    }
}

impl Describe for Quant {
    const DESCRIPTION: Description = Description {
        family: "quantization",
        summary: "Per-token quantization of keys and values in channel groups, generated entries quantized once `residual` accumulate (Hugging Face QuantizedCache; runs once).",
        paper: "https://huggingface.co/docs/transformers/kv_cache#quantized-cache",
        params: &[
            Param::new("bits", "integer", "bits per stored key and value: 2, 4 or 8"),
            Param::new("group", "integer", "consecutive channels of one entry sharing a scale (divides head_dim)"),
            Param::new("residual", "integer", "generated entries kept full precision until this many accumulate"),
            Param::new("symmetric", "boolean", "scale only (codes centred), no zero point"),
        ],
    };

    fn conformance() -> Conformance {
        // Groups that fit the test's head_dim; a residual the decode steps fill up.
        Conformance::expect(Expect::Unchanged)
            .with_rows(Rows::Quantized { bits: "bits" })
            .with_params(serde_json::json!({"group": 4, "residual": 3}))
            .with_specs([serde_json::json!({"method": "quant", "bits": 8, "group": 8, "residual": 2, "symmetric": true})])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::cache_with_keys;
    use candle_core::{DType, Device, Tensor};

    /// `len` entries of `heads` heads, `d` channels, spread over [-2, 2].
    fn keys(heads: usize, len: usize, d: usize) -> Vec<Vec<Vec<f32>>> {
        (0..heads)
            .map(|h| {
                (0..len)
                    .map(|t| {
                        (0..d)
                            .map(|c| (((h * 31 + t * 7 + c * 13) % 17) as f32 - 8.0) / 4.0)
                            .collect()
                    })
                    .collect()
            })
            .collect()
    }

    fn max_err(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn quantizes_everything_then_accumulates_generated_entries() {
        let (heads, len, d) = (2, 10, 8);
        let mut cache = cache_with_keys(&keys(heads, len, d));
        let (k0, _) = cache.layer(0).dense().unwrap();
        let m = Quant {
            bits: 4,
            group: 4,
            residual: 3,
            symmetric: false,
        };
        m.compress(&mut cache, &Observations::default(), &Budget::Tokens(1))
            .unwrap();
        // Everything quantized: 2 x 10 x 8 / 2 code bytes, 2 x 10 x 2 groups x (scale + zero) x 2
        // bytes, for keys and values.
        assert_eq!(cache.bytes(), 2 * (80 + 160));
        assert_eq!(cache.bytes(), 2 * m.scheme().bytes_for(heads, len, d, 4));
        let g = &cache.layer(0).groups()[0];
        let (k, v) = g.storage.keys_values().unwrap();
        // Values span 4 per group at most: half a 4-bit step is 2 / 15.
        assert!(max_err(&k, &k0) <= 2.0 / 15.0 + 1e-3);
        assert!(max_err(&v, &k0) <= 2.0 / 15.0 + 1e-3);
        assert!(max_err(&k, &k0) > 0.0);
        // Two generated entries wait in full precision; the third quantizes all three.
        let new = Tensor::ones((heads, 1, d), DType::F32, &Device::Cpu).unwrap();
        for p in [10, 11] {
            cache.layer_mut(0).append(&new, &new, &[p]).unwrap();
        }
        let residual = |c: &KvCache| match &c.layer(0).groups()[0].storage.k {
            Stored::Quantized(q) => (q.quantized_len(), q.residual_len()),
            other => panic!("{}", other.kind()),
        };
        assert_eq!(residual(&cache), (10, 2));
        assert_eq!(
            cache.bytes(),
            2 * (m.scheme().bytes_for(heads, len, d, 4) + heads * 2 * d * 4)
        );
        cache.layer_mut(0).append(&new, &new, &[12]).unwrap();
        assert_eq!(residual(&cache), (13, 0));
        assert_eq!(cache.bytes(), 2 * m.scheme().bytes_for(heads, 13, d, 4));
        // A constant entry is on the grid: it reads back exactly.
        let (k, _) = cache.layer(0).dense().unwrap();
        assert_eq!(
            max_err(
                &k.narrow(1, 10, 3).unwrap(),
                &new.repeat((1, 3, 1)).unwrap()
            ),
            0.0
        );
    }

    #[test]
    fn parameters_that_do_not_fit_are_configuration_errors() {
        let mut cache = cache_with_keys(&keys(1, 8, 8));
        for (m, field) in [
            (
                Quant {
                    bits: 3,
                    ..Default::default()
                },
                "bits",
            ),
            (Quant::default(), "group (64) must divide head_dim (8)"),
            (
                Quant {
                    group: 0,
                    ..Default::default()
                },
                "group",
            ),
        ] {
            let err = m
                .compress(&mut cache, &Observations::default(), &Budget::Tokens(1))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("quant: ") && err.contains(field), "{err}");
        }
        assert!(cache.layer(0).groups()[0].storage.is_dense());
    }
}

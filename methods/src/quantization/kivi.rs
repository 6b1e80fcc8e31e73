//! `kivi`: asymmetric low-bit quantization, keys per channel and values per token, the most recent
//! entries kept in full precision.
//!
//! Paper: Liu et al., "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache", ICML 2024,
//! <https://arxiv.org/abs/2402.02750>. Keys have outlier channels, so each channel is quantized
//! over groups of `group` consecutive entries; values are quantized per entry, in groups of
//! `group` consecutive channels. Both asymmetric (zero point = group minimum). Keys are quantized
//! `residual` entries at a time: at prefill the longest multiple of `residual`, later each time
//! `residual` new keys have accumulated (`ResidualRule::Blocks`). Values keep the `residual` most
//! recent entries in full precision and quantize each older one as it leaves that window
//! (`ResidualRule::Sliding`).
//!
//! Defaults: `bits = 2` (KIVI-2, the paper's headline setting and the reference code's `k_bits`
//! / `v_bits` default; 4 gives KIVI-4), `group = 32`, `residual = 128`: the paper's main setting
//! (G = 32, R = 128), also the reference repository's LongBench setting (`docs/long_bench.md`).
//! They are not the reference code's argument defaults: jy-yuan/KIVI's `utils/process_args.py`
//! defaults to `group_size = 128`, `residual_length = 128`, and its `example.py` and
//! `long_context_example.py` use `group_size = 32`, `residual_length = 32`. Scales and zero
//! points are f16, as in the reference code.
//!
//! Deviations: the reference multiplies queries with the packed codes in fused kernels; here
//! attention reads dequantized blocks, which gives the same values. Scales are rounded up to f16
//! rather than to nearest, so no value leaves its group's range. Appends of several entries at
//! once (not in the reference, which appends one token per step) quantize every whole block of
//! keys and keep exactly `residual` values. The prefill itself attends in full precision, as in
//! the reference. Composed after an eviction method (`[snapkv, kivi]`), the kept entries are
//! quantized.

use serde::{Deserialize, Serialize};

use crate::describe::{Conformance, Describe, Description, Expect, Param, Rows};
use crate::params::check_positive;
use crate::quantization::quant::{check_scheme_shape, check_schemes, quantize_cache};
use crate::storage::{QuantAxis, QuantScheme, ResidualRule};
use crate::{Budget, KvCache, Method, MethodError, Observations, ParamError};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Kivi {
    /// Bits per stored key and value: 2 or 4.
    #[serde(default = "default_bits")]
    pub bits: u32,
    /// Entries per key group (per channel) and channels per value group (per token).
    #[serde(default = "default_group")]
    pub group: usize,
    /// Recent entries kept in full precision (values), block size of key quantization.
    #[serde(default = "default_residual")]
    pub residual: usize,
}

fn default_bits() -> u32 {
    2
}
fn default_group() -> usize {
    32
}
fn default_residual() -> usize {
    128
}

impl Default for Kivi {
    fn default() -> Self {
        Self {
            bits: default_bits(),
            group: default_group(),
            residual: default_residual(),
        }
    }
}

impl Kivi {
    pub fn key_scheme(&self) -> QuantScheme {
        QuantScheme {
            bits: self.bits,
            group: self.group,
            axis: QuantAxis::PerChannel,
            symmetric: false,
            residual: self.residual,
            rule: ResidualRule::Blocks,
        }
    }

    pub fn value_scheme(&self) -> QuantScheme {
        QuantScheme {
            axis: QuantAxis::PerToken,
            rule: ResidualRule::Sliding,
            ..self.key_scheme()
        }
    }

    fn check(&self, head_dim: usize) -> Result<(), MethodError> {
        self.validate()?;
        self.check_model_shape(0, 0, head_dim)?;
        check_schemes("kivi", &[self.key_scheme(), self.value_scheme()], head_dim)
    }
}

impl Method for Kivi {
    fn name(&self) -> &str {
        "kivi"
    }
    fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn uses_budget(&self) -> bool {
        false
    }
    fn validate(&self) -> Result<(), ParamError> {
        if !matches!(self.bits, 2 | 4) {
            return Err(ParamError::new(
                "kivi",
                "bits",
                format!("must be 2 or 4 (KIVI-2 or KIVI-4), got {}", self.bits),
            ));
        }
        check_positive(
            "kivi",
            "group",
            self.group,
            "entries per key group, channels per value group",
        )?;
        if self.residual == 0 || !self.residual.is_multiple_of(self.group) {
            return Err(ParamError::new(
                "kivi",
                "residual",
                format!(
                    "({}) must be a positive multiple of group ({}): keys are quantized per \
                     channel, residual entries at a time",
                    self.residual, self.group
                ),
            ));
        }
        Ok(())
    }
    fn check_model_shape(
        &self,
        _n_layers: usize,
        _n_kv_heads: usize,
        head_dim: usize,
    ) -> Result<(), ParamError> {
        // Values are quantized per token, in groups of `group` channels.
        check_scheme_shape("kivi", self.bits, self.group, true, head_dim)
    }
    fn compress(
        &self,
        cache: &mut KvCache,
        _obs: &Observations,
        _budget: &Budget,
    ) -> Result<(), MethodError> {
        self.check(cache.head_dim())?;
        quantize_cache(cache, self.key_scheme(), self.value_scheme())
    }
}

impl Describe for Kivi {
    const DESCRIPTION: Description = Description {
        family: "quantization",
        summary: "Asymmetric low-bit quantization, keys per channel and values per token; the most recent entries stay full precision (runs once).",
        paper: "https://arxiv.org/abs/2402.02750",
        params: &[
            Param::new("bits", "integer", "bits per stored key and value: 2 or 4"),
            Param::new("group", "integer", "entries per key group (per channel), channels per value group (per token)"),
            Param::new("residual", "integer", "recent values kept full precision; keys are quantized this many at a time (a multiple of group)"),
        ],
    };

    fn conformance() -> Conformance {
        // Groups that fit the test's head_dim; a residual the decode steps fill up.
        Conformance::expect(Expect::Unchanged)
            .with_rows(Rows::Quantized { bits: "bits" })
            .with_params(serde_json::json!({"group": 4, "residual": 16}))
            .with_specs([
                serde_json::json!({"method": "kivi", "bits": 4, "group": 8, "residual": 8}),
            ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::composed::Composed;
    use crate::selection::snapkv::SnapKv;
    use crate::testing::{cache_with_keys, keep_of, one_hot_cache};
    use crate::{MethodConfig, Stored};
    use candle_core::{DType, Device, Tensor};

    fn small() -> Kivi {
        Kivi {
            bits: 2,
            group: 4,
            residual: 8,
        }
    }

    /// (quantized, residual) entries of the keys and of the values of layer 0, group 0.
    fn parts(cache: &KvCache) -> ((usize, usize), (usize, usize)) {
        let s = &cache.layer(0).groups()[0].storage;
        let split = |x: &Stored| match x {
            Stored::Quantized(q) => (q.quantized_len(), q.residual_len()),
            other => panic!("{}", other.kind()),
        };
        (split(&s.k), split(&s.v))
    }

    #[test]
    fn keys_in_blocks_values_in_a_sliding_window() {
        let (heads, len, d) = (2, 21, 8);
        let keys: Vec<Vec<Vec<f32>>> = (0..heads)
            .map(|h| {
                (0..len)
                    .map(|t| {
                        (0..d)
                            .map(|c| ((h + t * 3 + c * 5) % 11) as f32 * 0.25)
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let mut cache = cache_with_keys(&keys);
        let (original, _) = cache.layer(0).dense().unwrap();
        let m = small();
        m.compress(&mut cache, &Observations::default(), &Budget::Tokens(1))
            .unwrap();
        // Keys: 16 quantized (two blocks of 8), 5 in full precision; values: the last 8 in full
        // precision.
        assert_eq!(parts(&cache), ((16, 5), (13, 8)));
        let (ks, vs) = (m.key_scheme(), m.value_scheme());
        assert_eq!(
            cache.bytes(),
            ks.bytes_for(heads, len, d, 4) + vs.bytes_for(heads, len, d, 4)
        );
        // Values span 2.5 at most per group: half a 2-bit step is 2.5 / 6.
        let (k, v) = cache.layer(0).dense().unwrap();
        for x in [&k, &v] {
            let err: f32 = (x - &original)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(err > 0.0 && err <= 2.5 / 6.0 + 1e-3, "{err}");
        }
        // Three generated entries: the key residual reaches 8 and is quantized; three more values
        // leave the window.
        let new = Tensor::ones((heads, 1, d), DType::F32, &Device::Cpu).unwrap();
        for p in 21..24 {
            cache.layer_mut(0).append(&new, &new, &[p]).unwrap();
        }
        assert_eq!(parts(&cache), ((24, 0), (16, 8)));
        assert_eq!(
            cache.bytes(),
            ks.quantized_bytes(heads, 24, d) + vs.quantized_bytes(heads, 16, d) + heads * 8 * d * 4
        );
    }

    #[test]
    fn composes_after_snapkv_on_the_kept_entries() {
        let snap = SnapKv {
            window: 2,
            kernel: 1,
            ..Default::default()
        };
        let (mut alone, obs) = one_hot_cache(32, 2, &[(3, 8.0), (20, 6.0)]);
        let mut composed = alone.fork();
        crate::Method::compress(&snap, &mut alone, &obs, &Budget::CompressionRatio(0.5)).unwrap();
        let m = Composed::new(&[MethodConfig::Snapkv(snap), MethodConfig::Kivi(small())]);
        assert_eq!(m.name(), "snapkv+kivi");
        assert!(m.uses_budget());
        m.compress(&mut composed, &obs, &Budget::CompressionRatio(0.5))
            .unwrap();
        // Halved by snapkv, then quantized: the same entries, kivi's size for 16 entries.
        assert_eq!(composed.entries(), 16);
        assert_eq!(keep_of(&composed, 0), keep_of(&alone, 0));
        assert_eq!(parts(&composed), ((16, 0), (8, 8)));
        let k = small();
        let want =
            k.key_scheme().bytes_for(1, 16, 32, 4) + k.value_scheme().bytes_for(1, 16, 32, 4);
        // By hand: keys 16 x 32 x 2 / 8 = 128 code bytes + 4 groups x 32 channels x 4 bytes; values
        // 8 x 32 / 4 = 64 code bytes + 8 x 8 groups x 4 bytes, and 8 x 32 f32 residual.
        assert_eq!(want, 128 + 512 + 64 + 256 + 1024);
        assert_eq!(composed.bytes(), want);
        assert!(composed.bytes() < alone.bytes());
    }

    #[test]
    fn parameters_that_do_not_fit_are_configuration_errors() {
        let mut cache = cache_with_keys(&[vec![vec![0.5; 8]; 16]]);
        for (m, field) in [
            (Kivi { bits: 8, ..small() }, "bits must be 2 or 4"),
            (
                Kivi {
                    residual: 6,
                    ..small()
                },
                "residual (6) must be a positive multiple of group (4)",
            ),
            (Kivi::default(), "group (32) must divide head_dim (8)"),
        ] {
            let err = m
                .compress(&mut cache, &Observations::default(), &Budget::Tokens(1))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("kivi: ") && err.contains(field), "{err}");
        }
        assert!(cache.layer(0).groups()[0].storage.is_dense());
    }
}

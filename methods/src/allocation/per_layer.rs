//! `per_layer`: an explicit compression ratio for every layer, written in the experiment; a scorer
//! (SnapKV by default) picks the entries within each layer.
//!
//! No paper: kvpress's `PerLayerCompressionPress` is the reference. Layer `l` keeps
//! `floor(len x (1 - ratios[l]))` entries per KV head. The budget axis does not apply (the ratios
//! are the budget), so the method runs once per experiment; the recorded achieved ratio is the mean
//! of the layers' ratios, as kvpress reports it. `ratios` is required and must list one value in
//! `[0, 1)` per layer of the model. Scorer default: `snapkv` with its defaults (kvpress takes any
//! `ScorerPress` and has no default).

use serde::{Deserialize, Deserializer, Serialize};

use crate::describe::{Describe, Description, Param};
use crate::registry::ScorerConfig;
use crate::selection::select::{evict_with, TopK};
use crate::{Budget, KvCache, Method, MethodError, ObservationNeeds, Observations};

/// `Default` (no ratios) only fills the documented defaults; `ratios` is required in YAML.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PerLayer {
    /// Fraction of entries removed in each layer, one per layer, each in [0, 1).
    #[serde(deserialize_with = "ratios_in_range")]
    pub ratios: Vec<f64>,
    /// Scorer choosing the entries within each layer.
    #[serde(default)]
    pub scorer: ScorerConfig,
}

fn ratios_in_range<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    let ratios = Vec::<f64>::deserialize(d)?;
    if ratios.is_empty() {
        return Err(serde::de::Error::custom(
            "`ratios` is empty; give one compression ratio per layer",
        ));
    }
    if let Some(r) = ratios.iter().find(|r| !(0.0..1.0).contains(*r)) {
        return Err(serde::de::Error::custom(format!(
            "ratio {r} in `ratios` is outside [0, 1)"
        )));
    }
    Ok(ratios)
}

impl Method for PerLayer {
    fn name(&self) -> &str {
        "per_layer"
    }
    fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn uses_budget(&self) -> bool {
        false
    }
    fn needs(&self) -> ObservationNeeds {
        self.scorer.scorer().observation_needs()
    }
    fn validate(&self) -> Result<(), crate::ParamError> {
        if self.ratios.is_empty() {
            return Err(crate::ParamError::new(
                "per_layer",
                "ratios",
                "is empty; give one compression ratio per layer, each in [0, 1)",
            ));
        }
        for (l, &r) in self.ratios.iter().enumerate() {
            crate::params::check_range(
                "per_layer",
                &format!("ratios[{l}]"),
                r,
                0.0,
                1.0,
                false,
                "fraction of the layer's entries removed",
            )?;
        }
        self.scorer.validate_within("per_layer", "scorer")
    }
    fn check_model_shape(
        &self,
        n_layers: usize,
        _n_kv_heads: usize,
        _head_dim: usize,
    ) -> Result<(), crate::ParamError> {
        if self.ratios.len() != n_layers {
            return Err(crate::ParamError::new(
                "per_layer",
                "ratios",
                format!(
                    "has {} ratios for a model of {n_layers} layers; give exactly {n_layers}",
                    self.ratios.len()
                ),
            ));
        }
        Ok(())
    }
    fn compress(
        &self,
        cache: &mut KvCache,
        obs: &Observations,
        _budget: &Budget,
    ) -> Result<(), MethodError> {
        self.validate()?;
        self.check_model_shape(cache.n_layers(), 0, cache.head_dim())?;
        let mut allocator = |l: usize, _: usize, lens: &[usize]| -> Vec<usize> {
            let budget = Budget::CompressionRatio(self.ratios[l]);
            lens.iter().map(|&len| budget.kept(len)).collect()
        };
        evict_with(cache, obs, self.scorer.scorer(), &mut allocator, &mut TopK)
    }
}

impl Describe for PerLayer {
    const DESCRIPTION: Description = Description {
        family: "allocator",
        summary: "Explicit compression ratio per layer (the ratios are the budget; runs once).",
        paper: "",
        params: &[
            Param::required(
                "ratios",
                "list of numbers",
                "fraction removed in each layer, one per layer, each in [0, 1)",
            ),
            Param::new("scorer", "scorer", "scorer ranking the entries"),
        ],
    };

    fn conformance() -> crate::describe::Conformance {
        crate::describe::Conformance::expect(crate::describe::Expect::Ratios(vec![0.1, 0.5, 0.9]))
            .with_params(serde_json::json!({"ratios": [0.1, 0.5, 0.9]}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::knorm::Knorm;
    use crate::testing::keep_of;
    use candle_core::{DType, Device, Tensor};

    #[test]
    fn each_layer_gets_its_own_ratio() {
        let dev = Device::Cpu;
        let mut cache = KvCache::new(2, 1, 1, DType::F32, &dev);
        // Key norms decrease with the index: knorm keeps the last entries.
        let k = Tensor::arange(0f32, 8.0, &dev)
            .unwrap()
            .affine(-1.0, 10.0)
            .unwrap()
            .reshape((1, 8, 1))
            .unwrap();
        for l in 0..2 {
            cache
                .layer_mut(l)
                .append(&k, &k, &(0..8).collect::<Vec<u32>>())
                .unwrap();
        }
        cache.advance(8);
        let m = PerLayer {
            ratios: vec![0.25, 0.75],
            scorer: ScorerConfig::Knorm(Knorm::default()),
        };
        m.compress(
            &mut cache,
            &Observations::default(),
            &Budget::CompressionRatio(0.0),
        )
        .unwrap();
        assert_eq!(keep_of(&cache, 0), vec![(2..8).collect::<Vec<u32>>()]);
        assert_eq!(keep_of(&cache, 1), vec![vec![6, 7]]);
        let bad = PerLayer {
            ratios: vec![0.5],
            scorer: ScorerConfig::default(),
        };
        assert!(bad
            .compress(
                &mut cache,
                &Observations::default(),
                &Budget::CompressionRatio(0.0)
            )
            .is_err());
    }

    #[test]
    fn ratios_are_validated_when_parsed() {
        let err = serde_json::from_str::<PerLayer>(r#"{"ratios":[0.5,1.0]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("outside [0, 1)"), "{err}");
        assert!(serde_json::from_str::<PerLayer>(r#"{}"#).is_err());
    }
}

//! Composition `[A, B, ...]`: A compresses, then B compresses what A kept, and so on.
//!
//! kvpress's `ComposedPress` is the reference: each part gets the run's budget, so with
//! compression ratios the achieved ratio is `1 - prod(1 - r_i)` (the parts' kept fractions
//! multiply); a `tokens` budget is reached by the first part that applies it. Unlike kvpress,
//! attention-based parts work after an earlier eviction: window attention is computed over the
//! entries still stored, and accumulated attention is looked up by original position. Decode hooks
//! run in the same order. Recorded as `method: a+b`, `method_params` the list of the parts' configs.

use crate::{
    Budget, KvCache, Method, MethodConfig, MethodError, ObservationNeeds, Observations, ParamError,
    Session,
};

pub struct Composed {
    parts: Vec<Box<dyn Method>>,
    configs: Vec<MethodConfig>,
    /// The parts' names joined by `+`, built once with the composition.
    name: String,
}

impl Composed {
    pub fn new(configs: &[MethodConfig]) -> Self {
        let parts: Vec<Box<dyn Method>> = configs.iter().map(|c| c.build()).collect();
        let name = parts.iter().map(|p| p.name()).collect::<Vec<_>>().join("+");
        Self {
            parts,
            configs: configs.to_vec(),
            name,
        }
    }
}

impl Method for Composed {
    fn name(&self) -> &str {
        &self.name
    }
    fn params(&self) -> serde_json::Value {
        serde_json::to_value(&self.configs).unwrap_or_default()
    }
    fn uses_budget(&self) -> bool {
        self.parts.iter().any(|p| p.uses_budget())
    }
    fn validate(&self) -> Result<(), ParamError> {
        self.parts.iter().try_for_each(|p| p.validate())
    }
    fn check_model_shape(
        &self,
        n_layers: usize,
        n_kv_heads: usize,
        head_dim: usize,
    ) -> Result<(), ParamError> {
        self.parts
            .iter()
            .try_for_each(|p| p.check_model_shape(n_layers, n_kv_heads, head_dim))
    }
    fn needs(&self) -> ObservationNeeds {
        self.parts
            .iter()
            .fold(ObservationNeeds::default(), |a, p| a.union(p.needs()))
    }
    fn decode_needs(&self) -> ObservationNeeds {
        self.parts.iter().fold(ObservationNeeds::default(), |a, p| {
            a.union(p.decode_needs())
        })
    }
    /// A one-shot request: a fresh session's prefill.
    fn compress(
        &self,
        cache: &mut KvCache,
        obs: &Observations,
        budget: &Budget,
    ) -> Result<(), MethodError> {
        self.session().on_prefill(cache, obs, budget)
    }
    fn session(&self) -> Box<dyn Session + '_> {
        Box::new(ComposedSession {
            parts: self.parts.iter().map(|p| p.session()).collect(),
        })
    }
}

/// One request of a composition: one session per part, hooks run in the parts' order.
struct ComposedSession<'a> {
    parts: Vec<Box<dyn Session + 'a>>,
}

impl Session for ComposedSession<'_> {
    fn on_prefill(
        &mut self,
        cache: &mut KvCache,
        obs: &Observations,
        budget: &Budget,
    ) -> Result<(), MethodError> {
        self.parts
            .iter_mut()
            .try_for_each(|p| p.on_prefill(cache, obs, budget))
    }
    fn on_decode(
        &mut self,
        cache: &mut KvCache,
        step: usize,
        obs: &Observations,
        budget: &Budget,
    ) -> Result<(), MethodError> {
        self.parts
            .iter_mut()
            .try_for_each(|p| p.on_decode(cache, step, obs, budget))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::knorm::Knorm;
    use crate::selection::snapkv::SnapKv;
    use crate::testing::one_hot_cache;

    #[test]
    fn applies_parts_in_order_and_multiplies_kept_fractions() {
        let m = Composed::new(&[
            MethodConfig::Snapkv(SnapKv {
                window: 2,
                kernel: 1,
                ..Default::default()
            }),
            MethodConfig::Knorm(Knorm::default()),
        ]);
        assert_eq!(m.name(), "snapkv+knorm");
        assert_eq!(m.needs().window_queries, 2);
        let (mut cache, obs) = one_hot_cache(16, 2, &[(3, 5.0)]);
        m.session()
            .on_prefill(&mut cache, &obs, &Budget::CompressionRatio(0.5))
            .unwrap();
        // 16 -> 8 -> 4: the achieved ratio 0.75 = 1 - 0.5 x 0.5.
        assert_eq!(cache.entries(), 4);
        assert_eq!(m.params()[1]["method"], "knorm");
    }
}

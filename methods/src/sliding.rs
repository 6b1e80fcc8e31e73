//! Compression on models with sliding-window layers (Gemma 3, Mistral v0.1, Phi-3, Qwen with
//! `use_sliding_window`).
//!
//! A sliding layer already holds only its last `w` entries, so methods leave it alone, as kvpress
//! does for Gemma 3's local layers: a method sees a cache made of the full-attention layers only
//! (with their observations), and budgets apply to those layers. On a model where every layer
//! slides (Mistral v0.1 with `sliding_window`), nothing is left to compress once the context is
//! longer than the window; below it, the layers hold the whole context and are compressed as usual.

use crate::{Budget, KvCache, Method, MethodError, Observations};

/// The layers a method may compress: the full-attention layers. (A sliding layer's entries must
/// stay consecutive positions: its window mask counts entries, see the model's attention.)
pub fn compressible_layers(cache: &KvCache) -> Vec<usize> {
    (0..cache.n_layers())
        .filter(|&l| cache.window(l).is_none())
        .collect()
}

/// Run `f` on the compressible layers of `cache` only (all of them when no layer slides).
pub fn on_compressible_layers<R>(
    cache: &mut KvCache,
    obs: &Observations,
    f: impl FnOnce(&mut KvCache, &Observations) -> Result<R, MethodError>,
) -> Result<R, MethodError> {
    if !cache.has_sliding_layers() {
        return f(cache, obs);
    }
    let take = compressible_layers(cache);
    let mut part = cache.take_layers(&take);
    let part_obs = Observations {
        layers: if obs.layers.len() == cache.n_layers() {
            take.iter().map(|&l| obs.layers[l].clone()).collect()
        } else {
            obs.layers.clone()
        },
        q_per_kv: obs.q_per_kv,
        rope: obs.rope.clone(),
    };
    let out = f(&mut part, &part_obs);
    cache.put_back(part, &take);
    out
}

/// `method` compresses layer `layer` alone during the prefill ([`Method::compress_layer`]),
/// leaving a sliding layer as it is, as [`on_compressible_layers`] does after the prefill. With
/// sliding layers the method sees the same view as there (the compressible layers, renumbered),
/// so what depends on the layer index (a seed, a schedule) matches. `obs.layers` holds the
/// layers up to `layer`.
pub fn compress_layer_if_compressible(
    method: &dyn Method,
    cache: &mut KvCache,
    layer: usize,
    obs: &Observations,
    budget: &Budget,
) -> Result<(), MethodError> {
    if !cache.has_sliding_layers() {
        return method.compress_layer(cache, layer, obs, budget);
    }
    if cache.window(layer).is_some() {
        return Ok(());
    }
    let take = compressible_layers(cache);
    let rank = take
        .iter()
        .position(|&l| l == layer)
        .expect("a full-attention layer");
    let part_obs = Observations {
        layers: take
            .iter()
            .filter(|&&l| l < obs.layers.len())
            .map(|&l| obs.layers[l].clone())
            .collect(),
        q_per_kv: obs.q_per_kv,
        rope: obs.rope.clone(),
    };
    let mut part = cache.take_layers(&take);
    let out = method.compress_layer(&mut part, rank, &part_obs, budget);
    cache.put_back(part, &take);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Budget;
    use candle_core::{DType, Device, Tensor};

    /// Three layers, the middle one sliding with window 4; 10 positions prefilled.
    fn cache() -> KvCache {
        let dev = Device::Cpu;
        let mut c = KvCache::new(3, 2, 4, DType::F32, &dev).with_windows(vec![None, Some(4), None]);
        let k = Tensor::randn(0f32, 1.0, (2, 10, 4), &dev).unwrap();
        let pos: Vec<u32> = (0..10).collect();
        for l in 0..3 {
            c.append(l, &k, &k, &pos).unwrap();
            c.trim_to_window(l).unwrap();
        }
        c.advance(10);
        c
    }

    #[test]
    fn trim_keeps_the_newest_window() {
        let c = cache();
        assert_eq!(c.layer(1).positions()[0], vec![6, 7, 8, 9]);
        assert_eq!(c.layer(0).head_lens(), vec![10, 10]);
    }

    #[test]
    fn methods_leave_sliding_layers_alone() {
        let mut c = cache();
        let before = c.layer(1).positions();
        let method: crate::MethodConfig =
            serde_json::from_value(serde_json::json!({"method": "streaming_llm"})).unwrap();
        let method = method.build();
        let obs = Observations {
            layers: vec![Default::default(); 3],
            q_per_kv: 1,
            rope: None,
        };
        on_compressible_layers(&mut c, &obs, |part, o| {
            assert_eq!(part.n_layers(), 2);
            method.compress(part, o, &Budget::CompressionRatio(0.5))
        })
        .unwrap();
        assert_eq!(c.layer(1).positions(), before);
        assert_eq!(c.layer(0).head_lens(), vec![5, 5]);
        assert_eq!(c.layer(2).head_lens(), vec![5, 5]);
    }
}

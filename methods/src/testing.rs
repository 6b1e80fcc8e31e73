//! Small hand-made caches and observations for the methods' unit tests.

use candle_core::{DType, Device, Tensor};

use crate::{KvCache, LayerObservation, Observations};

/// A one-layer cache from per-head keys `[heads][len][d]`; values equal keys; positions `0..len`.
pub fn cache_with_keys(keys: &[Vec<Vec<f32>>]) -> KvCache {
    let (h, len, d) = (keys.len(), keys[0].len(), keys[0][0].len());
    let flat: Vec<f32> = keys.iter().flatten().flatten().copied().collect();
    let k = Tensor::from_vec(flat, (h, len, d), &Device::Cpu).unwrap();
    let mut cache = KvCache::new(1, h, d, DType::F32, &Device::Cpu);
    cache
        .layer_mut(0)
        .append(&k, &k, &(0..len as u32).collect::<Vec<_>>())
        .unwrap();
    cache.advance(len);
    cache
}

/// Observations of one layer with the given window queries `[q_heads][w][d]`.
pub fn obs_with_queries(q: &[Vec<Vec<f32>>], q_per_kv: usize) -> Observations {
    let (h, w, d) = (q.len(), q[0].len(), q[0][0].len());
    let flat: Vec<f32> = q.iter().flatten().flatten().copied().collect();
    let t = Tensor::from_vec(flat, (h, w, d), &Device::Cpu).unwrap();
    Observations {
        layers: vec![LayerObservation {
            window_queries: Some(t),
            ..Default::default()
        }],
        q_per_kv,
        rope: None,
    }
}

/// One KV head, one query head, `len` keys along the axes of a `len`-dim space (key `j` = e_j), and
/// `window` identical queries whose logit on key `j` is `strength` for each `(j, strength)` listed,
/// 0 elsewhere.
pub fn one_hot_cache(
    len: usize,
    window: usize,
    targets: &[(usize, f32)],
) -> (KvCache, Observations) {
    let keys: Vec<Vec<f32>> = (0..len)
        .map(|j| (0..len).map(|i| if i == j { 1.0 } else { 0.0 }).collect())
        .collect();
    let scale = (len as f32).sqrt();
    let mut q = vec![0.0; len];
    for &(j, s) in targets {
        q[j] = s * scale;
    }
    (
        cache_with_keys(&[keys]),
        obs_with_queries(&[vec![q; window]], 1),
    )
}

/// Original positions kept per head in layer `l`.
pub fn keep_of(cache: &KvCache, l: usize) -> Vec<Vec<u32>> {
    cache.layer(l).positions()
}

/// One layer of 3 KV heads, dimension 8, 40 entries, random keys and values; `ragged`: then made
/// ragged (heads hold 40, 37 and 35 entries, so each is its own group).
pub fn random_cache(ragged: bool) -> KvCache {
    let dev = Device::Cpu;
    let k = Tensor::randn(0f32, 1.0, (3, 40, 8), &dev).unwrap();
    let v = Tensor::randn(0f32, 1.0, (3, 40, 8), &dev).unwrap();
    let mut cache = KvCache::new(1, 3, 8, DType::F32, &dev);
    cache
        .layer_mut(0)
        .append(&k, &v, &(0..40u32).collect::<Vec<_>>())
        .unwrap();
    cache.advance(40);
    if !ragged {
        return cache;
    }
    cache
        .layer_mut(0)
        .retain(&[
            (0..40).collect(),
            (3..40).collect(),
            (0..30).chain(35..40).collect(),
        ])
        .unwrap();
    cache
}

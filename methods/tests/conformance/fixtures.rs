//! The test's tiny model and cache: random tensors, the observations a method asks for, and
//! generation steps.

use candle_core::{DType, Device, Tensor};
use kvbench_methods::{
    Budget, KvCache, LayerObservation, Method, ObservationNeeds, Observations, Rope, Session,
};
use rand::{Rng, SeedableRng};

pub const LAYERS: usize = 3;
pub const KV_HEADS: usize = 2;
pub const Q_PER_KV: usize = 2;
pub const D: usize = 8;
pub const LEN: usize = 64;

pub struct Rand(pub rand::rngs::StdRng);

impl Rand {
    pub fn seeded(seed: u64) -> Self {
        Rand(rand::rngs::StdRng::seed_from_u64(seed))
    }
    pub fn tensor(&mut self, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.0.gen_range(-1.0f32..1.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }
    pub fn positive(&mut self, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.0.gen_range(0.0f32..1.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }
}

/// A prefilled cache of `LEN` random entries per layer and head, and its keys/values per layer.
pub fn prefilled(rng: &mut Rand) -> (KvCache, Vec<(Tensor, Tensor)>) {
    let mut cache = KvCache::new(LAYERS, KV_HEADS, D, DType::F32, &Device::Cpu);
    let mut kv = Vec::new();
    let pos: Vec<u32> = (0..LEN as u32).collect();
    for l in 0..LAYERS {
        let (k, v) = (
            rng.tensor(&[KV_HEADS, LEN, D]),
            rng.tensor(&[KV_HEADS, LEN, D]),
        );
        cache.layer_mut(l).append(&k, &v, &pos).unwrap();
        kv.push((k, v));
    }
    cache.advance(LEN);
    (cache, kv)
}

/// Observations holding exactly what `needs` asks for, for a forward of `t` tokens over `len` entries.
pub fn observations(rng: &mut Rand, needs: ObservationNeeds, t: usize, len: usize) -> Observations {
    let q_heads = KV_HEADS * Q_PER_KV;
    let layers = (0..LAYERS)
        .map(|_| {
            let mut o = LayerObservation::default();
            if needs.window_queries > 0 {
                o.window_queries = Some(rng.tensor(&[q_heads, needs.window_queries.min(t), D]));
            }
            if needs.accumulated_attention {
                o.accumulated_attention = Some(rng.positive(&[q_heads, len]));
            }
            if needs.query_statistics.is_some() {
                o.query_mean = Some(rng.tensor(&[q_heads, D]));
                let a = rng.tensor(&[q_heads, D, D]);
                o.query_cov = Some((a.matmul(&a.t().unwrap()).unwrap() / D as f64).unwrap());
            }
            o
        })
        .collect();
    let rope = needs.query_statistics.map(|_| Rope {
        inv_freq: (0..D / 2)
            .map(|i| 10000f32.powf(-2.0 * i as f32 / D as f32))
            .collect(),
        interleaved: false,
    });
    Observations {
        layers,
        q_per_kv: Q_PER_KV,
        rope,
    }
}

/// Equal bit for bit (`tol` None), or within `tol` everywhere.
pub fn close(a: &Tensor, b: &Tensor, tol: Option<f32>) -> bool {
    match tol {
        None => {
            a.eq(b)
                .unwrap()
                .min_all()
                .unwrap()
                .to_scalar::<u8>()
                .unwrap()
                == 1
        }
        Some(t) => {
            let err: f32 = (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            err <= t
        }
    }
}

/// Generate `steps` tokens: append a random entry at the next position, then run the decode hook
/// of `session` (opened by `method`).
pub fn decode(
    rng: &mut Rand,
    method: &dyn Method,
    session: &mut dyn Session,
    cache: &mut KvCache,
    budget: &Budget,
    steps: usize,
) {
    for step in 1..=steps {
        let p = cache.next_position() as u32;
        for l in 0..LAYERS {
            let (k, v) = (rng.tensor(&[KV_HEADS, 1, D]), rng.tensor(&[KV_HEADS, 1, D]));
            cache.append(l, &k, &v, &[p]).unwrap();
            assert!(
                cache
                    .attention_layer(l)
                    .positions()
                    .iter()
                    .all(|pos| *pos.last().unwrap() == p),
                "{}",
                method.name()
            );
        }
        cache.advance(1);
        // Observations from their own stream, so the appended entries do not depend on them.
        let mut obs_rng = Rand(rand::rngs::StdRng::seed_from_u64(1000 + step as u64));
        let obs = observations(
            &mut obs_rng,
            method.decode_needs(),
            1,
            cache.next_position(),
        );
        session
            .on_decode(cache, step, &obs, budget)
            .unwrap_or_else(|e| panic!("{}: decode: {e}", method.name()));
    }
}

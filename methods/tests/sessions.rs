//! One method object serves several requests at once: each request's state lives in its own
//! session, so interleaving two requests (batched decoding) or running them on two threads
//! (parallel workers) gives exactly what running them one after the other gives.

use candle_core::{DType, Device, Tensor};
use kvbench_methods::{
    Budget, KvCache, LayerObservation, Method, MethodSpec, ObservationNeeds, Observations, Session,
};
use rand::{Rng, SeedableRng};

const LAYERS: usize = 2;
const KV_HEADS: usize = 2;
const Q_PER_KV: usize = 2;
const D: usize = 8;
const LEN: usize = 48;
const STEPS: usize = 6;
const BUDGET: Budget = Budget::CompressionRatio(0.5);

/// Methods that keep per-request state between hooks.
const STATEFUL: [&str; 4] = [
    r#"{"method":"h2o","decode":true}"#,
    r#"{"method":"decoding","interval":2,"target_size":30,"scorer":{"method":"snapkv","window":2}}"#,
    r#"{"method":"decoding","interval":3,"target_size":30,"scorer":{"method":"h2o"}}"#,
    r#"[{"method":"knorm"},{"method":"h2o","decode":true}]"#,
];

fn tensor(rng: &mut rand::rngs::StdRng, shape: &[usize], lo: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(lo..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// What a forward over `t` tokens records for `needs`, the cache holding positions below `len`.
fn observations(
    rng: &mut rand::rngs::StdRng,
    needs: ObservationNeeds,
    t: usize,
    len: usize,
) -> Observations {
    let q_heads = KV_HEADS * Q_PER_KV;
    let layers = (0..LAYERS)
        .map(|_| LayerObservation {
            window_queries: (needs.window_queries > 0)
                .then(|| tensor(rng, &[q_heads, needs.window_queries.min(t), D], -1.0)),
            accumulated_attention: needs
                .accumulated_attention
                .then(|| tensor(rng, &[q_heads, len], 0.0)),
            ..Default::default()
        })
        .collect();
    Observations {
        layers,
        q_per_kv: Q_PER_KV,
        rope: None,
    }
}

/// One request: its prefilled cache, its session's prefill, and its decode steps, every input
/// drawn from the request's own `seed`.
struct Request<'m> {
    method: &'m dyn Method,
    session: Box<dyn Session + 'm>,
    cache: KvCache,
    seed: u64,
    step: usize,
    /// Entries right after the prefill hook.
    after_prefill: usize,
}

impl<'m> Request<'m> {
    fn prefill(method: &'m dyn Method, seed: u64) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut cache = KvCache::new(LAYERS, KV_HEADS, D, DType::F32, &Device::Cpu);
        let pos: Vec<u32> = (0..LEN as u32).collect();
        for l in 0..LAYERS {
            let (k, v) = (
                tensor(&mut rng, &[KV_HEADS, LEN, D], -1.0),
                tensor(&mut rng, &[KV_HEADS, LEN, D], -1.0),
            );
            cache.layer_mut(l).append(&k, &v, &pos).unwrap();
        }
        cache.advance(LEN);
        let obs = observations(&mut rng, method.needs(), LEN, LEN);
        let mut session = method.session();
        session.on_prefill(&mut cache, &obs, &BUDGET).unwrap();
        Self {
            method,
            session,
            after_prefill: cache.entries(),
            cache,
            seed,
            step: 0,
        }
    }

    fn decode_step(&mut self) {
        self.step += 1;
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed * 1000 + self.step as u64);
        let p = self.cache.next_position() as u32;
        for l in 0..LAYERS {
            let k = tensor(&mut rng, &[KV_HEADS, 1, D], -1.0);
            let v = tensor(&mut rng, &[KV_HEADS, 1, D], -1.0);
            self.cache.append(l, &k, &v, &[p]).unwrap();
        }
        self.cache.advance(1);
        let len = self.cache.next_position();
        let obs = observations(&mut rng, self.method.decode_needs(), 1, len);
        self.session
            .on_decode(&mut self.cache, self.step, &obs, &BUDGET)
            .unwrap();
    }

    fn finish(self) -> KvCache {
        self.cache
    }
}

fn alone(method: &dyn Method, seed: u64) -> KvCache {
    let mut r = Request::prefill(method, seed);
    for _ in 0..STEPS {
        r.decode_step();
    }
    // The decode hooks did something: appending alone would add STEPS entries per layer and head.
    assert!(
        r.cache.entries() < r.after_prefill + STEPS * LAYERS * KV_HEADS,
        "{}: the decode hook evicted nothing",
        method.params()
    );
    r.finish()
}

fn assert_same(name: &str, a: &KvCache, b: &KvCache) {
    for l in 0..LAYERS {
        assert_eq!(
            a.layer(l).positions(),
            b.layer(l).positions(),
            "{name}: layer {l}"
        );
        let ((ka, va), (kb, vb)) = (a.layer(l).dense().unwrap(), b.layer(l).dense().unwrap());
        for (x, y) in [(ka, kb), (va, vb)] {
            let (x, y) = (x.to_vec3::<f32>().unwrap(), y.to_vec3::<f32>().unwrap());
            assert_eq!(x, y, "{name}: layer {l}");
        }
    }
}

fn methods() -> Vec<Box<dyn Method>> {
    STATEFUL
        .iter()
        .map(|j| serde_json::from_str::<MethodSpec>(j).unwrap().build())
        .collect()
}

#[test]
fn interleaved_requests_match_sequential_ones() {
    for method in methods() {
        let name = method.params().to_string();
        let (a_alone, b_alone) = (alone(method.as_ref(), 1), alone(method.as_ref(), 2));
        // B opens and prefills while A is mid-generation, then their steps alternate.
        let mut a = Request::prefill(method.as_ref(), 1);
        a.decode_step();
        let mut b = Request::prefill(method.as_ref(), 2);
        for _ in 1..STEPS {
            b.decode_step();
            a.decode_step();
        }
        b.decode_step();
        assert_same(&name, &a.finish(), &a_alone);
        assert_same(&name, &b.finish(), &b_alone);
    }
}

#[test]
fn requests_on_two_threads_match_sequential_ones() {
    for method in methods() {
        let name = method.params().to_string();
        let m: &dyn Method = method.as_ref();
        let expected = [alone(m, 3), alone(m, 4)];
        let got: Vec<KvCache> = std::thread::scope(|s| {
            let handles: Vec<_> = [3, 4].map(|seed| s.spawn(move || alone(m, seed))).into();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (g, e) in got.iter().zip(&expected) {
            assert_same(&name, g, e);
        }
    }
}

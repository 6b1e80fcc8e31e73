//! Every registered method through the same cache contract, on random tensors (CPU):
//!
//! - the budget is respected exactly (entries per layer and KV head, per the method's allocation);
//! - kept positions are strictly increasing per head, and the stored keys and values are the
//!   original ones at those positions;
//! - `bytes()` equals what the kept entries need;
//! - ratio 0 keeps everything, bit for bit (so the output equals `full`);
//! - storage methods that round values (quantization) keep every entry, read back within half a
//!   quantization step, in fewer bytes than dense;
//! - appending after compression continues at the original positions, decode hooks included;
//! - `needs()` / `decode_needs()` ask for everything the method reads (observations are built from
//!   them and nothing else).
//!
//! What each method is expected to keep, the parameters it runs with and its extra specs come from
//! its own file (`Describe::conformance`, through `METHODS`); nothing here names a new method.

use candle_core::{DType, Device, Tensor};
use kvbench_methods::{
    Budget, Conformance, Expect, KvCache, LayerObservation, Method, MethodConfig, MethodSpec,
    ObservationNeeds, Observations, Rope, Session, METHODS,
};
use rand::{Rng, SeedableRng};

const LAYERS: usize = 3;
const KV_HEADS: usize = 2;
const Q_PER_KV: usize = 2;
const D: usize = 8;
const LEN: usize = 64;

struct Rand(rand::rngs::StdRng);

impl Rand {
    fn tensor(&mut self, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.0.gen_range(-1.0f32..1.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }
    fn positive(&mut self, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.0.gen_range(0.0f32..1.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }
}

/// A prefilled cache of `LEN` random entries per layer and head, and its keys/values per layer.
fn prefilled(rng: &mut Rand) -> (KvCache, Vec<(Tensor, Tensor)>) {
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
fn observations(rng: &mut Rand, needs: ObservationNeeds, t: usize, len: usize) -> Observations {
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

/// The registered method `name`'s conformance expectations (declared in its file).
fn conformance(name: &str) -> &'static Conformance {
    &METHODS
        .iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("`{name}` is not registered"))
        .conformance
}

/// How many entries a spec keeps: a registered method's own expectation, or for a composed list
/// (`snapkv+knorm`), storage if every part is storage, else the parts applied in turn.
enum Want {
    One(Expect),
    /// Parts applied in turn, each with the budget: `kept(kept(len))`.
    Composed(usize),
}

fn expectation(name: &str) -> Want {
    if !name.contains('+') {
        return Want::One(conformance(name).expect.clone());
    }
    let parts: Vec<&str> = name.split('+').collect();
    if parts
        .iter()
        .all(|p| conformance(p).expect == Expect::Storage)
    {
        Want::One(Expect::Storage)
    } else {
        Want::Composed(parts.len())
    }
}

/// For methods that store rounded values, the largest reconstruction error allowed: half a
/// quantization step of values spanning [-1, 1] (random entries), plus f16 slack.
fn lossy(method: &dyn Method) -> Option<f32> {
    match method.name() {
        "kivi" | "quant" => {
            let bits = method.params()["bits"].as_u64().unwrap() as i32;
            Some(1.0 / (2f32.powi(bits) - 1.0) + 1e-3)
        }
        _ => None,
    }
}

/// Equal bit for bit (`tol` None), or within `tol` everywhere.
fn close(a: &Tensor, b: &Tensor, tol: Option<f32>) -> bool {
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

/// Every registered method with its defaults (and the parameters its conformance sets), the
/// extra specs each method declares, plus compositions.
fn specs() -> Vec<MethodSpec> {
    let mut out: Vec<MethodSpec> = METHODS
        .iter()
        .map(|d| {
            let mut json = serde_json::json!({ "method": d.name });
            if let Some(params) = d.conformance.params.as_object() {
                for (k, v) in params {
                    json[k] = v.clone();
                }
            }
            MethodSpec::One(serde_json::from_value::<MethodConfig>(json).unwrap())
        })
        .collect();
    for d in METHODS.iter() {
        out.extend(d.conformance.extra_specs.iter().map(|j| {
            serde_json::from_value::<MethodSpec>(j.clone())
                .unwrap_or_else(|e| panic!("{}: conformance spec {j}: {e}", d.name))
        }));
    }
    let compositions = [
        r#"[{"method":"snapkv"},{"method":"knorm"}]"#,
        r#"[{"method":"adakv"},{"method":"h2o"}]"#,
        r#"[{"method":"knorm"},{"method":"expected_attention"}]"#,
        r#"[{"method":"adakv"},{"method":"cam"}]"#,
        r#"[{"method":"think"},{"method":"lowrank","energy":0.5}]"#,
        r#"[{"method":"kvsharer"},{"method":"minicache","start_layer":1},{"method":"kv_head_merge"}]"#,
        r#"[{"method":"adakv"},{"method":"kvmerger","threshold":0.0,"skip_first_layers":1,"skip_last_layers":0}]"#,
    ];
    out.extend(
        compositions
            .iter()
            .map(|j| serde_json::from_str::<MethodSpec>(j).unwrap()),
    );
    out
}

fn check_kept(name: &str, cache: &KvCache, budget: &Budget) {
    let lens: Vec<Vec<usize>> = (0..LAYERS).map(|l| cache.layer(l).head_lens()).collect();
    let b = budget.kept(LEN);
    match expectation(name) {
        Want::One(Expect::Unchanged) => {
            assert!(lens.iter().flatten().all(|&n| n == LEN), "{name}: {lens:?}")
        }
        Want::One(Expect::Storage) => {
            unreachable!("{name}: storage methods go through check_storage_method")
        }
        Want::One(Expect::Uniform) => assert!(
            lens.iter().flatten().all(|&n| n == b),
            "{name} {budget:?}: {lens:?}, want {b}"
        ),
        Want::One(Expect::PerLayerTotal) => {
            for h in 0..KV_HEADS {
                assert_eq!(
                    lens.iter().map(|l| l[h]).sum::<usize>(),
                    LAYERS * b,
                    "{name} {budget:?}: {lens:?}"
                );
            }
            assert!(
                lens.iter()
                    .all(|l| l.iter().all(|&n| n == l[0] && n <= LEN)),
                "{name}: {lens:?}"
            );
        }
        Want::One(Expect::PerHeadTotal { floor }) => {
            for l in &lens {
                assert_eq!(
                    l.iter().sum::<usize>(),
                    KV_HEADS * b,
                    "{name} {budget:?}: {lens:?}"
                );
                assert!(
                    l.iter().all(|&n| n >= (b as f64 * floor).floor() as usize),
                    "{name}: {lens:?}"
                );
            }
        }
        Want::One(Expect::Ratios(r)) => {
            for (l, r) in lens.iter().zip(r) {
                assert!(
                    l.iter()
                        .all(|&n| n == Budget::CompressionRatio(r).kept(LEN)),
                    "{name}: {lens:?}"
                );
            }
        }
        Want::Composed(parts) => {
            let want = (0..parts).fold(LEN, |n, _| budget.kept(n));
            for l in &lens {
                if l.iter().all(|&n| n == l[0]) {
                    assert!(
                        l.iter().all(|&n| n == want),
                        "{name} {budget:?}: {lens:?}, want {want}"
                    );
                } else {
                    // After a ragged part (adakv) each head is floored on its own.
                    assert!(
                        l.iter().sum::<usize>() <= KV_HEADS * (want + 1),
                        "{name} {budget:?}: {lens:?}"
                    );
                }
            }
        }
    }
}

/// Which stored rows a method leaves as they were: (keys, values). Merging methods rewrite rows:
/// `cam` the values of the kept entries, `kvmerger` keys and values of merged entries.
fn verbatim(name: &str) -> (bool, bool) {
    name.split('+')
        .fold((true, true), |(k, v), part| match part {
            "cam" => (k, false),
            "kvmerger" => (false, false),
            _ => (k, v),
        })
}

/// Positions strictly increasing and below the next position; stored rows equal to the originals
/// (for the prefilled entries, where the method keeps rows verbatim; within `tol` for lossy
/// storage); bytes as the entries need (fewer for lossy storage).
fn check_storage(name: &str, cache: &KvCache, original: &[(Tensor, Tensor)], tol: Option<f32>) {
    let (keys_verbatim, values_verbatim) = verbatim(name);
    let mut entries = 0;
    for (l, (k0, v0)) in original.iter().enumerate() {
        let layer = cache.layer(l);
        for g in layer.groups() {
            let (k, v) = g.storage.keys_values().unwrap();
            assert_eq!(k.dims3().unwrap(), (g.n_heads(), g.len(), D), "{name}");
            for (local, pos) in g.positions.iter().enumerate() {
                assert!(
                    pos.windows(2).all(|w| w[0] < w[1]),
                    "{name}: layer {l} positions not increasing: {pos:?}"
                );
                assert!(
                    pos.iter().all(|&p| (p as usize) < cache.next_position()),
                    "{name}"
                );
                let h = g.first_head + local;
                for (i, &p) in pos.iter().enumerate() {
                    if (p as usize) < LEN {
                        let row =
                            |t: &Tensor, h: usize, i: usize| t.get(h).unwrap().get(i).unwrap();
                        let (want_k, want_v) = (row(k0, h, p as usize), row(v0, h, p as usize));
                        let (got_k, got_v) = (row(&k, local, i), row(&v, local, i));
                        if keys_verbatim {
                            assert!(
                                close(&got_k, &want_k, tol),
                                "{name}: layer {l} head {h} position {p}: keys {got_k} vs {want_k}"
                            );
                        }
                        if values_verbatim {
                            assert!(
                                close(&got_v, &want_v, tol),
                                "{name}: layer {l} head {h} position {p}: values {got_v} vs {want_v}"
                            );
                        }
                    }
                }
                entries += pos.len();
            }
        }
    }
    assert_eq!(entries, cache.entries(), "{name}");
    let dense = entries * 2 * D * DType::F32.size_in_bytes();
    if tol.is_some() {
        assert!(cache.bytes() < dense, "{name}: {} bytes", cache.bytes());
    } else {
        assert_eq!(cache.bytes(), dense, "{name}: bytes");
    }
}

/// Generate `steps` tokens: append a random entry at the next position, then run the decode hook
/// of `session` (opened by `method`).
fn decode(
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

#[test]
fn every_registered_method_meets_the_cache_contract() {
    let specs = specs();
    let names: Vec<String> = specs.iter().map(|s| s.build().name().to_string()).collect();
    for d in METHODS.iter() {
        assert!(
            names.iter().any(|n| n == d.name),
            "{} is registered but not exercised",
            d.name
        );
    }
    let budgets = [
        Budget::CompressionRatio(0.25),
        Budget::CompressionRatio(0.5),
        Budget::CompressionRatio(0.75),
        Budget::Tokens(20),
    ];
    for spec in &specs {
        let method = spec.build();
        let name = method.name();
        let mut rng = Rand(rand::rngs::StdRng::seed_from_u64(7));
        let (full, original) = prefilled(&mut rng);
        let obs = observations(&mut rng, method.needs(), LEN, LEN);
        if let Want::One(Expect::Storage) = expectation(name) {
            check_storage_method(name, method.as_ref(), &full, &obs, &budgets, &mut rng);
            continue;
        }
        let tol = lossy(method.as_ref());

        // Ratio 0: nothing changes, bit for bit, before and after decoding (`per_layer` has its own
        // ratios instead of the budget).
        if name == "per_layer" {
            check_budgets(
                name,
                method.as_ref(),
                &full,
                &original,
                &obs,
                &budgets,
                &mut rng,
            );
            continue;
        }
        let mut c = full.fork();
        let mut session = method.session();
        session
            .on_prefill(&mut c, &obs, &Budget::CompressionRatio(0.0))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            c.layers().iter().map(|l| l.positions()).collect::<Vec<_>>(),
            full.layers()
                .iter()
                .map(|l| l.positions())
                .collect::<Vec<_>>(),
            "{name}"
        );
        for (l, (k0, v0)) in original.iter().enumerate() {
            let (k, v) = c.layer(l).dense().unwrap();
            assert!(close(&k, k0, tol) && close(&v, v0, tol), "{name}");
        }
        if method.uses_budget() {
            let mut reference = full.fork();
            decode(
                &mut Rand(rand::rngs::StdRng::seed_from_u64(9)),
                &kvbench_methods::full::Full,
                kvbench_methods::full::Full.session().as_mut(),
                &mut reference,
                &Budget::CompressionRatio(0.0),
                3,
            );
            decode(
                &mut Rand(rand::rngs::StdRng::seed_from_u64(9)),
                method.as_ref(),
                session.as_mut(),
                &mut c,
                &Budget::CompressionRatio(0.0),
                3,
            );
            assert_eq!(
                c.layers().iter().map(|l| l.positions()).collect::<Vec<_>>(),
                reference
                    .layers()
                    .iter()
                    .map(|l| l.positions())
                    .collect::<Vec<_>>(),
                "{name}: ratio 0 must decode like full"
            );
            for l in 0..LAYERS {
                let ((k, v), (rk, rv)) = (
                    c.layer(l).dense().unwrap(),
                    reference.layer(l).dense().unwrap(),
                );
                assert!(
                    k.eq(&rk)
                        .unwrap()
                        .min_all()
                        .unwrap()
                        .to_scalar::<u8>()
                        .unwrap()
                        == 1,
                    "{name}"
                );
                assert!(
                    v.eq(&rv)
                        .unwrap()
                        .min_all()
                        .unwrap()
                        .to_scalar::<u8>()
                        .unwrap()
                        == 1,
                    "{name}"
                );
            }
        }
        check_budgets(
            name,
            method.as_ref(),
            &full,
            &original,
            &obs,
            &budgets,
            &mut rng,
        );
    }
}

/// Every budget: allocation, storage, positions and decoding after compression.
fn check_budgets(
    name: &str,
    method: &dyn Method,
    full: &KvCache,
    original: &[(Tensor, Tensor)],
    obs: &Observations,
    budgets: &[Budget],
    rng: &mut Rand,
) {
    for budget in budgets {
        {
            let mut c = full.fork();
            let mut session = method.session();
            session
                .on_prefill(&mut c, obs, budget)
                .unwrap_or_else(|e| panic!("{name} {budget:?}: {e}"));
            if name == "full" {
                check_kept(name, &c, budget);
                continue;
            }
            check_kept(name, &c, budget);
            check_storage(name, &c, original, lossy(method));
            assert_eq!(
                c.next_position(),
                LEN,
                "{name}: eviction must not move the next position"
            );
            let after_prefill = c.entries();
            decode(rng, method, session.as_mut(), &mut c, budget, 4);
            check_storage(name, &c, original, lossy(method));
            assert_eq!(c.next_position(), LEN + 4, "{name}");
            let per_head: Vec<usize> = c.layers().iter().flat_map(|l| l.head_lens()).collect();
            if name == "decoding" {
                assert!(per_head.iter().all(|&n| n == 40), "{name}: {per_head:?}");
            } else if name == "h2o" && method.params()["decode"] == true {
                assert_eq!(
                    c.entries(),
                    after_prefill,
                    "{name}: the decode variant holds the cache size"
                );
            } else {
                assert_eq!(
                    c.entries(),
                    after_prefill + 4 * LAYERS * KV_HEADS,
                    "{name}: decoding appends"
                );
            }
        }
    }
}

/// Storage methods: the budget does not apply (one result for every budget); every layer still
/// reads every entry at its original position, reconstructed finite, in fewer bytes than dense;
/// generation appends to what each layer reads.
fn check_storage_method(
    name: &str,
    method: &dyn Method,
    full: &KvCache,
    obs: &Observations,
    budgets: &[Budget],
    rng: &mut Rand,
) {
    assert!(!method.uses_budget(), "{name}: storage methods run once");
    let mut bytes = Vec::new();
    for budget in budgets {
        let mut c = full.fork();
        let mut session = method.session();
        session
            .on_prefill(&mut c, obs, budget)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for l in 0..LAYERS {
            let layer = c.attention_layer(l);
            assert_eq!(
                layer.positions(),
                full.layer(l).positions(),
                "{name}: layer {l}"
            );
            let (k, v) = layer.dense().unwrap();
            assert_eq!(k.dims3().unwrap(), (KV_HEADS, LEN, D), "{name}");
            for x in [k, v] {
                let s: f32 = x.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
                assert!(s.is_finite(), "{name}: layer {l}");
            }
        }
        assert!(
            c.bytes() < full.bytes(),
            "{name}: {} bytes, dense {}",
            c.bytes(),
            full.bytes()
        );
        bytes.push(c.bytes());
        decode(rng, method, session.as_mut(), &mut c, budget, 4);
        assert_eq!(c.next_position(), LEN + 4, "{name}");
        for l in 0..LAYERS {
            assert_eq!(
                c.attention_layer(l).head_lens(),
                vec![LEN + 4; KV_HEADS],
                "{name}: layer {l}"
            );
        }
    }
    assert!(
        bytes.windows(2).all(|w| w[0] == w[1]),
        "{name}: no budget, one result: {bytes:?}"
    );
}

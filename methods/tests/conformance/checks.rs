//! The checks of the cache contract, each against what a configuration is expected to do
//! ([`Expected`], from its declarations).

use candle_core::{DType, Tensor};
use kvbench_methods::{AfterDecode, Budget, Expect, KvCache, Method, Observations};

use crate::expected::{Expected, Want};
use crate::fixtures::{close, decode, Rand, D, KV_HEADS, LAYERS, LEN};

/// The entries kept per layer and head are what `want` says.
pub fn check_kept(name: &str, want: &Want, cache: &KvCache, budget: &Budget) {
    let lens: Vec<Vec<usize>> = (0..LAYERS).map(|l| cache.layer(l).head_lens()).collect();
    let b = budget.kept(LEN);
    match want {
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
        &Want::One(Expect::PerHeadTotal { floor }) => {
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
            for (l, &r) in lens.iter().zip(r) {
                assert!(
                    l.iter()
                        .all(|&n| n == Budget::CompressionRatio(r).kept(LEN)),
                    "{name}: {lens:?}"
                );
            }
        }
        &Want::Composed(parts) => {
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

/// Positions strictly increasing and below the next position; stored rows equal to the originals
/// (for the prefilled entries, where the method keeps rows: `exp.keys_compared`,
/// `exp.values_compared`; within `exp.tol` for rounded storage); bytes as the entries need (fewer
/// for rounded storage).
pub fn check_storage(name: &str, exp: &Expected, cache: &KvCache, original: &[(Tensor, Tensor)]) {
    let tol = exp.tol;
    let mut entries = 0;
    for (l, (k0, v0)) in original.iter().enumerate() {
        let layer = cache.layer(l);
        // A layer stored per query head (`query_heads`) holds each KV head's rows once per query
        // head of its group: stored head h reads KV head h / factor.
        let factor = (layer.n_heads() / KV_HEADS).max(1);
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
                        let kv = h / factor;
                        let (want_k, want_v) = (row(k0, kv, p as usize), row(v0, kv, p as usize));
                        let (got_k, got_v) = (row(&k, local, i), row(&v, local, i));
                        if exp.keys_compared {
                            assert!(
                                close(&got_k, &want_k, tol),
                                "{name}: layer {l} head {h} position {p}: keys {got_k} vs {want_k}"
                            );
                        }
                        if exp.values_compared {
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

/// Every budget: allocation, storage, positions and decoding after compression.
pub fn check_budgets(
    exp: &Expected,
    method: &dyn Method,
    full: &KvCache,
    original: &[(Tensor, Tensor)],
    obs: &Observations,
    budgets: &[Budget],
    rng: &mut Rand,
) {
    let name = method.name();
    for budget in budgets {
        {
            let mut c = full.fork();
            let mut session = method.session();
            session
                .on_prefill(&mut c, obs, budget)
                .unwrap_or_else(|e| panic!("{name} {budget:?}: {e}"));
            check_kept(name, &exp.kept, &c, budget);
            check_storage(name, exp, &c, original);
            assert_eq!(
                c.next_position(),
                LEN,
                "{name}: eviction must not move the next position"
            );
            let after_prefill = c.entries();
            decode(rng, method, session.as_mut(), &mut c, budget, 4);
            check_storage(name, exp, &c, original);
            assert_eq!(c.next_position(), LEN + 4, "{name}");
            let per_head: Vec<usize> = c.layers().iter().flat_map(|l| l.head_lens()).collect();
            match exp.after_decode {
                AfterDecode::PerHead(n) => {
                    assert!(per_head.iter().all(|&h| h == n), "{name}: {per_head:?}")
                }
                AfterDecode::Held => assert_eq!(
                    c.entries(),
                    after_prefill,
                    "{name}: the decode variant holds the cache size"
                ),
                // Every stored head gets the 4 tokens (the KV heads, or the query heads of a layer
                // stored per query head).
                AfterDecode::Appends => assert_eq!(
                    c.entries(),
                    after_prefill + 4 * c.layers().iter().map(|l| l.n_heads()).sum::<usize>(),
                    "{name}: decoding appends"
                ),
            }
        }
    }
}

/// Storage methods: the budget does not apply (one result for every budget); every layer still
/// reads every entry at its original position, reconstructed finite, in fewer bytes than dense;
/// generation appends to what each layer reads.
pub fn check_storage_method(
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

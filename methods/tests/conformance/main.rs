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

mod checks;
mod expected;
mod fixtures;

use kvbench_methods::{AfterDecode, Budget, Expect, Method, MethodConfig, MethodSpec, METHODS};

use checks::{check_budgets, check_storage_method};
use expected::{expected, Want};
use fixtures::{close, decode, observations, prefilled, Rand, LAYERS, LEN};

/// Every registered method with its defaults (and the parameters its conformance sets), the
/// extra specs each method declares (with the `after_decode` they replace), plus compositions.
fn specs() -> Vec<(MethodSpec, Option<AfterDecode>)> {
    let mut out: Vec<(MethodSpec, Option<AfterDecode>)> = METHODS
        .iter()
        .map(|d| {
            let mut json = serde_json::json!({ "method": d.name });
            if let Some(params) = d.conformance.params.as_object() {
                for (k, v) in params {
                    json[k] = v.clone();
                }
            }
            let config = serde_json::from_value::<MethodConfig>(json).unwrap();
            (MethodSpec::One(config), None)
        })
        .collect();
    for d in METHODS.iter() {
        out.extend(d.conformance.extra_specs.iter().map(|x| {
            let spec = serde_json::from_value::<MethodSpec>(x.spec.clone())
                .unwrap_or_else(|e| panic!("{}: conformance spec {}: {e}", d.name, x.spec));
            (spec, x.after_decode.clone())
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
            .map(|j| (serde_json::from_str::<MethodSpec>(j).unwrap(), None)),
    );
    out
}

#[test]
fn every_registered_method_meets_the_cache_contract() {
    let specs = specs();
    let names: Vec<String> = specs
        .iter()
        .map(|(s, _)| s.build().name().to_string())
        .collect();
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
    for (spec, after_decode) in &specs {
        let method = spec.build();
        let name = method.name();
        let exp = expected(method.as_ref(), after_decode.clone());
        let mut rng = Rand::seeded(7);
        let (full, original) = prefilled(&mut rng);
        let obs = observations(&mut rng, method.needs(), LEN, LEN);
        if let Want::One(Expect::Storage) = exp.kept {
            check_storage_method(name, method.as_ref(), &full, &obs, &budgets, &mut rng);
            continue;
        }
        let tol = exp.tol;

        // Ratio 0: nothing changes, bit for bit, before and after decoding (a method with its own
        // ratios per layer ignores the budget).
        if let Want::One(Expect::Ratios(_)) = exp.kept {
            check_budgets(
                &exp,
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
                &mut Rand::seeded(9),
                &kvbench_methods::full::Full,
                kvbench_methods::full::Full.session().as_mut(),
                &mut reference,
                &Budget::CompressionRatio(0.0),
                3,
            );
            decode(
                &mut Rand::seeded(9),
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
            &exp,
            method.as_ref(),
            &full,
            &original,
            &obs,
            &budgets,
            &mut rng,
        );
    }
}

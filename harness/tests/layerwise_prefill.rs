//! Compression layer by layer during the prefill (`Method::compress_layer` through
//! `Decoder::forward_with`, what `kvbench bench --memory-context` measures): every registered
//! method that says it compresses by layer leaves, on real decoders (the Llama 3.1 tiny oracle, and
//! Gemma 3's with sliding layers), exactly the cache that compressing after the whole prefill
//! leaves: same entries, same positions, same tensors bit for bit, and the same next-token logits.

use candle_core::{Device, Tensor};
use kvbench::fetch::{resolve, FetchOptions, ModelSpec};
use kvbench::loader::LoadedModel;
use kvbench::model::{ForwardOptions, Logits};
use kvbench_methods::sliding::{compress_layer_if_compressible, on_compressible_layers};
use kvbench_methods::{Budget, KvCache, Method, MethodConfig};

fn load(family: &str) -> LoadedModel {
    let dir = kvbench::testing::shared_data()
        .join("reference/arch")
        .join(family);
    let files = resolve(&ModelSpec::Local(dir), &FetchOptions::from_env()).unwrap();
    kvbench::loader::load(&files, &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(candle_core::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Layer by layer, the same entries and tensors (bit for bit).
fn assert_same_cache(a: &KvCache, b: &KvCache, what: &str) {
    assert_eq!(a.next_position(), b.next_position(), "{what}");
    for l in 0..a.n_layers() {
        let (la, lb) = (a.layer(l), b.layer(l));
        assert_eq!(la.head_lens(), lb.head_lens(), "{what}: layer {l} lengths");
        assert_eq!(
            la.positions(),
            lb.positions(),
            "{what}: layer {l} positions"
        );
        let (ka, va) = la.dense().unwrap();
        let (kb, vb) = lb.dense().unwrap();
        assert_eq!(flat(&ka), flat(&kb), "{what}: layer {l} keys");
        assert_eq!(flat(&va), flat(&vb), "{what}: layer {l} values");
    }
}

/// Every method with `compresses_by_layer`, default parameters, against its compression after
/// the prefill; returns the names checked.
fn check_family(family: &str) -> Vec<String> {
    let loaded = load(family);
    let model = &loaded.model;
    let tokens: Vec<u32> = (0..160).map(|i| 3 + (i * 37 % 200) as u32).collect();
    let budget = Budget::CompressionRatio(0.5);
    let last = ForwardOptions {
        logits: Logits::Last,
        ..Default::default()
    };
    let mut full = model.new_cache();
    model.forward(&tokens, &mut full, &last).unwrap();
    let full_bytes = full.bytes();
    let mut checked = Vec::new();
    for d in kvbench_methods::METHODS.iter() {
        let Ok(config) =
            serde_json::from_value::<MethodConfig>(serde_json::json!({ "method": d.name }))
        else {
            continue; // needs parameters (per_layer's ratios)
        };
        let method: Box<dyn Method> = config.build();
        if !method.compresses_by_layer() {
            continue;
        }
        let opts = ForwardOptions {
            logits: Logits::Last,
            observe: method.needs(),
            ..Default::default()
        };
        // After the whole prefill, as `kvbench run` does.
        let mut after = model.new_cache();
        let out = model.forward(&tokens, &mut after, &opts).unwrap();
        let logits_after = flat(&out.logits.unwrap());
        on_compressible_layers(&mut after, &out.observations, |c, o| {
            method.session().on_prefill(c, o, &budget)
        })
        .unwrap();
        // Each layer as soon as it is computed.
        let mut during = model.new_cache();
        let mut seen = Vec::new();
        let out = model
            .forward_with(&tokens, &mut during, &opts, &mut |l, c, obs| {
                assert_eq!(obs.layers.len(), l + 1, "observations up to the layer");
                assert_eq!(c.next_position(), tokens.len(), "positions already counted");
                seen.push(l);
                Ok(compress_layer_if_compressible(
                    method.as_ref(),
                    c,
                    l,
                    obs,
                    &budget,
                )?)
            })
            .unwrap();
        assert_eq!(seen, (0..model.config().n_layers).collect::<Vec<_>>());
        let what = format!("{family} {}", d.name);
        assert_eq!(
            flat(&out.logits.unwrap()),
            logits_after,
            "{what}: prefill logits"
        );
        assert_same_cache(&after, &during, &what);
        if d.name != "full" {
            assert!(during.bytes() < full_bytes, "{what}: nothing compressed");
        }
        // The next token reads both caches the same way.
        let next = [7u32];
        let a = model
            .forward(&next, &mut after, &last)
            .unwrap()
            .logits
            .unwrap();
        let b = model
            .forward(&next, &mut during, &last)
            .unwrap()
            .logits
            .unwrap();
        assert_eq!(flat(&a), flat(&b), "{what}: logits after");
        checked.push(d.name.to_string());
    }
    checked
}

#[test]
fn compressing_during_the_prefill_leaves_the_cache_of_compressing_after_it() {
    let checked = check_family("llama31");
    for name in [
        "full",
        "snapkv",
        "knorm",
        "streaming_llm",
        "tova",
        "h2o",
        "keydiff",
        "expected_attention",
        "lagkv",
        "random",
    ] {
        assert!(
            checked.iter().any(|c| c == name),
            "{name} not checked: {checked:?}"
        );
    }
}

#[test]
fn sliding_layers_stay_whole_when_compressing_during_the_prefill() {
    let loaded = load("gemma3");
    assert!(
        loaded.model.new_cache().has_sliding_layers(),
        "the Gemma 3 oracle has sliding layers"
    );
    drop(loaded);
    let checked = check_family("gemma3");
    assert!(checked.iter().any(|c| c == "snapkv"), "{checked:?}");
}

#[test]
fn methods_across_layers_do_not_claim_layer_by_layer() {
    for name in ["pyramidkv", "kvsharer", "minicache", "lowrank", "cam"] {
        let m = serde_json::from_value::<MethodConfig>(serde_json::json!({ "method": name }))
            .unwrap()
            .build();
        assert!(!m.compresses_by_layer(), "{name}");
        let mut cache = KvCache::new(1, 1, 4, candle_core::DType::F32, &Device::Cpu);
        let obs = kvbench_methods::Observations {
            layers: Vec::new(),
            q_per_kv: 1,
            rope: None,
        };
        let err = m
            .compress_layer(&mut cache, 0, &obs, &Budget::CompressionRatio(0.5))
            .unwrap_err();
        assert!(err.to_string().contains("not one layer at a time"), "{err}");
    }
    let h2o_decode = serde_json::from_value::<MethodConfig>(
        serde_json::json!({ "method": "h2o", "decode": true }),
    )
    .unwrap()
    .build();
    assert!(!h2o_decode.compresses_by_layer());
}

//! Every registered method on a model with sliding-window layers (the Gemma 3 oracle checkpoint:
//! five layers with a 24-token window, one global layer): sliding layers keep exactly their
//! window, untouched, the global layer is compressed, and decoding continues through the cache.

use candle_core::Device;
use kvbench::fetch::{resolve, FetchOptions, ModelSpec};
use kvbench::model::{argmax, ForwardOptions, Logits};
use kvbench_methods::sliding::on_compressible_layers;
use kvbench_methods::{Budget, MethodConfig, ObservationNeeds, METHODS};

#[test]
fn methods_compress_global_layers_and_leave_sliding_ones() {
    let dir = kvbench::testing::shared_data().join("reference/arch/gemma3");
    let files = resolve(&ModelSpec::Local(dir), &FetchOptions::from_env()).unwrap();
    let loaded = kvbench::loader::load(&files, &Device::Cpu).unwrap();
    let model = &loaded.model;
    let cfg = model.config().clone();
    let methods: Vec<_> = METHODS
        .iter()
        .map(|d| {
            let mut json = serde_json::json!({ "method": d.name });
            if d.name == "per_layer" {
                json["ratios"] = serde_json::json!([0.5]);
            }
            // quant's default group (64 channels) does not divide this checkpoint's head_dim 32.
            if d.name == "quant" {
                json["group"] = serde_json::json!(32);
            }
            serde_json::from_value::<MethodConfig>(json)
                .unwrap()
                .build()
        })
        .collect();
    let needs = methods
        .iter()
        .fold(ObservationNeeds::default(), |n, m| n.union(m.needs()));
    let tokens: Vec<u32> = (0..160).map(|i| 3 + (i * 37 % 500) as u32).collect();
    let mut context = model.new_cache();
    let opts = ForwardOptions {
        logits: Logits::None,
        observe: needs,
        ..Default::default()
    };
    let obs = model
        .forward(&tokens, &mut context, &opts)
        .unwrap()
        .observations;
    let global: Vec<usize> = (0..cfg.n_layers)
        .filter(|&l| cfg.window(l).is_none())
        .collect();
    assert_eq!(global, vec![5]);
    for method in &methods {
        let name = method.name();
        let budget = Budget::CompressionRatio(0.5);
        let mut cache = context.fork();
        let mut session = method.session();
        on_compressible_layers(&mut cache, &obs, |c, o| session.on_prefill(c, o, &budget))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for l in 0..cfg.n_layers {
            if cfg.window(l).is_some() {
                assert_eq!(
                    cache.layer(l).positions(),
                    context.layer(l).positions(),
                    "{name}: sliding layer {l} was changed"
                );
                assert_eq!(cache.layer(l).head_lens(), vec![24; cfg.n_kv_heads]);
            }
        }
        if method.uses_budget() {
            // Every stored head (KV heads, or query heads for `query_heads`) holds fewer entries.
            let lens = cache.layer(5).head_lens();
            assert!(
                lens.iter().all(|&n| n < 160),
                "{name}: global layer not compressed: {lens:?}"
            );
        }
        // Decode a few tokens through the compressed cache.
        let mut next = 7;
        for step in 1..=3 {
            let out = model
                .forward(&[next], &mut cache, &ForwardOptions::default())
                .unwrap_or_else(|e| panic!("{name}: decode: {e:#}"));
            on_compressible_layers(&mut cache, &out.observations, |c, o| {
                session.on_decode(c, step, o, &budget)
            })
            .unwrap_or_else(|e| panic!("{name}: decode hook: {e}"));
            next = argmax(&out.logits.unwrap()).unwrap();
        }
        for l in 0..cfg.n_layers {
            if cfg.window(l).is_some() {
                assert_eq!(cache.layer(l).head_lens(), vec![24; cfg.n_kv_heads]);
                let pos = &cache.layer(l).positions()[0];
                assert_eq!(pos.first(), Some(&(163 - 24)), "{name}: layer {l} window");
            }
        }
    }
}

//! KVCache-Factory's per-query-head layout (`query_heads`) on a real GQA decoder (the Llama 3.1
//! tiny oracle: 4 query heads, 2 KV heads): a cache stored per query head gives the same logits as
//! the KV-head cache it was expanded from, decoding keeps repeating new entries into every copy,
//! and with eviction each query head keeps its own entries at twice the bytes of per-KV-head
//! selection at the same budget.

use candle_core::Device;
use kvbench::fetch::{resolve, FetchOptions, ModelSpec};
use kvbench::model::{ForwardOptions, Logits};
use kvbench_methods::{Budget, MethodConfig};

fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn query_head_cache_reads_like_the_kv_head_cache() {
    let dir = kvbench::testing::shared_data().join("reference/arch/llama31");
    let files = resolve(&ModelSpec::Local(dir), &FetchOptions::from_env()).unwrap();
    let loaded = kvbench::loader::load(&files, &Device::Cpu).unwrap();
    let model = &loaded.model;
    let cfg = model.config().clone();
    assert_eq!(cfg.n_heads / cfg.n_kv_heads, 2, "a GQA checkpoint");
    let tokens: Vec<u32> = (0..96).map(|i| 3 + (i * 37 % 200) as u32).collect();
    let snap: MethodConfig =
        serde_json::from_value(serde_json::json!({"method": "snapkv", "window": 8})).unwrap();
    let per_query: MethodConfig = serde_json::from_value(
        serde_json::json!({"method": "query_heads", "scorer": {"method": "snapkv", "window": 8}}),
    )
    .unwrap();
    let needs = per_query.build().needs();
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
    let last = ForwardOptions {
        logits: Logits::Last,
        ..Default::default()
    };

    // Expanded without eviction: the same logits, step after step.
    let mut kv = context.fork();
    let mut expanded = context.fork();
    for l in 0..cfg.n_layers {
        expanded.layer_mut(l).expand_heads(2).unwrap();
    }
    for step in 0..3u32 {
        let a = model
            .forward(&[5 + step], &mut kv, &last)
            .unwrap()
            .logits
            .unwrap();
        let b = model
            .forward(&[5 + step], &mut expanded, &last)
            .unwrap()
            .logits
            .unwrap();
        let d = max_abs_diff(&a, &b);
        assert!(d < 1e-4, "step {step}: logits differ by {d}");
    }
    assert_eq!(expanded.layer(0).n_heads(), cfg.n_heads);
    assert_eq!(expanded.layer(0).head_lens(), vec![96 + 3; cfg.n_heads]);

    // With eviction: every query head keeps the budget, twice the bytes of per-KV-head SnapKV.
    let budget = Budget::Tokens(32);
    let mut per_kv = context.fork();
    snap.build().compress(&mut per_kv, &obs, &budget).unwrap();
    let mut per_q = context.fork();
    per_query
        .build()
        .compress(&mut per_q, &obs, &budget)
        .unwrap();
    for l in 0..cfg.n_layers {
        assert_eq!(
            per_q.layer(l).head_lens(),
            vec![32; cfg.n_heads],
            "layer {l}"
        );
    }
    assert_eq!(per_q.bytes(), 2 * per_kv.bytes());
    // Query heads of one group may keep different entries (else the layout would change nothing).
    let differ = (0..cfg.n_layers).any(|l| {
        let p = per_q.layer(l).positions();
        p.chunks(2).any(|g| g[0] != g[1])
    });
    assert!(differ, "every group's query heads kept the same entries");
    // The compressed per-query-head cache decodes.
    let logits = model
        .forward(&[7], &mut per_q, &last)
        .unwrap()
        .logits
        .unwrap();
    assert_eq!(logits.dims().last(), Some(&cfg.vocab_size));
}

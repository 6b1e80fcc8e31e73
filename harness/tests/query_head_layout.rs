//! KVCache-Factory's per-query-head layout (`query_heads`) on a real GQA decoder (the Llama 3.1
//! tiny oracle: 4 query heads, 2 KV heads): a cache stored per query head gives the same logits as
//! the KV-head cache it was expanded from, decoding keeps repeating new entries into every copy,
//! and with eviction each query head keeps its own entries at twice the bytes of per-KV-head
//! selection at the same budget. KVCache-Factory's PyramidKV and AdaKV clusters in that layout
//! (`query_heads` with `allocator: pyramidkv | adakv`): layer budgets per stored head by the
//! kvcache_factory schedule, AdaKV's shared layer budget across the query heads with its floor,
//! and the bytes of that layout.

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

/// The tiny GQA oracle's cache after a 160-token prefill, its observations for `method`, and the
/// model's shape.
fn prefilled(
    method: &MethodConfig,
) -> (
    kvbench_methods::KvCache,
    kvbench_methods::Observations,
    kvbench::model::ModelConfig,
) {
    let dir = kvbench::testing::shared_data().join("reference/arch/llama31");
    let files = resolve(&ModelSpec::Local(dir), &FetchOptions::from_env()).unwrap();
    let loaded = kvbench::loader::load(&files, &Device::Cpu).unwrap();
    let tokens: Vec<u32> = (0..160).map(|i| 3 + (i * 53 % 300) as u32).collect();
    let mut cache = loaded.model.new_cache();
    let opts = ForwardOptions {
        logits: Logits::None,
        observe: method.build().needs(),
        ..Default::default()
    };
    let obs = loaded
        .model
        .forward(&tokens, &mut cache, &opts)
        .unwrap()
        .observations;
    (cache, obs, loaded.model.config().clone())
}

fn method(v: serde_json::Value) -> MethodConfig {
    serde_json::from_value(v).unwrap()
}

/// Bytes of one stored entry (key + value) of one head, from the uncompressed cache.
fn entry_bytes(cache: &kvbench_methods::KvCache, cfg: &kvbench::model::ModelConfig) -> u64 {
    let entries: usize = (0..cfg.n_layers)
        .map(|l| cache.layer(l).head_lens().iter().sum::<usize>())
        .sum();
    cache.bytes() as u64 / entries as u64
}

#[test]
fn pyramid_layer_budgets_follow_the_kvcache_factory_schedule_per_query_head() {
    use kvbench_methods::allocation::pyramidkv::{pyramid_budgets, Schedule};
    let m = method(serde_json::json!({"method": "query_heads",
        "scorer": {"method": "snapkv", "window": 8, "kernel": 7, "pooling": "max"},
        "allocator": {"method": "pyramidkv", "schedule": "kvcache_factory", "beta": 20}}));
    let (context, obs, cfg) = prefilled(&m);
    let per_entry = entry_bytes(&context, &cfg);
    let budget = Budget::Tokens(48);
    let mut c = context.fork();
    m.build().compress(&mut c, &obs, &budget).unwrap();
    // 4 layers, len 160, B = 48, w = 8: S = 40, min = 2, max = 78; 160 >= 2 x 40: the pyramid
    // 8 + 78 - l x 76 / 3 = 86, 60.67, 35.33, 10 (window included), rounded to sum 4 x 48.
    let want = pyramid_budgets(Schedule::KvcacheFactory, cfg.n_layers, 160, 48, 8, 20.0);
    assert_eq!(want, vec![86, 61, 35, 10], "the schedule on this shape");
    for (l, &w) in want.iter().enumerate() {
        assert_eq!(c.layer(l).head_lens(), vec![w; cfg.n_heads], "layer {l}");
    }
    // Every query head stores its share: n_heads x L x B entries, twice per-KV-head pyramidkv's.
    assert_eq!(
        c.bytes() as u64,
        per_entry * (cfg.n_heads * cfg.n_layers * 48) as u64
    );
    let per_kv = method(serde_json::json!({"method": "pyramidkv",
        "scorer": {"method": "snapkv", "window": 8, "kernel": 7, "pooling": "max"},
        "schedule": "kvcache_factory"}));
    let mut k = context.fork();
    per_kv.build().compress(&mut k, &obs, &budget).unwrap();
    assert_eq!(c.bytes(), 2 * k.bytes());
}

#[test]
fn adakv_shares_each_layer_budget_across_query_heads_with_its_floor() {
    let m = method(serde_json::json!({"method": "query_heads",
        "scorer": {"method": "snapkv", "window": 8, "kernel": 7, "pooling": "max"},
        "allocator": {"method": "adakv", "floor": 0.2}}));
    let (context, obs, cfg) = prefilled(&m);
    let per_entry = entry_bytes(&context, &cfg);
    let mut c = context.fork();
    m.build()
        .compress(&mut c, &obs, &Budget::Tokens(40))
        .unwrap();
    let mut ragged = false;
    for l in 0..cfg.n_layers {
        let lens = c.layer(l).head_lens();
        assert_eq!(lens.len(), cfg.n_heads, "layer {l}: stored per query head");
        assert_eq!(
            lens.iter().sum::<usize>(),
            cfg.n_heads * 40,
            "layer {l}: {lens:?}"
        );
        // floor(0.2 x 40) = 8 per query head at least (SnapKV's window of 8 is kept too).
        assert!(lens.iter().all(|&n| n >= 8), "layer {l}: {lens:?}");
        ragged |= lens.iter().any(|&n| n != 40);
    }
    assert!(ragged, "AdaKV gave every query head the uniform budget");
    // Ragged storage costs what it holds: n_heads x L x B entries.
    assert_eq!(
        c.bytes() as u64,
        per_entry * (cfg.n_heads * cfg.n_layers * 40) as u64
    );
}

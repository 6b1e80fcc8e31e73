//! The `_small` twin of the kvpress leaderboard reproduction runs unchanged in CI
//! (experiments/reproduce/kvpress_ruler4k_small.yaml: SmolLM2-135M on CPU, three generated RULER
//! tasks at 4,096 tokens, the leaderboard's presses through `preset: kvpress_leaderboard`, five
//! ratios). The LongBench twins run in `reproduce_longbench_small` (the shared LongBench records
//! served through a mock hub).

use std::path::Path;

use kvbench::experiment::Plan;

#[test]
fn kvpress_ruler4k_small_runs_unchanged() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../experiments/reproduce/kvpress_ruler4k_small.yaml");
    let plan = Plan::load(&file).unwrap();
    let out = std::env::temp_dir().join(format!("kvbench-ruler-small-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let device = candle_core::Device::Cpu;
    let files = kvbench::fetch::ModelFiles::Gguf {
        path: kvbench::testing::smollm2_gguf(),
    };
    let loaded = kvbench::loader::load(&files, &device).unwrap();
    let outcome = kvbench::testing::run_fresh(&plan, &loaded, &out);
    std::fs::remove_dir_all(&out).unwrap();
    // Three tasks, one sample each, every run of the grid.
    assert_eq!(outcome.written, 3 * plan.runs.len());
    let tasks: std::collections::BTreeSet<&str> =
        outcome.records.iter().map(|r| r.task.as_str()).collect();
    assert_eq!(tasks.len(), 3, "{tasks:?}");
    for r in &outcome.records {
        assert!((0.0..=1.0).contains(&r.score), "{}: {}", r.method, r.score);
        assert!(
            r.context_tokens > 3500,
            "{}: {} tokens",
            r.task,
            r.context_tokens
        );
    }
    // The leaderboard's expected_attention is AdaKV around ExpectedAttention (epsilon 1e-2).
    assert!(outcome.records.iter().any(|r| r.method == "adakv"
        && r.method_params["scorer"]["method"] == "expected_attention"
        && r.method_params["scorer"]["epsilon"] == 0.01));
}

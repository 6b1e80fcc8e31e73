//! `model: synthetic:SHAPE` in an experiment: random weights of a real shape, another model's
//! tokenizer (`tokenizer:`), and a run whose records carry real KV bytes for that shape.

use kvbench::experiment::Plan;
use kvbench::fetch::{resolve, FetchOptions, ModelFiles};

#[test]
fn a_synthetic_model_runs_an_experiment_with_another_models_tokenizer() {
    let dir = std::env::temp_dir().join(format!("kvbench-synthetic-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let gguf = kvbench::testing::smollm2_gguf();
    let yaml = format!(
        "experiment: synth\nmodel: synthetic:smollm2-135m\ntokenizer: {}\ndatasets:\n  - name: niah\n    chat_template: false\n    lengths: [200]\n    depths: [0.5]\n    samples_per_cell: 1\nmethods: [full, snapkv]\nbudgets:\n  - compression_ratio: 0.5\n",
        gguf.display()
    );
    let file = dir.join("synth.yaml");
    std::fs::write(&file, yaml).unwrap();
    let plan = Plan::load(&file).unwrap();
    let files = resolve(&plan.model, &FetchOptions::from_env()).unwrap();
    assert!(
        matches!(&files, ModelFiles::Synthetic { shape, tokenizer }
            if shape == "smollm2-135m" && **tokenizer == ModelFiles::Gguf { path: gguf.clone() }),
        "{files:?}"
    );
    let device = candle_core::Device::Cpu;
    let loaded = kvbench::loader::load(&files, &device).unwrap();
    let outcome = kvbench::testing::run_fresh(&plan, &loaded, &dir.join("out"));
    assert_eq!(outcome.records.len(), 2);
    let full = outcome.records.iter().find(|r| r.method == "full").unwrap();
    let snap = outcome
        .records
        .iter()
        .find(|r| r.method == "snapkv")
        .unwrap();
    for r in [full, snap] {
        assert_eq!(r.model, "synthetic:smollm2-135m");
        assert!(r.error.is_none(), "{:?}", r.error);
    }
    // The shape's cache: 30 layers x 3 KV heads x 64 dims x (K + V) x f32 per context token.
    assert!(full.context_tokens > 150);
    assert_eq!(
        full.kv_bytes_full,
        (30 * 3 * 64 * 2 * 4 * full.context_tokens) as u64
    );
    assert!(
        snap.kv_bytes < full.kv_bytes,
        "{} vs {}",
        snap.kv_bytes,
        full.kv_bytes
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

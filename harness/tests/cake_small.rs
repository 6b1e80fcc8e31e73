//! The reuse study's small twin (`experiments/cake_small.yaml`) through the real runner on CPU:
//! every way to the first token is recorded, a loaded or Cake-built full cache reproduces the
//! computed run's greedy output, so does a loaded or Cake-built KIVI cache (codes and scales
//! joined to a re-encoded front), capped reads are slower than uncapped ones, and the report has
//! the study's tables.

use std::path::PathBuf;

use kvbench::experiment::Plan;

#[test]
fn the_small_cake_study_runs_and_reports() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let plan = Plan::load(&root.join("experiments/cake_small.yaml")).unwrap();
    let dir = std::env::temp_dir().join(format!("kvbench-cake-small-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let device = candle_core::Device::Cpu;
    let files = kvbench::fetch::ModelFiles::Gguf {
        path: kvbench::testing::smollm2_gguf(),
    };
    let loaded = kvbench::loader::load(&files, &device).unwrap();
    let started = std::time::Instant::now();
    let outcome = kvbench::testing::run_fresh(&plan, &loaded, &dir.join("out"));
    eprintln!("cake_small: {:.1} s", started.elapsed().as_secs_f64());
    // 2 contexts x 3 stored forms x (compute + 3 caps x (load + cake)).
    assert_eq!(outcome.written, 2 * 3 * 7);
    let records = &outcome.records;
    let computed = |method: &str, sample: &str| {
        records
            .iter()
            .find(|c| {
                c.method == method
                    && c.sample_id == sample
                    && c.ttft_mode.as_deref() == Some("compute")
            })
            .map(|c| c.prediction.clone())
    };
    for r in records {
        let mode = r.ttft_mode.as_deref();
        assert!(!r.is_failed(), "{} {mode:?}: {:?}", r.method, r.error);
        assert!(
            matches!(mode, Some("compute" | "load" | "cake")),
            "{mode:?}"
        );
        match mode {
            Some("compute") => assert_eq!(r.kv_bytes_read, Some(0)),
            Some("load") => {
                assert!(r.kv_bytes_read.unwrap() > 0 && r.cache_ms.is_some());
            }
            _ => {
                let split = r.cake_split_tokens.unwrap();
                assert!(
                    split.is_multiple_of(64) || split == r.context_tokens,
                    "split {split}"
                );
            }
        }
        if r.method == "full" {
            assert_eq!(
                r.agreement_with_full, 1.0,
                "{mode:?} {:?}",
                r.bandwidth_gbps
            );
        }
        if r.method == "kivi" {
            assert_eq!(
                Some(r.prediction.clone()),
                computed("kivi", &r.sample_id),
                "kivi {mode:?} {:?}",
                r.bandwidth_gbps
            );
        }
    }
    // The pacing is real: at 0.05 GB/s a full 512-token load takes at least bytes / rate.
    let slow = records
        .iter()
        .find(|r| {
            r.method == "full"
                && r.ttft_mode.as_deref() == Some("load")
                && r.bandwidth_gbps == Some(0.05)
                && r.context_tokens > 400
        })
        .unwrap();
    let floor_ms = slow.kv_bytes_read.unwrap() as f64 / 0.05e9 * 1e3;
    assert!(
        slow.cache_ms.unwrap() >= floor_ms,
        "{:?} < {floor_ms}",
        slow.cache_ms
    );
    let report = kvbench_reports::report(
        &[dir.join("out")],
        &kvbench_reports::ReportOptions::new(dir.join("report")),
    )
    .unwrap();
    for t in &report.table_data {
        if t.name.starts_with("ttft_vs") || t.name.starts_with("cake_vs") {
            eprintln!("{}", kvbench_reports::tables::markdown::to_markdown(t));
        }
    }
    let names: Vec<&str> = report.table_data.iter().map(|t| t.name.as_str()).collect();
    assert!(
        names.contains(&"ttft_vs_context") && names.contains(&"cake_vs_bandwidth"),
        "{names:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `reuse: true` on requests that share a context (two questions on one JSONL context): the first
/// computes and stores, the second loads, and the loaded full cache gives the reference's output.
#[test]
fn the_first_request_of_a_context_computes_and_later_ones_load() {
    let dir = std::env::temp_dir().join(format!("kvbench-reuse-shared-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let context = "The special magic number for Anna is 7341. The sky is blue. The grass is green.";
    let lines = [
        serde_json::json!({"id": "a", "context": context, "question": "What is Anna's number?", "answers": ["7341"]}),
        serde_json::json!({"id": "b", "context": context, "question": "What colour is the sky?", "answers": ["blue"]}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.join("shared.jsonl"), text).unwrap();
    let yaml = format!(
        "experiment: shared\nmodel: smollm2-135m-instruct-q4_1\ndatasets:\n  - name: jsonl\n    path: {}\n    max_new_tokens: 6\n    chat_template: false\nmethods:\n  - method: full\nreuse: true\n",
        dir.join("shared.jsonl").display()
    );
    let plan = Plan::parse(&yaml, &dir.join("shared.yaml")).unwrap();
    let device = candle_core::Device::Cpu;
    let files = kvbench::fetch::ModelFiles::Gguf {
        path: kvbench::testing::smollm2_gguf(),
    };
    let loaded = kvbench::loader::load(&files, &device).unwrap();
    let outcome = kvbench::testing::run_fresh(&plan, &loaded, &dir.join("out"));
    let mut records = outcome.records.clone();
    records.sort_by(|a, b| a.sample_id.cmp(&b.sample_id));
    let modes: Vec<_> = records.iter().map(|r| r.ttft_mode.as_deref()).collect();
    assert_eq!(modes, vec![Some("compute"), Some("load")]);
    assert_eq!(records[0].kv_bytes_read, Some(0));
    assert!(records[1].kv_bytes_read.unwrap() > 0);
    assert_eq!(records[1].agreement_with_full, 1.0);
    assert_eq!(records[1].prefill_ms, 0.0);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The GPU study validates, with its grid: 3 stored forms x (compute + 4 caps x (load + cake)).
#[test]
fn the_gpu_study_validates() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let plan = Plan::load(&root.join("experiments/cake.yaml")).unwrap();
    assert_eq!(plan.runs.len(), 3 * 9);
    let reuse = plan.raw.reuse.as_ref().unwrap();
    assert_eq!(reuse.store, "kv_store");
    assert!(reuse.prime);
}

/// The study at the 8B shape validates: synthetic Llama-3.1-8B weights with SmolLM2's tokenizer,
/// 3 stored forms x (compute + 3 caps x (load + cake)).
#[test]
fn the_8b_study_validates() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let plan = Plan::load(&root.join("experiments/cake_8b.yaml")).unwrap();
    assert_eq!(plan.runs.len(), 3 * 7);
    assert_eq!(plan.raw.datasets.len(), 1);
    assert!(
        matches!(&plan.model, kvbench::fetch::ModelSpec::Synthetic { shape, tokenizer: Some(_) } if shape == "llama3-8b"),
        "{:?}",
        plan.model
    );
}

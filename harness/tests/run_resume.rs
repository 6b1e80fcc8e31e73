//! `kvbench run` end to end on the real model: re-runs skip finished records, a run killed
//! mid-way resumes to the complete set with no duplicate keys, and bad experiments are rejected
//! with the valid choices named.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kvbench_reports::read_results;

const EXPERIMENT: &str = "experiment: resume-test
model: smollm2-135m-instruct-q4_1
datasets:
  - name: niah
    lengths: [160]
    depths: [0.3, 0.7]
    samples_per_cell: 2
methods:
  - method: full
  - method: streaming_llm
budgets:
  - compression_ratio: 0.5
  - tokens: 64
";

/// The niah filler text, read from a file so that `run.json` records a data file.
const HAYSTACK: &str = "The river was calm that morning. Boats drifted past the old mill. \
    A light wind moved the reeds along the bank. Nobody hurried on days like this.\n\n\
    The market opened late. Baskets of apples stood by the door, and the baker sold bread \
    until noon. Later the clouds came in from the hills.\n";
const HAYSTACK_FILE: &str = "haystack.txt";

fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvbench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn kvbench(args: &[&str]) -> Command {
    // Make sure the shared test model is in the cache before the binary looks for it.
    kvbench::testing::smollm2_gguf();
    let mut c = Command::new(env!("CARGO_BIN_EXE_kvbench"));
    c.args(args).stdin(Stdio::null());
    c
}

fn keys(path: &Path) -> Vec<String> {
    read_results(path)
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect()
}

#[test]
fn rerun_skips_and_killed_run_resumes_without_duplicates() {
    let dir = workdir("resume");
    let exp = dir.join("exp.yaml");
    // paths in an experiment are relative to the working directory: give the file's own
    let haystack = dir.join(HAYSTACK_FILE);
    std::fs::write(&haystack, HAYSTACK).unwrap();
    let experiment = EXPERIMENT.replace(
        "    samples_per_cell: 2\n",
        &format!(
            "    samples_per_cell: 2\n    haystack: {{file: {{path: {}}}}}\n",
            haystack.display()
        ),
    );
    assert!(
        experiment.contains("haystack: {file: {path: /"),
        "{experiment}"
    );
    std::fs::write(&exp, experiment).unwrap();
    let out = dir.join("out");
    let results = out.join("results.jsonl");
    let args = [
        "run",
        exp.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ];

    // Start a run and kill it as soon as the first records are on disk.
    let mut child = kvbench(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while keys(&results).len() < 2 && t0.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = keys(&results);
    assert!(
        !partial.is_empty() && partial.len() < 12,
        "killed run left {} records",
        partial.len()
    );

    // Resume: completes the set, no duplicates.
    let status = kvbench(&args).stdout(Stdio::null()).status().unwrap();
    assert!(status.success());
    let all = keys(&results);
    assert_eq!(
        all.len(),
        12,
        "4 samples x (full + 2 budgets of streaming_llm)"
    );
    assert_eq!(
        all.iter().collect::<HashSet<_>>().len(),
        12,
        "duplicate keys"
    );
    assert!(
        all.starts_with(&partial),
        "records written before the kill are kept as they were"
    );

    // Run again: nothing new.
    let o = kvbench(&args).output().unwrap();
    assert!(o.status.success());
    assert_eq!(keys(&results).len(), 12);
    assert!(String::from_utf8_lossy(&o.stdout).contains("0 record(s) written, 12 already done"));

    // `kvbench show` prints the exact prompt each turn was fed, from prompts.jsonl (one line per
    // sample turn, not per record), the same text `kvbench show-prompt` renders.
    let prompts = std::fs::read_to_string(out.join("prompts.jsonl")).unwrap();
    let lines: Vec<kvbench_reports::prompts::PromptLine> = prompts
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let turns: HashSet<(&str, usize)> = lines
        .iter()
        .map(|p| (p.sample_id.as_str(), p.turn))
        .collect();
    assert_eq!(turns.len(), 4, "one prompt per sample turn");
    assert!(
        lines.len() <= 5,
        "a killed turn is written again at most once"
    );
    let preview = kvbench(&["show-prompt", exp.to_str().unwrap(), "--samples", "4"])
        .output()
        .unwrap();
    assert!(preview.status.success());
    let preview = String::from_utf8(preview.stdout).unwrap();
    for p in &lines {
        assert!(p.templated && p.context.contains("<|im_start|>"), "{p:?}");
        let shown = kvbench(&["show", out.to_str().unwrap(), &p.sample_id])
            .output()
            .unwrap();
        assert!(shown.status.success());
        let shown = String::from_utf8(shown.stdout).unwrap();
        let block = format!(
            "{}\n--- question: {} tokens (appended after compression; the model answers after it) ---\n{}\n",
            p.context, p.question_tokens, p.question
        );
        assert!(shown.contains(&block), "show lacks the prompt:\n{shown}");
        assert!(
            shown.contains(&format!("context: {} tokens", p.context_tokens)),
            "{shown}"
        );
        assert!(
            preview.contains(&block),
            "show-prompt renders it differently:\n{preview}"
        );
    }

    // The run directory has its summary and the resolved experiment.
    for f in ["summary.md", "summary.csv", "experiment.yaml", "run.json"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    // run.json says how prompts were made, checked against the model's own tokenizer.
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    let tok = {
        let mut f = std::fs::File::open(kvbench::testing::smollm2_gguf()).unwrap();
        let content = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
        kvbench::tokenizer::TextTokenizer::from_gguf(&content).unwrap()
    };
    assert_eq!(run["architecture"], "llama");
    assert_eq!(
        run["chat_template_sha256"],
        tok.template().unwrap().sha256(),
        "niah runs with `chat_template: auto`, so SmolLM2's template applies"
    );
    assert_eq!(run["eos_ids"], serde_json::json!(tok.eos_ids()));
    assert_eq!(run["bos_id"], serde_json::json!(tok.bos_id()));
    assert_eq!(run["datasets"][0]["name"], "niah");
    assert_eq!(run["datasets"][0]["chat_template"], "auto");
    assert_eq!(
        run["datasets"][0]["truncation"],
        serde_json::json!({"policy": "middle", "window": run["max_position_embeddings"]})
    );
    // the data files read, with their sha256: here the haystack file (generated data has none)
    let files = run["datasets"][0]["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0]["name"].as_str().unwrap().ends_with(HAYSTACK_FILE));
    assert_eq!(files[0]["bytes"], HAYSTACK.len());
    assert_eq!(
        files[0]["sha256"],
        kvbench_testkit::sha256_hex(HAYSTACK.as_bytes())
    );
    assert!(run["datasets"][0].get("revision").is_none(), "local data");
    let records = read_results(&results).unwrap();
    for r in &records {
        assert_eq!(r.truncated_tokens, 0, "160-token contexts fit the window");
        assert!(r.kv_bytes <= r.kv_bytes_full && r.kv_bytes > 0);
        if r.method == "full" {
            assert_eq!(r.agreement_with_full, 1.0);
            assert_eq!(r.kv_bytes, r.kv_bytes_full);
        } else if r.budget_label == "k=64" {
            // 64 entries per layer and head of a ~160-token context.
            let expected = 64.0 / r.context_tokens as f64;
            assert!((r.kv_bytes as f64 / r.kv_bytes_full as f64 - expected).abs() < 1e-9);
        }
    }

    // --fresh starts over and keeps the old results aside.
    let status = kvbench(&[&args[..], &["--fresh", "--limit", "1"]].concat())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(keys(&results).len(), 3);
    let aside = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".bak")
        })
        .count();
    assert_eq!(aside, 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn validate_rejects_unknown_method_listing_registered_ones() {
    let dir = workdir("validate");
    let exp = dir.join("bad.yaml");
    std::fs::write(
        &exp,
        EXPERIMENT.replace("method: streaming_llm", "method: streamingllm"),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .args(["validate", exp.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.yaml:10"), "{err}");
    for name in kvbench_methods::method_names() {
        assert!(err.contains(name), "{name} not listed in: {err}");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .args(["validate", "../experiments/quickstart.yaml"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}

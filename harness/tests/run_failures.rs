//! Issue 17 items 7 and 8 on the real model (CPU): data problems are per-sample (skipped with a
//! warning naming the line or sample), a dataset of 0 samples fails the run, and a device out of
//! memory on one sample is a failed record while the run goes on (retried on a re-run unless
//! `--keep-failed`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kvbench_reports::read_results;

fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvbench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `exp.yaml` over `data.jsonl` (both in `dir`; the data path is relative to the experiment).
fn experiment(dir: &Path, lines: &[String]) -> PathBuf {
    std::fs::write(dir.join("data.jsonl"), lines.join("\n") + "\n").unwrap();
    let exp = dir.join("exp.yaml");
    std::fs::write(
        &exp,
        "experiment: failures
model: smollm2-135m-instruct-q4_1
datasets:
  - name: jsonl
    path: data.jsonl
    max_new_tokens: 3
methods:
  - method: full
  - method: streaming_llm
budgets:
  - compression_ratio: 0.5
",
    )
    .unwrap();
    exp
}

fn line(id: &str, context: &str, question: &str) -> String {
    serde_json::json!({"id": id, "context": context, "question": question, "answers": ["42"]})
        .to_string()
}

fn run(exp: &Path, out: &Path, extra: &[&str], oom: Option<&str>) -> Output {
    kvbench::testing::smollm2_gguf();
    let mut c = Command::new(env!("CARGO_BIN_EXE_kvbench"));
    c.args(["run", exp.to_str().unwrap(), "--device", "cpu", "--output"])
        .arg(out)
        .args(extra)
        .stdin(Stdio::null());
    match oom {
        Some(id) => c.env("KVBENCH_TEST_OOM", id),
        None => c.env_remove("KVBENCH_TEST_OOM"),
    };
    c.output().unwrap()
}

const GOOD_CONTEXT: &str = "The code of the blue door is 42. The red door has no code.";

#[test]
fn empty_lines_and_oversized_questions_are_skipped_samples_not_run_failures() {
    let dir = workdir("skip-samples");
    let long_question = "word ".repeat(9000);
    let exp = experiment(
        &dir,
        &[
            line("a", GOOD_CONTEXT, "What is the code of the blue door?"),
            line("b", "", "What is the code?"),
            line("c", GOOD_CONTEXT, "   "),
            line("d", GOOD_CONTEXT, &long_question),
        ],
    );
    let out = dir.join("out");
    let o = run(&exp, &out, &[], None);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    for want in [
        "data.jsonl line 2: field `context`",
        "data.jsonl line 3: field `question`",
        "skipped sample `d`",
        "positions",
    ] {
        assert!(stderr.contains(want), "{want} missing:\n{stderr}");
    }
    let records = read_results(&out.join("results.jsonl")).unwrap();
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.sample_id == "a"));
}

#[test]
fn a_dataset_of_zero_samples_fails_the_run() {
    let dir = workdir("zero-samples");
    let exp = experiment(
        &dir,
        &[
            line("b", "", "What is the code?"),
            line("c", GOOD_CONTEXT, ""),
        ],
    );
    let o = run(&exp, &dir.join("out"), &[], None);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a run of nothing succeeded:\n{stderr}");
    assert!(
        stderr.contains("0 samples") && stderr.contains("jsonl"),
        "{stderr}"
    );
}

#[test]
fn an_out_of_memory_sample_is_a_failed_record_and_is_retried() {
    let dir = workdir("oom");
    let exp = experiment(
        &dir,
        &[
            line("a", GOOD_CONTEXT, "What is the code of the blue door?"),
            line("e", GOOD_CONTEXT, "Which door has no code?"),
        ],
    );
    let out = dir.join("out");
    let results = out.join("results.jsonl");
    // Sample `a` runs out of memory: its two records fail, `e` is measured, the run succeeds.
    let o = run(&exp, &out, &[], Some("a"));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("out of memory"), "{stderr}");
    let records = read_results(&results).unwrap();
    assert_eq!(records.len(), 4);
    for r in &records {
        match r.sample_id.as_str() {
            "a" => assert!(
                r.error
                    .as_deref()
                    .is_some_and(|e| e.contains("out of memory")),
                "{r:?}"
            ),
            _ => assert!(r.error.is_none(), "{r:?}"),
        }
    }
    // The summary holds the measured sample only.
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert!(!summary.contains("NaN"), "{summary}");
    let rows = kvbench_reports::summarize(&records);
    assert!(rows.iter().all(|r| r.n == 1), "failed records left out");

    // --keep-failed: the failed records count as done.
    let o = run(&exp, &out, &["--keep-failed"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(read_results(&results).unwrap().len(), 4);

    // By default a re-run retries them, and the success is what reports see.
    let o = run(&exp, &out, &[], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let records = read_results(&results).unwrap();
    assert_eq!(records.len(), 6);
    let merged = kvbench_reports::merge::load_runs(std::slice::from_ref(&out)).unwrap();
    assert_eq!(merged.records.len(), 4);
    assert!(merged.records.iter().all(|r| r.error.is_none()));
}

//! A CLI that explains itself (issue 17 items 9-11): one method or dataset in full, a starter
//! experiment that validates, command-line overrides on `validate` and `run`, the exact prompts
//! without running methods, `fetch` printing paths, a plan line and plain progress lines when
//! stderr is not a terminal, and Ctrl-C saying what was kept and how to resume.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn kvbench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("KVBENCH_PROGRESS_SECS", "0")
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) -> String {
    let o = kvbench(args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{args:?} failed:\n{err}");
    out
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "kvbench-cli-explains-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

const TINY: &str = "experiment: tiny
model: smollm2-135m-instruct-q4_1
device: cpu
datasets:
  - name: niah
    lengths: [64]
    depths: [0.5]
    samples_per_cell: 2
methods: [full, streaming_llm]
budgets:
  - compression_ratio: 0.5
";

#[test]
fn methods_and_datasets_show_one_entry_in_full() {
    let out = ok(&["methods", "snapkv"]);
    for want in [
        "window",
        "kernel",
        "pooling",
        "default 32",
        "- method: snapkv",
        "kvpress",
    ] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    let out = ok(&["datasets", "ruler"]);
    for want in [
        "lengths",
        "required",
        "essays",
        "squad",
        "niah_single_1",
        "- name: ruler",
    ] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    let o = kvbench(&["methods", "snapkvv"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("registered methods"), "{}", text(&o).1);
}

#[test]
fn init_writes_a_starter_that_validates_and_is_not_overwritten() {
    let d = dir("init");
    let path = d.join("exp.yaml");
    let out = ok(&["init", p(&path)]);
    assert!(out.contains("kvbench validate"), "{out}");
    let out = ok(&["validate", p(&path)]);
    assert!(out.contains(": ok"), "{out}");
    let o = kvbench(&["init", p(&path)]);
    assert!(!o.status.success() && text(&o).1.contains("--force"));
    ok(&["init", p(&path), "--force"]);
}

#[test]
fn validate_accepts_overrides_and_names_the_field() {
    let d = dir("overrides");
    let path = d.join("tiny.yaml");
    std::fs::write(&path, TINY).unwrap();
    let out = ok(&[
        "validate",
        p(&path),
        "--methods",
        "full,snapkv,h2o",
        "--budgets",
        "0.25,0.5,tokens:32",
        "--set",
        "seed=3",
    ]);
    assert!(out.contains("7 method run(s)"), "{out}");
    let o = kvbench(&[
        "validate",
        p(&path),
        "--set",
        "budgets.0.compression_ratio=1.5",
    ]);
    let err = text(&o).1;
    assert!(!o.status.success(), "accepted:\n{err}");
    assert!(
        err.contains("field `budgets`") && err.contains("--set budgets.0.compression_ratio=1.5"),
        "{err}"
    );
}

#[test]
fn show_prompt_prints_the_split_prompt_with_token_counts() {
    kvbench::testing::smollm2_gguf();
    let d = dir("prompt");
    let path = d.join("tiny.yaml");
    std::fs::write(&path, TINY).unwrap();
    let out = ok(&["show-prompt", p(&path)]);
    for want in [
        "--- context: ",
        " tokens (prefilled",
        "--- question: ",
        "lives in",
        "niah-L64",
    ] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    // `run --dry-run` prints the same and writes nothing; overrides apply to it.
    let output = d.join("out");
    let dry = ok(&[
        "run",
        p(&path),
        "--dry-run",
        "--output",
        p(&output),
        "--set",
        "experiment=x",
    ]);
    assert_eq!(dry, out);
    assert!(!output.join("results.jsonl").exists());
    // `fetch` prints paths, not a debug struct.
    let out = ok(&["fetch", "smollm2-135m-instruct-q4_1"]);
    assert!(
        out.starts_with("gguf: /") && !out.contains("Gguf {"),
        "{out}"
    );
}

#[test]
fn run_prints_a_plan_line_and_plain_progress_lines_when_not_a_terminal() {
    kvbench::testing::smollm2_gguf();
    let d = dir("progress");
    let path = d.join("tiny.yaml");
    std::fs::write(&path, TINY).unwrap();
    let output = d.join("out");
    let o = kvbench(&["run", p(&path), "--output", p(&output), "--budgets", "0.25"]);
    let (_, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("plan: 2 samples (niah 2) x 2 configurations = 4 generations"),
        "{err}"
    );
    assert!(
        err.contains("progress: sample 1/2 x 2 configurations"),
        "{err}"
    );
    assert!(
        err.contains("progress: sample 2/2") && err.contains("left"),
        "{err}"
    );
    let results = std::fs::read_to_string(output.join("results.jsonl")).unwrap();
    assert_eq!(results.lines().count(), 4);
    assert!(results.contains("\"compression_ratio\":0.25") || results.contains("0.25"));
}

#[cfg(unix)]
#[test]
fn ctrl_c_keeps_finished_records_and_prints_the_resume_command() {
    kvbench::testing::smollm2_gguf();
    let d = dir("interrupt");
    let path = d.join("tiny.yaml");
    std::fs::write(
        &path,
        TINY.replace("samples_per_cell: 2", "samples_per_cell: 200"),
    )
    .unwrap();
    let output = d.join("out");
    let child = Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .args(["run", p(&path), "--output", p(&output), "--fresh"])
        .env("HF_HUB_OFFLINE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let results = output.join("results.jsonl");
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&results).map_or(0, |t| t.lines().count()) < 2 {
        assert!(start.elapsed().as_secs() < 300, "no records after 300 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("record(s) written by this run"), "{err}");
    let resume = format!(
        "resume with: kvbench run {} --output {}",
        p(&path),
        p(&output)
    );
    assert!(err.contains(&resume), "{resume} missing:\n{err}");
    assert!(!err.contains("--fresh --output"), "{err}");
    let kept = std::fs::read_to_string(&results).unwrap();
    assert!(kept.lines().count() >= 2 && kept.ends_with('\n'), "{kept}");
    assert!(kept.lines().count() < 400, "the run did not stop");
    // The records so far are summarised: one summary row per method, with their count.
    assert!(err.contains("cover the records so far"), "{err}");
    let summary = std::fs::read_to_string(output.join("summary.md")).unwrap();
    assert!(summary.contains("| full "), "{summary}");
    assert!(output.join("report.html").exists());
}

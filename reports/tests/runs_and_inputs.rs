//! Issue 16: results.parquet, bad input reported by file and line, several runs side by side or
//! merged, `compare` of two runs, `--where` filters, clear errors, and `show`.

use std::path::{Path, PathBuf};

use kvbench_reports::bootstrap::BootstrapConfig;
use kvbench_reports::filter::Filter;
use kvbench_reports::runs::Combined;
use kvbench_reports::{report, Record, ReportError, ReportOptions, ResultsWriter};
use polars::prelude::*;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvbench-runs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn record(sample: usize, method: &str, budget: Option<f64>, experiment: &str) -> Record {
    let label = budget.map_or("-".to_string(), |b| format!("r={b:.2}"));
    let ratio = budget.unwrap_or(0.0);
    let kv_full = 1000u64;
    serde_json::from_value(serde_json::json!({
        "experiment": experiment, "model": "m", "dataset": "d", "task": "t",
        "sample_id": format!("s{sample}"), "turn": 0,
        "method": method, "method_params": {"window": 8},
        "budget": budget.map(|b| serde_json::json!({"compression_ratio": b})),
        "budget_label": label, "query_aware": false,
        "target_ratio": ratio, "achieved_ratio": ratio,
        "prediction": format!("answer {sample}, said \"{method}\"\nsecond line"),
        "answers": [format!("answer {sample}"), "other"], "metric": "qa_f1",
        "score": if method == "full" { 1.0 } else { (sample % 2) as f64 },
        "agreement_with_full": 1.0, "kl_first_token": 0.0,
        "kv_bytes": ((1.0 - ratio) * kv_full as f64) as u64, "kv_bytes_full": kv_full,
        "peak_device_bytes": null, "prefill_ms": 10.0, "compress_ms": 1.0, "question_ms": 2.0,
        "ttft_ms": 13.0, "decode_ms_per_token": 5.0, "context_tokens": 100, "question_tokens": 5,
        "new_tokens": 4, "device": "cpu", "seed": 0, "kvbench_version": env!("CARGO_PKG_VERSION"),
        "key": format!("{method}|{label}|s{sample}"),
    }))
    .unwrap()
}

fn run(n: usize, experiment: &str) -> Vec<Record> {
    let mut out = Vec::new();
    for s in 0..n {
        out.push(record(s, "full", None, experiment));
        out.push(record(s, "snapkv", Some(0.5), experiment));
        out.push(record(s, "kivi", None, experiment));
    }
    out
}

fn write(path: &Path, records: &[Record]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w = ResultsWriter::open(path).unwrap();
    for r in records {
        w.append(r).unwrap();
    }
}

fn options(out: &Path) -> ReportOptions {
    let mut o = ReportOptions::new(out);
    o.bootstrap = BootstrapConfig {
        seed: 1,
        resamples: 100,
    };
    o
}

fn metrics_rows(outcome: &kvbench_reports::ReportOutcome) -> usize {
    outcome
        .table_data
        .iter()
        .find(|t| t.name == "metrics")
        .unwrap()
        .rows
        .len()
}

#[test]
fn every_report_leaves_a_typed_flat_results_parquet() {
    let dir = temp_dir("parquet");
    let mut records = run(3, "e");
    records[0].peak_device_bytes = Some(123);
    records[1].error = Some("out of memory".into());
    write(&dir.join("results.jsonl"), &records);
    let outcome = report(&[dir.clone()], &options(&dir)).unwrap();
    assert_eq!(outcome.parquet, dir.join("results.parquet"));
    let df = kvbench_reports::frame::read_parquet(&outcome.parquet).unwrap();
    // Every record, failed ones too (their `error` says why).
    assert_eq!(df.height(), records.len());
    let dtype = |c: &str| df.column(c).unwrap().dtype().clone();
    assert_eq!(dtype("score"), DataType::Float64);
    assert_eq!(dtype("kv_bytes"), DataType::UInt64);
    assert_eq!(dtype("query_aware"), DataType::Boolean);
    assert_eq!(dtype("answers"), DataType::List(Box::new(DataType::String)));
    assert_eq!(dtype("budget_compression_ratio"), DataType::Float64);
    assert_eq!(dtype("method_params"), DataType::String);
    let ratio: Vec<Option<f64>> = df
        .column("budget_compression_ratio")
        .unwrap()
        .f64()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(&ratio[..3], &[None, Some(0.5), None]);
    let peak = df.column("peak_device_bytes").unwrap();
    assert_eq!(peak.null_count(), records.len() - 1);
    assert_eq!(df.column("error").unwrap().null_count(), records.len() - 1);
    assert!(df.column("byte_ratio").is_err() && df.column("source").is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_lines_are_named_by_file_and_line_and_good_lines_still_count() {
    let dir = temp_dir("bad");
    let good = run(2, "e");
    let mut text = String::new();
    for r in &good[..3] {
        text += &serde_json::to_string(r).unwrap();
        text.push('\n');
    }
    text += "{\"kvbench_version\": \"0.0.1\", \"experiment\": \"e\"}\n";
    for r in &good[3..] {
        text += &serde_json::to_string(r).unwrap();
        text.push('\n');
    }
    let other = record(9, "full", None, "another-experiment");
    text += &serde_json::to_string(&other).unwrap();
    text += "\n{\"experiment\": \"e\", \"mo";
    std::fs::write(dir.join("results.jsonl"), text).unwrap();
    let merged = kvbench_reports::merge::load_runs(&[dir.clone()]).unwrap();
    assert_eq!(merged.records.len(), good.len() + 1);
    let lines: Vec<String> = merged.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(merged.problems.len(), 3, "{lines:#?}");
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(
        has("results.jsonl line 4: a record of kvbench 0.0.1"),
        "{lines:#?}"
    );
    assert!(
        has("results.jsonl line 8: first record of experiment `another-experiment`"),
        "{lines:#?}"
    );
    assert!(
        has("results.jsonl line 9: incomplete last line"),
        "{lines:#?}"
    );
    // The report goes on with the good lines and passes the problems on.
    let outcome = report(&[dir.clone()], &options(&dir)).unwrap();
    assert_eq!(outcome.records, good.len() + 1);
    assert_eq!(outcome.problems.len(), 3);
    // The polars loader sees the same.
    let frame = kvbench_reports::merge::load_frame(&[dir.clone()]).unwrap();
    assert_eq!(frame.frame.height(), good.len() + 1);
    assert_eq!(frame.problems.len(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_lines_in_a_second_shard_name_that_shard_and_a_readable_older_version_still_counts() {
    let dir = temp_dir("bad-shards");
    let good = run(2, "e");
    write(&dir.join("results.shard-0-of-2.jsonl"), &good);
    // Shard 1: a record another kvbench version wrote in this schema (read, with a warning), a
    // line of another version's schema (skipped), then a final line cut short (skipped).
    let mut older = record(7, "full", None, "e");
    older.kvbench_version = "0.0.9".into();
    let mut text = serde_json::to_string(&older).unwrap() + "\n";
    text += "{\"kvbench_version\": \"0.0.1\", \"experiment\": \"e\", \"scores\": [1]}\n";
    text += &serde_json::to_string(&record(8, "full", None, "e")).unwrap();
    text += "\n{\"experiment\": \"e\", \"mo";
    std::fs::write(dir.join("results.shard-1-of-2.jsonl"), text).unwrap();
    let merged = kvbench_reports::merge::load_runs(&[dir.clone()]).unwrap();
    assert_eq!(
        merged.records.len(),
        good.len() + 2,
        "both readable lines count"
    );
    let lines: Vec<String> = merged.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(
        has("results.shard-1-of-2.jsonl line 1: first record of kvbench version `0.0.9`"),
        "{lines:#?}"
    );
    assert!(
        has("results.shard-1-of-2.jsonl line 2: a record of kvbench 0.0.1"),
        "{lines:#?}"
    );
    assert!(
        has("results.shard-1-of-2.jsonl line 4: incomplete last line"),
        "{lines:#?}"
    );
    // The run's summary path (polars frame) reads the same records and problems.
    let frame = kvbench_reports::merge::load_frame(&[dir.clone()]).unwrap();
    assert_eq!(frame.frame.height(), good.len() + 2);
    assert_eq!(frame.problems.len(), 3);
    let rows = kvbench_reports::summarize_frame(&frame.frame).unwrap();
    let full = rows.iter().find(|r| r.method == "full").unwrap();
    assert_eq!(full.n, 4, "s0, s1 and the two good lines of shard 1");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn two_runs_of_the_same_samples_go_side_by_side_unless_merged() {
    let dir = temp_dir("sides");
    let (a, b) = (dir.join("run-a"), dir.join("run-b"));
    write(&a.join("results.jsonl"), &run(4, "e"));
    write(&b.join("results.jsonl"), &run(4, "e"));
    let out = dir.join("out");
    let single = report(&[a.clone()], &options(&out)).unwrap();
    let both = report(&[a.clone(), b.clone()], &options(&out)).unwrap();
    assert!(
        matches!(&both.combined, Combined::SideBySide { runs, shared } if runs == &["run-a", "run-b"] && *shared == 12),
        "{:?}",
        both.combined
    );
    // One row per run and configuration, each of the run's own 4 samples: not 8 samples.
    assert_eq!(metrics_rows(&both), 2 * metrics_rows(&single));
    let metrics = both
        .table_data
        .iter()
        .find(|t| t.name == "metrics")
        .unwrap();
    let n_col = metrics.columns.iter().position(|c| c.key == "n").unwrap();
    let model_col = metrics
        .columns
        .iter()
        .position(|c| c.key == "model")
        .unwrap();
    for row in &metrics.rows {
        assert_eq!(row[n_col], kvbench_reports::tables::Value::Int(4));
        let model = row[model_col].display(kvbench_reports::tables::Kind::Text);
        assert!(model == "m @run-a" || model == "m @run-b", "{model}");
    }
    // Shards of one run: --merge counts each key once.
    let mut merge = options(&out);
    merge.merge = true;
    let merged = report(&[a.clone(), b.clone()], &merge).unwrap();
    assert_eq!(merged.combined, Combined::Merged);
    assert_eq!(metrics_rows(&merged), metrics_rows(&single));
    assert_eq!(merged.duplicates.len(), 12);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn compare_gives_per_cell_differences_with_intervals() {
    let a = run(6, "e");
    let mut b = run(6, "e");
    for r in b.iter_mut().filter(|r| r.method == "snapkv") {
        r.score = 1.0;
        r.ttft_ms += 5.0;
    }
    let cfg = BootstrapConfig {
        seed: 1,
        resamples: 200,
    };
    let t = kvbench_reports::compare::runs::compare_runs(&a, &b, ("a", "b"), cfg);
    assert_eq!(t.rows.len(), 3);
    let col = |k: &str| t.columns.iter().position(|c| c.key == k).unwrap();
    let snap = t
        .rows
        .iter()
        .find(|r| r[col("method")] == kvbench_reports::tables::Value::Text("snapkv".into()))
        .unwrap();
    let kvbench_reports::tables::Value::Est(Some(score)) = &snap[col("delta_score")] else {
        panic!("no score difference")
    };
    // Half the samples went from 0 to 1: +0.5, paired over the 6 samples.
    assert!((score.mean - 0.5).abs() < 1e-9 && score.lo <= 0.5 && score.hi >= 0.5);
    assert_eq!(
        snap[col("pairing")],
        kvbench_reports::tables::Value::Text("paired".into())
    );
    let kvbench_reports::tables::Value::Est(Some(ttft)) = &snap[col("delta_ttft_ms")] else {
        panic!("no TTFT difference")
    };
    assert!((ttft.mean - 5.0).abs() < 1e-9);
    // A cell only one run has is listed as such.
    let mut c = a.clone();
    c.retain(|r| r.method != "kivi");
    let t = kvbench_reports::compare::runs::compare_runs(&c, &b, ("c", "b"), cfg);
    assert!(t
        .rows
        .iter()
        .any(|r| r[col("status")] == kvbench_reports::tables::Value::Text("only in b".into())));
}

#[test]
fn where_filters_keep_the_named_values_and_an_empty_match_is_an_error() {
    let dir = temp_dir("where");
    write(&dir.join("results.jsonl"), &run(3, "e"));
    let out = dir.join("out");
    let mut opts = options(&out);
    opts.filters = vec!["method=full,kivi".parse::<Filter>().unwrap()];
    let outcome = report(&[dir.clone()], &opts).unwrap();
    assert_eq!(outcome.records, 6);
    opts.filters.push("task=nope".parse().unwrap());
    let err = report(&[dir.clone()], &opts).unwrap_err();
    assert!(matches!(err, ReportError::NoMatch { .. }));
    assert!(
        err.to_string()
            .contains("--where task=nope: no records match (values of `task` in these runs: t)"),
        "{err}"
    );
    assert!("colour=red"
        .parse::<Filter>()
        .unwrap_err()
        .contains("filter on one of"));
    assert!("method".parse::<Filter>().is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_baseline_and_empty_runs_are_errors() {
    let dir = temp_dir("errors");
    write(&dir.join("results.jsonl"), &run(2, "e"));
    let mut opts = options(&dir.join("out"));
    opts.baseline = "fulll".into();
    opts.baseline_required = true;
    let err = report(&[dir.clone()], &opts).unwrap_err().to_string();
    assert!(
        err.contains("--baseline fulll: no records of method `fulll`")
            && err.contains("full, kivi, snapkv"),
        "{err}"
    );
    // Not named by the user: the default baseline missing only leaves the deltas out.
    opts.baseline_required = false;
    assert!(report(&[dir.clone()], &opts).is_ok());
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("results.jsonl"), "").unwrap();
    let err = report(&[empty.clone()], &options(&empty)).unwrap_err();
    assert!(matches!(err, ReportError::Empty(_)), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn show_prints_every_record_of_a_sample_with_its_source_line() {
    let dir = temp_dir("show");
    write(&dir.join("results.jsonl"), &run(3, "e"));
    let merged = kvbench_reports::merge::load_runs(&[dir.clone()]).unwrap();
    let text = kvbench_reports::show::render(&merged, "s1").unwrap();
    assert!(
        text.contains("sample s1 · dataset d · task t · metric qa_f1 · 3 record(s)"),
        "{text}"
    );
    assert!(text.contains("answers: [\"answer 1\",\"other\"]"), "{text}");
    assert!(
        text.contains("-- snapkv r=0.50 · ") && text.contains("results.jsonl line 5"),
        "{text}"
    );
    assert!(
        text.contains("prediction: answer 1, said \"kivi\""),
        "{text}"
    );
    // `full` first, as tables order methods.
    assert!(
        text.find("-- full").unwrap() < text.find("-- snapkv").unwrap(),
        "{text}"
    );
    let err = kvbench_reports::show::render(&merged, "s9")
        .unwrap_err()
        .to_string();
    assert!(err.contains("s0, s1, s2"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

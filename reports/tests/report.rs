//! `kvbench report` end to end on a synthetic multi-method, multi-budget results file.

use std::path::{Path, PathBuf};

use kvbench_reports::bootstrap::{BootstrapConfig, Rng};
use kvbench_reports::merge::load_runs;
use kvbench_reports::report::build_tables;
use kvbench_reports::{report, Record, ReportOptions, ResultsWriter};

const PLOTS: [&str; 7] = [
    "score_vs_ratio",
    "fidelity_vs_ratio",
    "memory_vs_ratio",
    "ttft_breakdown",
    "throughput_vs_context",
    "needle_heatmap",
    "pareto",
];
const TABLES: [&str; 4] = ["scores", "benchmarks", "metrics", "deltas"];

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvbench-report-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Records of a made-up run: a needle dataset (lengths x depths) and a three-task LongBench-like
/// dataset; full, streaming_llm and snapkv at three ratios and one token budget.
fn synthetic() -> Vec<Record> {
    let mut rng = Rng::new(11);
    let mut uniform = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let mut out = Vec::new();
    let mut budgets: Vec<(String, Option<serde_json::Value>, f64)> = vec![("-".into(), None, 0.0)];
    for r in [0.25, 0.5, 0.75] {
        budgets.push((
            format!("r={r:.2}"),
            Some(serde_json::json!({ "compression_ratio": r })),
            r,
        ));
    }
    budgets.push((
        "k=128".into(),
        Some(serde_json::json!({ "tokens": 128 })),
        0.0,
    ));
    let mut samples: Vec<(String, String, String, usize, serde_json::Value)> = Vec::new();
    for length in [512usize, 1024, 2048] {
        for depth in [0.1, 0.5, 0.9] {
            for i in 0..2 {
                let meta = serde_json::json!({ "length": length, "depth": depth });
                samples.push((
                    "niah".into(),
                    "niah".into(),
                    format!("niah-L{length}-D{depth:.2}-{i}"),
                    length,
                    meta,
                ));
            }
        }
    }
    for task in ["qasper", "hotpotqa", "gov_report"] {
        for i in 0..8 {
            let len = 800 + 300 * i;
            samples.push((
                "longbench".into(),
                task.into(),
                format!("{task}-{i}"),
                len,
                serde_json::Value::Null,
            ));
        }
    }
    for (dataset, task, id, len, meta) in &samples {
        for (method, penalty, compress_ms) in [
            ("full", 0.0, 0.0),
            ("streaming_llm", 0.9, 0.2),
            ("snapkv", 0.35, 3.0),
        ] {
            for (label, budget, ratio) in &budgets {
                if (method == "full") != budget.is_none() {
                    continue;
                }
                let ratio = if label.starts_with('k') {
                    1.0 - 128.0 / *len as f64
                } else {
                    *ratio
                };
                let kept = ((*len as f64) * (1.0 - ratio)).floor();
                let p = (0.9 - penalty * ratio * ratio).clamp(0.0, 1.0);
                let score = if uniform() < p { 1.0 } else { 0.0 };
                let prefill = 0.05 * *len as f64 + uniform();
                let question = 4.0 + uniform();
                let kv_bytes = (kept * 9.0 * 30.0 * 64.0 * 4.0) as u64;
                out.push(Record {
                    experiment: "synthetic".into(),
                    model: "hf:org/Tiny-Model".into(),
                    dataset: dataset.clone(),
                    task: task.clone(),
                    sample_id: id.clone(),
                    turn: 0,
                    method: method.into(),
                    method_params: serde_json::json!({}),
                    budget: budget.clone(),
                    budget_label: label.clone(),
                    query_aware: false,
                    target_ratio: ratio,
                    achieved_ratio: ratio + 0.002 * uniform(),
                    prediction: "x".into(),
                    answers: vec!["x".into()],
                    metric: if dataset == "niah" {
                        "string_match_all".into()
                    } else {
                        "qa_f1".into()
                    },
                    score,
                    agreement_with_full: if method == "full" {
                        1.0
                    } else {
                        (1.0 - penalty * ratio * uniform()).clamp(0.0, 1.0)
                    },
                    kl_first_token: if method == "full" {
                        0.0
                    } else {
                        penalty * ratio * uniform()
                    },
                    kv_bytes,
                    kv_bytes_full: (*len as f64 * 9.0 * 30.0 * 64.0 * 4.0) as u64,
                    peak_device_bytes: Some(300 * 1024 * 1024 + kv_bytes + 4 * *len as u64 * 1024),
                    prefill_ms: prefill,
                    compress_ms: compress_ms * (1.0 + uniform()),
                    question_ms: question,
                    ttft_ms: prefill + compress_ms + question,
                    decode_ms_per_token: 8.0 + kept / 400.0 + uniform(),
                    context_tokens: *len,
                    question_tokens: 12,
                    truncated_tokens: 0,
                    new_tokens: 8,
                    device: "cuda:0 (synthetic)".into(),
                    seed: 0,
                    kvbench_version: "0.1.0".into(),
                    key: format!("{dataset}|{id}|{method}|{label}"),
                    meta: meta.clone(),
                    kv_storage: serde_json::Value::Null,
                    error: None,
                    ttft_mode: None,
                    kv_bytes_read: None,
                    bandwidth_gbps: None,
                    cache_ms: None,
                    cake_split_tokens: None,
                });
            }
        }
    }
    out
}

fn write_records(path: &Path, records: &[Record]) {
    let mut w = ResultsWriter::open(path).unwrap();
    for r in records {
        w.append(r).unwrap();
    }
}

fn options(out: &Path) -> ReportOptions {
    let mut o = ReportOptions::new(out);
    o.bootstrap = BootstrapConfig {
        seed: 7,
        resamples: 300,
    };
    o
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

#[test]
fn report_writes_every_table_format_every_plot_and_the_page() {
    let dir = temp_dir("full");
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let records = synthetic();
    write_records(&run.join("results.jsonl"), &records);
    std::fs::write(
        run.join("experiment.yaml"),
        "experiment: synthetic\nmodel: hf:org/Tiny-Model\n",
    )
    .unwrap();
    let published = dir.join("published.csv");
    std::fs::write(
        &published,
        "source,model,dataset,task,method,budget,score\nTest 2024 Table 1,org/tiny-model,longbench,qasper,snapkv,r=0.50,61.5\nTest 2024 Table 1,other/Big-Model,longbench,average,full,-,40.0\n",
    )
    .unwrap();
    let out = dir.join("report");
    let mut opts = options(&out);
    opts.compare = Some(published);
    let outcome = report(&[run], &opts).unwrap();
    assert_eq!(outcome.records, records.len());
    assert!(outcome.duplicates.is_empty());

    // Tables: four formats each, non-empty; Parquet reads back with every row.
    let mut names: Vec<&str> = outcome.tables.iter().map(|t| t.name.as_str()).collect();
    names.sort();
    // The synthetic LongBench tasks (qasper, hotpotqa, gov_report) give the category table.
    let mut want: Vec<&str> = TABLES
        .iter()
        .copied()
        .chain(["longbench_categories", "compare"])
        .collect();
    want.sort();
    assert_eq!(names, want);
    for (files, table) in outcome.tables.iter().zip(&outcome.table_data) {
        for p in [&files.markdown, &files.csv, &files.parquet, &files.latex] {
            assert!(
                std::fs::metadata(p).unwrap().len() > 100,
                "{} is (nearly) empty",
                p.display()
            );
        }
        let md = std::fs::read_to_string(&files.markdown).unwrap();
        assert!(md.contains(&table.title) && md.contains("| ---"), "{md}");
        let csv = std::fs::read_to_string(&files.csv).unwrap();
        assert_eq!(csv.lines().count(), table.rows.len() + 1);
        let tex = std::fs::read_to_string(&files.latex).unwrap();
        assert!(
            tex.contains("\\toprule") && tex.contains("\\midrule") && tex.contains("\\bottomrule"),
            "{tex}"
        );
        assert!(!tex.contains("\\hline"));
        let df = kvbench_reports::frame::read_parquet(&files.parquet).unwrap();
        assert_eq!(df.height(), table.rows.len());
        let header = csv.lines().next().unwrap();
        let fields: Vec<String> = df
            .get_column_names()
            .iter()
            .map(|f| f.to_string())
            .collect();
        assert_eq!(fields.join(","), header.replace('"', ""));
    }
    // The metrics table: 4 tasks x (full + 2 methods x 4 budgets).
    let metrics = outcome
        .table_data
        .iter()
        .find(|t| t.name == "metrics")
        .unwrap();
    assert_eq!(metrics.rows.len(), 4 * 9);
    let compare = std::fs::read_to_string(out.join("tables/compare.csv")).unwrap();
    assert!(
        compare.lines().nth(1).unwrap().contains("matched"),
        "{compare}"
    );
    assert!(
        compare.lines().nth(2).unwrap().contains("not run"),
        "{compare}"
    );

    // Plots: every kind, PNG of the size reported, not blank, and SVG with text.
    let drawn: Vec<&str> = outcome.plots.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(drawn, PLOTS, "skipped: {:?}", outcome.skipped_plots);
    for p in &outcome.plots {
        let (w, h) = png_size(&p.png);
        assert_eq!((w, h), (p.width, p.height), "{}", p.name);
        assert_eq!(w, 1200);
        assert!((300..4000).contains(&h), "{}: height {h}", p.name);
        let decoder = png::Decoder::new(std::fs::File::open(&p.png).unwrap());
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        reader.next_frame(&mut buf).unwrap();
        let colours: std::collections::HashSet<&[u8]> = buf.chunks(3).collect();
        assert!(
            colours.len() > 20,
            "{} looks blank ({} colours)",
            p.name,
            colours.len()
        );
        let svg = std::fs::read_to_string(&p.svg).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("<text"),
            "{}",
            p.name
        );
    }

    // The page references every plot and table, and embeds the plots.
    let html = std::fs::read_to_string(&outcome.html).unwrap();
    for p in PLOTS {
        assert!(
            html.contains(&format!("id=\"plot-{p}\"")) && html.contains(&format!("plots/{p}.svg")),
            "{p}"
        );
    }
    for t in want {
        assert!(
            html.contains(&format!("id=\"table-{t}\""))
                && html.contains(&format!("tables/{t}.parquet")),
            "{t}"
        );
    }
    assert_eq!(
        html.matches("<img src=\"data:image/png;base64,").count(),
        PLOTS.len()
    );
    assert!(
        html.contains("experiment: synthetic"),
        "the configuration is on the page"
    );
    assert!(html.contains("hf:org/Tiny-Model") && html.contains("cuda:0 (synthetic)"));
    // Left for a person to look at: KVBENCH_KEEP_REPORT=1 keeps the directory.
    if std::env::var_os("KVBENCH_KEEP_REPORT").is_none() {
        std::fs::remove_dir_all(&dir).unwrap();
    } else {
        eprintln!("report kept in {}", out.display());
    }
}

#[test]
fn two_shards_merge_to_the_unsharded_tables_and_duplicates_count_once() {
    let dir = temp_dir("shards");
    let records = synthetic();
    let whole = dir.join("whole");
    std::fs::create_dir_all(&whole).unwrap();
    write_records(&whole.join("results.jsonl"), &records);
    // Shards split by sample, in two files of one directory and in two directories.
    let sharded = dir.join("sharded");
    let (a, b) = (dir.join("a"), dir.join("b"));
    for d in [&sharded, &a, &b] {
        std::fs::create_dir_all(d).unwrap();
    }
    let (even, odd): (Vec<Record>, Vec<Record>) = records
        .iter()
        .cloned()
        .partition(|r| r.sample_id.len() % 2 == 0 || r.sample_id.ends_with('1'));
    assert!(!even.is_empty() && !odd.is_empty());
    // Each shard written in reverse order: merging must not depend on record order.
    let rev = |v: &[Record]| v.iter().rev().cloned().collect::<Vec<_>>();
    write_records(&sharded.join("results.shard-0-of-2.jsonl"), &rev(&odd));
    write_records(&sharded.join("results.shard-1-of-2.jsonl"), &even);
    write_records(&a.join("results.jsonl"), &even);
    write_records(&b.join("results.jsonl"), &odd);

    let opts = options(&dir.join("out"));
    let tables = |inputs: &[PathBuf]| {
        let merged = load_runs(inputs).unwrap();
        (
            build_tables(&merged, &opts).unwrap(),
            merged.duplicates.len(),
        )
    };
    let (reference, dups) = tables(&[whole.clone()]);
    assert_eq!(dups, 0);
    assert_eq!(tables(&[sharded.clone()]), (reference.clone(), 0));
    assert_eq!(tables(&[b.clone(), a.clone()]), (reference.clone(), 0));
    // A shard given twice, and the whole run on top of its shards: every key counts once.
    assert_eq!(
        tables(&[a.clone(), b.clone(), a.clone()]),
        (reference.clone(), even.len())
    );
    assert_eq!(
        tables(&[whole.clone(), sharded.clone()]),
        (reference.clone(), records.len())
    );
    let merged = load_runs(&[a.clone(), a.clone()]).unwrap();
    assert!(merged.duplicates.iter().all(|d| d.identical));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tables_are_deterministic_for_a_seed_and_intervals_contain_means() {
    let records = synthetic();
    let dir = temp_dir("seed");
    write_records(&dir.join("results.jsonl"), &records);
    let merged = load_runs(&[dir.clone()]).unwrap();
    let opts = options(&dir.join("out"));
    let a = build_tables(&merged, &opts).unwrap();
    assert_eq!(a, build_tables(&merged, &opts).unwrap());
    let mut other = opts.clone();
    other.bootstrap.seed += 1;
    assert_ne!(
        a,
        build_tables(&merged, &other).unwrap(),
        "the seed drives the intervals"
    );
    use kvbench_reports::tables::Value;
    let mut checked = 0;
    for t in &a {
        for row in &t.rows {
            for v in row {
                if let Value::Est(Some(e)) = v {
                    assert!(e.lo <= e.mean && e.mean <= e.hi, "{}: {e:?}", t.name);
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 100);
    // The full cache against itself is never listed; every delta of a compressed run is.
    let deltas = a.iter().find(|t| t.name == "deltas").unwrap();
    // 8 compressed configurations x (niah: 1 task + average, longbench: 3 tasks + average).
    assert_eq!(deltas.rows.len(), 8 * (2 + 4));
    std::fs::remove_dir_all(&dir).unwrap();
}

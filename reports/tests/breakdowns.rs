//! `kvbench report --compare` end to end on a made-up run of every benchmark with a breakdown:
//! the breakdown tables appear with the numbers worked out by hand, and the comparison with a
//! small published CSV gives the differences and says why the other rows did not match.

use std::collections::HashMap;
use std::path::PathBuf;

use kvbench_reports::bootstrap::BootstrapConfig;
use kvbench_reports::{report, Record, ReportOptions, ResultsWriter};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvbench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A configuration: method, parameters, budget, label, query awareness, and the factor its
/// scores are the full cache's times.
type Setting = (
    &'static str,
    serde_json::Value,
    Option<serde_json::Value>,
    &'static str,
    bool,
    f64,
);

fn record(
    dataset: &str,
    task: &str,
    id: &str,
    turn: usize,
    s: &Setting,
    score: f64,
    meta: serde_json::Value,
) -> Record {
    let (method, params, budget, label, qa, factor) = s;
    serde_json::from_value(serde_json::json!({
        "experiment": "e2e", "model": "hf:org/Model-7B", "dataset": dataset, "task": task,
        "sample_id": id, "turn": turn, "method": method, "method_params": params, "budget": budget,
        "budget_label": label, "query_aware": qa, "target_ratio": 0.0, "achieved_ratio": 0.0,
        "prediction": "p", "answers": ["a"], "metric": "qa_f1", "score": score * factor,
        "agreement_with_full": 1.0, "kl_first_token": 0.0, "kv_bytes": 10, "kv_bytes_full": 10,
        "peak_device_bytes": null, "prefill_ms": 1.0, "compress_ms": 0.0, "question_ms": 1.0,
        "ttft_ms": 2.0, "decode_ms_per_token": 1.0, "context_tokens": 100, "question_tokens": 2,
        "new_tokens": 4, "device": "cpu", "seed": 0, "kvbench_version": "0",
        "key": format!("{dataset}|{task}|{id}|{turn}|{method}|{params}|{label}|{qa}"),
        "meta": meta
    }))
    .unwrap()
}

fn records() -> Vec<Record> {
    let kivi = |bits: u32| serde_json::json!({ "bits": bits, "group": 32, "residual": 128 });
    let tokens = Some(serde_json::json!({ "tokens": 1024 }));
    let longbench: Vec<Setting> = vec![
        ("full", serde_json::json!({}), None, "-", false, 1.0),
        (
            "snapkv",
            serde_json::json!({}),
            tokens.clone(),
            "k=1024",
            false,
            0.5,
        ),
        (
            "snapkv",
            serde_json::json!({}),
            tokens,
            "k=1024",
            true,
            0.75,
        ),
        ("kivi", kivi(2), None, "-", false, 0.25),
        ("kivi", kivi(4), None, "-", false, 0.5),
    ];
    let none = serde_json::Value::Null;
    let mut out = Vec::new();
    for s in &longbench {
        // qasper 0.75, hotpotqa 0.3, lcc 0.6 for the full cache
        for (task, id, score) in [
            ("qasper", "a", 1.0),
            ("qasper", "b", 0.5),
            ("hotpotqa", "a", 0.2),
            ("hotpotqa", "b", 0.4),
            ("lcc", "a", 0.6),
        ] {
            out.push(record("longbench", task, id, 0, s, score, none.clone()));
        }
    }
    let full = &longbench[0];
    for (id, bucket, score) in [("a", "0-4k", 1.0), ("b", "0-4k", 0.0), ("c", "8k+", 0.5)] {
        let meta = serde_json::json!({ "length_bucket": bucket });
        out.push(record("longbench", "qasper_e", id, 0, full, score, meta));
    }
    let ruler: Vec<Setting> = vec![
        full.clone(),
        (
            "knorm",
            serde_json::json!({}),
            Some(serde_json::json!({ "compression_ratio": 0.25 })),
            "r=0.25",
            false,
            0.5,
        ),
    ];
    for s in &ruler {
        for (task, length, id, score) in [
            ("niah_single_1", 4096, "a", 1.0),
            ("niah_single_1", 4096, "b", 1.0),
            ("niah_single_1", 8192, "a", 1.0),
            ("niah_single_1", 8192, "b", 0.0),
            ("vt", 4096, "a", 1.0),
            ("vt", 4096, "b", 0.0),
            ("vt", 8192, "a", 0.0),
        ] {
            let meta = serde_json::json!({ "length": length, "ruler": true });
            out.push(record(
                "ruler",
                task,
                &format!("{task}-L{length}-{id}"),
                0,
                s,
                score,
                meta,
            ));
        }
    }
    for (id, d, l, score) in [
        ("a", "easy", "short", 1.0),
        ("b", "hard", "long", 0.0),
        ("c", "hard", "short", 1.0),
    ] {
        let meta = serde_json::json!({ "difficulty": d, "length": l });
        out.push(record(
            "longbench_v2",
            "longbench_v2",
            id,
            0,
            full,
            score,
            meta,
        ));
    }
    for (turn, (t, score)) in [
        ("scbench_summary", 0.3),
        ("scbench_passkey", 1.0),
        ("scbench_passkey", 0.0),
    ]
    .into_iter()
    .enumerate()
    {
        let meta = serde_json::json!({ "turn_task": t });
        out.push(record(
            "scbench",
            "scbench_summary_with_needles",
            "s",
            turn,
            full,
            score,
            meta,
        ));
    }
    out
}

/// The CSV table `name` as maps from column to value, one per row.
fn read_csv(path: PathBuf) -> Vec<HashMap<String, String>> {
    let mut reader = csv::Reader::from_path(&path).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    reader
        .records()
        .map(|r| {
            header
                .iter()
                .cloned()
                .zip(r.unwrap().iter().map(String::from))
                .collect()
        })
        .collect()
}

fn num(row: &HashMap<String, String>, key: &str) -> f64 {
    row[key]
        .parse()
        .unwrap_or_else(|_| panic!("{key} = {:?} in {row:?}", row[key]))
}

#[test]
fn breakdowns_and_the_comparison_with_published_numbers() {
    let dir = temp_dir("breakdowns");
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let mut w = ResultsWriter::open(&run.join("results.jsonl")).unwrap();
    for r in records() {
        w.append(&r).unwrap();
    }
    drop(w);
    let published = dir.join("published.csv");
    std::fs::write(
        &published,
        "# a fixture\n\
         source,model,dataset,task,method,budget,score,query_aware,tasks,provenance\n\
         P1,org/model-7b,longbench,qasper,snapkv,k=1024,50.0,true,,checked\n\
         P2,org/Model-7B,longbench,average,full,-,50.0,,qasper hotpotqa,transcription\n\
         P3,org/Model-7B,longbench,qasper,kivi(bits=4),-,40.0,,,checked\n\
         P4,org/Model-7B,longbench,qasper,kivi,-,40.0,,,\n\
         P5,other/Big-Model,longbench,qasper,full,-,30.0,,,\n\
         P6,org/Model-7B,longbench,qasper,snapkv,k=2048,30.0,,,\n\
         P7,org/Model-7B,ruler,average,knorm,r=0.25,25.0,false,,checked\n\
         P8,org/Model-7B,longbench,average,full,-,50.0,,qasper narrativeqa,\n\
         P9,org/Model-7B,longbench,qasper,h2o,k=1024,30.0,,,\n\
         P10,org/Model-7B,ruler,average,knorm,r=0.25,25.0,true,,\n\
         P11,org/Model-7B,longbench,qasper,knorm,r=0.25,25.0,,,\n",
    )
    .unwrap();
    let out = dir.join("report");
    let mut opts = ReportOptions::new(&out);
    opts.bootstrap = BootstrapConfig {
        seed: 5,
        resamples: 100,
    };
    opts.compare = Some(published);
    let outcome = report(&[run], &opts).unwrap();
    let names: Vec<&str> = outcome.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "scores",
            "benchmarks",
            "metrics",
            "deltas",
            "ruler_lengths",
            "longbench_categories",
            "longbench_e_lengths",
            "longbench_v2",
            "scbench_turn_tasks",
            "compare"
        ]
    );
    assert_eq!(names[4..9], kvbench_reports::breakdown::NAMES);
    let html = std::fs::read_to_string(&outcome.html).unwrap();
    for n in &names {
        assert!(html.contains(&format!("id=\"table-{n}\"")), "{n}");
    }
    let tables = out.join("tables");

    // RULER, full cache: 4k = (niah 1 + vt 0.5) / 2, 8k = (0.5 + 0) / 2; knorm halves each score.
    let ruler = read_csv(tables.join("ruler_lengths.csv"));
    assert_eq!(ruler.len(), 2);
    assert_eq!(ruler[0]["method"], "full");
    assert_eq!(num(&ruler[0], "L4096"), 0.75);
    assert_eq!(num(&ruler[0], "L8192"), 0.25);
    assert_eq!(num(&ruler[0], "avg"), 0.5);
    assert_eq!(ruler[1]["method"], "knorm");
    assert_eq!(num(&ruler[1], "L4096"), 0.375);

    // LongBench: Single-Doc QA is qasper (0.75), Multi-Doc QA hotpotqa (0.3), Code lcc (0.6).
    let cats = read_csv(tables.join("longbench_categories.csv"));
    assert_eq!(cats.len(), 5, "five configurations, English only");
    let full = &cats[0];
    assert_eq!(
        (full["method"].as_str(), full["language"].as_str()),
        ("full", "English")
    );
    assert_eq!(num(full, "single_doc_qa"), 0.75);
    assert!((num(full, "multi_doc_qa") - 0.3).abs() < 1e-12);
    assert_eq!(num(full, "code"), 0.6);
    assert!((num(full, "avg") - 0.55).abs() < 1e-12);
    assert_eq!(full["summarization"], "");

    let e = read_csv(tables.join("longbench_e_lengths.csv"));
    assert_eq!(e.len(), 2, "all + single_doc_qa");
    assert_eq!(num(&e[0], "0-4k"), 0.5);
    assert_eq!(e[0]["4-8k"], "");
    assert_eq!(num(&e[0], "8k+"), 0.5);

    let v2 = read_csv(tables.join("longbench_v2.csv"));
    assert_eq!(num(&v2[0], "easy"), 1.0);
    assert_eq!(num(&v2[0], "hard"), 0.5);
    assert_eq!(num(&v2[0], "short"), 1.0);
    assert_eq!(num(&v2[0], "long"), 0.0);
    assert_eq!(v2[0]["medium"], "");

    let sc = read_csv(tables.join("scbench_turn_tasks.csv"));
    assert_eq!(
        num(&sc[0], "scbench_summary_with_needles/scbench_summary"),
        0.3
    );
    assert_eq!(
        num(&sc[0], "scbench_summary_with_needles/scbench_passkey"),
        0.5
    );

    // The comparison: every published row, in order, ours beside the matched ones.
    let cmp = read_csv(tables.join("compare.csv"));
    assert_eq!(cmp.len(), 11);
    let by: HashMap<&str, &HashMap<String, String>> =
        cmp.iter().map(|r| (r["source"].as_str(), r)).collect();
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    // qasper, snapkv k=1024 query-aware: 0.75 x 0.75 = 56.25 against 50
    assert!(by["P1"]["status"].starts_with("matched snapkv k=1024 (query-aware)"));
    assert!(close(num(by["P1"], "kvbench"), 56.25));
    assert!(close(num(by["P1"], "difference"), 6.25));
    // (qasper 0.75 + hotpotqa 0.3) / 2 = 52.5 against 50
    assert!(close(num(by["P2"], "difference"), 2.5));
    assert_eq!(by["P2"]["task"], "average of 2");
    assert_eq!(by["P2"]["provenance"], "transcription");
    // kivi(bits=4): 0.75 x 0.5 = 37.5 against 40
    assert!(close(num(by["P3"], "difference"), -2.5));
    assert!(
        by["P4"]["status"].starts_with("ambiguous"),
        "{:?}",
        by["P4"]
    );
    assert_eq!(by["P4"]["difference"], "");
    assert!(by["P5"]["status"].starts_with("not run: model other/Big-Model"));
    assert_eq!(by["P6"]["status"], "not run: budget k=2048 (ran: k=1024)");
    // RULER benchmark average, knorm: (niah 0.75 + vt 1/3) / 2 x 0.5 against 25
    assert!(close(
        num(by["P7"], "difference"),
        (0.75 + 1.0 / 3.0) / 2.0 * 50.0 - 25.0
    ));
    assert_eq!(
        by["P8"]["status"],
        "not run: task(s) narrativeqa of the average"
    );
    assert_eq!(by["P9"]["status"], "not run: method h2o");
    assert_eq!(by["P10"]["status"], "not run: query-aware");
    // knorm ran, at that budget, but on RULER only
    assert_eq!(by["P11"]["status"], "not run: qasper with knorm r=0.25");
    let md = std::fs::read_to_string(tables.join("compare.md")).unwrap();
    assert!(md.contains("4 of 11 published rows matched"), "{md}");
    // KVBENCH_KEEP_REPORT=1 keeps the report for a person to look at.
    if std::env::var_os("KVBENCH_KEEP_REPORT").is_none() {
        std::fs::remove_dir_all(&dir).unwrap();
    } else {
        eprintln!("report kept in {}", out.display());
    }
}

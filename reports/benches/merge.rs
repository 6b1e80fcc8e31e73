//! The report merge at scale (issues 16 and 20): generated records spread over shard files, read
//! and merged straight into a polars frame by `load_frame` (parse, deduplicate by key, columns
//! without holding records) and summarized by one polars group-by (`summarize_frame`), timed on
//! one thread (`POLARS_MAX_THREADS=1` is set here) with the process's peak resident memory.
//!
//! ```text
//! cargo bench -p kvbench-reports --bench merge                    # 1,000,000 records: 100 and 10,000 shards
//! cargo bench -p kvbench-reports --bench merge -- 200000 16       # RECORDS SHARDS...
//! ```
//!
//! Plain `main` (no criterion): one timed pass per case is the number that matters here, and the
//! target stays cheap to build. Files go to a temporary directory that is removed afterwards.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use kvbench_reports::Record;

fn record(i: usize) -> Record {
    const METHODS: [&str; 20] = [
        "full",
        "snapkv",
        "h2o",
        "tova",
        "knorm",
        "streaming_llm",
        "expected_attention",
        "random",
        "pyramidkv",
        "adakv",
        "kivi",
        "quant",
        "lowrank",
        "cam",
        "kvmerger",
        "minicache",
        "think",
        "kvsharer",
        "duo",
        "snapkv+kivi",
    ];
    let runs = METHODS.len() * 4;
    let (sample, run) = (i / runs, i % runs);
    let (method, budget) = (METHODS[run / 4], [0.25, 0.5, 0.75, 0.9][run % 4]);
    serde_json::from_value(serde_json::json!({
        "experiment": "longbench-8b", "model": "hf:meta-llama/Llama-3.1-8B-Instruct",
        "dataset": "longbench", "task": format!("task{}", sample % 16),
        "sample_id": format!("longbench-{sample}"), "turn": 0,
        "method": method, "method_params": {"window": 64, "kernel": 5},
        "budget": {"compression_ratio": budget}, "budget_label": format!("r={budget:.2}"),
        "query_aware": false, "target_ratio": budget, "achieved_ratio": budget,
        "prediction": "The committee approved the proposal after a long discussion about its costs and benefits.",
        "answers": ["The committee approved the proposal."], "metric": "qa_f1",
        "score": (i % 97) as f64 / 97.0, "agreement_with_full": 0.8, "kl_first_token": 0.0123,
        "kv_bytes": 1_073_741_824u64, "kv_bytes_full": 2_147_483_648u64,
        "peak_device_bytes": 21_474_836_480u64, "prefill_ms": 812.5, "compress_ms": 3.25,
        "question_ms": 20.5, "ttft_ms": 836.25, "decode_ms_per_token": 21.75,
        "context_tokens": 12000, "question_tokens": 40, "new_tokens": 32,
        "device": "cuda", "seed": 0, "kvbench_version": "0.1.0",
        "key": format!("{i:024x}"),
    }))
    .expect("a valid record")
}

/// Write `n` records round-robin by sample over `shards` files; returns the bytes written.
fn generate(dir: &Path, n: usize, shards: usize) -> u64 {
    std::fs::create_dir_all(dir).unwrap();
    let mut files: Vec<std::io::BufWriter<std::fs::File>> = (0..shards)
        .map(|s| {
            let name = if shards == 1 {
                "results.jsonl".to_string()
            } else {
                format!("results.shard-{s}-of-{shards}.jsonl")
            };
            std::io::BufWriter::new(std::fs::File::create(dir.join(name)).unwrap())
        })
        .collect();
    let mut bytes = 0;
    for i in 0..n {
        let line = serde_json::to_string(&record(i)).unwrap() + "\n";
        bytes += line.len() as u64;
        files[(i / 80) % shards].write_all(line.as_bytes()).unwrap();
    }
    bytes
}

/// This process's CPU time (user + system) in seconds, from Linux's `/proc/self/stat` (clock ticks
/// of 1/100 s): on a machine shared with other work, the number that does not depend on the load.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, r)| r.split_whitespace().collect());
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

/// The process's peak resident memory (Linux `VmHWM`), in MB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1000.0)
}

fn main() {
    // One core, as the README's figure states (set before polars starts its thread pool).
    std::env::set_var("POLARS_MAX_THREADS", "1");
    let nums: Vec<usize> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    let n = nums.first().copied().unwrap_or(1_000_000);
    let shard_counts = if nums.len() > 1 {
        nums[1..].to_vec()
    } else {
        vec![100, 10_000]
    };
    for shards in shard_counts {
        let dir = std::env::temp_dir().join(format!(
            "kvbench-merge-bench-{}-{shards}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let bytes = generate(&dir, n, shards);
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let merged = kvbench_reports::merge::load_frame(std::slice::from_ref(&dir)).unwrap();
        let (merge_s, merge_cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
        assert_eq!(merged.frame.height(), n);
        assert!(merged.problems.is_empty(), "{:?}", &merged.problems[..1]);
        let (t1, c1) = (Instant::now(), cpu_seconds());
        let rows = kvbench_reports::summarize_frame(&merged.frame).unwrap();
        let (summary_s, summary_cpu) = (t1.elapsed().as_secs_f64(), cpu_seconds() - c1);
        println!(
            "merge: {n} records ({:.0} MB) in {shards} file(s): read+parse+dedup into a polars frame {merge_s:.2} s wall / {merge_cpu:.2} s CPU, summary group-by {summary_s:.2} s wall / {summary_cpu:.2} s CPU ({} rows), total {:.2} s wall / {:.2} s CPU, peak RSS {:.0} MB",
            bytes as f64 / 1e6,
            rows.len(),
            merge_s + summary_s,
            merge_cpu + summary_cpu,
            peak_rss_mb()
        );
        drop(merged);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

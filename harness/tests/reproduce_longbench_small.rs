//! The LongBench `_small` twins (experiments/reproduce/{snapkv,kivi,pyramidkv}_longbench_small.yaml)
//! run unchanged in CI, SmolLM2-135M on CPU. CI cannot reach the hub, so the real LongBench records
//! of the shared data (`../shared/data/longbench/{task}.jsonl`, see its SOURCE.md) are served by a
//! local server in the hub's layout: a `data.zip` holding `data/{task}.jsonl`, at LongBench's
//! pinned revision, read through the same `source: hub` path (revision, sha256, `run.json`
//! provenance) a user's run takes. Nothing is relaxed for real users: the twins name no source and
//! no revision, and only `HF_ENDPOINT` and `KVBENCH_CACHE` point elsewhere, in this process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kvbench::experiment::Plan;
use kvbench::run::RunOutcome;
use kvbench_datasets::longbench::DEFAULT_REVISION;
use kvbench_reports::Record;
use kvbench_testkit::{Server, TempDir, COMMIT};

/// The test model, and the mock hub serving the shared LongBench records (kept for the process).
struct Hub {
    model: PathBuf,
    _server: Server,
    _cache: TempDir,
    zip_sha256: String,
}

/// A `data.zip` in LongBench's layout from every `{task}.jsonl` of the shared data.
fn data_zip(dir: &Path) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let o = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        files.sort();
        assert!(files.len() >= 10, "shared LongBench records: {files:?}");
        for f in files {
            let name = f.file_name().unwrap().to_str().unwrap();
            z.start_file(format!("data/{name}"), o).unwrap();
            z.write_all(&std::fs::read(&f).unwrap()).unwrap();
        }
        z.finish().unwrap();
    }
    buf.into_inner()
}

/// Fetches the model first (from the real cache), then serves the data and points the hub
/// endpoint and cache of this process at the server, downloading `data.zip` once so that the
/// twins, run in parallel, read it from the cache.
fn hub() -> &'static Hub {
    static HUB: OnceLock<Hub> = OnceLock::new();
    HUB.get_or_init(|| {
        let model = kvbench::testing::smollm2_gguf();
        let server = Server::start();
        let zip = data_zip(&kvbench::testing::shared_data().join("longbench"));
        let zip_sha256 = kvbench_testkit::sha256_hex(&zip);
        server.hub_file(
            "datasets/THUDM/LongBench",
            DEFAULT_REVISION,
            "data.zip",
            &zip,
            true,
        );
        let cache = TempDir::new("longbench-small", "cache");
        std::env::set_var("HF_ENDPOINT", &server.base);
        std::env::set_var("KVBENCH_CACHE", &cache.0);
        let opts = kvbench_datasets::LoadOptions::from_env().hub;
        kvbench_datasets::hub::dataset_file("THUDM/LongBench", DEFAULT_REVISION, "data.zip", &opts)
            .unwrap();
        Hub {
            model,
            _server: server,
            _cache: cache,
            zip_sha256,
        }
    })
}

/// Runs twin `name` unchanged; checks what every twin must hold and returns the plan and outcome.
fn run_twin(name: &str) -> (Plan, RunOutcome) {
    let hub = hub();
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../experiments/reproduce/{name}.yaml"));
    let plan = Plan::load(&file).unwrap();
    let out = std::env::temp_dir().join(format!("kvbench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let device = candle_core::Device::Cpu;
    let files = kvbench::fetch::ModelFiles::Gguf {
        path: hub.model.clone(),
    };
    let loaded = kvbench::loader::load(&files, &device).unwrap();
    let t = std::time::Instant::now();
    let outcome = kvbench::testing::run_fresh(&plan, &loaded, &out);
    eprintln!("{name}: {:.1} s", t.elapsed().as_secs_f64());
    std::fs::remove_dir_all(&out).unwrap();

    // One sample per task (limit 1), every run of the grid, none failed.
    let tasks = match &plan.raw.datasets[..] {
        [kvbench_datasets::DatasetConfig::Longbench(c)] => c.tasks.clone(),
        other => panic!("{name}: one longbench entry expected, got {other:?}"),
    };
    assert_eq!(outcome.failed, 0, "{name}");
    assert_eq!(outcome.written, tasks.len() * plan.runs.len(), "{name}");
    assert_eq!(outcome.records.len(), outcome.written, "{name}");
    for task in &tasks {
        let n = outcome.records.iter().filter(|r| &r.task == task).count();
        assert_eq!(n, plan.runs.len(), "{name}: {task}");
    }
    for r in &outcome.records {
        assert!(r.error.is_none(), "{name}: {:?}", r.error);
        assert!(
            (0.0..=1.0).contains(&r.score),
            "{name}: {}: {}",
            r.method,
            r.score
        );
        // Middle-truncated to max_length 1024 (the question and template add a few tokens).
        assert!(
            (500..=1100).contains(&r.context_tokens),
            "{name}: {}: {} context tokens",
            r.task,
            r.context_tokens
        );
        assert!(r.kv_bytes > 0 && r.kv_bytes_full > 0, "{name}");
    }
    // The data came from the pinned revision, with the archive's sha256 (what run.json records).
    let data = &outcome.data[0];
    assert_eq!(data.revision.as_deref(), Some(DEFAULT_REVISION), "{name}");
    let zip = data.files.iter().find(|f| f.name == "data.zip").unwrap();
    assert_eq!(zip.sha256, hub.zip_sha256, "{name}");
    assert_eq!(zip.commit.as_deref(), Some(COMMIT), "{name}");
    (plan, outcome)
}

fn by<'a>(records: &'a [Record], f: impl Fn(&Record) -> bool) -> Vec<&'a Record> {
    records.iter().filter(|r| f(r)).collect()
}

#[test]
fn snapkv_longbench_small_runs_unchanged() {
    let (_, o) = run_twin("snapkv_longbench_small");
    for qa in [false, true] {
        for method in ["snapkv", "h2o"] {
            let rs = by(&o.records, |r| r.method == method && r.query_aware == qa);
            let budgets: std::collections::BTreeSet<&str> =
                rs.iter().map(|r| r.budget_label.as_str()).collect();
            assert_eq!(
                budgets.into_iter().collect::<Vec<_>>(),
                ["k=128", "k=256", "k=512"],
                "{method} query_aware={qa}"
            );
        }
    }
    // A token budget keeps that many entries per KV head: a bigger budget, more bytes.
    for task in ["hotpotqa", "passage_retrieval_en"] {
        let bytes = |b: &str| {
            by(&o.records, |r| {
                r.task == task && r.method == "snapkv" && r.budget_label == b && !r.query_aware
            })[0]
                .kv_bytes
        };
        assert!(bytes("k=128") < bytes("k=256") && bytes("k=256") < bytes("k=512"));
    }
}

#[test]
fn kivi_longbench_small_runs_unchanged() {
    let (_, o) = run_twin("kivi_longbench_small");
    for task in ["hotpotqa", "passage_retrieval_en"] {
        let bytes = |bits: u64| {
            by(&o.records, |r| {
                r.task == task && r.method == "kivi" && r.method_params["bits"] == bits
            })[0]
                .kv_bytes
        };
        let full = by(&o.records, |r| r.task == task && r.method == "full")[0].kv_bytes;
        assert!(bytes(2) < bytes(4) && bytes(4) < full, "{task}");
    }
}

#[test]
fn pyramidkv_longbench_small_runs_in_kvcache_factory_layout() {
    let (plan, o) = run_twin("pyramidkv_longbench_small");
    // SnapKV, PyramidKV and StreamingLLM ran per query head (the preset); h2o, which the preset
    // does not cover, per KV head.
    let per_q = by(&o.records, |r| r.method == "query_heads");
    let allocators: std::collections::BTreeSet<String> = per_q
        .iter()
        .map(|r| {
            format!(
                "{}+{}",
                r.method_params["scorer"]["method"].as_str().unwrap(),
                r.method_params["allocator"]["method"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        allocators.into_iter().collect::<Vec<_>>(),
        [
            "snapkv+pyramidkv",
            "snapkv+uniform",
            "streaming_llm+uniform"
        ]
    );
    assert!(o
        .records
        .iter()
        .all(|r| r.method != "snapkv" && r.method != "pyramidkv"));
    // SmolLM2-135M has 9 query heads over 3 KV heads: per query head, SnapKV keeps 3 times the
    // bytes of per-KV-head selection at the same budget. h2o's bytes at the budget are those of
    // the per-KV-head layout; the uniform per-query-head copies are 3 times them.
    for task in ["multifieldqa_en", "hotpotqa", "triviaqa"] {
        for qa in [false, true] {
            let one = |method: &str, alloc: Option<&str>| {
                let rs = by(&o.records, |r| {
                    r.task == task
                        && r.query_aware == qa
                        && r.budget_label == "k=128"
                        && r.method == method
                        && alloc.is_none_or(|a| r.method_params["allocator"]["method"] == a)
                        && (method != "query_heads"
                            || r.method_params["scorer"]["method"] == "snapkv")
                });
                assert_eq!(rs.len(), 1, "{task} {method} {alloc:?}");
                rs[0].kv_bytes
            };
            let h2o = one("h2o", None);
            assert_eq!(one("query_heads", Some("uniform")), 3 * h2o, "{task}");
            // The pyramid moves entries between layers; its total is the uniform one's.
            assert_eq!(one("query_heads", Some("pyramidkv")), 3 * h2o, "{task}");
        }
    }
    // published.csv's KVCache-Factory rows join these records: with the model renamed to this
    // run's, every row on a task the twin ran matches the query-aware per-query-head run at 128.
    use kvbench_reports::compare::{compare_table, read_published};
    let csv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/reproduce/published.csv");
    let mut rows: Vec<_> = read_published(&csv)
        .unwrap()
        .into_iter()
        .filter(|p| p.source.starts_with("KVCache-Factory") && p.method != "full")
        .collect();
    assert_eq!(rows.len(), 12);
    for p in &mut rows {
        p.model = plan.raw.model.clone();
    }
    let agg = kvbench_reports::aggregate::aggregate(&o.records, "full", Default::default());
    let table = compare_table(&rows, &o.records, &agg, Default::default());
    let status = table
        .columns
        .iter()
        .position(|c| c.key == "status")
        .unwrap();
    for (p, row) in rows.iter().zip(&table.rows) {
        let s = format!("{:?}", row[status]);
        if ["multifieldqa_en", "hotpotqa", "triviaqa"].contains(&p.task.as_str()) {
            assert!(
                s.contains("matched query_heads") && s.contains("query-aware"),
                "{p:?}: {s}"
            );
        } else {
            assert!(s.contains("not run: task"), "{p:?}: {s}");
        }
    }
}

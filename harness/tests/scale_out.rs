//! Scale-out on CPU with the SmolLM2 test model (issue 20 items 1, 2, 4; issue 17 items 3, 4):
//!
//! - a small experiment run whole and as 3 shards gives the same records (identity, prediction,
//!   scores, bytes; timings aside), and the merge of the shard files sees each key once;
//! - `run --gpus 0,1` starts one worker per (fake) GPU, resumes on re-run, names a failed worker
//!   and its log, and its workers stop when the parent is killed;
//! - a second run onto a results file being written fails at once with the holder's pid; a run
//!   of another experiment into the directory is refused;
//! - bad `--shard` / `--gpus` arguments are errors before any work.
//!
//! `--gpus` without GPUs: `KVBENCH_FAKE_GPUS=N` makes the parent believe the host has N GPUs and
//! run its workers on the CPU (see `kvbench::scale::workers`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kvbench::experiment::Plan;
use kvbench::run::{run, run_claimed, RunOptions};
use kvbench::scale::{Claim, DirPolicy, Shard};
use kvbench_reports::Record;
use serde_json::Value;

const EXPERIMENT: &str = "experiment: scale-test
model: smollm2-135m-instruct-q4_1
datasets:
  - name: niah
    lengths: [160]
    depths: [0.2, 0.5, 0.8]
    samples_per_cell: 2
methods:
  - method: full
  - method: snapkv
  - method: streaming_llm
budgets:
  - compression_ratio: 0.5
";

/// 6 samples x (full + 2 compressed runs).
const RECORDS: usize = 18;

fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvbench-scale-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What a record says about behaviour: timings, memory, device and version left out.
fn stable(r: &Record) -> Value {
    let mut v = serde_json::to_value(r).unwrap();
    let o = v.as_object_mut().unwrap();
    for f in [
        "prefill_ms",
        "compress_ms",
        "question_ms",
        "ttft_ms",
        "decode_ms_per_token",
        "peak_device_bytes",
        "device",
        "kvbench_version",
    ] {
        o.remove(f);
    }
    v
}

fn by_key(records: &[Record]) -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = records.iter().map(|r| (r.key.clone(), stable(r))).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn three_shards_give_the_records_of_one_run() {
    let dir = workdir("shards");
    let plan = Plan::parse(EXPERIMENT, &dir.join("exp.yaml")).unwrap();
    let device = candle_core::Device::Cpu;
    let files = kvbench::fetch::ModelFiles::Gguf {
        path: kvbench::testing::smollm2_gguf(),
    };
    let loaded = kvbench::loader::load(&files, &device).unwrap();
    let opts = |out: &Path| RunOptions {
        output: out.to_path_buf(),
        limit: None,
        fresh: false,
        progress: false,
        keep_failed: false,
    };
    let whole = run(&plan, &loaded, &device, &opts(&dir.join("whole"))).unwrap();
    assert_eq!(whole.records.len(), RECORDS);

    let sharded = dir.join("sharded");
    let mut written = 0;
    let mut samples_per_shard = Vec::new();
    for index in 0..3 {
        let shard = Shard { index, count: 3 };
        let claim = Claim::acquire(&sharded, shard, &plan, DirPolicy::Resume).unwrap();
        let out = run_claimed(&plan, &loaded, &device, &opts(&sharded), &claim).unwrap();
        assert_eq!(
            out.results,
            sharded.join(format!("results.shard-{index}-of-3.jsonl"))
        );
        written += out.written;
        let own = kvbench_reports::read_results(&out.results).unwrap();
        let mut ids: Vec<String> = own.iter().map(|r| r.sample_id.clone()).collect();
        ids.dedup();
        samples_per_shard.push(ids);
        // The status file: this shard's total, finished.
        let st: Value =
            serde_json::from_str(&std::fs::read_to_string(shard.status(&sharded)).unwrap())
                .unwrap();
        assert_eq!(st["state"], "finished");
        assert_eq!(st["total"], 6);
    }
    assert_eq!(written, RECORDS);
    // Every sample in exactly one shard, with all of its method runs.
    let all: Vec<&String> = samples_per_shard.iter().flatten().collect();
    assert_eq!(all.len(), 6, "{samples_per_shard:?}");
    assert!(samples_per_shard.iter().all(|s| s.len() == 2));

    // `kvbench report DIR`'s merge: every shard file, each key once, equal to the whole run.
    let merged = kvbench_reports::merge::load_runs(std::slice::from_ref(&sharded)).unwrap();
    assert_eq!(merged.sources.len(), 3);
    assert!(merged.duplicates.is_empty());
    let (a, b) = (by_key(&whole.records), by_key(&merged.records));
    assert_eq!(a.len(), b.len());
    for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        assert_eq!(
            va, vb,
            "record {ka} differs between the whole run and the shards"
        );
    }
    // Summaries agree too (n per row included).
    let (sa, sb) = (
        kvbench_reports::summarize(&whole.records),
        kvbench_reports::summarize(&merged.records),
    );
    assert_eq!(sa.len(), sb.len());
    for (x, y) in sa.iter().zip(&sb) {
        assert_eq!(
            (&x.method, &x.budget, x.n, x.score, x.kv_bytes),
            (&y.method, &y.budget, y.n, y.score, y.kv_bytes)
        );
    }

    // Re-running a shard skips its finished records; another split reads the whole directory.
    let claim = Claim::acquire(
        &sharded,
        Shard { index: 1, count: 3 },
        &plan,
        DirPolicy::Resume,
    )
    .unwrap();
    let again = run_claimed(&plan, &loaded, &device, &opts(&sharded), &claim).unwrap();
    assert_eq!((again.written, again.skipped), (0, 6));
    drop(claim);
    let claim = Claim::acquire(
        &sharded,
        Shard { index: 0, count: 2 },
        &plan,
        DirPolicy::Resume,
    )
    .unwrap();
    let other = run_claimed(&plan, &loaded, &device, &opts(&sharded), &claim).unwrap();
    assert_eq!((other.written, other.skipped), (0, 9));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn kvbench(args: &[&str]) -> Command {
    kvbench::testing::smollm2_gguf();
    let mut c = Command::new(env!("CARGO_BIN_EXE_kvbench"));
    c.args(args)
        .stdin(Stdio::null())
        .env_remove("KVBENCH_FAKE_GPUS");
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn experiment(dir: &Path, text: &str) -> String {
    let p = dir.join("exp.yaml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn bad_shard_and_gpu_arguments_fail_before_any_work() {
    let dir = workdir("args");
    let exp = experiment(&dir, EXPERIMENT);
    let out = dir.join("out");
    let out_s = out.to_str().unwrap();
    for (args, want) in [
        (
            vec!["--shard", "3/2"],
            "index 3 is out of range for 2 shard(s)",
        ),
        (
            vec!["--shard", "0/0"],
            "the number of shards must be at least 1",
        ),
        (vec!["--shard", "1"], "write it as I/N"),
        (vec!["--gpus", "0", "--shard", "0/2"], "cannot be used with"),
    ] {
        let mut a = vec!["run", &exp, "--output", out_s];
        a.extend(args.iter().copied());
        let o = kvbench(&a).output().unwrap();
        assert!(!o.status.success(), "{args:?}");
        assert!(text(&o).contains(want), "{args:?}: {}", text(&o));
    }
    // A build without CUDA (this test's) cannot run --gpus.
    #[cfg(not(feature = "cuda"))]
    {
        let o = kvbench(&["run", &exp, "--output", out_s, "--gpus", "0,1"])
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(text(&o).contains("needs a CUDA build"), "{}", text(&o));
    }
    // A GPU that does not exist (2 fake GPUs).
    for (gpus, want) in [
        (
            "0,5",
            "GPU 5 does not exist: this host has 2 GPU(s), indices 0 to 1",
        ),
        ("0,0", "GPU 0 is named twice"),
        ("x", "`x` is not a GPU index"),
    ] {
        let o = kvbench(&["run", &exp, "--output", out_s, "--gpus", gpus])
            .env("KVBENCH_FAKE_GPUS", "2")
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(text(&o).contains(want), "{gpus}: {}", text(&o));
    }
    assert!(!out.join("results.jsonl").exists() && !out.join("worker.shard-0-of-2.log").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // a zombie waiting for its reaper is not running
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .map(|(_, r)| r.trim_start().chars().next()),
            Some(Some('Z'))
        ),
        Err(_) => false,
    }
}

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn gpus_run_one_worker_per_gpu_resume_and_name_failures() {
    let dir = workdir("gpus");
    let exp = experiment(&dir, EXPERIMENT);
    let out = dir.join("out");
    let out_s = out.to_str().unwrap();
    let gpus = |extra: &[&str]| {
        let mut a = vec!["run", exp.as_str(), "--output", out_s, "--gpus", "0,1"];
        a.extend(extra);
        let mut c = kvbench(&a);
        c.env("KVBENCH_FAKE_GPUS", "2");
        c
    };

    // Killing the parent (SIGKILL, no chance to clean up) stops its workers.
    let mut parent = gpus(&[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = |i: usize| out.join(format!("results.shard-{i}-of-2.status.json"));
    wait_for("both workers to start", 120, || {
        status(0).exists() && status(1).exists()
    });
    let pids: Vec<u32> = (0..2)
        .map(|i| {
            let v: Value =
                serde_json::from_str(&std::fs::read_to_string(status(i)).unwrap()).unwrap();
            v["pid"].as_u64().unwrap() as u32
        })
        .collect();
    parent.kill().unwrap();
    parent.wait().unwrap();
    wait_for("the workers to stop", 30, || {
        pids.iter().all(|&p| !alive(p))
    });

    // Re-running resumes every shard and finishes with the merged summary and report.
    let o = gpus(&[]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let merged = kvbench_reports::merge::load_runs(std::slice::from_ref(&out)).unwrap();
    assert_eq!(merged.records.len(), RECORDS, "{}", text(&o));
    assert!(merged.duplicates.is_empty());
    assert!(text(&o).contains("records (0:"), "{}", text(&o));
    assert!(out.join("summary.md").exists() && out.join("report.html").exists());
    assert!(out.join("worker.shard-1-of-2.log").exists());
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains("| 6 |") || summary.contains(" 6 "),
        "{summary}"
    );

    // `kvbench status` shows both shards finished.
    let o = kvbench(&["status", out_s]).output().unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("0/2") && t.contains("1/2") && t.contains("finished"),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "2 shard(s): {RECORDS}/{RECORDS} (100.0%) records, 0 failed"
        )),
        "{t}"
    );

    // A worker that fails is named with its log, and the parent fails.
    let shard1 = out.join("results.shard-1-of-2.jsonl");
    let mut damaged = std::fs::read_to_string(&shard1).unwrap();
    damaged.push_str("not json\n");
    std::fs::write(&shard1, damaged).unwrap();
    let o = gpus(&[]).output().unwrap();
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("1 of 2 worker(s) failed"), "{t}");
    assert!(t.contains("worker 1 (shard 1/2 on cpu) failed"), "{t}");
    assert!(t.contains("worker.shard-1-of-2.log"), "{t}");
    assert!(t.contains("not a kvbench record"), "{t}");

    // Another experiment into this directory is refused before any work.
    let other = experiment(
        &dir,
        &EXPERIMENT.replace("compression_ratio: 0.5", "compression_ratio: 0.25"),
    );
    let o = kvbench(&["run", &other, "--output", out_s, "--device", "cpu"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o).contains("holds the results of another experiment"),
        "{}",
        text(&o)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn second_run_onto_a_results_file_fails_at_once_with_the_holders_pid() {
    let dir = workdir("lock");
    let exp = experiment(&dir, EXPERIMENT);
    let out = dir.join("out");
    let out_s = out.to_str().unwrap();
    let args = [
        "run",
        exp.as_str(),
        "--output",
        out_s,
        "--device",
        "cpu",
        "--shard",
        "0/2",
    ];
    let mut first = kvbench(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = out.join("results.shard-0-of-2.jsonl.lock");
    wait_for("the first run's lock", 60, || lock.exists());
    let t0 = Instant::now();
    let o = kvbench(&args).output().unwrap();
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains(&format!("pid {} on this host", first.id())),
        "{t}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "refused only after {:?}",
        t0.elapsed()
    );
    // The other shard is free meanwhile.
    assert!(kvbench::scale::lock::holder(&out.join("results.shard-1-of-2.jsonl")).is_none());
    first.kill().unwrap();
    first.wait().unwrap();
    // The killed run's lock is stale now: the next run reports it and takes over.
    let o = kvbench(&args).output().unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("no longer running: taking it over"), "{t}");
    assert!(!lock.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `kvbench slurm` writes the stored script (regenerate with KVBENCH_WRITE_GOLDEN=1 and review the
/// diff); bash parses it; the command prints the submit and report commands.
#[test]
fn slurm_script_matches_the_stored_one() {
    let dir = workdir("slurm");
    let dir = std::fs::canonicalize(&dir).unwrap();
    let exp = experiment(&dir, EXPERIMENT);
    let out = dir.join("shared-out");
    let o = Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .args([
            "slurm",
            &exp,
            "--array",
            "4",
            "--partition",
            "gpu",
            "--time",
            "02:00:00",
        ])
        .args([
            "--max-parallel",
            "2",
            "--mem",
            "64G",
            "--sbatch",
            "constraint=h200",
        ])
        .args([
            "--kvbench",
            "/opt/kvbench/bin/kvbench",
            "--limit",
            "3",
            "--output",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let script_path = out.join("slurm.sbatch");
    assert!(
        t.contains(&format!("sbatch {}", script_path.display())),
        "{t}"
    );
    assert!(
        t.contains(&format!("kvbench report {}", out.display())),
        "{t}"
    );
    assert!(t.contains("kvbench status"), "{t}");
    assert!(
        out.join("slurm").is_dir(),
        "the task log directory exists before submission"
    );
    let script = std::fs::read_to_string(&script_path)
        .unwrap()
        .replace(&out.display().to_string(), "$OUT")
        .replace(&exp, "$EXP");
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/slurm.sbatch");
    if std::env::var_os("KVBENCH_WRITE_GOLDEN").is_some() {
        std::fs::write(&golden, &script).unwrap();
    }
    assert_eq!(script, std::fs::read_to_string(&golden).unwrap());
    let bash = Command::new("bash")
        .arg("-n")
        .arg(&script_path)
        .output()
        .unwrap();
    assert!(bash.status.success(), "{}", text(&bash));
    // sbatch's own parser, where Slurm is installed.
    if let Ok(o) = Command::new("sbatch")
        .arg("--test-only")
        .arg(&script_path)
        .output()
    {
        eprintln!("sbatch --test-only: {}", text(&o));
    }
    // A bad value never reaches the script.
    let o = Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .args(["slurm", &exp, "--array", "0", "--output"])
        .arg(dir.join("other"))
        .output()
        .unwrap();
    assert!(
        !o.status.success() && text(&o).contains("--array 0"),
        "{}",
        text(&o)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

//! `kvbench run EXP --gpus 0,1`: one worker process per GPU on this host, each the same binary
//! re-invoked as `kvbench run EXP --shard I/N --device cuda:K`, its output in
//! `OUTPUT/worker.shard-I-of-N.log`. The parent shows one combined progress line, stops the
//! workers when it is stopped (SIGINT/SIGTERM/SIGHUP, or killed outright: the workers get
//! SIGTERM from the kernel when their parent dies, Linux's `PR_SET_PDEATHSIG`), and fails
//! naming every worker that failed and its log. Re-running the same command resumes every shard.
//!
//! Testing without GPUs: with `KVBENCH_FAKE_GPUS=N` in the environment the parent believes the
//! host has N GPUs and its workers run on `cpu` instead of `cuda:K`. Only for tests; it is
//! printed whenever it is in effect.

use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::status::ShardStatus;
use super::Shard;

/// The environment variable that fakes GPUs for tests (workers then run on the CPU).
pub const FAKE_GPUS_ENV: &str = "KVBENCH_FAKE_GPUS";

fn fake_gpus() -> Option<usize> {
    std::env::var(FAKE_GPUS_ENV).ok()?.trim().parse().ok()
}

/// How many GPUs this host has, as this build of kvbench sees them.
pub fn device_count() -> Result<usize> {
    if let Some(n) = fake_gpus() {
        eprintln!("note: {FAKE_GPUS_ENV}={n}: pretending this host has {n} GPU(s); workers run on the CPU");
        return Ok(n);
    }
    cuda_count()
}

#[cfg(feature = "cuda")]
fn cuda_count() -> Result<usize> {
    let n = cudarc::driver::CudaContext::device_count()
        .map_err(|e| anyhow::anyhow!("counting CUDA devices: {e:?}"))?;
    Ok(n.max(0) as usize)
}

#[cfg(not(feature = "cuda"))]
fn cuda_count() -> Result<usize> {
    bail!("--gpus needs a CUDA build of kvbench, and this one was built without CUDA: rebuild with `--features cuda` (see scripts/build-cuda.sh), or run on the CPU without --gpus")
}

/// `all` or a comma-separated list of GPU indices, checked against the host's GPUs.
pub fn parse_gpus(spec: &str) -> Result<Vec<usize>> {
    let count = device_count()?;
    if count == 0 {
        bail!("--gpus {spec}: no CUDA device answers on this host");
    }
    if spec.trim() == "all" {
        return Ok((0..count).collect());
    }
    let mut gpus = Vec::new();
    for part in spec.split(',') {
        let part = part.trim();
        let k: usize = part.parse().map_err(|_| {
            anyhow::anyhow!(
                "--gpus {spec}: `{part}` is not a GPU index; give `all` or indices such as 0,1"
            )
        })?;
        if k >= count {
            bail!(
                "--gpus {spec}: GPU {k} does not exist: this host has {count} GPU(s), indices 0 to {}",
                count - 1
            );
        }
        if gpus.contains(&k) {
            bail!("--gpus {spec}: GPU {k} is named twice");
        }
        gpus.push(k);
    }
    Ok(gpus)
}

/// The arguments of the parent's `run` to pass on to a worker: everything after `run` except
/// the options the parent decides per worker (`--gpus`, `--shard`, `--device`, `--output`,
/// `--fresh`).
pub fn worker_args(argv: &[String]) -> Vec<String> {
    const DROP_VALUE: [&str; 4] = ["--gpus", "--shard", "--device", "--output"];
    let start = argv.iter().position(|a| a == "run").map_or(0, |i| i + 1);
    let mut out = Vec::new();
    let mut it = argv[start..].iter();
    while let Some(a) = it.next() {
        if DROP_VALUE.contains(&a.as_str()) {
            it.next();
        } else if a == "--fresh" || DROP_VALUE.iter().any(|d| a.starts_with(&format!("{d}="))) {
        } else {
            out.push(a.clone());
        }
    }
    out
}

static STOP: AtomicBool = AtomicBool::new(false);

#[cfg(unix)]
extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_stop_handlers() {
    #[cfg(unix)]
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// One started worker.
struct Worker {
    shard: Shard,
    device: String,
    log: PathBuf,
    child: Child,
    exit: Option<std::process::ExitStatus>,
    lines: LineCounter,
}

/// The workers; any still running when this is dropped (the parent returning early, or
/// unwinding) are killed.
struct Workers(Vec<Worker>);

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.0 {
            if w.exit.is_none() {
                let _ = w.child.kill();
                let _ = w.child.wait();
            }
        }
    }
}

/// Counts a growing file's complete lines, reading only what was appended.
#[derive(Default)]
struct LineCounter {
    offset: u64,
    lines: usize,
}

impl LineCounter {
    fn update(&mut self, path: &Path) -> usize {
        let Ok(mut f) = std::fs::File::open(path) else {
            return self.lines;
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            *self = LineCounter::default(); // moved aside and restarted
        }
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(self.offset)).is_ok() && f.read_to_end(&mut buf).is_ok() {
            if let Some(last) = buf.iter().rposition(|&b| b == b'\n') {
                self.lines += buf[..=last].iter().filter(|&&b| b == b'\n').count();
                self.offset += last as u64 + 1;
            }
        }
        self.lines
    }
}

/// What the parent needs to start the workers.
pub struct GpuRun<'a> {
    pub experiment: &'a Path,
    pub output: &'a Path,
    pub gpus: Vec<usize>,
    /// The parent's other `run` arguments (see [`worker_args`]).
    pub forward: Vec<String>,
    /// Whether the workers should move their results aside first (`--fresh`).
    pub fresh: bool,
}

/// Start one worker per GPU and wait for all of them.
pub fn run_workers(job: &GpuRun) -> Result<()> {
    let n = job.gpus.len();
    let fake = fake_gpus().is_some();
    let exe = std::env::current_exe().context("finding the kvbench binary to start workers")?;
    // Refuse before starting anything when a shard's file is being written already.
    for i in 0..n {
        let shard = Shard { index: i, count: n };
        if let Some(h) = super::lock::holder(&shard.results(job.output)) {
            if super::lock::holder_alive(&h) != Some(false) {
                bail!(
                    "shard {shard} in {} is being written by kvbench pid {} on {}: stop that run first (kill {}), or write elsewhere with --output",
                    job.output.display(),
                    h.pid,
                    h.host,
                    h.pid
                );
            }
        }
    }
    install_stop_handlers();
    let mut workers = Workers(Vec::new());
    for (i, &gpu) in job.gpus.iter().enumerate() {
        let shard = Shard { index: i, count: n };
        let device = if fake {
            "cpu".to_string()
        } else {
            format!("cuda:{gpu}")
        };
        let log = shard.log(job.output);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("creating {}", log.display()))?;
        writeln!(
            file,
            "--- kvbench worker: shard {shard} on {device}, started {} (unix time)",
            super::now_secs()
        )?;
        let mut cmd = Command::new(&exe);
        cmd.arg("run")
            .args(&job.forward)
            .arg("--output")
            .arg(job.output)
            .args(["--shard", &shard.to_string(), "--device", &device])
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        if job.fresh {
            cmd.arg("--fresh");
        }
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting worker {i} ({})", exe.display()))?;
        eprintln!(
            "worker {i}: shard {shard} on {device}, pid {}, log {}",
            child.id(),
            log.display()
        );
        workers.0.push(Worker {
            shard,
            device,
            log,
            child,
            exit: None,
            lines: LineCounter::default(),
        });
    }
    let t0 = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut last_line = Instant::now();
    loop {
        if STOP.load(Ordering::SeqCst) {
            for w in &mut workers.0 {
                if w.exit.is_none() {
                    terminate(&mut w.child);
                }
            }
            for w in &mut workers.0 {
                if w.exit.is_none() {
                    w.exit = w.child.wait().ok();
                }
            }
            let line = progress(&mut workers.0, job.output, t0);
            eprintln!();
            bail!("stopped: {line}; every finished record is kept — re-run the same command to resume every shard");
        }
        for w in &mut workers.0 {
            if w.exit.is_none() {
                w.exit = w.child.try_wait()?;
            }
        }
        let running = workers.0.iter().filter(|w| w.exit.is_none()).count();
        let line = progress(&mut workers.0, job.output, t0);
        if tty {
            eprint!("\r{line}   ");
        } else if last_line.elapsed() >= Duration::from_secs(30) || running == 0 {
            eprintln!("{line}");
            last_line = Instant::now();
        }
        if running == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    if tty {
        eprintln!();
    }
    let failed: Vec<String> = workers
        .0
        .iter()
        .filter(|w| !w.exit.is_some_and(|s| s.success()))
        .map(|w| {
            let status = w.exit.map_or("unknown".into(), |s| s.to_string());
            format!(
                "worker {} (shard {} on {}) failed ({status}); log: {}{}",
                w.shard.index,
                w.shard,
                w.device,
                w.log.display(),
                tail(&w.log, 3)
            )
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} of {n} worker(s) failed:\n  {}\nre-run the same command to resume (finished records are kept)",
            failed.len(),
            failed.join("\n  ")
        );
    }
    Ok(())
}

/// The combined progress line: records done / total over every shard, elapsed and remaining.
fn progress(workers: &mut [Worker], dir: &Path, t0: Instant) -> String {
    let (mut done, mut total, mut new, mut known) = (0, 0, 0, true);
    let mut per = Vec::new();
    for w in workers.iter_mut() {
        let lines = w.lines.update(&w.shard.results(dir));
        match ShardStatus::read(&w.shard.status(dir)) {
            Some(st) => {
                done += st.done(lines);
                total += st.total;
                new += lines.saturating_sub(st.lines_at_start);
                per.push(format!("{}:{}/{}", w.shard.index, st.done(lines), st.total));
            }
            None => {
                known = false;
                per.push(format!("{}:starting", w.shard.index));
            }
        }
    }
    let elapsed = t0.elapsed().as_secs();
    let eta = if known && new > 0 && total > done {
        let secs = elapsed as f64 / new as f64 * (total - done) as f64;
        format!(", ~{} left", hms(secs as u64))
    } else {
        String::new()
    };
    let total = if known { total.to_string() } else { "?".into() };
    format!(
        "[{}] {done}/{total} records ({}){eta}",
        hms(elapsed),
        per.join(" ")
    )
}

fn hms(s: u64) -> String {
    format!("{}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
}

/// The last lines of a log, indented, for an error message.
fn tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("\n      | {l}"))
        .collect()
}

fn terminate(child: &mut Child) {
    #[cfg(unix)]
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: signalling our own child by pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        return;
    }
    let _ = child.kill();
}

/// Linux: the worker gets SIGTERM when the parent dies, however it dies (even `kill -9`).
fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches only the child's own state.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn workers_get_the_parents_arguments_less_the_per_worker_ones() {
        let a = args(
            "kvbench run exp.yaml --gpus 0,1 --limit 2 --device=cuda --output out --fresh --append",
        );
        assert_eq!(worker_args(&a), args("exp.yaml --limit 2 --append"));
        let a = args("kvbench run --gpus=all exp.yaml --shard 0/2");
        assert_eq!(worker_args(&a), args("exp.yaml"));
    }

    #[test]
    fn line_counter_reads_only_complete_appended_lines() {
        let p = std::env::temp_dir().join(format!("kvbench-lines-{}", std::process::id()));
        std::fs::write(&p, "a\nb\npart").unwrap();
        let mut c = LineCounter::default();
        assert_eq!(c.update(&p), 2);
        std::fs::write(&p, "a\nb\npartial\nc\n").unwrap();
        assert_eq!(c.update(&p), 4);
        std::fs::write(&p, "x\n").unwrap();
        assert_eq!(c.update(&p), 1);
        std::fs::remove_file(&p).unwrap();
    }
}

//! The scale-out parts of the command line: `run --shard/--gpus`, `slurm`, what a shard prints
//! when it finishes. The work itself is in `kvbench::scale`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use kvbench::experiment::Plan;
use kvbench::run::RunOutcome;
use kvbench::scale::{self, DirPolicy, Shard};

/// `run`'s scale-out options.
pub struct Scale {
    pub policy: DirPolicy,
    pub shard: Option<Shard>,
    pub gpus: Option<String>,
}

pub fn parse_shard(s: &str) -> Result<Shard, String> {
    s.parse()
}

#[derive(Args)]
pub struct SlurmArgs {
    /// The experiment file.
    experiment: PathBuf,
    /// Number of array tasks, one shard each (task I runs shard I/N).
    #[arg(long, value_name = "N")]
    array: usize,
    /// Shared output directory every task writes into (default: runs/<experiment name>); the
    /// script goes to DIR/slurm.sbatch, task logs to DIR/slurm/.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Slurm partition.
    #[arg(long)]
    partition: Option<String>,
    /// Slurm account.
    #[arg(long)]
    account: Option<String>,
    /// GPUs per array task (0: run on the CPU).
    #[arg(long, default_value_t = 1)]
    gpus_per_task: usize,
    /// CPUs per array task.
    #[arg(long)]
    cpus_per_task: Option<usize>,
    /// Memory per task (Slurm syntax, e.g. 64G).
    #[arg(long)]
    mem: Option<String>,
    /// Time limit per task (Slurm syntax, e.g. 04:00:00).
    #[arg(long)]
    time: Option<String>,
    /// Run at most K tasks at once (`--array=0-(N-1)%K`).
    #[arg(long, value_name = "K")]
    max_parallel: Option<usize>,
    /// Job name (default: kvbench-<experiment name>).
    #[arg(long)]
    job_name: Option<String>,
    /// Further #SBATCH options, repeatable (`--sbatch constraint=h100`).
    #[arg(long, value_name = "OPTION")]
    sbatch: Vec<String>,
    /// The kvbench binary the tasks run (default: this one).
    #[arg(long)]
    kvbench: Option<PathBuf>,
    /// At most N samples of each task (as `run --limit`).
    #[arg(long)]
    limit: Option<usize>,
    /// Let the tasks add to a directory holding another experiment (as `run --append`).
    #[arg(long)]
    append: bool,
}

/// `kvbench slurm`: validate, write the script, say how to submit and merge.
pub fn slurm(a: SlurmArgs) -> Result<()> {
    let plan = Plan::load(&a.experiment)?;
    let output = a
        .output
        .unwrap_or_else(|| PathBuf::from("runs").join(&plan.raw.experiment));
    let output = scale::slurm::absolute(&output)?;
    let policy = DirPolicy::from_flags(false, a.append)?;
    scale::claim::check_experiment(&output, &plan, policy)?;
    let mut run_args = Vec::new();
    if let Some(n) = a.limit {
        run_args.extend(["--limit".to_string(), n.to_string()]);
    }
    if a.append {
        run_args.push("--append".into());
    }
    let job = scale::slurm::SlurmJob {
        experiment: std::fs::canonicalize(&a.experiment)
            .with_context(|| format!("{}", a.experiment.display()))?,
        output: output.clone(),
        array: a.array,
        max_parallel: a.max_parallel,
        job_name: a
            .job_name
            .unwrap_or_else(|| format!("kvbench-{}", plan.raw.experiment)),
        partition: a.partition,
        account: a.account,
        gpus_per_task: a.gpus_per_task,
        cpus_per_task: a.cpus_per_task,
        mem: a.mem,
        time: a.time,
        kvbench: match a.kvbench {
            Some(k) => k,
            None => std::env::current_exe()?,
        },
        run_args,
        sbatch: a.sbatch,
    };
    let path = job.write()?;
    let q = |p: &Path| scale::slurm::shell_quote(&p.to_string_lossy());
    println!("wrote {}", path.display());
    println!("submit:           sbatch {}", q(&path));
    println!("progress:         kvbench status {}", q(&output));
    println!("when all finish:  kvbench report {}", q(&output));
    Ok(())
}

/// `run --gpus`: the workers, then every record of the directory.
pub fn run_gpus(
    experiment: &Path,
    plan: &Plan,
    output: &Path,
    gpus: &str,
    s: &Scale,
) -> Result<Vec<kvbench_reports::Record>> {
    let gpus = scale::workers::parse_gpus(gpus)?;
    scale::claim::check_experiment(output, plan, s.policy)?;
    let argv: Vec<String> = std::env::args().collect();
    scale::workers::run_workers(&scale::workers::GpuRun {
        experiment,
        output,
        gpus,
        forward: scale::workers::worker_args(&argv),
        fresh: s.policy == DirPolicy::Fresh,
    })?;
    Ok(kvbench_reports::merge::load_runs(&[output.to_path_buf()])?.records)
}

/// A shard's end: the summary of every record in the directory so far (printed, not written:
/// other shards may still be running), and what to do next.
pub fn shard_done(output: &Path, shard: Shard, outcome: &RunOutcome) -> Result<()> {
    let rows = kvbench_reports::summarize(&outcome.records);
    println!("{}", kvbench_reports::to_markdown(&rows));
    println!(
        "shard {shard}: {} record(s) written, {} already done; results in {}",
        outcome.written,
        outcome.skipped,
        outcome.results.display()
    );
    println!(
        "the directory holds {} record(s) of all shards so far; `kvbench status {}` shows each shard, `kvbench report {}` merges them",
        outcome.records.len(),
        output.display(),
        output.display()
    );
    Ok(())
}

//! `kvbench`: run KV-cache compression experiments and inspect what is registered.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kvbench::experiment::Plan;
use kvbench::fetch::{resolve, FetchOptions, ModelSpec};
use kvbench::run::{run_claimed, RunOptions};

mod scale_cli;
use kvbench::overrides::Overrides;
use scale_cli::{parse_shard, Scale, SlurmArgs};

mod cli;
use cli::summary::summarize_and_report;

#[derive(Parser)]
#[command(
    name = "kvbench",
    version,
    about = "Measure KV-cache compression: accuracy, fidelity, memory and speed in one run"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an experiment: every dataset x method x budget, appending to OUTPUT/results.jsonl.
    Run {
        /// The experiment YAML file (`kvbench init` writes a starter).
        experiment: PathBuf,
        /// Output directory (default: runs/<experiment name>).
        #[arg(long)]
        output: Option<PathBuf>,
        /// auto, cpu, cuda or cuda:N (default: the experiment's `device`, else auto).
        #[arg(long)]
        device: Option<String>,
        /// At most N samples of each task of each dataset: the first N of every task, in the
        /// dataset's order (LongBench with 3 tasks and `--limit 2` runs 6 samples).
        #[arg(long)]
        limit: Option<usize>,
        /// Start over: move existing results aside instead of skipping finished records.
        #[arg(long)]
        fresh: bool,
        /// Add this experiment's records to a directory that holds another experiment's.
        #[arg(long)]
        append: bool,
        /// Run shard I of N (0-based): 1/N of the samples, balanced by size, into
        /// OUTPUT/results.shard-I-of-N.jsonl.
        #[arg(long, value_name = "I/N", value_parser = parse_shard)]
        shard: Option<kvbench::scale::Shard>,
        /// One worker process per GPU (`0,1,3` or `all`), each a shard on its device; one
        /// combined progress line; re-running resumes every shard.
        #[arg(long, value_name = "LIST", conflicts_with_all = ["shard", "device"])]
        gpus: Option<String>,
        /// Count failed records (a device out of memory on a sample) as done; by default a
        /// re-run retries them.
        #[arg(long)]
        keep_failed: bool,
        /// Print the exact prompts of the first sample of each dataset (as `kvbench
        /// show-prompt`) and stop: no method runs, nothing is written.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Tables, plots, results.parquet and report.html from one or more runs (shards merge; runs
    /// of the same samples go side by side unless --merge).
    Report(cli::report::ReportArgs),
    /// Run B against run A, cell by cell: differences with their intervals.
    Compare(cli::report::CompareArgs),
    /// Every record of one sample: predictions, answers, scores, and how to see its prompt.
    Show(cli::report::ShowArgs),
    /// Write an sbatch script running the experiment as a Slurm job array, one shard per task,
    /// into one shared output directory.
    Slurm(SlurmArgs),
    /// Per-shard progress of a run directory: records done/total, last update, failures.
    Status {
        /// The run directory.
        dir: PathBuf,
    },
    /// Check an experiment file without running it.
    Validate {
        /// The experiment YAML file.
        experiment: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Print the exact prompts of the first samples (chat template, context | question split,
    /// token counts, truncation) as `run` would build them, without running any method.
    ShowPrompt {
        /// The experiment YAML file.
        experiment: PathBuf,
        /// How many samples of each dataset to show.
        #[arg(long, default_value_t = 1)]
        samples: usize,
        /// As `run --limit`: at most N samples of each task before choosing the first ones.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Write a commented starter experiment that validates as written.
    Init {
        /// Where to write it.
        #[arg(default_value = "experiment.yaml")]
        path: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// List the registered compression methods, or show one with every parameter, its default
    /// and the YAML to use it.
    Methods {
        /// A method name: show it alone, in full.
        name: Option<String>,
        /// The whole list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the model registry's aliases (pinned files `kvbench fetch` downloads) and the model
    /// families kvbench runs.
    Models {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the registered datasets, or show one with every option, its default, its inputs and
    /// an example entry.
    Datasets {
        /// A dataset name: show it alone, in full.
        name: Option<String>,
        /// The whole list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Microbenchmarks on the device: prefill and decode vs context length, compression time per
    /// method, one sample end to end, prefill sharing, peak memory. Medians over repeats.
    Bench(cli::bench::BenchArgs),
    /// Download a model (alias, hf:ORG/REPO[@REV] or path) into the cache and print its files;
    /// without a model, list the registry aliases and the families kvbench runs.
    Fetch {
        /// A registry alias, hf:ORG/REPO[@REV][:FILE.gguf] or a local path.
        model: Option<String>,
    },
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", cli::errors::render(&e));
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<ExitCode> {
    let command = Cli::parse().command;
    if let Command::Run {
        experiment,
        output,
        device,
        limit,
        fresh,
        append,
        shard,
        gpus,
        keep_failed,
        dry_run,
        overrides,
    } = command
    {
        if dry_run {
            return show_prompt(&experiment, 1, limit, &overrides).map(|()| ExitCode::SUCCESS);
        }
        let flags = RunFlags {
            limit,
            fresh,
            keep_failed,
            scale: Scale {
                policy: kvbench::scale::DirPolicy::from_flags(fresh, append)?,
                shard,
                gpus,
            },
            overrides,
        };
        return cmd_run(experiment, output, device, flags);
    }
    other_command(command).map(|()| ExitCode::SUCCESS)
}

fn other_command(command: Command) -> Result<()> {
    match command {
        Command::Run { .. } => unreachable!("handled in real_main"),
        Command::ShowPrompt {
            experiment,
            samples,
            limit,
            overrides,
        } => show_prompt(&experiment, samples, limit, &overrides),
        Command::Init { path, force } => {
            cli::init::write(&path, force)?;
            println!(
                "wrote {p}; check it with `kvbench validate {p}`, run it with `kvbench run {p}`",
                p = path.display()
            );
            Ok(())
        }
        Command::Slurm(args) => scale_cli::slurm(args),
        Command::Status { dir } => {
            print!("{}", kvbench::scale::status::render(&dir)?);
            Ok(())
        }
        Command::Report(args) => cli::report::report(args),
        Command::Compare(args) => cli::report::compare(args),
        Command::Show(args) => cli::report::show(args),
        Command::Validate {
            experiment,
            overrides,
        } => {
            let plan = Plan::load_with(&experiment, &overrides)?;
            print_notes(&plan);
            // The model's shape where its files are here already (no download from `validate`).
            match kvbench::fetch::resolve_if_local(&plan.model, &FetchOptions::from_env()) {
                Some(files) => kvbench::checks::model_shape(&plan, &files?)?,
                None => eprintln!(
                    "note: model `{}` is not downloaded yet: the methods' parameters are checked \
                     against its shape once `kvbench run` or `kvbench fetch` has it",
                    plan.raw.model
                ),
            }
            println!(
                "{}: ok — model {}, {} dataset(s), {} method run(s)",
                experiment.display(),
                plan.raw.model,
                plan.raw.datasets.len(),
                plan.runs.len()
            );
            Ok(())
        }
        Command::Methods {
            name: Some(name), ..
        } => {
            print!("{}", cli::describe::method(&name)?);
            Ok(())
        }
        Command::Datasets {
            name: Some(name), ..
        } => {
            print!("{}", cli::describe::dataset(&name)?);
            Ok(())
        }
        Command::Methods { name: None, json } => {
            print!("{}", cli::listings::methods(json)?);
            Ok(())
        }
        Command::Models { json } => {
            print!("{}", cli::listings::models(json)?);
            Ok(())
        }
        Command::Datasets { name: None, json } => {
            print!("{}", cli::listings::datasets(json)?);
            Ok(())
        }
        Command::Bench(args) => cli::bench::bench(args),
        Command::Fetch { model: None } => {
            print!("{}", cli::listings::models(false)?);
            Ok(())
        }
        Command::Fetch { model: Some(model) } => {
            let spec: ModelSpec = model.parse()?;
            let files = resolve(&spec, &FetchOptions::from_env())?;
            print!("{}", cli::listings::files(&files));
            Ok(())
        }
    }
}

fn print_notes(plan: &Plan) {
    for n in &plan.notes {
        if n.starts_with("warning: ") {
            eprintln!("{n}");
        } else {
            eprintln!("note: {n}");
        }
    }
}

/// `kvbench show-prompt` and `run --dry-run`: load the model (on the CPU) for its tokenizer
/// and template, print the prompts of the first samples.
fn show_prompt(
    experiment: &std::path::Path,
    samples: usize,
    limit: Option<usize>,
    overrides: &Overrides,
) -> Result<()> {
    let plan = Plan::load_with(experiment, overrides)?;
    print_notes(&plan);
    let files = resolve(&plan.model, &FetchOptions::from_env())
        .with_context(|| format!("fetching model `{}`", plan.raw.model))?;
    let device = candle_core::Device::Cpu;
    let loaded = kvbench::loader::load(&files, &device)?;
    print!(
        "{}",
        kvbench::run::show_prompts(&plan, &loaded, limit, samples.max(1))?
    );
    Ok(())
}

/// `kvbench run`'s options beside the experiment, output and device.
struct RunFlags {
    limit: Option<usize>,
    fresh: bool,
    keep_failed: bool,
    scale: Scale,
    overrides: Overrides,
}

fn cmd_run(
    experiment: PathBuf,
    output: Option<PathBuf>,
    device: Option<String>,
    flags: RunFlags,
) -> Result<ExitCode> {
    let RunFlags {
        limit,
        fresh,
        keep_failed,
        scale,
        overrides,
    } = flags;
    let plan = Plan::load_with(&experiment, &overrides)?;
    print_notes(&plan);
    let output = output.unwrap_or_else(|| PathBuf::from("runs").join(&plan.raw.experiment));
    if let Some(gpus) = &scale.gpus {
        let records = scale_cli::run_gpus(&experiment, &plan, &output, gpus, &scale)?;
        return summarize_and_report(&output, &records).map(|()| ExitCode::SUCCESS);
    }
    let device_spec = device
        .or_else(|| plan.raw.device.clone())
        .unwrap_or_else(|| "auto".into());
    let device = kvbench::device::select(&device_spec)?;
    let shard = scale.shard.unwrap_or(kvbench::scale::Shard::WHOLE);
    // Before the model loads: one writer per results file, one experiment per directory.
    let claim = kvbench::scale::Claim::acquire(&output, shard, &plan, scale.policy)?;
    let files = resolve(&plan.model, &FetchOptions::from_env())
        .with_context(|| format!("fetching model `{}`", plan.raw.model))?;
    // Before the weights load: the methods' parameters against the model's shape.
    kvbench::checks::model_shape(&plan, &files)?;
    eprintln!(
        "loading {} on {}",
        plan.raw.model,
        kvbench::device::label(&device)
    );
    let loaded = kvbench::loader::load(&files, &device)?;
    let args: Vec<String> = std::env::args().collect();
    kvbench::run::interrupt::install(cli::resume::command(&args, &output));
    let started = std::time::Instant::now();
    let outcome = run_claimed(
        &plan,
        &loaded,
        &device,
        &RunOptions {
            output: output.clone(),
            limit,
            fresh,
            progress: true,
            keep_failed,
        },
        &claim,
    )?;
    // The resolved experiment: defaults filled in, device as run.
    let mut resolved = plan.raw.clone();
    resolved.device = Some(device_spec);
    kvbench_reports::write_atomic(
        &output.join("experiment.yaml"),
        serde_yaml_ng::to_string(&resolved)?,
    )
    .with_context(|| format!("writing {}", output.join("experiment.yaml").display()))?;
    kvbench::manifest::write(
        &output,
        &plan.raw.model,
        &files,
        &kvbench::device::label(&device),
        &kvbench::manifest::PromptFacts::new(&plan, &loaded, &outcome.data),
    )?;
    if outcome.interrupted {
        // The summary and report of what is there, so a stopped run is readable as it stands
        // (a shard leaves that to `kvbench report DIR`, which merges every shard).
        let summarized = shard.is_whole()
            && !outcome.records.is_empty()
            && summarize_and_report(&output, &outcome.records)
                .map_err(|e| eprintln!("warning: no summary of the records so far: {e:#}"))
                .is_ok();
        eprintln!(
            "interrupted after {}: {} record(s) written by this run and {} earlier are kept in {}; \
             resume with: {}\n{}",
            kvbench::run::duration(started.elapsed()),
            outcome.written,
            outcome.records.len().saturating_sub(outcome.written),
            outcome.results.display(),
            kvbench::run::interrupt::resume_command(),
            if summarized {
                format!(
                    "(summary.md and report.html in {} cover the records so far)",
                    output.display()
                )
            } else {
                format!("(a report of what is there: kvbench report {})", output.display())
            }
        );
        return Ok(ExitCode::from(130));
    }
    if !shard.is_whole() {
        return scale_cli::shard_done(&output, shard, &outcome).map(|()| ExitCode::SUCCESS);
    }
    summarize_and_report(&output, &outcome.records)?;
    let mut problems = Vec::new();
    if outcome.failed > 0 {
        problems.push(format!("{} failed", outcome.failed));
    }
    if outcome.skipped_turns > 0 {
        problems.push(format!(
            "{} turn(s) skipped for their data",
            outcome.skipped_turns
        ));
    }
    println!(
        "{} record(s) written, {} already done{}; results in {}",
        outcome.written,
        outcome.skipped,
        if problems.is_empty() {
            String::new()
        } else {
            format!(" ({})", problems.join(", "))
        },
        outcome.results.display()
    );
    if outcome.written == outcome.failed && outcome.skipped == 0 {
        anyhow::bail!(
            "the run wrote 0 successful records ({} failed, {} turn(s) skipped): nothing was \
             measured; see the warnings above",
            outcome.failed,
            outcome.skipped_turns
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand and every argument of every subcommand says what it is for.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id != "help" && id != "version" && a.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                let name = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    missing.push(name.clone());
                }
                walk(sub, &name, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "kvbench", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
        super::Cli::command().debug_assert();
    }
}

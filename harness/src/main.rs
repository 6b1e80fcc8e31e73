//! `kvbench`: run KV-cache compression experiments and inspect what is registered.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kvbench::experiment::Plan;
use kvbench::fetch::{resolve, FetchOptions, ModelSpec};
use kvbench::run::{run_claimed, RunOptions};

mod scale_cli;
use scale_cli::{parse_shard, Scale, SlurmArgs};

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
        /// Run shard I of N (0-based): every N-th sample, into OUTPUT/results.shard-I-of-N.jsonl.
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
    },
    /// Tables, plots and report.html from one or more runs (shards and runs merge; a record key
    /// seen twice counts once).
    Report {
        /// Run directories (every results*.jsonl in them) or results files.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Where to write report.html, tables/ and plots/ (default: the run directory when one is
        /// given).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Method the deltas compare against.
        #[arg(long, default_value = "full")]
        baseline: String,
        /// Published numbers to put beside ours (CSV: source,model,dataset,task,method,budget,score).
        #[arg(long)]
        compare: Option<PathBuf>,
        /// Bootstrap seed (intervals are reproducible for a seed).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Bootstrap resamples per interval.
        #[arg(long, default_value_t = 2000)]
        resamples: usize,
        /// Page title (default: the experiment names).
        #[arg(long)]
        title: Option<String>,
    },
    /// Write an sbatch script running the experiment as a Slurm job array, one shard per task,
    /// into one shared output directory.
    Slurm(SlurmArgs),
    /// Per-shard progress of a run directory: records done/total, last update, failures.
    Status {
        /// The run directory.
        dir: PathBuf,
    },
    /// Check an experiment file without running it.
    Validate { experiment: PathBuf },
    /// List the registered compression methods.
    Methods {
        #[arg(long)]
        json: bool,
    },
    /// List the model registry's aliases (pinned files `kvbench fetch` downloads) and the model
    /// families kvbench runs.
    Models {
        #[arg(long)]
        json: bool,
    },
    /// List the registered datasets.
    Datasets {
        #[arg(long)]
        json: bool,
    },
    /// Microbenchmarks on the device: prefill and decode vs context length, compression time per
    /// method, one sample end to end, prefill sharing, peak memory. Medians over repeats.
    Bench {
        #[arg(long, default_value = "smollm2-135m-instruct-q4_1")]
        model: String,
        #[arg(long, default_value = "auto")]
        device: String,
        /// Prefill lengths (default: 1k..32k on CUDA, 512..4k on CPU).
        #[arg(long, value_delimiter = ',')]
        lengths: Option<Vec<usize>>,
        /// Context lengths for decode timing (default: 1k, 4k, 32k on CUDA; 512, 2k on CPU).
        #[arg(long, value_delimiter = ',')]
        decode_lengths: Option<Vec<usize>>,
        /// Context length of the per-method, end-to-end and sharing measurements.
        #[arg(long)]
        sample_length: Option<usize>,
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        #[arg(long, default_value_t = 512)]
        attention_chunk: usize,
        /// Also write the report as JSON here.
        #[arg(long, default_value = "bench.json")]
        output: PathBuf,
    },
    /// Download a model (alias, hf:ORG/REPO[@REV] or path) into the cache and print its files;
    /// without a model, list the registry aliases and the families kvbench runs.
    Fetch { model: Option<String> },
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    match Cli::parse().command {
        Command::Run {
            experiment,
            output,
            device,
            limit,
            fresh,
            append,
            shard,
            gpus,
            keep_failed,
        } => {
            let scale = Scale {
                policy: kvbench::scale::DirPolicy::from_flags(fresh, append)?,
                shard,
                gpus,
            };
            cmd_run(experiment, output, device, limit, fresh, keep_failed, scale)
        }
        Command::Slurm(args) => scale_cli::slurm(args),
        Command::Status { dir } => {
            print!("{}", kvbench::scale::status::render(&dir)?);
            Ok(())
        }
        Command::Report {
            runs,
            output,
            baseline,
            compare,
            seed,
            resamples,
            title,
        } => {
            if let Some(missing) = runs.iter().find(|p| !p.exists()) {
                anyhow::bail!(
                    "{}: no such run directory or results file",
                    missing.display()
                );
            }
            let output = match output {
                Some(o) => o,
                None if runs.len() == 1 && runs[0].is_dir() => runs[0].clone(),
                None => anyhow::bail!("several runs (or a results file) given: name the report directory with --output DIR"),
            };
            let mut opts = report_options(&output);
            opts.baseline = baseline;
            opts.compare = compare;
            opts.bootstrap = kvbench_reports::bootstrap::BootstrapConfig {
                seed,
                resamples: resamples.max(1),
            };
            opts.title = title;
            let outcome = kvbench_reports::report(&runs, &opts)?;
            print_report(&outcome);
            Ok(())
        }
        Command::Validate { experiment } => {
            let plan = Plan::load(&experiment)?;
            print_notes(&plan);
            println!(
                "{}: ok — model {}, {} dataset(s), {} method run(s)",
                experiment.display(),
                plan.raw.model,
                plan.raw.datasets.len(),
                plan.runs.len()
            );
            Ok(())
        }
        Command::Methods { json } => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&*kvbench_methods::METHODS)?
                );
            } else {
                for m in kvbench_methods::METHODS.iter() {
                    let params: Vec<String> = m
                        .params
                        .iter()
                        .map(|p| format!("{}={}", p.name, p.default))
                        .collect();
                    println!(
                        "{:<16} {:<10} {}  [{}] {}",
                        m.name,
                        m.family,
                        m.summary,
                        params.join(", "),
                        m.paper
                    );
                }
                println!(
                    "\npresets (`preset: NAME` on a method entry or for the whole experiment):"
                );
                for p in kvbench::presets::PRESETS {
                    let covered: Vec<&str> = (p.methods)().iter().map(|(m, _)| *m).collect();
                    println!(
                        "{:<20} {} [{}]\n{:<20} source: {}",
                        p.name,
                        p.about,
                        covered.join(", "),
                        "",
                        p.source
                    );
                }
            }
            Ok(())
        }
        Command::Models { json } => {
            print!("{}", models_listing(json)?);
            Ok(())
        }
        Command::Datasets { json } => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(kvbench_datasets::DATASETS)?
                );
            } else {
                for d in kvbench_datasets::DATASETS {
                    println!("{:<10} {:<10?} {}", d.name, d.source, d.summary);
                }
            }
            Ok(())
        }
        Command::Bench {
            model,
            device,
            lengths,
            decode_lengths,
            sample_length,
            repeats,
            attention_chunk,
            output,
        } => {
            let device = kvbench::device::select(&device)?;
            let gpu = device.is_cuda();
            let opts = kvbench::bench::BenchOptions {
                prefill_lengths: lengths.unwrap_or(if gpu {
                    vec![1024, 2048, 4096, 8192, 16384, 32768]
                } else {
                    vec![512, 1024, 2048, 4096]
                }),
                decode_lengths: decode_lengths.unwrap_or(if gpu {
                    vec![1024, 4096, 8192, 32768]
                } else {
                    vec![512, 2048]
                }),
                sample_length: sample_length.unwrap_or(if gpu { 4096 } else { 1024 }),
                repeats: repeats.max(1),
                decode_steps: 32,
                attention_chunk,
            };
            let files = resolve(&model.parse()?, &FetchOptions::from_env())?;
            let loaded = kvbench::loader::load(&files, &device)?;
            let report = kvbench::bench::run(&loaded, &device, &model, &opts)?;
            print!("{}", kvbench::bench::render(&report));
            kvbench_reports::write_atomic(&output, serde_json::to_string_pretty(&report)?)
                .with_context(|| format!("writing {}", output.display()))?;
            eprintln!("wrote {}", output.display());
            Ok(())
        }
        Command::Fetch { model: None } => {
            print!("{}", models_listing(false)?);
            Ok(())
        }
        Command::Fetch { model: Some(model) } => {
            let spec: ModelSpec = model.parse()?;
            let files = resolve(&spec, &FetchOptions::from_env())?;
            println!("{files:#?}");
            Ok(())
        }
    }
}

/// A report artefact, written atomically (temporary file + rename).
fn write_artefact(path: &std::path::Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    kvbench_reports::write_atomic(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
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

fn cmd_run(
    experiment: PathBuf,
    output: Option<PathBuf>,
    device: Option<String>,
    limit: Option<usize>,
    fresh: bool,
    keep_failed: bool,
    scale: Scale,
) -> Result<()> {
    let plan = Plan::load(&experiment)?;
    print_notes(&plan);
    let output = output.unwrap_or_else(|| PathBuf::from("runs").join(&plan.raw.experiment));
    if let Some(gpus) = &scale.gpus {
        let records = scale_cli::run_gpus(&experiment, &plan, &output, gpus, &scale)?;
        return summarize_and_report(&output, &records);
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
    eprintln!(
        "loading {} on {}",
        plan.raw.model,
        kvbench::device::label(&device)
    );
    let loaded = kvbench::loader::load(&files, &device)?;
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
    if !shard.is_whole() {
        return scale_cli::shard_done(&output, shard, &outcome);
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
    Ok(())
}

/// The end-of-run summary (`summary.md`, `summary.csv`) and report of every record in `output`.
fn summarize_and_report(
    output: &std::path::Path,
    records: &[kvbench_reports::Record],
) -> Result<()> {
    let output = output.to_path_buf();
    let rows = kvbench_reports::summarize(records);
    let md = kvbench_reports::to_markdown(&rows);
    write_artefact(&output.join("summary.md"), &md)?;
    write_artefact(&output.join("summary.csv"), kvbench_reports::to_csv(&rows))?;
    println!("{md}");
    // The same report `kvbench report OUTPUT` writes: every run directory has its report.
    if records.is_empty() {
        eprintln!("note: no records yet, so no report");
    } else {
        let report =
            kvbench_reports::report(std::slice::from_ref(&output), &report_options(&output))
                .with_context(|| format!("writing the report in {}", output.display()))?;
        // The benchmarks' own breakdowns the run has data for follow the summary.
        let breakdowns: Vec<String> = report
            .table_data
            .iter()
            .filter(|t| kvbench_reports::breakdown::NAMES.contains(&t.name.as_str()))
            .map(kvbench_reports::tables::markdown::to_markdown)
            .collect();
        if !breakdowns.is_empty() {
            let text = breakdowns.join("\n");
            write_artefact(&output.join("summary.md"), format!("{md}\n{text}"))?;
            println!("{text}");
        }
        print_report(&report);
    }
    Ok(())
}

/// `kvbench models`: aliases with size and first source, then the families.
fn models_listing(json: bool) -> Result<String> {
    let aliases = kvbench::fetch::aliases();
    let families = kvbench::model::supported_families();
    if json {
        let v = serde_json::json!({
            "aliases": aliases.iter().map(|a| serde_json::json!({
                "name": a.name,
                "file": a.file_name,
                "bytes": a.size,
                "sha256": a.sha256,
                "description": a.description,
                "sources": a.sources.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "families": families.iter().map(|(types, what)| serde_json::json!({
                "model_type": types,
                "supports": what,
            })).collect::<Vec<_>>(),
        });
        return Ok(serde_json::to_string_pretty(&v)? + "\n");
    }
    let mut out = String::from("registry aliases (kvbench fetch NAME, or `model: NAME`):\n");
    for a in aliases {
        out += &format!(
            "  {:<28} {:>8.1} MB  {}\n",
            a.name,
            a.size as f64 / 1e6,
            a.description
        );
    }
    out += "\nmodel families (config.json model_type / GGUF general.architecture):\n";
    for (types, what) in &families {
        out += &format!("  {types:<28} {what}\n");
    }
    out += "\nany other checkpoint: `hf:ORG/REPO[@REV]` or a local path of one of these families\n";
    Ok(out)
}

fn report_options(output: &std::path::Path) -> kvbench_reports::ReportOptions {
    let mut opts = kvbench_reports::ReportOptions::new(output);
    opts.generator = kvbench::manifest::version_line();
    opts
}

fn print_report(outcome: &kvbench_reports::ReportOutcome) {
    if !outcome.duplicates.is_empty() {
        let identical = outcome.duplicates.iter().filter(|d| d.identical).count();
        eprintln!(
            "warning: {} record key(s) appeared more than once ({identical} identical, {} differing); each counted once, from the first file given",
            outcome.duplicates.len(),
            outcome.duplicates.len() - identical
        );
    }
    if outcome.failed > 0 {
        eprintln!(
            "warning: {} failed record(s) (see their `error`) left out of the report",
            outcome.failed
        );
    }
    for (name, why) in &outcome.skipped_plots {
        eprintln!("note: plot {name} not drawn: {why}");
    }
    // `--compare`: how many published rows found their cell (the table says why the others did not).
    if let Some((t, files)) = outcome
        .table_data
        .iter()
        .zip(&outcome.tables)
        .find(|(t, _)| t.name == "compare")
    {
        let first = t.note.split(';').next().unwrap_or_default();
        println!("compare: {first}: {}", files.markdown.display());
    }
    println!(
        "report: {} ({} records, {} tables x 4 formats, {} plots x PNG+SVG)",
        outcome.html.display(),
        outcome.records,
        outcome.tables.len(),
        outcome.plots.len()
    );
}

//! `kvbench report`, `kvbench compare` and `kvbench show`: the results of finished runs, read
//! back (the run's own summary is in [`super::summary`]).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use kvbench_reports::filter::Filter;

use super::summary::{print_report, report_options};

#[derive(Args)]
pub struct ReportArgs {
    /// Run directories (every results*.jsonl in them) or results files.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Where to write report.html, results.parquet, tables/ and plots/ (default: the run
    /// directory when one is given).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Method the deltas compare against (default `full`; a method no record ran is an error).
    #[arg(long)]
    pub baseline: Option<String>,
    /// Published numbers to put beside ours (CSV: source,model,dataset,task,method,budget,score).
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// Keep only records whose FIELD is one of the values (method, task, dataset, model, budget,
    /// experiment, sample_id, query_aware); repeat for several filters, all of which must hold.
    #[arg(long = "where", value_name = "FIELD=V1,V2")]
    pub filters: Vec<Filter>,
    /// The runs are shards of one run: merge them (a record key counts once). Without it, runs
    /// that measured the same work on the same samples are reported side by side.
    #[arg(long)]
    pub merge: bool,
    /// Bootstrap seed (intervals are reproducible for a seed).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Bootstrap resamples per interval.
    #[arg(long, default_value_t = 2000)]
    pub resamples: usize,
    /// Page title (default: the experiment names).
    #[arg(long)]
    pub title: Option<String>,
}

fn check_exists(paths: &[PathBuf]) -> Result<()> {
    if let Some(missing) = paths.iter().find(|p| !p.exists()) {
        anyhow::bail!(
            "{}: no such run directory or results file",
            missing.display()
        );
    }
    Ok(())
}

pub fn report(args: ReportArgs) -> Result<()> {
    check_exists(&args.runs)?;
    let output = match args.output {
        Some(o) => o,
        None if args.runs.len() == 1 && args.runs[0].is_dir() => args.runs[0].clone(),
        None => anyhow::bail!(
            "several runs (or a results file) given: name the report directory with --output DIR"
        ),
    };
    let mut opts = report_options(&output);
    if let Some(b) = args.baseline {
        opts.baseline = b;
        opts.baseline_required = true;
    }
    opts.compare = args.compare;
    opts.filters = args.filters;
    opts.merge = args.merge;
    opts.bootstrap = kvbench_reports::bootstrap::BootstrapConfig {
        seed: args.seed,
        resamples: args.resamples.max(1),
    };
    opts.title = args.title;
    let outcome = kvbench_reports::report(&args.runs, &opts)?;
    print_report(&outcome);
    Ok(())
}

#[derive(Args)]
pub struct CompareArgs {
    /// The run compared against (directory or results file).
    pub a: PathBuf,
    /// The run compared (differences are B - A).
    pub b: PathBuf,
    /// Keep only records whose FIELD is one of the values (as `report --where`).
    #[arg(long = "where", value_name = "FIELD=V1,V2")]
    pub filters: Vec<Filter>,
    /// Also write the table as CSV here.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Bootstrap seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Bootstrap resamples per interval.
    #[arg(long, default_value_t = 2000)]
    pub resamples: usize,
}

fn load(path: &PathBuf, filters: &[Filter]) -> Result<kvbench_reports::merge::Merged> {
    let merged = kvbench_reports::merge::load_runs(std::slice::from_ref(path))?;
    for p in &merged.problems {
        eprintln!("warning: {p}");
    }
    if merged.records.is_empty() {
        anyhow::bail!("{}: no records (an empty run)", path.display());
    }
    Ok(kvbench_reports::filter::apply(&merged, filters)?)
}

pub fn compare(args: CompareArgs) -> Result<()> {
    check_exists(&[args.a.clone(), args.b.clone()])?;
    let (a, b) = (load(&args.a, &args.filters)?, load(&args.b, &args.filters)?);
    let labels = kvbench_reports::runs::run_labels(&[args.a.clone(), args.b.clone()]);
    let cfg = kvbench_reports::bootstrap::BootstrapConfig {
        seed: args.seed,
        resamples: args.resamples.max(1),
    };
    let table = kvbench_reports::compare::runs::compare_runs(
        &a.records,
        &b.records,
        (&labels[0], &labels[1]),
        cfg,
    );
    if !table.rows.iter().any(|r| {
        r.iter()
            .any(|v| v == &kvbench_reports::tables::Value::Text("both".into()))
    }) {
        anyhow::bail!(
            "{} and {} share no cell (dataset x task x method x budget): nothing to compare",
            args.a.display(),
            args.b.display()
        );
    }
    print!("{}", kvbench_reports::tables::markdown::to_markdown(&table));
    if let Some(path) = args.csv {
        super::summary::write_artefact(&path, kvbench_reports::tables::frame::to_csv(&table))?;
        println!("csv: {}", path.display());
    }
    Ok(())
}

#[derive(Args)]
pub struct ShowArgs {
    /// The run directory (or a results file).
    pub run: PathBuf,
    /// The sample's id (as in results.jsonl's `sample_id`).
    pub sample_id: String,
    /// Keep only records whose FIELD is one of the values (as `report --where`).
    #[arg(long = "where", value_name = "FIELD=V1,V2")]
    pub filters: Vec<Filter>,
}

pub fn show(args: ShowArgs) -> Result<()> {
    check_exists(std::slice::from_ref(&args.run))?;
    let merged = load(&args.run, &args.filters)?;
    let text = kvbench_reports::show::render(&merged, &args.sample_id).with_context(|| {
        format!(
            "showing sample {} of {}",
            args.sample_id,
            args.run.display()
        )
    })?;
    print!("{text}");
    Ok(())
}

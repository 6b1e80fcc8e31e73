//! `kvbench report`: merged records in, every table, plot and `report.html` out.
//!
//! ```text
//! OUT/report.html                 self-contained page
//! OUT/tables/{name}.{md,csv,parquet,tex}   metrics, benchmarks, deltas, scores, the benchmarks'
//!                                 breakdowns the run has data for, the reuse study's
//!                                 ttft_vs_context and cake_vs_bandwidth (+ compare)
//! OUT/plots/{name}.{png,svg}      score_vs_ratio, fidelity_vs_ratio, memory_vs_ratio,
//!                                 ttft_breakdown, throughput_vs_context, needle_heatmap, pareto,
//!                                 the reuse study's ttft_vs_context (TTFT per way to the cache)
//! ```

use std::path::{Path, PathBuf};

use crate::aggregate::{aggregate, Aggregate};
use crate::bootstrap::BootstrapConfig;
use crate::html::{render, PageInfo};
use crate::merge::{Duplicate, Merged};
use crate::plots::{figures, PlotFile};
use crate::tables::{self, Table};
use crate::{Record, ResultsError};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Results(#[from] ResultsError),
    /// `op`: what was being done (`reading`, `writing`, `creating`).
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no results*.jsonl files here; give a run directory or a results file")]
    NoResults { path: PathBuf },
    #[error("no records to report in {0}")]
    Empty(String),
    #[error("drawing plot `{plot}`: {message}")]
    Plot { plot: String, message: String },
    #[error("writing {path}: {message}")]
    Parquet { path: PathBuf, message: String },
    #[error("--baseline {baseline}: no records of method `{baseline}` in these runs (methods: {methods}); name one of those")]
    UnknownBaseline { baseline: String, methods: String },
    #[error("--where {field}=...: `{field}` is not a field to filter on; use one of {fields}")]
    UnknownField { field: String, fields: String },
    #[error("--where {filter}: no records match (values of `{field}` in these runs: {values})")]
    NoMatch {
        filter: String,
        field: String,
        values: String,
    },
    #[error("{path} line {line}: {message}")]
    Compare {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

#[derive(Clone, Debug)]
pub struct ReportOptions {
    pub output: PathBuf,
    /// Method the deltas compare against (`full`).
    pub baseline: String,
    pub bootstrap: BootstrapConfig,
    /// A `published.csv` to put beside our numbers (see [`crate::compare`]).
    pub compare: Option<PathBuf>,
    pub title: Option<String>,
    /// Version and commit of the kvbench binary writing the report.
    pub generator: String,
    /// Whether the baseline was named by the user: then a baseline no record ran is an error
    /// (the default `full` of a run without it only leaves the deltas out).
    pub baseline_required: bool,
    /// `--where FIELD=V1,V2`: keep records whose field is one of the values (every filter must
    /// hold); see [`crate::filter`].
    pub filters: Vec<crate::filter::Filter>,
    /// Several inputs are shards of one run: merge them even where they overlap (see
    /// [`crate::runs`]); else overlapping runs are reported side by side.
    pub merge: bool,
}

impl ReportOptions {
    pub fn new(output: impl Into<PathBuf>) -> Self {
        ReportOptions {
            output: output.into(),
            baseline: "full".into(),
            bootstrap: BootstrapConfig::default(),
            compare: None,
            title: None,
            generator: format!("kvbench-reports {}", env!("CARGO_PKG_VERSION")),
            baseline_required: false,
            filters: Vec::new(),
            merge: false,
        }
    }
}

/// The files one table was written to.
#[derive(Clone, Debug)]
pub struct TableFiles {
    pub name: String,
    pub markdown: PathBuf,
    pub csv: PathBuf,
    pub parquet: PathBuf,
    pub latex: PathBuf,
}

#[derive(Debug)]
pub struct ReportOutcome {
    pub html: PathBuf,
    /// Every merged record (failed ones included), typed and flat, for polars or pandas.
    pub parquet: PathBuf,
    /// Lines of the results files skipped or warned about, by file and line.
    pub problems: Vec<crate::Problem>,
    /// How several inputs were combined (merged, or side by side).
    pub combined: crate::runs::Combined,
    pub tables: Vec<TableFiles>,
    pub plots: Vec<PlotFile>,
    /// Plots left out, with the reason (no needle records, ...).
    pub skipped_plots: Vec<(String, String)>,
    pub duplicates: Vec<Duplicate>,
    pub records: usize,
    /// Failed records (with an `error`), left out of the tables and plots.
    pub failed: usize,
    /// The tables themselves (what the files hold).
    pub table_data: Vec<Table>,
}

/// Read the runs named by `inputs` and write the report.
pub fn report(inputs: &[PathBuf], opts: &ReportOptions) -> Result<ReportOutcome, ReportError> {
    let (merged, combined) = crate::runs::load_inputs(inputs, opts.merge)?;
    let mut outcome = write_report(&merged, opts)?;
    outcome.combined = combined;
    Ok(outcome)
}

/// The tables of a merged set of records (what [`write_report`] writes).
pub fn build_tables(merged: &Merged, opts: &ReportOptions) -> Result<Vec<Table>, ReportError> {
    tables_of(
        &merged.records,
        &aggregate(&merged.records, &opts.baseline, opts.bootstrap),
        opts,
    )
}

/// The general tables, then the benchmarks' own breakdowns the records have data for, then the
/// comparison with published numbers when asked.
fn tables_of(
    records: &[Record],
    agg: &Aggregate,
    opts: &ReportOptions,
) -> Result<Vec<Table>, ReportError> {
    let mut out = vec![
        tables::scores_table(agg),
        tables::benchmarks_table(agg),
        tables::metrics_table(agg),
        tables::deltas_table(agg),
    ];
    out.extend(crate::breakdown::breakdown_tables(
        records,
        agg,
        opts.bootstrap,
    ));
    // The reuse study (compute vs load vs Cake), when the records reused stored caches.
    out.extend(crate::cake::tables(records));
    if let Some(path) = &opts.compare {
        let published = crate::compare::read_published(path)?;
        out.push(crate::compare::compare_table(
            &published,
            records,
            agg,
            opts.bootstrap,
        ));
    }
    Ok(out)
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) -> Result<(), ReportError> {
    crate::atomic::write_atomic(path, bytes).map_err(|source| ReportError::Io {
        op: "writing",
        path: path.into(),
        source,
    })
}

pub fn write_report(merged: &Merged, opts: &ReportOptions) -> Result<ReportOutcome, ReportError> {
    if merged.records.is_empty() {
        let names: Vec<String> = merged
            .sources
            .iter()
            .map(|s| s.results.display().to_string())
            .collect();
        return Err(ReportError::Empty(names.join(", ")));
    }
    let filtered;
    let merged = if opts.filters.is_empty() {
        merged
    } else {
        filtered = crate::filter::apply(merged, &opts.filters)?;
        &filtered
    };
    for d in [&opts.output] {
        std::fs::create_dir_all(d).map_err(|source| ReportError::Io {
            op: "creating",
            path: d.clone(),
            source,
        })?;
    }
    let parquet = opts.output.join("results.parquet");
    let bytes = crate::frame::parquet_frame(&crate::frame::records_frame(&merged.records))
        .and_then(|mut df| crate::frame::to_parquet(&mut df))
        .map_err(|e| ReportError::Parquet {
            path: parquet.clone(),
            message: e.to_string(),
        })?;
    write(&parquet, bytes)?;
    // Failed records (a device out of memory, ...) hold no measurement: counted, left out.
    let failed = merged.records.iter().filter(|r| r.is_failed()).count();
    let succeeded;
    let merged = if failed > 0 {
        succeeded = merged.retain(|r| !r.is_failed());
        &succeeded
    } else {
        merged
    };
    if merged.records.is_empty() {
        return Err(ReportError::Empty(format!(
            "{} (all {failed} record(s) failed: see their `error`)",
            opts.output.display()
        )));
    }
    if opts.baseline_required && !merged.records.iter().any(|r| r.method == opts.baseline) {
        let methods: std::collections::BTreeSet<&str> =
            merged.records.iter().map(|r| r.method.as_str()).collect();
        return Err(ReportError::UnknownBaseline {
            baseline: opts.baseline.clone(),
            methods: methods.into_iter().collect::<Vec<_>>().join(", "),
        });
    }
    let table_dir = opts.output.join("tables");
    let plot_dir = opts.output.join("plots");
    for d in [&opts.output, &table_dir, &plot_dir] {
        std::fs::create_dir_all(d).map_err(|source| ReportError::Io {
            op: "creating",
            path: d.clone(),
            source,
        })?;
    }

    let agg = aggregate(&merged.records, &opts.baseline, opts.bootstrap);
    let table_data = tables_of(&merged.records, &agg, opts)?;
    let mut tables = Vec::new();
    for t in &table_data {
        let files = TableFiles {
            name: t.name.clone(),
            markdown: table_dir.join(format!("{}.md", t.name)),
            csv: table_dir.join(format!("{}.csv", t.name)),
            parquet: table_dir.join(format!("{}.parquet", t.name)),
            latex: table_dir.join(format!("{}.tex", t.name)),
        };
        write(&files.markdown, tables::markdown::to_markdown(t))?;
        write(&files.csv, tables::frame::to_csv(t))?;
        let parquet = tables::frame::to_parquet(t).map_err(|e| ReportError::Parquet {
            path: files.parquet.clone(),
            message: e.to_string(),
        })?;
        write(&files.parquet, parquet)?;
        write(&files.latex, tables::latex::to_latex(t))?;
        tables.push(files);
    }

    let (plots, skipped_plots) =
        figures::write_all(&merged.records, &agg, opts.bootstrap, &plot_dir)?;

    let experiments: Vec<String> = {
        let mut e: Vec<String> = merged
            .records
            .iter()
            .map(|r| r.experiment.clone())
            .collect();
        e.sort();
        e.dedup();
        e
    };
    let info = PageInfo {
        title: opts
            .title
            .clone()
            .unwrap_or_else(|| format!("kvbench report: {}", experiments.join(", "))),
        baseline: opts.baseline.clone(),
        seed: opts.bootstrap.seed,
        resamples: opts.bootstrap.resamples,
        generator: opts.generator.clone(),
    };
    let html = opts.output.join("report.html");
    write(
        &html,
        render(merged, &table_data, &plots, &skipped_plots, &info),
    )?;
    Ok(ReportOutcome {
        html,
        parquet,
        problems: merged.problems.clone(),
        combined: crate::runs::Combined::Merged,
        tables,
        plots,
        skipped_plots,
        duplicates: merged.duplicates.clone(),
        records: merged.records.len(),
        failed,
        table_data,
    })
}

//! The end of a run and of `kvbench report`: the summary files, the report of every record in
//! the output directory, and what the report says about itself.

use anyhow::{Context, Result};

/// A report artefact, written atomically (temporary file + rename).
pub fn write_artefact(path: &std::path::Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    kvbench_reports::write_atomic(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// The end-of-run summary (`summary.md`, `summary.csv`) and report of every record in `output`.
pub fn summarize_and_report(
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

pub fn report_options(output: &std::path::Path) -> kvbench_reports::ReportOptions {
    let mut opts = kvbench_reports::ReportOptions::new(output);
    opts.generator = kvbench::manifest::version_line();
    opts
}

pub fn print_report(outcome: &kvbench_reports::ReportOutcome) {
    // Bad lines of the results files, by file and line (the good lines were used); a long list
    // is cut after the first few.
    const SHOWN: usize = 10;
    for p in outcome.problems.iter().take(SHOWN) {
        eprintln!("warning: {p}");
    }
    if outcome.problems.len() > SHOWN {
        eprintln!(
            "warning: ... and {} more line(s) like these",
            outcome.problems.len() - SHOWN
        );
    }
    if let kvbench_reports::runs::Combined::SideBySide { runs, shared } = &outcome.combined {
        eprintln!(
            "note: the runs measured the same work ({shared} shared record(s)): reported side by side as {} (model column `MODEL @RUN`); pass --merge if they are shards of one run",
            runs.join(", ")
        );
    }
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
    println!("results: {} (polars/pandas)", outcome.parquet.display());
    println!(
        "report: {} ({} records, {} tables x 4 formats, {} plots x PNG+SVG)",
        outcome.html.display(),
        outcome.records,
        outcome.tables.len(),
        outcome.plots.len()
    );
}

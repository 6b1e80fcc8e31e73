//! Several runs given to one report: merged when they are shards (or disjoint parts) of one
//! piece of work, side by side when they ran the same work on the same samples, so no shared
//! sample is counted twice.
//!
//! Two inputs *overlap* when both hold a record of the same work: model, dataset, sample, turn,
//! method with its parameters, budget and query awareness. Overlapping runs, unless `--merge`
//! says they are one run, are reported side by side: every record's model is labelled with its
//! run (`MODEL @RUN`, a column of every table and a line of every plot) and its key made unique
//! to that run.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::merge::{load_runs, Merged};
use crate::{Record, ReportError};

/// How the inputs were combined.
#[derive(Clone, Debug, PartialEq)]
pub enum Combined {
    /// One input, or several merged (record keys once each).
    Merged,
    /// Overlapping runs kept apart: the run labels, and how many records of work the first
    /// overlapping pair shares.
    SideBySide { runs: Vec<String>, shared: usize },
}

/// What a record measured, apart from the run that measured it.
pub fn work(r: &Record) -> (String, String, String, usize, String, String, String, bool) {
    (
        r.model.clone(),
        r.dataset.clone(),
        r.sample_id.clone(),
        r.turn,
        r.method.clone(),
        r.method_params.to_string(),
        r.budget_label.clone(),
        r.query_aware,
    )
}

/// A short name for an input: its directory name (or file stem), made unique with its position.
pub fn run_labels(paths: &[PathBuf]) -> Vec<String> {
    let name = |p: &Path| {
        let p = if p.is_file() {
            p.parent().unwrap_or(p)
        } else {
            p
        };
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.display().to_string())
    };
    let names: Vec<String> = paths.iter().map(|p| name(p)).collect();
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            if names.iter().filter(|m| *m == n).count() > 1 {
                format!("{n}#{}", i + 1)
            } else {
                n.clone()
            }
        })
        .collect()
}

/// Records of work two sets share.
pub fn shared_work(a: &[Record], b: &[Record]) -> usize {
    let a: HashSet<_> = a.iter().filter(|r| !r.is_failed()).map(work).collect();
    b.iter()
        .filter(|r| !r.is_failed() && a.contains(&work(r)))
        .count()
}

/// Read `paths`: merged (with `merge`, or when they share no work), else side by side.
pub fn load_inputs(paths: &[PathBuf], merge: bool) -> Result<(Merged, Combined), ReportError> {
    if paths.len() < 2 || merge {
        return Ok((load_runs(paths)?, Combined::Merged));
    }
    let each: Vec<Merged> = paths
        .iter()
        .map(|p| load_runs(std::slice::from_ref(p)))
        .collect::<Result<_, _>>()?;
    let mut shared = 0;
    'pairs: for (i, a) in each.iter().enumerate() {
        for b in &each[i + 1..] {
            shared = shared_work(&a.records, &b.records);
            if shared > 0 {
                break 'pairs;
            }
        }
    }
    if shared == 0 {
        return Ok((load_runs(paths)?, Combined::Merged));
    }
    let labels = run_labels(paths);
    let mut out = Merged::default();
    for (m, label) in each.into_iter().zip(&labels) {
        let offset = out.sources.len();
        out.sources.extend(m.sources);
        out.duplicates.extend(m.duplicates);
        out.problems.extend(m.problems);
        out.origins
            .extend(m.origins.into_iter().map(|(s, l)| (s + offset, l)));
        out.records.extend(m.records.into_iter().map(|mut r| {
            r.model = format!("{} @{label}", r.model);
            r.key = format!("{}@{label}", r.key);
            r
        }));
    }
    Ok((
        out,
        Combined::SideBySide {
            runs: labels,
            shared,
        },
    ))
}

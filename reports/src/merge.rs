//! Reading one or many runs into one set of records: shards of one experiment, several runs,
//! several machines. A record key seen twice is reported and counted once (the first file given
//! wins), so a shard passed twice or a run copied into two directories never weighs double.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::frame::FrameBuilder;
use crate::{scan_results, Problem, Record, ReportError};

/// One results file that was read.
#[derive(Clone, Debug)]
pub struct Source {
    pub results: PathBuf,
    /// Records read from it, duplicates included.
    pub records: usize,
    /// The resolved `experiment.yaml` beside it, as written by `kvbench run`.
    pub experiment_yaml: Option<String>,
    /// `run.json` beside it: the run's kvbench version, git commit, device and model files.
    pub manifest: Option<serde_json::Value>,
}

/// A key met more than once.
#[derive(Clone, Debug, PartialEq)]
pub struct Duplicate {
    pub key: String,
    pub kept: PathBuf,
    pub dropped: PathBuf,
    /// Whether the dropped record equals the kept one field for field (the same shard given twice)
    /// or differs (a re-run: its timings, and maybe its prediction, differ).
    pub identical: bool,
}

/// Every record of every source, each key once.
#[derive(Clone, Debug, Default)]
pub struct Merged {
    pub records: Vec<Record>,
    pub sources: Vec<Source>,
    pub duplicates: Vec<Duplicate>,
    /// Lines skipped or worth a warning (see [`Problem`]), by file and line.
    pub problems: Vec<Problem>,
    /// Where each of `records` was read: (index into `sources`, line).
    pub origins: Vec<(usize, usize)>,
}

impl Merged {
    /// The records `keep` holds to (their origins with them), the rest as it is.
    pub fn retain(&self, keep: impl Fn(&Record) -> bool) -> Merged {
        let mut out = Merged {
            records: Vec::new(),
            origins: Vec::new(),
            ..self.clone()
        };
        for (i, r) in self.records.iter().enumerate() {
            if keep(r) {
                out.records.push(r.clone());
                if let Some(o) = self.origins.get(i) {
                    out.origins.push(*o);
                }
            }
        }
        out
    }
}

/// The results files an argument names: a `.jsonl` file itself, or every `results*.jsonl` in a
/// run directory (`results.jsonl` and shard files such as `results.shard-0-of-4.jsonl`), in name
/// order.
pub fn results_files(path: &Path) -> Result<Vec<PathBuf>, ReportError> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let io = |source| ReportError::Io {
        op: "reading",
        path: path.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            p.is_file() && name.starts_with("results") && name.ends_with(".jsonl")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ReportError::NoResults {
            path: path.to_path_buf(),
        });
    }
    Ok(files)
}

/// Warnings about good records that do not belong together: a kvbench version or an experiment
/// other than the first file's, reported once per file at its first line.
#[derive(Default)]
struct Mixing {
    first: Option<(String, String)>,
    seen: std::collections::HashSet<(PathBuf, String, String)>,
}

impl Mixing {
    fn check(&mut self, file: &Path, line: usize, r: &Record, problems: &mut Vec<Problem>) {
        let (version, experiment) = self
            .first
            .get_or_insert_with(|| (r.kvbench_version.clone(), r.experiment.clone()))
            .clone();
        let mut warn = |what: &str, value: &str, first: &str| {
            if self
                .seen
                .insert((file.to_path_buf(), what.to_string(), value.to_string()))
            {
                problems.push(Problem {
                    path: file.to_path_buf(),
                    line,
                    message: format!(
                        "first record of {what} `{value}` (the first file's: `{first}`); its records are used: \
                         report the runs separately if they should not be compared"
                    ),
                    skipped: false,
                });
            }
        };
        if r.kvbench_version != version {
            warn("kvbench version", &r.kvbench_version, &version);
        }
        if r.experiment != experiment {
            warn("experiment", &r.experiment, &experiment);
        }
    }
}

type Beside = (Option<String>, Option<serde_json::Value>);

/// The files beside the results, read once per directory (10,000 shards share one).
fn beside(cache: &mut HashMap<PathBuf, Beside>, file: &Path) -> Beside {
    let dir = file.parent().unwrap_or(Path::new("."));
    cache
        .entry(dir.to_path_buf())
        .or_insert_with(|| {
            let yaml = std::fs::read_to_string(dir.join("experiment.yaml")).ok();
            let manifest = std::fs::read_to_string(dir.join("run.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            (yaml, manifest)
        })
        .clone()
}

/// Read and merge the runs named by `paths` (directories or results files). Bad lines are
/// skipped and listed in [`Merged::problems`]; every good line is used.
pub fn load_runs(paths: &[PathBuf]) -> Result<Merged, ReportError> {
    let mut merged = Merged::default();
    let mut seen: HashMap<String, (usize, PathBuf)> = HashMap::new();
    let mut cache = HashMap::new();
    let mut mixing = Mixing::default();
    for path in paths {
        for file in results_files(path)? {
            let source = merged.sources.len();
            let mut records = Vec::new();
            let problems = scan_results(&file, |line, r| records.push((line, r)))?;
            merged.problems.extend(problems);
            let (experiment_yaml, manifest) = beside(&mut cache, &file);
            merged.sources.push(Source {
                results: file.clone(),
                records: records.len(),
                experiment_yaml,
                manifest,
            });
            for (line, r) in records {
                mixing.check(&file, line, &r, &mut merged.problems);
                match seen.get(&r.key) {
                    // A failed record retried later: the success replaces it.
                    Some((i, _)) if merged.records[*i].is_failed() && !r.is_failed() => {
                        let i = *i;
                        seen.insert(r.key.clone(), (i, file.clone()));
                        merged.records[i] = r;
                        merged.origins[i] = (source, line);
                    }
                    Some((i, kept)) => merged.duplicates.push(Duplicate {
                        key: r.key.clone(),
                        kept: kept.clone(),
                        dropped: file.clone(),
                        identical: merged.records[*i] == r,
                    }),
                    None => {
                        seen.insert(r.key.clone(), (merged.records.len(), file.clone()));
                        merged.records.push(r);
                        merged.origins.push((source, line));
                    }
                }
            }
        }
    }
    Ok(merged)
}

/// Records of a merge as one results frame, without holding them as [`Record`]s: what the summary
/// of a large merge reads ([`crate::summarize_frame`]).
pub struct FrameMerge {
    pub frame: polars::prelude::DataFrame,
    pub sources: usize,
    /// Records whose key was met before (left out).
    pub duplicates: usize,
    pub problems: Vec<Problem>,
}

/// [`load_runs`] straight into a polars frame, each key once (the first; a failed record's key
/// stays open for a success), streaming line by line so memory holds columns, not records.
pub fn load_frame(paths: &[PathBuf]) -> Result<FrameMerge, ReportError> {
    const CHUNK: usize = 1 << 16;
    let mut builder = FrameBuilder::new();
    let mut frame: Option<polars::prelude::DataFrame> = None;
    // Key -> whether its kept record failed.
    let mut seen: HashMap<String, bool> = HashMap::new();
    let (mut sources, mut duplicates, mut problems) = (0, 0, Vec::new());
    let mut mixing = Mixing::default();
    for path in paths {
        for file in results_files(path)? {
            sources += 1;
            let name = file.display().to_string();
            let mut found = Vec::new();
            let more = scan_results(&file, |line, r| {
                mixing.check(&file, line, &r, &mut found);
                match seen.get(&r.key) {
                    Some(failed) if !*failed || r.is_failed() => duplicates += 1,
                    _ => {
                        seen.insert(r.key.clone(), r.is_failed());
                        builder.push(&r, &format!("{name}:{line}"));
                        // Columns of Rust strings are several times polars' size: move them into
                        // the frame every CHUNK records, so memory is the frame plus one chunk.
                        if builder.len() >= CHUNK {
                            let chunk = std::mem::take(&mut builder).finish();
                            frame = Some(match frame.take() {
                                None => chunk,
                                Some(mut f) => {
                                    f.vstack_mut_owned(chunk)
                                        .expect("one schema for every chunk");
                                    f
                                }
                            });
                        }
                    }
                }
            })?;
            problems.extend(more);
            problems.extend(found);
        }
    }
    let last = builder.finish();
    let frame = match frame {
        None => last,
        Some(mut f) => {
            f.vstack_mut_owned(last).map_err(|e| ReportError::Parquet {
                path: PathBuf::from("(merged frame)"),
                message: e.to_string(),
            })?;
            f.rechunk_mut();
            f
        }
    };
    Ok(FrameMerge {
        frame,
        sources,
        duplicates,
        problems,
    })
}

/// A short fingerprint of the samples behind a dataset's records (sha256 over the sorted sample
/// ids, turns, tasks, reference answers and context lengths): two reports with the same
/// fingerprint evaluated the same samples.
pub fn sample_fingerprint<'a>(records: impl Iterator<Item = &'a Record>) -> String {
    use sha2::{Digest, Sha256};
    let mut items: Vec<String> = records
        .map(|r| {
            let answers = serde_json::to_string(&r.answers).unwrap_or_default();
            format!(
                "{}\t{}\t{}\t{}\t{}",
                r.sample_id, r.turn, r.task, r.context_tokens, answers
            )
        })
        .collect();
    items.sort();
    items.dedup();
    let digest = Sha256::digest(items.join("\n").as_bytes());
    hex::encode(&digest[..8])
}

//! Reading one or many runs into one set of records: shards of one experiment, several runs,
//! several machines. A record key seen twice is reported and counted once (the first file given
//! wins), so a shard passed twice or a run copied into two directories never weighs double.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::{read_results, Record, ReportError};

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

/// Read and merge the runs named by `paths` (directories or results files).
pub fn load_runs(paths: &[PathBuf]) -> Result<Merged, ReportError> {
    let mut merged = Merged::default();
    let mut seen: HashMap<String, (usize, PathBuf)> = HashMap::new();
    // The files beside the results, read once per directory (10,000 shards share one).
    type Beside = (Option<String>, Option<serde_json::Value>);
    let mut beside: HashMap<PathBuf, Beside> = HashMap::new();
    for path in paths {
        for file in results_files(path)? {
            let records = read_results(&file)?;
            let dir = file.parent().unwrap_or(Path::new("."));
            let (experiment_yaml, manifest) = beside
                .entry(dir.to_path_buf())
                .or_insert_with(|| {
                    let yaml = std::fs::read_to_string(dir.join("experiment.yaml")).ok();
                    let manifest = std::fs::read_to_string(dir.join("run.json"))
                        .ok()
                        .and_then(|t| serde_json::from_str(&t).ok());
                    (yaml, manifest)
                })
                .clone();
            merged.sources.push(Source {
                results: file.clone(),
                records: records.len(),
                experiment_yaml,
                manifest,
            });
            for r in records {
                match seen.get(&r.key) {
                    // A failed record retried later: the success replaces it.
                    Some((i, _)) if merged.records[*i].is_failed() && !r.is_failed() => {
                        let i = *i;
                        seen.insert(r.key.clone(), (i, file.clone()));
                        merged.records[i] = r;
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
                    }
                }
            }
        }
    }
    Ok(merged)
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

//! Reading `results.jsonl` files written by runs (possibly killed mid-write).

use std::path::{Path, PathBuf};

use crate::Record;

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    /// `op`: what was being done (`reading`, `opening`, `writing`).
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line}: not a kvbench record ({source}); remove the line or re-run with --fresh")]
    Parse {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
}

/// Every complete record of a results file. A final line without its newline is what a killed
/// run leaves behind: it is skipped (the run that resumes rewrites it), anything else malformed is
/// an error naming the line.
pub fn read_results(path: &Path) -> Result<Vec<Record>, ResultsError> {
    use std::io::BufRead;
    let io = |source| ResultsError::Io {
        op: "reading",
        path: path.into(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(io(source)),
    };
    // Line by line: a million-record file is never held whole in memory beside its records.
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    let mut out = Vec::new();
    for i in 0.. {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(io)? == 0 || line.last() != Some(&b'\n') {
            break; // the end, or a final line without its newline (a killed run's)
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let rec = serde_json::from_slice(&line).map_err(|source| ResultsError::Parse {
            path: path.into(),
            line: i + 1,
            source,
        })?;
        out.push(rec);
    }
    Ok(out)
}

/// A line of a results file that was skipped, or that a reader should know about; reading
/// goes on past it, so the good lines are still used.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub path: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong and what to do, in a sentence.
    pub message: String,
    /// Whether the line's record was left out (else it was used, with this warning).
    pub skipped: bool,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} line {}: {}{}",
            self.path.display(),
            self.line,
            self.message,
            if self.skipped { " (line skipped)" } else { "" }
        )
    }
}

/// Read every record of a results file, going past bad lines: `each(line, record)` gets the good
/// ones, the returned problems name the others by line: a final line without its newline (a
/// killed run's), a line of a kvbench version whose records this one cannot read, any other
/// malformed line. A missing file has no records.
pub fn scan_results(
    path: &Path,
    mut each: impl FnMut(usize, Record),
) -> Result<Vec<Problem>, ResultsError> {
    use std::io::BufRead;
    let io = |source| ResultsError::Io {
        op: "reading",
        path: path.into(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(io(source)),
    };
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    let mut problems = Vec::new();
    let problem = |line: usize, message: String| Problem {
        path: path.into(),
        line,
        message,
        skipped: true,
    };
    for i in 1.. {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            problems.push(problem(
                i,
                "incomplete last line (a run killed while writing it); resuming the run rewrites it"
                    .into(),
            ));
            break;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Record>(&line) {
            Ok(r) => each(i, r),
            Err(e) => {
                let version = serde_json::from_slice::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get("kvbench_version")?.as_str().map(String::from));
                let ours = env!("CARGO_PKG_VERSION");
                let message = match version {
                    Some(v) if v != ours => format!(
                        "a record of kvbench {v}, which kvbench {ours} cannot read ({e}); report it with kvbench {v}, or re-run those samples"
                    ),
                    _ => format!("not a kvbench record ({e}); remove the line or re-run with --fresh"),
                };
                problems.push(problem(i, message));
            }
        }
    }
    Ok(problems)
}

/// Appends records to a `results.jsonl`, one complete line per `write` call, fsynced after every
/// record (so at least per sample), so a run killed at any moment keeps every line it finished.
pub struct ResultsWriter {
    path: PathBuf,
    file: std::fs::File,
}

impl ResultsWriter {
    /// Open for appending. A trailing partial line left by a killed run is cut off first, so the
    /// next record starts on a line of its own.
    pub fn open(path: &Path) -> Result<Self, ResultsError> {
        use std::io::{Seek, SeekFrom};
        let io = |source| ResultsError::Io {
            op: "opening for appending",
            path: path.into(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        let bytes = std::fs::read(path).map_err(io)?;
        if !bytes.is_empty() && !bytes.ends_with(b"\n") {
            let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            file.set_len(keep as u64).map_err(io)?;
            file.seek(SeekFrom::End(0)).map_err(io)?;
        }
        Ok(Self {
            path: path.into(),
            file,
        })
    }

    pub fn append(&mut self, record: &Record) -> Result<(), ResultsError> {
        self.append_json(record)
    }

    /// Append any JSON line the same way (the run's `prompts.jsonl` beside its results).
    pub fn append_json<T: serde::Serialize>(&mut self, value: &T) -> Result<(), ResultsError> {
        use std::io::Write;
        let mut line = serde_json::to_string(value).expect("plain data always serializes");
        line.push('\n');
        let io = |source| ResultsError::Io {
            op: "writing",
            path: self.path.clone(),
            source,
        };
        // One `write` per line, so the line reaches the file whole or not at all (also on network
        // file systems, where one writer per file is the lock's job); a short write (disk full)
        // is cut off again, then the data is on disk before the next record starts.
        let start = self.file.metadata().map_err(io)?.len();
        let n = self.file.write(line.as_bytes()).map_err(io)?;
        if n != line.len() {
            let _ = self.file.set_len(start);
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short write ({n} of {} bytes; disk full?)", line.len()),
            )));
        }
        self.file.sync_data().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str) -> Record {
        serde_json::from_value(serde_json::json!({
            "experiment": "e", "model": "m", "dataset": "d", "task": "t", "sample_id": "s", "turn": 0,
            "method": "full", "method_params": {}, "budget": null, "budget_label": "-", "query_aware": false,
            "target_ratio": 0.0, "achieved_ratio": 0.0, "prediction": "p", "answers": ["a"], "metric": "m",
            "score": 1.0, "agreement_with_full": 1.0, "kl_first_token": 0.0, "kv_bytes": 10, "kv_bytes_full": 10,
            "peak_device_bytes": null, "prefill_ms": 1.0, "compress_ms": 0.0, "question_ms": 1.0, "ttft_ms": 2.0,
            "decode_ms_per_token": 1.0, "context_tokens": 5, "question_tokens": 2, "new_tokens": 1,
            "device": "cpu", "seed": 0, "kvbench_version": "0", "key": key
        }))
        .unwrap()
    }

    #[test]
    fn records_written_before_truncated_tokens_existed_still_load() {
        // The line above has no `truncated_tokens`, as results from older kvbench versions.
        let r = record("old");
        assert_eq!(r.truncated_tokens, 0);
        let mut v = serde_json::to_value(&r).unwrap();
        v["truncated_tokens"] = 7.into();
        let r: Record = serde_json::from_value(v).unwrap();
        assert_eq!(r.truncated_tokens, 7);
    }

    #[test]
    fn partial_last_line_is_dropped_and_overwritten() {
        let dir = std::env::temp_dir().join(format!("kvbench-results-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("results.jsonl");
        let _ = std::fs::remove_file(&path);
        let mut w = ResultsWriter::open(&path).unwrap();
        w.append(&record("a")).unwrap();
        drop(w);
        // A killed run leaves half a line.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"experiment\": \"e\", \"mod");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read_results(&path).unwrap().len(), 1);
        let mut w = ResultsWriter::open(&path).unwrap();
        w.append(&record("b")).unwrap();
        let keys: Vec<String> = read_results(&path)
            .unwrap()
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(keys, vec!["a", "b"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_lines_are_reported_by_line_and_good_lines_kept() {
        let dir = std::env::temp_dir().join(format!("kvbench-results-scan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("results.jsonl");
        let good = serde_json::to_string(&record("a")).unwrap();
        let other = r#"{"kvbench_version": "0.0.1-old", "key": "x"}"#;
        std::fs::write(&path, format!("{good}\nnot json\n{other}\n{good}\n{{\"exp")).unwrap();
        let mut lines = Vec::new();
        let problems = scan_results(&path, |i, _| lines.push(i)).unwrap();
        assert_eq!(lines, [1, 4]);
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 3, "{text:?}");
        assert!(
            text[0].contains("results.jsonl line 2: not a kvbench record"),
            "{}",
            text[0]
        );
        assert!(
            text[1].contains("line 3: a record of kvbench 0.0.1-old"),
            "{}",
            text[1]
        );
        assert!(
            text[2].contains("line 5: incomplete last line"),
            "{}",
            text[2]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn malformed_complete_line_names_file_and_line() {
        let dir = std::env::temp_dir().join(format!("kvbench-results-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("results.jsonl");
        std::fs::write(&path, "{}\n").unwrap();
        let err = read_results(&path).unwrap_err().to_string();
        assert!(err.contains("results.jsonl line 1"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

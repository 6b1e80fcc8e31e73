//! Per-shard progress: the status file a run writes beside its results (at the start and at the
//! end, never per record, so 10,000 shards do not hammer a shared directory), and
//! `kvbench status DIR`, which reads them with the results files' line counts and mtimes.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::Shard;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Running,
    Finished,
    Failed,
}

/// `results*.status.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardStatus {
    pub shard: String,
    pub state: State,
    /// Records this shard's samples need (samples x turns x method runs).
    pub total: usize,
    /// Of those, already written when the run started (in any results file it reads).
    pub done_at_start: usize,
    /// Lines of its own results file when the run started.
    pub lines_at_start: usize,
    pub pid: u32,
    pub host: String,
    pub started: u64,
    pub updated: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ShardStatus {
    /// Records done now, given the own file's current line count.
    pub fn done(&self, lines_now: usize) -> usize {
        (self.done_at_start + lines_now.saturating_sub(self.lines_at_start)).min(self.total)
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        super::write_atomic(path, &(serde_json::to_string_pretty(self)? + "\n"))
    }

    pub fn read(path: &Path) -> Option<ShardStatus> {
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    }
}

/// The complete lines of a results file (a partial last line is not a record).
pub fn count_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// One shard as `kvbench status` shows it.
#[derive(Clone, Debug)]
pub struct ShardView {
    pub shard: Shard,
    pub results: PathBuf,
    pub lines: usize,
    pub done: usize,
    pub total: Option<usize>,
    pub state: String,
    /// Seconds since the results (or status) file last changed.
    pub age: Option<u64>,
    pub error: Option<String>,
}

/// Every shard in `dir`: those with files, and the missing ones of each split (not started).
pub fn shards(dir: &Path) -> Result<Vec<ShardView>> {
    let mut views = Vec::new();
    let mut splits: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    let now = super::now_secs();
    let age = |p: &Path| {
        let m = std::fs::metadata(p).ok()?.modified().ok()?;
        let secs = m.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
        Some(now.saturating_sub(secs))
    };
    let mut seen: Vec<Shard> = Vec::new();
    let names: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) => anyhow::bail!("reading {}: {e}", dir.display()),
    };
    for p in &names {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let shard = Shard::of_results_name(name).or_else(|| {
            let stem = name.strip_suffix(".status.json")?;
            Shard::of_results_name(&format!("{stem}.jsonl"))
        });
        if let Some(s) = shard {
            if !seen.contains(&s) {
                seen.push(s);
            }
        }
    }
    seen.sort_by_key(|s| (s.count, s.index));
    for s in seen {
        splits.entry(s.count).or_default().push(s.index);
        let results = s.results(dir);
        let lines = count_lines(&results);
        let status = ShardStatus::read(&s.status(dir));
        let lock = super::lock::holder(&results);
        let state = match (&status, &lock) {
            (_, Some(h)) => match super::lock::holder_alive(h) {
                Some(true) => format!("running (pid {})", h.pid),
                Some(false) => format!("stopped (pid {} gone, stale lock)", h.pid),
                None => format!("running on {} (pid {})", h.host, h.pid),
            },
            (Some(st), None) => match st.state {
                State::Running => "stopped (killed: re-run to resume)".into(),
                State::Finished => "finished".into(),
                State::Failed => "failed".into(),
            },
            (None, None) => "stopped".into(),
        };
        views.push(ShardView {
            shard: s,
            done: status.as_ref().map_or(lines, |st| st.done(lines)),
            total: status.as_ref().map(|st| st.total),
            lines,
            age: age(&results).or_else(|| age(&s.status(dir))),
            error: status.and_then(|st| st.error),
            state,
            results,
        });
    }
    for (count, indices) in splits {
        if count == 1 {
            continue;
        }
        for index in (0..count).filter(|i| !indices.contains(i)) {
            let s = Shard { index, count };
            views.push(ShardView {
                shard: s,
                results: s.results(dir),
                lines: 0,
                done: 0,
                total: None,
                state: "not started".into(),
                age: None,
                error: None,
            });
        }
    }
    views.sort_by_key(|v| (v.shard.count, v.shard.index));
    Ok(views)
}

/// `3m12s ago`.
pub fn ago(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m{:02}s ago", secs / 60, secs % 60),
        _ => format!("{}h{:02}m ago", secs / 3600, secs % 3600 / 60),
    }
}

/// `kvbench status DIR` as text.
pub fn render(dir: &Path) -> Result<String> {
    let views = shards(dir)?;
    if views.is_empty() {
        anyhow::bail!(
            "{}: no results*.jsonl here yet (no run has started writing into it)",
            dir.display()
        );
    }
    let mut out = format!(
        "{:<14} {:>16} {:<14} {}\n",
        "shard", "done/total", "last update", "state"
    );
    let (mut done, mut total, mut known, mut failed) = (0, 0, true, 0);
    for v in &views {
        let label = if v.shard.is_whole() {
            "whole".to_string()
        } else {
            v.shard.to_string()
        };
        let t = v.total.map_or("?".to_string(), |t| t.to_string());
        out += &format!(
            "{:<14} {:>16} {:<14} {}\n",
            label,
            format!("{}/{}", v.done, t),
            v.age.map_or("-".into(), ago),
            v.state
        );
        if let Some(e) = &v.error {
            failed += 1;
            out += &format!("{:<14} error: {e}\n", "");
            let log = v.shard.log(dir);
            if log.exists() {
                out += &format!("{:<14} log: {}\n", "", log.display());
            }
        }
        done += v.done;
        match v.total {
            Some(t) => total += t,
            None => known = false,
        }
    }
    let pct = if known && total > 0 {
        format!(" ({:.1}%)", 100.0 * done as f64 / total as f64)
    } else {
        String::new()
    };
    out += &format!(
        "{} shard(s): {done}/{}{pct} records, {failed} failed\n",
        views.len(),
        if known { total.to_string() } else { "?".into() }
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lists_each_shard_with_progress_failures_and_missing_ones() {
        let dir = std::env::temp_dir().join(format!("kvbench-status-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let st = |i: usize, state, total, error: Option<&str>| ShardStatus {
            shard: format!("{i}/3"),
            state,
            total,
            done_at_start: 1,
            lines_at_start: 0,
            pid: 1,
            host: "h".into(),
            started: 0,
            updated: 0,
            error: error.map(str::to_string),
        };
        let s0 = Shard { index: 0, count: 3 };
        let s2 = Shard { index: 2, count: 3 };
        std::fs::write(s0.results(&dir), "{}\n{}\n{}\n").unwrap();
        st(0, State::Finished, 4, None)
            .write(&s0.status(&dir))
            .unwrap();
        std::fs::write(s2.results(&dir), "{}\n{\"partial").unwrap();
        st(2, State::Failed, 6, Some("sample `x`: out of memory"))
            .write(&s2.status(&dir))
            .unwrap();
        let text = render(&dir).unwrap();
        assert!(
            text.contains("0/3") && text.contains("4/4") && text.contains("finished"),
            "{text}"
        );
        assert!(
            text.contains("1/3") && text.contains("not started"),
            "{text}"
        );
        assert!(text.contains("2/6") && text.contains("failed"), "{text}");
        assert!(text.contains("error: sample `x`: out of memory"), "{text}");
        assert!(text.contains("3 shard(s): 6/? records, 1 failed"), "{text}");
        assert!(text.contains("s ago"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(ago(5), "5s ago");
        assert_eq!(ago(192), "3m12s ago");
        assert_eq!(ago(7300), "2h01m ago");
    }
}

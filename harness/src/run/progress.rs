//! What a run says while it works: the plan line before the first sample, then progress with an
//! ETA: a bar on a terminal, plain lines every `KVBENCH_PROGRESS_SECS` seconds (default 30)
//! when stderr is not a terminal (Slurm and nohup logs). Samples a resumed run finds done are
//! taken off the total, so the ETA counts only the work left.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// The progress display of one run.
pub(super) struct Progress {
    bar: Option<ProgressBar>,
    /// Plain lines at most this often (None on a terminal or when progress is off).
    every: Option<Duration>,
    started: Instant,
    last_line: Instant,
    /// Samples to do (total minus those found done).
    total: usize,
    done: usize,
    resumed: usize,
    configurations: usize,
}

/// `1h02m`, `3m05s`, `12s`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

impl Progress {
    pub fn new(show: bool, total: usize, configurations: usize) -> Self {
        let terminal = show && std::io::stderr().is_terminal();
        let bar = terminal.then(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {bar:30} sample {pos}/{len} x {prefix} configurations · {elapsed} elapsed, ~{eta} left · {msg}",
                )
                .expect("valid template"),
            );
            bar.set_prefix(configurations.to_string());
            bar
        });
        let every = (show && !terminal).then(|| {
            let secs = std::env::var("KVBENCH_PROGRESS_SECS")
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(30.0);
            Duration::from_secs_f64(secs.max(0.0))
        });
        let now = Instant::now();
        Progress {
            bar,
            every,
            started: now,
            last_line: now,
            total,
            done: 0,
            resumed: 0,
            configurations,
        }
    }

    /// Sample `id` starts.
    pub fn start(&self, id: &str) {
        if let Some(b) = &self.bar {
            b.set_message(id.to_string());
        }
    }

    /// A sample whose every record was already written: off the total.
    pub fn resumed(&mut self) {
        self.resumed += 1;
        self.total = self.total.saturating_sub(1);
        if let Some(b) = &self.bar {
            b.set_length(self.total as u64);
        }
    }

    /// A sample was computed.
    pub fn finished(&mut self) {
        self.done += 1;
        if let Some(b) = &self.bar {
            b.inc(1);
        }
        if let Some(every) = self.every {
            let now = Instant::now();
            if now.duration_since(self.last_line) >= every || self.done == self.total {
                self.last_line = now;
                eprintln!("{}", self.line());
            }
        }
    }

    /// `progress: sample 3/12 x 5 configurations, 1m02s elapsed, ~3m30s left`
    pub fn line(&self) -> String {
        let elapsed = self.started.elapsed();
        let left = if self.done == 0 {
            "unknown".to_string()
        } else {
            let per = elapsed.as_secs_f64() / self.done as f64;
            format!(
                "~{}",
                duration(Duration::from_secs_f64(
                    per * (self.total - self.done.min(self.total)) as f64
                ))
            )
        };
        let resumed = if self.resumed > 0 {
            format!(" ({} found done)", self.resumed)
        } else {
            String::new()
        };
        format!(
            "progress: sample {}/{}{resumed} x {} configurations, {} elapsed, {left} left",
            self.done,
            self.total,
            self.configurations,
            duration(elapsed)
        )
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_lines_read_well() {
        assert_eq!(duration(Duration::from_secs(12)), "12s");
        assert_eq!(duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(duration(Duration::from_secs(3720)), "1h02m");
        let mut p = Progress::new(false, 4, 5);
        p.resumed();
        assert!(p
            .line()
            .starts_with("progress: sample 0/3 (1 found done) x 5 configurations"));
        assert!(p.line().ends_with("unknown left"), "{}", p.line());
        p.finished();
        assert!(p.line().contains("sample 1/3"), "{}", p.line());
    }
}

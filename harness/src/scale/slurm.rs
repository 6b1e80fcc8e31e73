//! `kvbench slurm EXP --array N`: an `sbatch` script whose array task `$SLURM_ARRAY_TASK_ID`
//! runs shard `$SLURM_ARRAY_TASK_ID/N` into one shared output directory. Slurm schedules it;
//! kvbench only writes the script and, afterwards, merges (`kvbench report DIR`).

use std::fmt::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The script's settings.
#[derive(Clone, Debug)]
pub struct SlurmJob {
    /// The experiment file (absolute, so the script works from any directory).
    pub experiment: PathBuf,
    /// The shared output directory (absolute).
    pub output: PathBuf,
    /// Array tasks = shards.
    pub array: usize,
    /// At most this many tasks at once (`--array=0-N%K`).
    pub max_parallel: Option<usize>,
    pub job_name: String,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub gpus_per_task: usize,
    pub cpus_per_task: Option<usize>,
    pub mem: Option<String>,
    pub time: Option<String>,
    /// The kvbench binary the tasks run.
    pub kvbench: PathBuf,
    /// Further `run` arguments (`--limit 2`, `--append`).
    pub run_args: Vec<String>,
    /// Further `#SBATCH` lines, as given (`--constraint=h100`).
    pub sbatch: Vec<String>,
}

/// Quote for a POSIX shell: bare when safe, else in single quotes.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Values that go on `#SBATCH` lines may not break the line.
fn sbatch_value(what: &str, v: &str) -> Result<String> {
    if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("slurm {what} `{v}`: #SBATCH values cannot hold spaces or line breaks; choose a path or value without them");
    }
    Ok(v.to_string())
}

impl SlurmJob {
    /// Where Slurm writes each task's output.
    pub fn log_dir(&self) -> PathBuf {
        self.output.join("slurm")
    }

    /// The `sbatch` script.
    pub fn script(&self) -> Result<String> {
        if self.array == 0 {
            bail!("--array 0: give the number of array tasks (shards), at least 1");
        }
        let mut s = String::from("#!/bin/bash\n");
        let _ = writeln!(
            s,
            "# Written by `kvbench slurm`: {} array task(s), task I runs shard I/{} of\n# {}\n# into {}\n# Submit: sbatch {}\n# When every task has finished: kvbench report {}",
            self.array,
            self.array,
            self.experiment.display(),
            self.output.display(),
            shell_quote(&self.output.join("slurm.sbatch").to_string_lossy()),
            shell_quote(&self.output.to_string_lossy()),
        );
        let mut line = |k: &str, v: String| {
            let _ = writeln!(s, "#SBATCH --{k}={v}");
        };
        line("job-name", sbatch_value("job name", &self.job_name)?);
        let throttle = self.max_parallel.map_or(String::new(), |k| format!("%{k}"));
        line("array", format!("0-{}{throttle}", self.array - 1));
        line("ntasks", "1".into());
        if let Some(p) = &self.partition {
            line("partition", sbatch_value("partition", p)?);
        }
        if let Some(a) = &self.account {
            line("account", sbatch_value("account", a)?);
        }
        if self.gpus_per_task > 0 {
            line("gpus-per-task", self.gpus_per_task.to_string());
        }
        if let Some(c) = self.cpus_per_task {
            line("cpus-per-task", c.to_string());
        }
        if let Some(m) = &self.mem {
            line("mem", sbatch_value("mem", m)?);
        }
        if let Some(t) = &self.time {
            line("time", sbatch_value("time", t)?);
        }
        line(
            "output",
            sbatch_value(
                "output",
                &self.log_dir().join("%A_%a.log").to_string_lossy(),
            )?,
        );
        for extra in &self.sbatch {
            let extra = sbatch_value("--sbatch", extra.trim_start_matches("--"))?;
            let _ = writeln!(s, "#SBATCH --{extra}");
        }
        let device = if self.gpus_per_task > 0 {
            "cuda"
        } else {
            "cpu"
        };
        let mut cmd = vec![
            shell_quote(&self.kvbench.to_string_lossy()),
            "run".into(),
            shell_quote(&self.experiment.to_string_lossy()),
            "--output".into(),
            shell_quote(&self.output.to_string_lossy()),
            "--shard".into(),
            format!("\"${{SLURM_ARRAY_TASK_ID}}/{}\"", self.array),
            "--device".into(),
            device.into(),
        ];
        cmd.extend(self.run_args.iter().map(|a| shell_quote(a)));
        let _ = write!(
            s,
            "\nset -euo pipefail\n# Slurm makes the task's GPU(s) visible as cuda:0.\nexec {}\n",
            cmd.join(" ")
        );
        Ok(s)
    }

    /// Write the script to `OUTPUT/slurm.sbatch` (and make the log directory); returns its path.
    pub fn write(&self) -> Result<PathBuf> {
        std::fs::create_dir_all(self.log_dir())?;
        let path = self.output.join("slurm.sbatch");
        super::write_atomic(&path, &self.script()?)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(path)
    }
}

/// An absolute version of `p` (relative to the working directory), without touching the disk.
pub fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_safe_words_bare_and_quotes_the_rest() {
        assert_eq!(shell_quote("/a/b-c_d.yaml"), "/a/b-c_d.yaml");
        assert_eq!(shell_quote("my runs/x"), "'my runs/x'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn bad_values_are_refused() {
        let job = SlurmJob {
            experiment: "/e.yaml".into(),
            output: "/out".into(),
            array: 0,
            max_parallel: None,
            job_name: "j".into(),
            partition: None,
            account: None,
            gpus_per_task: 1,
            cpus_per_task: None,
            mem: None,
            time: None,
            kvbench: "kvbench".into(),
            run_args: vec![],
            sbatch: vec![],
        };
        assert!(job.script().unwrap_err().to_string().contains("--array 0"));
        let job = SlurmJob {
            array: 2,
            partition: Some("gpu\n#SBATCH --x".into()),
            ..job
        };
        assert!(job.script().is_err());
    }
}

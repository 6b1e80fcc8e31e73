//! Before a run writes: its results file locked (one writer) and the directory's experiment
//! checked (one experiment per directory, unless `--append`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::lock::{self, LockGuard};
use super::Shard;
use crate::experiment::Plan;

/// The file in an output directory that names the experiment(s) whose records it holds.
pub const HASH_FILE: &str = "experiment.sha256";

/// What to do when the directory holds another experiment's records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirPolicy {
    /// Refuse (the default): a re-run of the same experiment resumes.
    Resume,
    /// `--fresh`: results are moved aside and the directory now holds this experiment.
    Fresh,
    /// `--append`: add this experiment's records to the directory's.
    Append,
}

impl DirPolicy {
    pub fn from_flags(fresh: bool, append: bool) -> Result<Self> {
        match (fresh, append) {
            (true, true) => bail!("--fresh and --append contradict each other: --fresh moves the directory's results aside, --append adds to them"),
            (true, false) => Ok(DirPolicy::Fresh),
            (false, true) => Ok(DirPolicy::Append),
            (false, false) => Ok(DirPolicy::Resume),
        }
    }
}

/// The experiment's content hash: everything that decides which records a run writes (model,
/// datasets and their options, the grid of methods x budgets x query-awareness, seed, options),
/// not where it runs (`device`).
pub fn experiment_hash(plan: &Plan) -> String {
    let mut raw = serde_json::to_value(&plan.raw).expect("experiments serialize");
    if let Some(o) = raw.as_object_mut() {
        o.remove("device");
        // Batched or one-by-one decoding gives the same records.
        o.remove("batch_decoding");
    }
    let runs: Vec<serde_json::Value> = plan
        .runs
        .iter()
        .map(|r| serde_json::json!({"method": r.config, "budget": r.budget, "query_aware": r.query_aware}))
        .collect();
    let ident = serde_json::json!({"experiment": raw, "runs": runs});
    hex::encode(Sha256::digest(ident.to_string().as_bytes()))
}

/// Check (and record) that `dir` holds `plan`'s experiment; `dir` is created when missing.
pub fn check_experiment(dir: &Path, plan: &Plan, policy: DirPolicy) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let hash = experiment_hash(plan);
    let line = format!("{hash}  {}\n", plan.raw.experiment);
    let path = dir.join(HASH_FILE);
    let known = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !super::results_files(dir)?.is_empty() && policy == DirPolicy::Resume {
                eprintln!(
                    "note: {} has results but no {HASH_FILE} (written by an older kvbench): taking them as this experiment's",
                    dir.display()
                );
            }
            return super::write_atomic(&path, &line);
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let hashes: Vec<&str> = known
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    if hashes.contains(&hash.as_str()) {
        return Ok(());
    }
    match policy {
        DirPolicy::Fresh => super::write_atomic(&path, &line),
        DirPolicy::Append => {
            eprintln!(
                "note: --append: {} now holds records of {} experiments",
                dir.display(),
                hashes.len() + 1
            );
            super::write_atomic(&path, &format!("{known}{line}"))
        }
        DirPolicy::Resume => {
            let names: Vec<String> = known
                .lines()
                .map(|l| {
                    let mut it = l.split_whitespace();
                    let h = it.next().unwrap_or("");
                    let name = it.next().unwrap_or("?");
                    format!("`{name}` ({})", &h[..h.len().min(12)])
                })
                .collect();
            bail!(
                "{} holds the results of another experiment: {} (see {}); `{}` ({}) differs in its model, datasets, methods, budgets or options. Write it elsewhere (--output DIR), start the directory over with --fresh (the old results are moved aside), or add to it with --append",
                dir.display(),
                names.join(", "),
                path.display(),
                plan.raw.experiment,
                &hash[..12]
            )
        }
    }
}

/// A run's hold on its results file: the lock (released on drop), the experiment checked.
#[derive(Debug)]
pub struct Claim {
    pub dir: PathBuf,
    pub shard: Shard,
    pub results: PathBuf,
    lock: LockGuard,
}

impl Claim {
    /// Lock `shard`'s results file in `dir`, then check the directory's experiment. Fails at once
    /// when another run holds the file.
    pub fn acquire(dir: &Path, shard: Shard, plan: &Plan, policy: DirPolicy) -> Result<Claim> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let results = shard.results(dir);
        let lock = lock::acquire(&results)?;
        check_experiment(dir, plan, policy)?;
        Ok(Claim {
            dir: dir.to_path_buf(),
            shard,
            results,
            lock,
        })
    }

    pub fn lock_path(&self) -> &Path {
        self.lock.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXP: &str = "experiment: e\nmodel: smollm2-135m-instruct-q4_1\ndatasets:\n  - name: niah\n    lengths: [128]\n    depths: [0.5]\nmethods:\n  - method: full\n  - method: snapkv\nbudgets:\n  - compression_ratio: 0.5\n";

    fn plan(text: &str) -> Plan {
        Plan::parse(text, Path::new("e.yaml")).unwrap()
    }

    #[test]
    fn batching_off_is_the_same_experiment() {
        let batched = plan(EXP);
        assert!(
            batched.raw.batch_decoding,
            "batched decoding is the default"
        );
        let overrides = crate::overrides::Overrides {
            set: vec!["batch_decoding=false".into()],
            ..Default::default()
        };
        let one_by_one = Plan::parse_with(EXP, Path::new("e.yaml"), &overrides).unwrap();
        assert!(!one_by_one.raw.batch_decoding);
        assert_eq!(experiment_hash(&batched), experiment_hash(&one_by_one));
        // The default is not written out, so existing experiments serialize as before.
        let raw = serde_json::to_value(&batched.raw).unwrap();
        assert!(raw.get("batch_decoding").is_none(), "{raw}");
        let e = Plan::parse(
            &format!("{EXP}batch_decoding: sometimes\n"),
            Path::new("e.yaml"),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("batch_decoding"), "{e:#}");
    }

    #[test]
    fn another_experiment_is_refused_unless_fresh_or_append() {
        let dir = std::env::temp_dir().join(format!("kvbench-claim-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = plan(EXP);
        check_experiment(&dir, &a, DirPolicy::Resume).unwrap();
        // The same experiment again, on another device: fine.
        let mut on_gpu = plan(EXP);
        on_gpu.raw.device = Some("cuda:1".into());
        assert_eq!(experiment_hash(&a), experiment_hash(&on_gpu));
        check_experiment(&dir, &on_gpu, DirPolicy::Resume).unwrap();
        // Another grid: refused, naming the fixes.
        let b = plan(&EXP.replace("0.5\n", "0.75\n"));
        assert_ne!(experiment_hash(&a), experiment_hash(&b));
        let e = check_experiment(&dir, &b, DirPolicy::Resume)
            .unwrap_err()
            .to_string();
        assert!(e.contains("another experiment: `e`"), "{e}");
        assert!(
            e.contains("--fresh") && e.contains("--append") && e.contains("--output"),
            "{e}"
        );
        // Another model: refused too.
        let c = plan(&EXP.replace("smollm2-135m-instruct-q4_1", "hf:org/other"));
        assert!(check_experiment(&dir, &c, DirPolicy::Resume).is_err());
        // --append: both accepted from now on.
        check_experiment(&dir, &b, DirPolicy::Append).unwrap();
        check_experiment(&dir, &b, DirPolicy::Resume).unwrap();
        check_experiment(&dir, &a, DirPolicy::Resume).unwrap();
        // --fresh: only the new one.
        check_experiment(&dir, &c, DirPolicy::Fresh).unwrap();
        assert!(check_experiment(&dir, &a, DirPolicy::Resume).is_err());
        assert!(DirPolicy::from_flags(true, true).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn claim_locks_the_shards_file() {
        let dir = std::env::temp_dir().join(format!("kvbench-claim2-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let shard = Shard { index: 1, count: 2 };
        let claim = Claim::acquire(&dir, shard, &plan(EXP), DirPolicy::Resume).unwrap();
        assert_eq!(claim.results, dir.join("results.shard-1-of-2.jsonl"));
        assert!(claim.lock_path().exists());
        // The other shard's file is free.
        let other = Claim::acquire(
            &dir,
            Shard { index: 0, count: 2 },
            &plan(EXP),
            DirPolicy::Resume,
        )
        .unwrap();
        drop((claim, other));
        assert!(!dir.join("results.shard-1-of-2.jsonl.lock").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Scale-out: shards of one experiment, the files they own in a shared output directory, and the
//! ways to run them (one worker per GPU on a host, a Slurm job array across hosts).
//!
//! ```text
//! OUTPUT/results.jsonl                    an unsharded run
//! OUTPUT/results.shard-I-of-N.jsonl       shard I (0-based) of N: its samples' records
//! OUTPUT/results....jsonl.lock            held while a run writes that file (pid, host)
//! OUTPUT/results....status.json           the shard's plan and state (total, failed, ...)
//! OUTPUT/worker.shard-I-of-N.log          a `--gpus` worker's output
//! OUTPUT/experiment.sha256                the experiment(s) this directory holds
//! ```
//!
//! A shard is chosen by sample, so a sample's turns, its shared prefill and every method run on
//! it stay in one shard; `kvbench report OUTPUT` merges every `results*.jsonl`.

pub mod claim;
pub mod lock;
pub mod slurm;
pub mod status;
pub mod workers;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Result;

pub use claim::{experiment_hash, Claim, DirPolicy};

/// Shard `index` of `count` (0-based) of the run's samples (datasets in the experiment's order,
/// samples in each dataset's order, after `--limit`). [`Shard::retain_balanced`] deals them out
/// by size so that shards finish together; [`Shard::keeps`] is the plain `position % count` split.
/// `0/1` is the whole run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    pub fn is_whole(&self) -> bool {
        self.count == 1
    }

    /// Whether the sample at `position` of the run's sample order belongs to this shard.
    pub fn keeps(&self, position: usize) -> bool {
        position % self.count == self.index
    }

    /// Keep this shard's samples of lists taken in order (each dataset's samples).
    pub fn retain<'a, T: 'a>(&self, lists: impl IntoIterator<Item = &'a mut Vec<T>>) {
        let mut position = 0;
        for list in lists {
            list.retain(|_| {
                let keep = self.keeps(position);
                position += 1;
                keep
            });
        }
    }

    /// Keep this shard's samples, dealt out by cost so that every shard gets about the same
    /// work: the largest sample first, each to the shard with the least cost so far (ties: the
    /// earlier sample, the lower shard). Every worker computes the same deal from the same
    /// samples, so the shards still partition the run; which shard a sample lands in does not
    /// change its records.
    pub fn retain_balanced<'a, T: 'a>(
        &self,
        lists: impl IntoIterator<Item = &'a mut Vec<T>>,
        cost: impl Fn(&T) -> u64,
    ) {
        let mut lists: Vec<&mut Vec<T>> = lists.into_iter().collect();
        let costs: Vec<u64> = lists.iter().flat_map(|l| l.iter().map(&cost)).collect();
        let mine = self.deal(&costs);
        let mut position = 0;
        for list in lists.iter_mut() {
            list.retain(|_| {
                let keep = mine[position];
                position += 1;
                keep
            });
        }
    }

    /// Whether each position (of `costs`) falls to this shard under the largest-first deal.
    fn deal(&self, costs: &[u64]) -> Vec<bool> {
        let mut order: Vec<usize> = (0..costs.len()).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(costs[i]), i));
        let mut load = vec![0u64; self.count];
        let mut mine = vec![false; costs.len()];
        for i in order {
            let shard = (0..self.count)
                .min_by_key(|&s| (load[s], s))
                .expect("count >= 1");
            load[shard] += costs[i].max(1);
            mine[i] = shard == self.index;
        }
        mine
    }

    /// `""` for the whole run, `.shard-I-of-N` for a shard: what its file names carry.
    pub fn tag(&self) -> String {
        if self.is_whole() {
            String::new()
        } else {
            format!(".shard-{}-of-{}", self.index, self.count)
        }
    }

    /// The results file this shard writes in `dir`.
    pub fn results(&self, dir: &Path) -> PathBuf {
        dir.join(format!("results{}.jsonl", self.tag()))
    }

    /// The status file beside it.
    pub fn status(&self, dir: &Path) -> PathBuf {
        dir.join(format!("results{}.status.json", self.tag()))
    }

    /// A `--gpus` worker's log.
    pub fn log(&self, dir: &Path) -> PathBuf {
        dir.join(format!("worker{}.log", self.tag()))
    }

    /// The shard a results file name belongs to (`results.jsonl` is the whole run).
    pub fn of_results_name(name: &str) -> Option<Shard> {
        if name == "results.jsonl" {
            return Some(Shard::WHOLE);
        }
        let rest = name
            .strip_prefix("results.shard-")?
            .strip_suffix(".jsonl")?;
        let (i, n) = rest.split_once("-of-")?;
        let shard = Shard {
            index: i.parse().ok()?,
            count: n.parse().ok()?,
        };
        (shard.count > 0 && shard.index < shard.count).then_some(shard)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `I/N` with `0 <= I < N`.
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "write it as I/N: shard I (counted from 0) of N, e.g. --shard 0/4 .. 3/4";
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("shard `{s}`: {usage}"))?;
        let number = |t: &str| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| format!("shard `{s}`: `{t}` is not a number; {usage}"))
        };
        let (index, count) = (number(i)?, number(n)?);
        if count == 0 {
            return Err(format!(
                "shard `{s}`: the number of shards must be at least 1; {usage}"
            ));
        }
        if index >= count {
            return Err(format!(
                "shard `{s}`: index {index} is out of range for {count} shard(s): indices run from 0 to {}",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }
}

/// The keys a run of `shard` into `dir` skips: those in its own results file and in every results
/// file of another split (an unsharded run, or shards of another count); the sibling shards of
/// the same split hold other samples, so they are not read (10,000 shards stay 10,000 reads).
pub fn done_keys(dir: &Path, shard: Shard, keep_failed: bool) -> Result<HashSet<String>> {
    let mut keys = HashSet::new();
    for file in results_files(dir)? {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let read = match Shard::of_results_name(name) {
            Some(s) if s == shard => true,
            Some(s) => s.count != shard.count,
            None => true,
        };
        if read {
            // A failed record (device OOM, ...) is retried unless `--keep-failed`.
            for r in kvbench_reports::read_results(&file)? {
                if keep_failed || !r.is_failed() {
                    keys.insert(r.key);
                }
            }
        }
    }
    Ok(keys)
}

/// Every `results*.jsonl` in `dir` (none when it does not exist yet), in name order.
pub fn results_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    Ok(kvbench_reports::merge::results_files(dir).unwrap_or_default())
}

/// This machine's host name (as `hostname` prints it).
pub fn host_name() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
        if rc == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            if let Ok(s) = std::str::from_utf8(&buf[..end]) {
                return s.to_string();
            }
        }
    }
    std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown-host".into())
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Write a small file whole: a temporary file beside it, then a rename over it.
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    use anyhow::Context;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    // Unique across the hosts sharing the directory, not only across this host's processes.
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        host_name(),
        std::process::id()
    ));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_arguments_parse_or_say_why_not() {
        assert_eq!("1/3".parse::<Shard>(), Ok(Shard { index: 1, count: 3 }));
        let e = "3/2".parse::<Shard>().unwrap_err();
        assert!(
            e.contains("index 3 is out of range for 2") && e.contains("0 to 1"),
            "{e}"
        );
        let e = "2/2".parse::<Shard>().unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        let e = "0/0".parse::<Shard>().unwrap_err();
        assert!(e.contains("at least 1"), "{e}");
        let e = "x/2".parse::<Shard>().unwrap_err();
        assert!(e.contains("`x` is not a number"), "{e}");
        let e = "3".parse::<Shard>().unwrap_err();
        assert!(e.contains("I/N"), "{e}");
    }

    #[test]
    fn shards_partition_the_samples_across_datasets() {
        let lists = || vec![vec![0, 1, 2, 3, 4], vec![5, 6], vec![7, 8, 9, 10]];
        let mut seen = Vec::new();
        for index in 0..3 {
            let mut l = lists();
            Shard { index, count: 3 }.retain(l.iter_mut());
            seen.extend(l.into_iter().flatten());
        }
        seen.sort();
        assert_eq!(seen, (0..=10).collect::<Vec<_>>());
        let mut l = lists();
        Shard { index: 1, count: 3 }.retain(l.iter_mut());
        assert_eq!(l, vec![vec![1, 4], vec![], vec![7, 10]]);
    }

    #[test]
    fn balanced_shards_partition_the_samples_and_even_out_the_work() {
        // Two long samples side by side: the `position % 2` split gives both to one shard.
        let lists = || vec![vec![8u64, 1, 1, 1], vec![1, 1, 8, 8, 1, 1]];
        let mut seen = Vec::new();
        let mut loads = Vec::new();
        for index in 0..2 {
            let mut l = lists();
            Shard { index, count: 2 }.retain_balanced(l.iter_mut(), |&c| c);
            loads.push(l.iter().flatten().sum::<u64>());
            seen.push(l);
        }
        assert_eq!(loads, vec![16, 15], "{seen:?}");
        let mut naive = Vec::new();
        for index in 0..2 {
            let mut l = lists();
            Shard { index, count: 2 }.retain(l.iter_mut());
            naive.push(l.iter().flatten().sum::<u64>());
        }
        assert_eq!(naive, vec![19, 12], "the plain split is the unbalanced one");
        // Every sample lands in exactly one shard, in its dataset's order.
        let mut all: Vec<u64> = seen.into_iter().flatten().flatten().collect();
        all.sort();
        let mut want: Vec<u64> = lists().into_iter().flatten().collect();
        want.sort();
        assert_eq!(all, want);
        // The whole run keeps everything.
        let mut l = lists();
        Shard::WHOLE.retain_balanced(l.iter_mut(), |&c| c);
        assert_eq!(l, lists());
    }

    #[test]
    fn file_names_round_trip() {
        let s = Shard { index: 2, count: 8 };
        let dir = Path::new("out");
        assert_eq!(s.results(dir), dir.join("results.shard-2-of-8.jsonl"));
        assert_eq!(s.status(dir), dir.join("results.shard-2-of-8.status.json"));
        assert_eq!(s.log(dir), dir.join("worker.shard-2-of-8.log"));
        assert_eq!(
            Shard::of_results_name("results.shard-2-of-8.jsonl"),
            Some(s)
        );
        assert_eq!(Shard::of_results_name("results.jsonl"), Some(Shard::WHOLE));
        assert_eq!(Shard::WHOLE.results(dir), dir.join("results.jsonl"));
        assert_eq!(Shard::of_results_name("results.shard-9-of-8.jsonl"), None);
        assert_eq!(Shard::of_results_name("results-old.jsonl"), None);
    }
}

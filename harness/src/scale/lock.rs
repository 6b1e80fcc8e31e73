//! One writer per results file: `FILE.lock`, created with `create_new` (atomic, also on NFS),
//! holding the writer's pid, host and start time, removed when the run ends.
//!
//! A lock whose holder is on this host and no longer running (or whose pid now belongs to a
//! process started later) is stale: it is reported and taken over. A lock held from another host
//! cannot be checked from here: the run is refused, naming the host and the fix.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// What a lock file says about its holder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    /// Seconds since the epoch when the lock was taken.
    pub since: u64,
    /// The holder's start time in clock ticks since boot (Linux `/proc/PID/stat`), to tell a
    /// reused pid from the holder.
    #[serde(default)]
    pub proc_start: Option<u64>,
}

impl Holder {
    fn me() -> Self {
        let pid = std::process::id();
        Holder {
            pid,
            host: super::host_name(),
            since: super::now_secs(),
            proc_start: proc_start(pid),
        }
    }

    /// Whether this holder is a process still running on this host.
    fn alive_here(&self) -> bool {
        if !pid_alive(self.pid) {
            return false;
        }
        match (self.proc_start, proc_start(self.pid)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }
}

/// The held lock; dropping it removes the lock file.
#[derive(Debug)]
pub struct LockGuard {
    path: PathBuf,
}

impl LockGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The lock file of a results file.
pub fn lock_path(results: &Path) -> PathBuf {
    let name = results
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("results.jsonl");
    results.with_file_name(format!("{name}.lock"))
}

/// Read a lock file's holder (`None` when there is no lock).
pub fn holder(results: &Path) -> Option<Holder> {
    let text = std::fs::read_to_string(lock_path(results)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Whether a holder read from a lock is a live run (`None`: on another host, cannot tell).
pub fn holder_alive(h: &Holder) -> Option<bool> {
    (h.host == super::host_name()).then(|| h.alive_here())
}

/// Take the lock of `results` for this process, or say who holds it.
pub fn acquire(results: &Path) -> Result<LockGuard> {
    let path = lock_path(results);
    let me = Holder::me();
    for _ in 0..3 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                let text = serde_json::to_string(&me)? + "\n";
                f.write_all(text.as_bytes())
                    .and_then(|_| f.sync_all())
                    .with_context(|| format!("writing {}", path.display()))?;
                return Ok(LockGuard { path });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let Ok(h) = serde_json::from_str::<Holder>(&text) else {
            // Being written this instant, or damaged: look again, then give up naming the file.
            std::thread::sleep(std::time::Duration::from_millis(200));
            if std::fs::read_to_string(&path).unwrap_or_default() == text {
                bail!(
                    "{} is locked by {}, which does not name its holder; if no kvbench run writes {} any more, delete the lock file and re-run",
                    results.display(),
                    path.display(),
                    results.display()
                );
            }
            continue;
        };
        if h.host != me.host {
            bail!(
                "{} is being written by kvbench pid {} on host `{}` (since {}s ago; lock {}). Two runs must never write one results file. If that run is gone (its node died), delete {} and re-run; otherwise wait for it, or write elsewhere (--output DIR, or another --shard)",
                results.display(),
                h.pid,
                h.host,
                super::now_secs().saturating_sub(h.since),
                path.display(),
                path.display()
            );
        }
        if h.pid == me.pid || !h.alive_here() {
            if h.pid != me.pid {
                eprintln!(
                    "note: {} was left by kvbench pid {} on this host, which is no longer running: taking it over",
                    path.display(),
                    h.pid
                );
            }
            // Remove only the stale lock we read (another run may have taken it over already).
            if std::fs::read_to_string(&path).unwrap_or_default() == text {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        bail!(
            "{} is being written by another kvbench run: pid {} on this host (since {}s ago). Wait for it to finish, stop it (kill {}), or write elsewhere (--output DIR, or another --shard)",
            results.display(),
            h.pid,
            super::now_secs().saturating_sub(h.since),
            h.pid
        );
    }
    bail!(
        "could not take the lock {} (other runs keep taking it)",
        path.display()
    )
}

/// Whether a process with this pid exists on this host.
pub fn pid_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = i32::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 only checks that the process exists and may be signalled.
        let rc = unsafe { libc::kill(pid, 0) };
        let exists = rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        // A zombie (exited, not yet reaped: its parent was killed too) is not running.
        exists && proc_state(pid as u32) != Some('Z')
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// A process's state letter (`R`, `S`, `Z`, ...; Linux only).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// A process's start time in clock ticks since boot (Linux only).
fn proc_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22; the command name (field 2) may hold spaces, so count after its closing paren.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kvbench-lock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn second_writer_is_refused_with_the_holders_pid() {
        let d = dir("live");
        let results = d.join("results.jsonl");
        // A live process on this host holds it (our parent shell: alive for the whole test).
        let parent = std::os::unix::process::parent_id();
        let holder = Holder {
            pid: parent,
            host: crate::scale::host_name(),
            since: 0,
            proc_start: proc_start(parent),
        };
        std::fs::write(lock_path(&results), serde_json::to_string(&holder).unwrap()).unwrap();
        let e = acquire(&results).unwrap_err().to_string();
        assert!(e.contains(&format!("pid {parent} on this host")), "{e}");
        assert!(e.contains(&format!("kill {parent}")), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn lock_is_exclusive_and_released_on_drop() {
        let d = dir("own");
        let results = d.join("results.shard-0-of-2.jsonl");
        let guard = acquire(&results).unwrap();
        let h = holder(&results).unwrap();
        assert_eq!(h.pid, std::process::id());
        assert_eq!(h.host, crate::scale::host_name());
        assert_eq!(
            guard.path(),
            d.join("results.shard-0-of-2.jsonl.lock").as_path()
        );
        drop(guard);
        assert!(!lock_path(&results).exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stale_lock_on_this_host_is_taken_over() {
        let d = dir("stale");
        let results = d.join("results.jsonl");
        // A pid that cannot be running (above Linux's pid_max limit).
        let dead = Holder {
            pid: 4_194_304 + 7,
            host: crate::scale::host_name(),
            since: 0,
            proc_start: None,
        };
        std::fs::write(lock_path(&results), serde_json::to_string(&dead).unwrap()).unwrap();
        let _guard = acquire(&results).unwrap();
        assert_eq!(holder(&results).unwrap().pid, std::process::id());
        // A pid reused by a later process (start time differs) is stale too.
        let reused = Holder {
            pid: std::os::unix::process::parent_id(),
            host: crate::scale::host_name(),
            since: 0,
            proc_start: Some(1),
        };
        assert!(!reused.alive_here());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn lock_from_another_host_is_refused_naming_it_and_the_fix() {
        let d = dir("host");
        let results = d.join("results.jsonl");
        let other = Holder {
            pid: 1234,
            host: "node-17.cluster".into(),
            since: 0,
            proc_start: None,
        };
        std::fs::write(lock_path(&results), serde_json::to_string(&other).unwrap()).unwrap();
        let e = acquire(&results).unwrap_err().to_string();
        assert!(e.contains("pid 1234 on host `node-17.cluster`"), "{e}");
        assert!(
            e.contains("delete") && e.contains("results.jsonl.lock"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}

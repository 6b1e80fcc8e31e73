//! Atomic file writes for every report artefact (HTML, plots, tables, summaries, `run.json`): the
//! bytes go to a temporary file in the same directory, are flushed to disk, and only then renamed
//! over the destination, so a reader (or a run killed half-way) never sees a half-written file.
//! Also the names of backups that never overwrite each other.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Write `bytes` to `path` atomically (temporary file beside it + rename).
pub fn write_atomic(path: &Path, bytes: impl AsRef<[u8]>) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes.as_ref())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A path beside `path` that does not exist yet: `{name}.{unix seconds}.bak`, then
/// `{name}.{unix seconds}-1.bak`, ... so backups never overwrite each other.
pub fn unique_backup(path: &Path) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut n = 0u32;
    loop {
        let suffix = if n == 0 {
            format!("{stamp}")
        } else {
            format!("{stamp}-{n}")
        };
        let candidate = path.with_file_name(format!("{name}.{suffix}.bak"));
        if !candidate.exists() {
            return candidate;
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("kvbench-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("report.html");
        write_atomic(&p, "one").unwrap();
        write_atomic(&p, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // A destination that cannot be written leaves nothing behind either.
        assert!(write_atomic(&dir.join("missing/x"), "x").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn backups_never_overwrite_each_other() {
        let dir = std::env::temp_dir().join(format!("kvbench-bak-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("results.jsonl");
        let mut seen = std::collections::HashSet::new();
        for i in 0..3 {
            std::fs::write(&p, format!("{i}")).unwrap();
            let b = unique_backup(&p);
            std::fs::rename(&p, &b).unwrap();
            assert!(seen.insert(b));
        }
        assert_eq!(seen.len(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

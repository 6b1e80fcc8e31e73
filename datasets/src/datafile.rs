//! The data files a loader read, for `run.json`: each file's name, where it came from (hub repo,
//! the revision asked for and the commit the hub resolved it to) and its sha256 and size, so a
//! result can be traced to the exact bytes it was computed from.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One file a dataset was read from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    /// The file's path in its hub repository (`data.zip`, `data/scbench_kv.jsonl`), an archive
    /// member after its archive (`data.zip/data/qasper.jsonl`), or a local path as given.
    pub name: String,
    /// `org/name` of the hub dataset repository; absent for a local file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The revision asked for (a commit, `main`, `refs/convert/parquet`); absent for a local file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The commit the hub resolved `revision` to (the cache's snapshot), where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Lowercase hex sha256 of the file's bytes.
    pub sha256: String,
    pub bytes: u64,
}

impl DataFile {
    /// A local file, hashed.
    pub fn local(path: &Path) -> std::io::Result<Self> {
        let (sha256, bytes) = sha256_file(path)?;
        Ok(DataFile {
            name: path.display().to_string(),
            repo: None,
            revision: None,
            commit: None,
            sha256,
            bytes,
        })
    }

    /// File `name` of hub dataset `repo` at `revision`, downloaded to `path`, hashed.
    pub fn hub(repo: &str, revision: &str, name: &str, path: &Path) -> std::io::Result<Self> {
        let (sha256, bytes) = sha256_file(path)?;
        Ok(DataFile {
            name: name.to_string(),
            repo: Some(repo.to_string()),
            revision: Some(revision.to_string()),
            commit: snapshot_commit(path, name),
            sha256,
            bytes,
        })
    }

    /// Member `member` of the archive `archive` describes (its name becomes `{archive}/{member}`),
    /// from the member's bytes.
    pub fn member(archive: &DataFile, member: &str, content: &[u8]) -> Self {
        DataFile {
            name: format!("{}/{member}", archive.name),
            sha256: sha256_hex(content),
            bytes: content.len() as u64,
            ..archive.clone()
        }
    }
}

/// Adds `file` to `files` unless a file of the same name and origin is there already.
pub fn record(files: &mut Vec<DataFile>, file: DataFile) {
    let same =
        |f: &DataFile| f.name == file.name && f.repo == file.repo && f.revision == file.revision;
    if !files.iter().any(same) {
        files.push(file);
    }
}

/// The lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The sha256 and the length of the file at `path`, read in chunks.
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// The commit of the hub cache snapshot `path` lies in: hf-hub keeps file `name` of a revision at
/// `.../snapshots/{commit}/{name}`.
fn snapshot_commit(path: &Path, name: &str) -> Option<String> {
    let depth = Path::new(name).components().count();
    let dir: PathBuf = path.ancestors().nth(depth)?.to_path_buf();
    let parent = dir.parent()?;
    if parent.file_name()? != "snapshots" {
        return None;
    }
    let commit = dir.file_name()?.to_str()?;
    (commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| commit.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::temp_file;

    #[test]
    fn local_files_are_hashed() {
        let p = temp_file("datafile.txt", "abc");
        let f = DataFile::local(&p).unwrap();
        assert_eq!(
            f.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!((f.bytes, f.repo, f.revision), (3, None, None));
    }

    #[test]
    fn the_snapshot_names_the_commit() {
        let c = "0123456789abcdef0123456789abcdef01234567";
        let p = PathBuf::from(format!("/c/hub/datasets--o--n/snapshots/{c}/data/x.jsonl"));
        assert_eq!(snapshot_commit(&p, "data/x.jsonl").as_deref(), Some(c));
        assert_eq!(snapshot_commit(&p, "x.jsonl"), None);
        assert_eq!(snapshot_commit(Path::new("/tmp/x.jsonl"), "x.jsonl"), None);
    }

    #[test]
    fn members_take_their_archive_origin() {
        let zip = DataFile {
            name: "data.zip".into(),
            repo: Some("o/n".into()),
            revision: Some("r".into()),
            commit: None,
            sha256: "x".into(),
            bytes: 9,
        };
        let m = DataFile::member(&zip, "data/a.jsonl", b"abc");
        assert_eq!(m.name, "data.zip/data/a.jsonl");
        assert_eq!((m.repo.as_deref(), m.bytes), (Some("o/n"), 3));
        let mut files = vec![zip.clone()];
        record(&mut files, zip);
        record(&mut files, m);
        assert_eq!(files.len(), 2);
    }
}

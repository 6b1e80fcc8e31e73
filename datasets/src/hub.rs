//! Dataset files from the Hugging Face hub, through kvbench's one hub client ([`kvbench_hub`]),
//! cached in the hub's own layout under `{cache}/hub` (the directory the harness keeps models
//! in), and members of the zip archives some benchmarks ship.
//!
//! URLs are `{endpoint}/datasets/{repo}/resolve/{revision}/{path}`, the revision URL-escaped
//! (`refs/convert/parquet` becomes `refs%2Fconvert%2Fparquet`). A download cut short leaves no
//! file that passes as complete; large (LFS) files are checked against their sha256 once.

use std::io::Read;
use std::path::{Path, PathBuf};

pub use kvbench_hub::{HubError, HubOptions, DEFAULT_ENDPOINT};

/// The local path of `path` in dataset `repo` at `revision`: from the cache, else downloaded.
pub fn dataset_file(
    repo: &str,
    revision: &str,
    path: &str,
    opts: &HubOptions,
) -> Result<PathBuf, HubError> {
    kvbench_hub::HubRepo::dataset(repo, revision, opts)?.get(path)
}

/// The bytes of member `member` of the zip archive at `archive` (LongBench's `data.zip`).
pub fn zip_member(archive: &Path, member: &str) -> Result<Vec<u8>, ZipMemberError> {
    let file = std::fs::File::open(archive).map_err(|source| ZipMemberError::Io {
        path: archive.to_path_buf(),
        source,
    })?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| ZipMemberError::Zip {
        path: archive.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut entry = zip.by_name(member).map_err(|e| ZipMemberError::Member {
        path: archive.to_path_buf(),
        member: member.to_string(),
        message: e.to_string(),
    })?;
    let mut out = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut out)
        .map_err(|source| ZipMemberError::Io {
            path: archive.to_path_buf(),
            source,
        })?;
    Ok(out)
}

/// A zip archive or member that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ZipMemberError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a readable zip archive ({message})", path.display())]
    Zip { path: PathBuf, message: String },
    #[error("{}: no member `{member}` ({message})", path.display())]
    Member {
        path: PathBuf,
        member: String,
        message: String,
    },
}

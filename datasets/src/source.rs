//! Where a published benchmark's files come from: the Hugging Face hub (the repository's own
//! files, or the hub's parquet export at `refs/convert/parquet`) or a local path.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::hub::{HubError, HubOptions, ZipMemberError};
use crate::records::RecordsError;

/// The revision where the hub keeps its parquet export of a dataset. A branch the hub's converter
/// rewrites, not a fixed commit: a dataset without a verified export commit reads it unpinned
/// (its `revision:` pins it).
pub const PARQUET_REVISION: &str = "refs/convert/parquet";

/// YAML: `source: hub` (default), `source: parquet`, or `source: {path: DIR_OR_FILE}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DataSource {
    /// The repository's own data files at `revision` (default: the dataset's pinned commit),
    /// downloaded into the cache.
    #[default]
    Hub,
    /// The hub's parquet export (`refs/convert/parquet`): `{config}/test/0000.parquet`.
    Parquet,
    /// Local files in the repository's layout (a directory of `{task}.jsonl`, or one file).
    Path(PathBuf),
}

impl DataSource {
    pub fn is_local(&self) -> bool {
        matches!(self, DataSource::Path(_))
    }
}

/// Whether `revision` names a commit (40 hex digits), which cannot move, rather than a branch or
/// tag.
pub fn is_commit(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The file of one config (task) in the parquet export.
pub fn parquet_path(config: &str) -> String {
    format!("{config}/test/0000.parquet")
}

/// A dataset whose files could not be had or read as a whole (bad records are reported one by
/// one instead, see [`crate::LineError`]).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error(transparent)]
    Zip(#[from] ZipMemberError),
    #[error(transparent)]
    Records(#[from] RecordsError),
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{dataset}: {message}")]
    Config {
        dataset: &'static str,
        message: String,
    },
}

/// `f` as the data file of `path`, or the error of reading it.
pub(crate) fn hashed(
    path: &std::path::Path,
    f: impl FnOnce() -> std::io::Result<crate::DataFile>,
) -> Result<crate::DataFile, SourceError> {
    f().map_err(|source| SourceError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Options every loader shares: where hub files are cached and fetched from.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub hub: HubOptions,
}

impl LoadOptions {
    pub fn from_env() -> Self {
        LoadOptions {
            hub: HubOptions::from_env(),
        }
    }
}

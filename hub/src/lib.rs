//! Files of Hugging Face hub repos, models and datasets alike, through the `hf_hub` crate, cached
//! in the hub's own layout under `{cache}/hub`. The one hub client of kvbench: the harness fetches
//! checkpoints with it, the datasets crate dataset files.
//!
//! URLs are `{endpoint}/{repo}/resolve/{revision}/{file}` for models and
//! `{endpoint}/datasets/{repo}/resolve/{revision}/{file}` for datasets, the revision URL-escaped
//! (`refs/convert/parquet` becomes `refs%2Fconvert%2Fparquet`). `hf_hub` streams into
//! `blobs/{etag}.part` and renames only after the whole body arrived, so a download cut short
//! leaves no file that passes as complete (the `.part` stays, to resume from). Large (LFS) files,
//! whose etag is their sha256, are hashed once after download and removed on mismatch; a marker
//! `{cache}/hub-verified/{sha256}` records a blob that passed.

use std::io::Read;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};

pub use hf_hub::api::sync::ApiError;

/// Default Hugging Face endpoint (overridden by `$HF_ENDPOINT`).
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Where hub files are cached and fetched from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubOptions {
    /// kvbench's cache directory; files go to `{cache_dir}/hub`.
    pub cache_dir: PathBuf,
    /// The hub's root URL, without a trailing `/`.
    pub endpoint: String,
    /// Progress bars on stderr (drawn only when stderr is a terminal).
    pub progress: bool,
}

impl HubOptions {
    /// `cache_dir` from `$KVBENCH_CACHE`, else `{user cache dir}/kvbench`; `endpoint` from
    /// `$HF_ENDPOINT`, else [`DEFAULT_ENDPOINT`]; progress bars on.
    pub fn from_env() -> Self {
        let nonempty = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let cache_dir = nonempty("KVBENCH_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                dirs::cache_dir()
                    .unwrap_or_else(std::env::temp_dir)
                    .join("kvbench")
            });
        HubOptions {
            cache_dir,
            endpoint: normalize_endpoint(nonempty("HF_ENDPOINT").as_deref()),
            progress: true,
        }
    }
}

/// `endpoint` without a trailing `/`, or [`DEFAULT_ENDPOINT`] for `None`.
pub fn normalize_endpoint(endpoint: Option<&str>) -> String {
    endpoint
        .unwrap_or(DEFAULT_ENDPOINT)
        .trim_end_matches('/')
        .to_string()
}

/// A hub file that could not be had.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("downloading {file} of {kind} {repo} at revision {revision} ({url}): {source}")]
    Api {
        /// `model` or `dataset`.
        kind: &'static str,
        repo: String,
        revision: String,
        file: String,
        url: String,
        source: Box<ApiError>,
    },
    #[error("{url}: downloaded {file} has sha256 {actual}, expected {expected}; the file was removed, run again to retry")]
    HashMismatch {
        file: String,
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl HubError {
    /// The hub answered 404: the repo, revision or file does not exist (or is gated and no
    /// token was given).
    pub fn is_not_found(&self) -> bool {
        matches!(self, HubError::Api { source, .. }
            if matches!(&**source, ApiError::RequestError(r) if matches!(**r, ureq::Error::Status(404, _))))
    }

    /// The hub could not be reached at all (no connection, DNS, TLS).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, HubError::Api { source, .. }
            if matches!(&**source, ApiError::RequestError(r) if matches!(**r, ureq::Error::Transport(_))))
    }
}

/// One repo at one revision: files come from the cache, else from the hub.
pub struct HubRepo {
    api: ApiRepo,
    kind: &'static str,
    repo: String,
    revision: String,
    opts: HubOptions,
}

impl HubRepo {
    /// Model repo `repo` (`org/name`) at `revision` (a branch, tag or commit).
    pub fn model(repo: &str, revision: &str, opts: &HubOptions) -> Result<Self, HubError> {
        Self::new(repo, revision, RepoType::Model, opts)
    }

    /// Dataset repo `repo` (`org/name`) at `revision` (`main`, `refs/convert/parquet`, a commit).
    pub fn dataset(repo: &str, revision: &str, opts: &HubOptions) -> Result<Self, HubError> {
        Self::new(repo, revision, RepoType::Dataset, opts)
    }

    fn new(
        repo: &str,
        revision: &str,
        repo_type: RepoType,
        opts: &HubOptions,
    ) -> Result<Self, HubError> {
        let kind = match repo_type {
            RepoType::Dataset => "dataset",
            RepoType::Space => "space",
            _ => "model",
        };
        let api = ApiBuilder::from_cache(Cache::new(opts.cache_dir.join("hub")))
            .with_endpoint(opts.endpoint.clone())
            .with_progress(opts.progress)
            .with_token(token())
            .build()
            .map_err(|source| HubError::Api {
                kind,
                repo: repo.to_string(),
                revision: revision.to_string(),
                file: String::new(),
                url: opts.endpoint.clone(),
                source: Box::new(source),
            })?;
        let api = api.repo(Repo::with_revision(
            repo.to_string(),
            repo_type,
            revision.to_string(),
        ));
        Ok(HubRepo {
            api,
            kind,
            repo: repo.to_string(),
            revision: revision.to_string(),
            opts: opts.clone(),
        })
    }

    /// The URL `file` is downloaded from.
    pub fn url(&self, file: &str) -> String {
        self.api.url(file)
    }

    /// The local path of `file`: from the cache, else downloaded; an LFS file's sha256 checked.
    /// A cached blob whose bytes changed since it was verified is hashed again; when it no longer
    /// matches, it is removed and downloaded once more.
    pub fn get(&self, file: &str) -> Result<PathBuf, HubError> {
        match self.get_once(file) {
            // The bad blob and its link are gone: the next get downloads it again.
            Err(HubError::HashMismatch { actual, .. }) => {
                let path = self.get_once(file)?;
                eprintln!(
                    "warning: {file} of {} had sha256 {actual}, not its own; it was removed \
                     and downloaded again",
                    self.repo
                );
                Ok(path)
            }
            other => other,
        }
    }

    fn get_once(&self, file: &str) -> Result<PathBuf, HubError> {
        let path = self.api.get(file).map_err(|source| HubError::Api {
            kind: self.kind,
            repo: self.repo.clone(),
            revision: self.revision.clone(),
            file: file.to_string(),
            url: self.url(file),
            source: Box::new(source),
        })?;
        self.verify(file, &path)?;
        Ok(path)
    }

    /// `None` when the repo has no such file (404), or when the hub cannot be reached: files a
    /// caller requires came from the cache then, and an optional file that exists would have
    /// been cached along with them.
    pub fn optional(&self, file: &str) -> Result<Option<PathBuf>, HubError> {
        match self.get(file) {
            Ok(path) => Ok(Some(path)),
            Err(e) if e.is_not_found() || e.is_unreachable() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Checks a blob named by a sha256 etag (an LFS file) against its content, once: the marker
    /// `{cache}/hub-verified/{sha256}` records success. A mismatch removes the blob and its link.
    fn verify(&self, file: &str, local: &Path) -> Result<(), HubError> {
        let Ok(blob) = std::fs::canonicalize(local) else {
            return Ok(());
        };
        let Some(etag) = blob
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_ascii_lowercase)
        else {
            return Ok(());
        };
        if etag.len() != 64 || !etag.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(()); // a git (non-LFS) file: its etag is a git blob sha1
        }
        let marker_dir = self.opts.cache_dir.join("hub-verified");
        let marker = marker_dir.join(&etag);
        let stamp = file_stamp(&blob);
        if stamp.is_some() && std::fs::read_to_string(&marker).ok() == stamp {
            return Ok(());
        }
        let len = std::fs::metadata(&blob).map(|m| m.len()).unwrap_or(0);
        let pb = bar(self.opts.progress, len, format!("verifying {file}"));
        let actual = sha256_file(&blob, &pb)?;
        pb.finish_and_clear();
        if actual != etag {
            let _ = std::fs::remove_file(&blob);
            let _ = std::fs::remove_file(local);
            return Err(HubError::HashMismatch {
                file: file.to_string(),
                url: self.url(file),
                expected: etag,
                actual,
            });
        }
        // A read-only cache still works: the hash is just checked again next time.
        if let Some(stamp) = file_stamp(&blob) {
            let _ =
                std::fs::create_dir_all(&marker_dir).and_then(|_| std::fs::write(&marker, stamp));
        }
        Ok(())
    }
}

/// `{size} {mtime in ns since the epoch}` of a file: what a `.verified` marker records, so a file
/// whose bytes changed after it was verified (a different size or modification time) is hashed
/// again. `None` when the metadata cannot be read.
pub fn file_stamp(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(format!("{} {mtime}", meta.len()))
}

/// `$HF_TOKEN`, else the token `huggingface-cli login` stored ($HF_HOME/token or
/// ~/.cache/huggingface/token).
fn token() -> Option<String> {
    if let Some(t) = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        return Some(t.trim().to_string());
    }
    if std::env::var_os("HF_HOME").is_some() || dirs::home_dir().is_some() {
        return Cache::from_env().token();
    }
    None
}

fn bar(progress: bool, len: u64, msg: String) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    pb.set_style(style);
    pb.set_message(msg);
    pb
}

fn sha256_file(path: &Path, pb: &ProgressBar) -> Result<String, HubError> {
    let io = |source| HubError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        hasher.update(&buf[..n]);
        pb.inc(n as u64);
    }
    Ok(hex::encode(hasher.finalize()))
}

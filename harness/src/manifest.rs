//! `run.json`: what a run directory's report cites about the run itself: kvbench version and git
//! commit, device, the model files with their sha256, and how prompts were made: architecture,
//! the chat template's sha256, the BOS/EOS ids, and per dataset the `chat_template` option, the
//! truncation policy, the revision read and every data file read (name, origin, sha256, bytes).

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use kvbench_datasets::DataFile;
use sha2::{Digest, Sha256};

use serde::Serialize;

use crate::experiment::Plan;
use crate::fetch::ModelFiles;
use crate::loader::LoadedModel;
use crate::model::Architecture;
use crate::truncation::TruncationPolicy;

/// How the run turned samples into tokens, and the model facts behind it.
#[derive(Clone, Debug, Serialize)]
pub struct PromptFacts {
    pub architecture: Architecture,
    pub max_position_embeddings: usize,
    /// sha256 (hex) of the chat template source; `none` if the model has none or no dataset
    /// applies it (`chat_template: false` everywhere).
    pub chat_template_sha256: String,
    /// BOS id, and whether plain-text contexts get it from the tokenizer (a rendered context
    /// holds whatever BOS its template writes).
    pub bos_id: Option<u32>,
    pub add_bos: bool,
    /// Every id that stops generation.
    pub eos_ids: Vec<u32>,
    pub datasets: Vec<DatasetPromptFacts>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DatasetPromptFacts {
    pub name: String,
    /// `auto`, `true` or `false`, as the experiment says.
    pub chat_template: String,
    pub truncation: TruncationPolicy,
    /// The revision of the hub repository read (the pinned default or the experiment's
    /// `revision:`); absent for local and generated data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Every data file read: name, hub repo, revision and resolved commit where from the hub,
    /// sha256 and bytes.
    pub files: Vec<DataFile>,
}

/// What a dataset's samples were read from, as the run loaded them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DatasetData {
    pub name: String,
    pub revision: Option<String>,
    pub files: Vec<DataFile>,
}

impl PromptFacts {
    /// `data`: what each dataset of the plan was read from, in the plan's order
    /// ([`crate::run::RunOutcome::data`]).
    pub fn new(plan: &Plan, loaded: &LoadedModel, data: &[DatasetData]) -> Self {
        let cfg = loaded.model.config();
        let tok = &loaded.tokenizer;
        let template = tok.template();
        let applied = plan
            .raw
            .datasets
            .iter()
            .any(|d| d.chat_template() != kvbench_datasets::ChatTemplateMode::Never);
        Self {
            architecture: cfg.architecture,
            max_position_embeddings: cfg.max_position_embeddings,
            chat_template_sha256: match template {
                Some(t) if applied => t.sha256(),
                _ => "none".into(),
            },
            bos_id: tok.bos_id(),
            add_bos: tok.add_bos(),
            eos_ids: tok.eos_ids().to_vec(),
            datasets: plan
                .raw
                .datasets
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let read = data.get(i).filter(|r| r.name == d.name());
                    DatasetPromptFacts {
                        name: d.name().to_string(),
                        chat_template: d.chat_template().as_str().to_string(),
                        truncation: TruncationPolicy::new(
                            d.max_length(),
                            cfg.max_position_embeddings,
                        ),
                        revision: read.and_then(|r| r.revision.clone()),
                        files: read.map(|r| r.files.clone()).unwrap_or_default(),
                    }
                })
                .collect(),
        }
    }
}

/// The git commit kvbench was built from (`unknown` outside a git checkout).
pub const GIT_COMMIT: &str = match option_env!("KVBENCH_GIT_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

/// `kvbench 0.1.0 (commit abc123)`.
pub fn version_line() -> String {
    format!(
        "kvbench {} (commit {GIT_COMMIT})",
        env!("CARGO_PKG_VERSION")
    )
}

/// Files larger than this are identified by size only (hashing them would add minutes).
const HASH_LIMIT: u64 = 4 << 30;

/// The file's sha256, computed from its bytes (never taken from a cache directory's name: a
/// cached file can change after it was stored); `None` above [`HASH_LIMIT`].
pub fn file_sha256(path: &Path) -> Result<Option<String>> {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let len = std::fs::metadata(&real)
        .with_context(|| format!("reading {}", real.display()))?
        .len();
    if len > HASH_LIMIT {
        return Ok(None);
    }
    let mut file =
        std::fs::File::open(&real).with_context(|| format!("opening {}", real.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", real.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Some(hex::encode(hasher.finalize())))
}

/// The files a model was read from (a synthetic model's: its tokenizer's files).
fn model_paths(files: &ModelFiles) -> Vec<&Path> {
    match files {
        ModelFiles::Gguf { path } => vec![path],
        ModelFiles::HfCheckpoint {
            config,
            weights,
            tokenizer,
            ..
        } => {
            let mut v: Vec<&Path> = vec![config, tokenizer];
            v.extend(weights.iter().map(|p| p.as_path()));
            v
        }
        ModelFiles::Synthetic { tokenizer, .. } => model_paths(tokenizer),
    }
}

/// Write `dir/run.json`.
pub fn write(
    dir: &Path,
    model: &str,
    files: &ModelFiles,
    device: &str,
    prompts: &PromptFacts,
) -> Result<()> {
    let mut model_files = Vec::new();
    for p in model_paths(files) {
        let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        model_files.push(serde_json::json!({
            "file": p.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
            "bytes": size,
            "sha256": file_sha256(p)?,
        }));
    }
    let manifest = serde_json::json!({
        "kvbench_version": env!("CARGO_PKG_VERSION"),
        "git_commit": GIT_COMMIT,
        "model": model,
        "model_files": model_files,
        "device": device,
        "architecture": prompts.architecture,
        "max_position_embeddings": prompts.max_position_embeddings,
        "chat_template_sha256": prompts.chat_template_sha256,
        "bos_id": prompts.bos_id,
        "add_bos": prompts.add_bos,
        "eos_ids": prompts.eos_ids,
        "datasets": prompts.datasets,
    });
    let path = dir.join("run.json");
    kvbench_reports::write_atomic(&path, serde_json::to_string_pretty(&manifest)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17 item 2: the sha256 in run.json is the file's, not its cache directory's name.
    #[test]
    fn model_sha256_is_computed_from_the_bytes() {
        let dir = std::env::temp_dir().join(format!("kvbench-sha-{}", std::process::id()));
        let claimed = "ab".repeat(32);
        let cached = dir.join(format!("sha256-{claimed}")).join(&claimed);
        std::fs::create_dir_all(&cached).unwrap();
        let file = cached.join("m.gguf");
        std::fs::write(&file, b"changed after it was cached").unwrap();
        let got = file_sha256(&file).unwrap().unwrap();
        assert_eq!(
            got,
            hex::encode(Sha256::digest(b"changed after it was cached"))
        );
        assert_ne!(got, claimed);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dataset_entries_name_the_revision_and_every_file() {
        let file = DataFile {
            name: "data/scbench_kv.jsonl".into(),
            repo: Some("microsoft/SCBench".into()),
            revision: Some("f43226eed3a026f927a67c60739c228390d959c2".into()),
            commit: Some("f43226eed3a026f927a67c60739c228390d959c2".into()),
            sha256: "ab".repeat(32),
            bytes: 12,
        };
        let facts = DatasetPromptFacts {
            name: "scbench".into(),
            chat_template: "auto".into(),
            truncation: TruncationPolicy::new(None, 4096),
            revision: file.revision.clone(),
            files: vec![file.clone()],
        };
        let v = serde_json::to_value(&facts).unwrap();
        assert_eq!(v["revision"], "f43226eed3a026f927a67c60739c228390d959c2");
        assert_eq!(
            v["files"][0],
            serde_json::json!({
                "name": "data/scbench_kv.jsonl",
                "repo": "microsoft/SCBench",
                "revision": "f43226eed3a026f927a67c60739c228390d959c2",
                "commit": "f43226eed3a026f927a67c60739c228390d959c2",
                "sha256": "ab".repeat(32),
                "bytes": 12,
            })
        );
        // local and generated data: no revision, files only where read
        let local = DatasetPromptFacts {
            revision: None,
            files: Vec::new(),
            ..facts
        };
        let v = serde_json::to_value(&local).unwrap();
        assert!(v.get("revision").is_none());
        assert_eq!(v["files"], serde_json::json!([]));
    }
}

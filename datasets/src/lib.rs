//! kvbench-datasets: dataset loaders, synthetic task generators, prompt templates and task
//! metrics. Text in, text out: no model crate, no tensor. The harness passes its tokenizer in as a
//! [`TokenCounter`] where a generator must size text in tokens.
//!
//! Every dataset becomes a list of [`Sample`]s. The runner prefills a sample's `context` once
//! (compressed query-agnostically), then for each [`Turn`] appends the turn's `question` and
//! decodes greedily `max_new_tokens`; [`metrics::score`] compares the prediction with the answers.

pub mod datafile;
pub mod hub;
pub mod jsonl;
pub mod longbench;
pub mod longbench_v2;
pub mod metrics;
pub mod needle;
pub mod options;
pub mod prompt;
pub mod records;
pub mod registry;
pub mod ruler;
pub mod sample;
pub mod scbench;
pub mod source;
pub mod tokens;

pub use datafile::DataFile;
pub use jsonl::{FieldMap, JsonlConfig, JsonlError, LineError, LineProblem, Loaded, Unit};
pub use longbench::LongBenchConfig;
pub use longbench_v2::LongBenchV2Config;
pub use metrics::{score, Metric};
pub use needle::matrix::{score_matrix, ScoreMatrix};
pub use needle::{Haystack, NeedleConfig, NeedleError};
pub use prompt::{build_prompt, turn_prompt, ChatTemplateMode, Plain, Prompt, PromptTemplate};
pub use registry::{dataset_names, DatasetConfig, DatasetDescription, Source, DATASETS};
pub use ruler::{RulerConfig, RulerError};
pub use sample::{Sample, Turn, TurnMode};
pub use scbench::{ScbenchConfig, ScbenchMode};
pub use source::{DataSource, LoadOptions, SourceError};
pub use tokens::{truncate_middle, TokenCounter, WhitespaceTokens};

/// Errors from building a dataset through the registry.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error(transparent)]
    Needle(#[from] NeedleError),
    #[error(transparent)]
    Jsonl(#[from] JsonlError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Ruler(#[from] RulerError),
}

#[cfg(test)]
pub(crate) mod testutil {
    use std::path::PathBuf;

    /// `../shared/data` of the workspace (read-only test data; see its README).
    pub fn shared_data() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data"))
    }

    /// Writes `contents` to a file unique to this test process and returns its path.
    pub fn temp_file(name: &str, contents: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("kvbench-datasets-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let path = dir.join(name);
        std::fs::write(&path, contents).expect("write temp file");
        path
    }
}

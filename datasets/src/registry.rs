//! Every registered dataset: its YAML configuration and its description for `kvbench datasets`.

use serde::{Deserialize, Serialize};

use crate::longbench::LongBenchConfig;
use crate::longbench_v2::{self, LongBenchV2Config};
use crate::ruler::RulerConfig;
use crate::scbench::ScbenchConfig;
use crate::{
    needle, ChatTemplateMode, DataFile, DatasetError, JsonlConfig, LoadOptions, Loaded, Metric,
    NeedleConfig, Sample, TokenCounter,
};

/// A dataset as written in an experiment (`- name: niah`, `lengths: [1024, 4096]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum DatasetConfig {
    Niah(NeedleConfig),
    Jsonl(JsonlConfig),
    Longbench(LongBenchConfig),
    LongbenchV2(LongBenchV2Config),
    Scbench(ScbenchConfig),
    Ruler(RulerConfig),
}

impl DatasetConfig {
    /// The registry name, as in [`DATASETS`].
    pub fn name(&self) -> &'static str {
        match self {
            DatasetConfig::Niah(_) => "niah",
            DatasetConfig::Jsonl(_) => "jsonl",
            DatasetConfig::Longbench(_) => "longbench",
            DatasetConfig::LongbenchV2(_) => "longbench_v2",
            DatasetConfig::Scbench(_) => "scbench",
            DatasetConfig::Ruler(_) => "ruler",
        }
    }

    /// The `chat_template:` option (`auto` unless the YAML says otherwise).
    pub fn chat_template(&self) -> ChatTemplateMode {
        match self {
            DatasetConfig::Niah(c) => c.chat_template,
            DatasetConfig::Jsonl(c) => c.chat_template,
            DatasetConfig::Longbench(c) => c.chat_template,
            DatasetConfig::LongbenchV2(c) => c.chat_template,
            DatasetConfig::Scbench(c) => c.chat_template,
            DatasetConfig::Ruler(c) => c.chat_template,
        }
    }

    /// The explicit `max_length:` (prompt tokens), where the dataset has that option: the
    /// dataset middle-truncates its prompts to it as the benchmark's own code does, and the
    /// harness's default truncation to the model's context window stands aside.
    pub fn max_length(&self) -> Option<usize> {
        match self {
            DatasetConfig::Longbench(c) => c.max_length,
            DatasetConfig::LongbenchV2(c) => c.max_length,
            DatasetConfig::Scbench(c) => c.max_length,
            DatasetConfig::Niah(_) | DatasetConfig::Jsonl(_) | DatasetConfig::Ruler(_) => None,
        }
    }

    /// The revision of the hub repository the samples are read from (`None` for local files and
    /// generated data; RULER's hub inputs name theirs per file in [`Loaded::files`]).
    pub fn revision(&self) -> Option<&str> {
        match self {
            DatasetConfig::Longbench(c) => c.effective_revision(),
            DatasetConfig::LongbenchV2(c) => match c.source {
                crate::DataSource::Path(_) => None,
                _ => Some(c.revision.as_str()),
            },
            DatasetConfig::Scbench(c) => c.effective_revision(),
            DatasetConfig::Niah(_) | DatasetConfig::Jsonl(_) | DatasetConfig::Ruler(_) => None,
        }
    }

    /// What a run of this dataset would read from the hub at a branch or tag rather than a
    /// commit, one line each (`revision: main`, `refs/convert/parquet`, a RULER input without
    /// `revision:`); `run.json` records the commit each resolved to, but the experiment alone no
    /// longer says which data it ran on. The harness shows each as a warning.
    pub fn floating_revisions(&self) -> Vec<String> {
        let floating = |repo: &str, rev: Option<&str>| match rev {
            Some(r) if !crate::source::is_commit(r) => vec![format!(
                "reads {repo} at `{r}`, a branch or tag, not a commit: the data can change \
                 under the same experiment (run.json records the commit it resolved to); write \
                 `revision: COMMIT` to pin it"
            )],
            _ => Vec::new(),
        };
        match self {
            DatasetConfig::Longbench(c) => floating(&c.repo, c.effective_revision()),
            DatasetConfig::LongbenchV2(c) => floating(&c.repo, self.revision()),
            DatasetConfig::Scbench(c) => floating(&c.repo, c.effective_revision()),
            DatasetConfig::Ruler(c) => c
                .floating_inputs()
                .into_iter()
                .map(|(option, repo, file, rev)| {
                    format!(
                        "field `{option}`: reads {file} of {repo} at `{rev}`, a branch or tag, \
                         not a commit (the default without `revision:`): the data can change \
                         under the same experiment (run.json records the commit it resolved \
                         to); write `{option}: {{repo: {repo}, file: {file}, revision: COMMIT}}` \
                         to pin it"
                    )
                })
                .collect(),
            DatasetConfig::Niah(_) | DatasetConfig::Jsonl(_) => Vec::new(),
        }
    }

    /// Every sample, or the first error. `counter` sizes generated contexts (and truncates
    /// long prompts) in the model's tokens; hub files go through `$KVBENCH_CACHE`/`$HF_ENDPOINT`.
    pub fn build(&self, counter: &dyn TokenCounter) -> Result<Vec<Sample>, DatasetError> {
        let loaded = self.build_with(counter, &LoadOptions::from_env(), true)?;
        Ok(loaded.samples)
    }

    /// The good samples and the errors of bad records, for loaders that can skip a bad record
    /// (JSONL, LongBench, LongBench v2, SCBench); generators either succeed whole or fail.
    pub fn build_lenient(&self, counter: &dyn TokenCounter) -> Result<Loaded, DatasetError> {
        self.build_with(counter, &LoadOptions::from_env(), false)
    }

    /// As [`build_lenient`](Self::build_lenient) with explicit options; with `strict`, the first
    /// bad record is an error.
    pub fn build_with(
        &self,
        counter: &dyn TokenCounter,
        opts: &LoadOptions,
        strict: bool,
    ) -> Result<Loaded, DatasetError> {
        let generated = |samples| Loaded {
            samples,
            ..Loaded::default()
        };
        let mut loaded = match self {
            DatasetConfig::Niah(c) => generated(c.generate(counter)?),
            DatasetConfig::Ruler(c) => c.generate_loaded(counter, opts)?,
            DatasetConfig::Jsonl(c) if strict => generated(c.load()?),
            DatasetConfig::Jsonl(c) => c.load_lenient()?,
            DatasetConfig::Longbench(c) => c.load(counter, opts)?,
            DatasetConfig::LongbenchV2(c) => c.load(counter, opts)?,
            DatasetConfig::Scbench(c) => c.load(counter, opts)?,
        };
        match self {
            DatasetConfig::Niah(NeedleConfig {
                haystack: needle::Haystack::File { path },
                ..
            }) => {
                let f = DataFile::local(path).map_err(|source| needle::NeedleError::Read {
                    path: path.clone(),
                    source,
                })?;
                loaded.files.push(f);
            }
            DatasetConfig::Jsonl(c) => {
                let f = DataFile::local(&c.path).map_err(|source| crate::JsonlError::Read {
                    path: c.path.clone(),
                    source,
                })?;
                loaded.files.push(f);
            }
            _ => {}
        }
        if strict {
            if let Some(e) = loaded.errors.first() {
                return Err(crate::JsonlError::Line(e.clone()).into());
            }
        }
        Ok(loaded)
    }
}

/// Where a dataset's samples come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Built from the seed; nothing to download (inputs such as word lists may be files).
    Generated,
    /// Read from a file the user points to.
    Local,
    /// Downloaded from the Hugging Face hub into the cache (or read from a local copy).
    Downloaded,
}

/// One task of a dataset: its metric and decode length.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct TaskDescription {
    pub name: &'static str,
    pub metric: Metric,
    pub max_new_tokens: usize,
}

/// A registered dataset, for `kvbench datasets`.
#[derive(Clone, Debug, Serialize)]
pub struct DatasetDescription {
    pub name: &'static str,
    pub summary: &'static str,
    /// Every task with its metric and decode length; empty where tasks come from the data.
    pub tasks: &'static [TaskDescription],
    /// The metric (for `jsonl`, the default of lines without `metric`; else the first task's).
    pub metric: Metric,
    /// Decode length (for `jsonl`, the default of lines without `max_new_tokens`).
    pub max_new_tokens: usize,
    pub source: Source,
}

const fn t(name: &'static str, metric: Metric, max_new_tokens: usize) -> TaskDescription {
    TaskDescription {
        name,
        metric,
        max_new_tokens,
    }
}

use Metric::*;

const LONGBENCH_TASKS: &[TaskDescription] = &[
    t("narrativeqa", QaF1, 128),
    t("qasper", QaF1, 128),
    t("multifieldqa_en", QaF1, 64),
    t("multifieldqa_zh", QaF1Zh, 64),
    t("hotpotqa", QaF1, 32),
    t("2wikimqa", QaF1, 32),
    t("musique", QaF1, 32),
    t("dureader", RougeZh, 128),
    t("gov_report", RougeL, 512),
    t("qmsum", RougeL, 512),
    t("multi_news", RougeL, 512),
    t("vcsum", RougeZh, 512),
    t("trec", Classification, 64),
    t("triviaqa", QaF1, 32),
    t("samsum", RougeL, 128),
    t("lsht", Classification, 64),
    t("passage_count", Count, 32),
    t("passage_retrieval_en", Retrieval, 32),
    t("passage_retrieval_zh", RetrievalZh, 32),
    t("lcc", CodeSim, 64),
    t("repobench-p", CodeSim, 64),
    t("qasper_e", QaF1, 128),
    t("multifieldqa_en_e", QaF1, 64),
    t("hotpotqa_e", QaF1, 32),
    t("2wikimqa_e", QaF1, 32),
    t("gov_report_e", RougeL, 512),
    t("multi_news_e", RougeL, 512),
    t("trec_e", Classification, 64),
    t("triviaqa_e", QaF1, 32),
    t("samsum_e", RougeL, 128),
    t("passage_count_e", Count, 32),
    t("passage_retrieval_en_e", Retrieval, 32),
    t("lcc_e", CodeSim, 64),
    t("repobench-p_e", CodeSim, 64),
];

const SCBENCH_TASKS: &[TaskDescription] = &[
    t("scbench_kv", Substring, 150),
    t("scbench_prefix_suffix", Substring, 150),
    t("scbench_vt", StringMatchAllRounded, 30),
    t("scbench_repoqa", RepoQa, 1024),
    t("scbench_qa_eng", UpperSubstring, 40),
    t("scbench_qa_chn", QaF1ZhChars, 40),
    t("scbench_choice_eng", ChoiceEng, 40),
    t("scbench_many_shot", UpperSubstring, 10),
    t("scbench_summary", RougeLsum, 200),
    t("scbench_mf", MathFind, 5),
    // mixed: summary turns (rouge_lsum, 800 tokens) and passkey turns (first_int, 15)
    t("scbench_summary_with_needles", RougeLsum, 800),
    // mixed: repoqa turns (repo_qa, 1024 tokens) and kv turns (substring, 80)
    t("scbench_repoqa_and_kv", RepoQa, 1024),
];

const RULER_TASKS: &[TaskDescription] = &[
    t("niah_single_1", StringMatchAll, 128),
    t("niah_single_2", StringMatchAll, 128),
    t("niah_single_3", StringMatchAll, 128),
    t("niah_multikey_1", StringMatchAll, 128),
    t("niah_multikey_2", StringMatchAll, 128),
    t("niah_multikey_3", StringMatchAll, 128),
    t("niah_multivalue", StringMatchAll, 128),
    t("niah_multiquery", StringMatchAll, 128),
    t("vt", StringMatchAll, 30),
    t("cwe", StringMatchAll, 120),
    t("fwe", StringMatchAll, 50),
    t("qa_1", StringMatchPart, 32),
    t("qa_2", StringMatchPart, 32),
];

pub static DATASETS: &[DatasetDescription] = &[
    DatasetDescription {
        name: "niah",
        summary:
            "Needle in a haystack: \"Anna lives in Paris.\" at a chosen depth of filler text of \
                  a chosen token length, asked with an answer prefix (\"Answer: Anna lives in\"); \
                  a length x depth grid (needle::score_matrix for the heatmap).",
        tasks: &[t(needle::TASK, StringMatchAll, needle::MAX_NEW_TOKENS)],
        metric: StringMatchAll,
        max_new_tokens: needle::MAX_NEW_TOKENS,
        source: Source::Generated,
    },
    DatasetDescription {
        name: "jsonl",
        summary: "Any JSONL, JSON-list or parquet file of {context, question, answers} records, \
                  with renamable fields.",
        tasks: &[],
        metric: QaF1,
        max_new_tokens: 32,
        source: Source::Local,
    },
    DatasetDescription {
        name: "longbench",
        summary: "LongBench v1 (THUDM/LongBench): 21 tasks and 13 LongBench-E tasks, official \
                  prompts, middle truncation and metrics; hub data.zip, parquet export or a \
                  local directory.",
        tasks: LONGBENCH_TASKS,
        metric: QaF1,
        max_new_tokens: 128,
        source: Source::Downloaded,
    },
    DatasetDescription {
        name: "longbench_v2",
        summary: "LongBench v2 (THUDM/LongBench-v2): 503 multiple-choice questions, 0-shot \
                  prompt, `The correct answer is (X)` extraction, accuracy by difficulty and \
                  length.",
        tasks: &[t(longbench_v2::TASK, Choice, longbench_v2::MAX_NEW_TOKENS)],
        metric: Choice,
        max_new_tokens: longbench_v2::MAX_NEW_TOKENS,
        source: Source::Downloaded,
    },
    DatasetDescription {
        name: "scbench",
        summary: "SCBench (microsoft/SCBench): 12 shared-context tasks in multi-turn or \
                  multi-request mode, scored per turn with SCBench's scorers.",
        tasks: SCBENCH_TASKS,
        metric: Substring,
        max_new_tokens: 150,
        source: Source::Downloaded,
    },
    DatasetDescription {
        name: "ruler",
        summary: "RULER's 13 synthetic tasks (niah x8, vt, cwe, fwe, qa_1, qa_2) generated at \
                  target lengths in the model's tokens; essays, word lists and QA files as inputs.",
        tasks: RULER_TASKS,
        metric: StringMatchAll,
        max_new_tokens: 128,
        source: Source::Generated,
    },
];

/// Registered dataset names, in registry order.
pub fn dataset_names() -> Vec<&'static str> {
    DATASETS.iter().map(|d| d.name).collect()
}

/// The description of a registered dataset.
pub fn describe(name: &str) -> Option<&'static DatasetDescription> {
    DATASETS.iter().find(|d| d.name == name)
}

#[cfg(test)]
mod tests;

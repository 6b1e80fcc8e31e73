//! LongBench v1 (THUDM/LongBench, <https://arxiv.org/abs/2308.14508>): 21 tasks and the 13
//! LongBench-E tasks (`{task}_e`, spread evenly over lengths), loaded from the hub's `data.zip`
//! (`data/{task}.jsonl`), its parquet export, or a local directory of `{task}.jsonl`.
//!
//! Records have `input, context, answers, length, dataset, language, all_classes, _id`. Prompts
//! are the official templates ([`prompts`]), middle-truncated to `max_length` tokens of the model
//! when set (`pred.py`'s `model2maxlen`, e.g. 31500 for a 32k model), and scored with the official
//! metric per task ([`metric`]), LongBench's first-line cut and `max` over answers included.
//! Samples of trec, triviaqa, samsum, lsht, lcc and repobench-p say `chat_template: false`.
//! LongBench-E samples carry `length_bucket` (`0-4k`, `4-8k`, `8k+` of the record's `length`),
//! which [`bucket_scores`] averages as `eval.py --e` does.

pub mod prompts;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::prompt::ChatTemplateMode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::datafile::record;
use crate::records::{describe, invalid, LineProblem};
use crate::records::{line_error, read_records};
use crate::source::{hashed, parquet_path, DataSource, LoadOptions, SourceError};
use crate::{hub, DataFile, Loaded, Metric, Sample, TokenCounter, Turn};

/// The 21 LongBench tasks, in `pred.py`'s order.
pub const TASKS: &[&str] = &[
    "narrativeqa",
    "qasper",
    "multifieldqa_en",
    "multifieldqa_zh",
    "hotpotqa",
    "2wikimqa",
    "musique",
    "dureader",
    "gov_report",
    "qmsum",
    "multi_news",
    "vcsum",
    "trec",
    "triviaqa",
    "samsum",
    "lsht",
    "passage_count",
    "passage_retrieval_en",
    "passage_retrieval_zh",
    "lcc",
    "repobench-p",
];

/// The 13 LongBench-E tasks.
pub const TASKS_E: &[&str] = &[
    "qasper_e",
    "multifieldqa_en_e",
    "hotpotqa_e",
    "2wikimqa_e",
    "gov_report_e",
    "multi_news_e",
    "trec_e",
    "triviaqa_e",
    "samsum_e",
    "passage_count_e",
    "passage_retrieval_en_e",
    "lcc_e",
    "repobench-p_e",
];

/// Tasks whose prompts `pred.py` leaves without a chat template.
pub const NO_CHAT_TEMPLATE: &[&str] = &["trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"];

/// Tasks whose prediction `eval.py` cuts to its first line before scoring.
pub const FIRST_LINE: &[&str] = &["trec", "triviaqa", "samsum", "lsht"];

pub const DEFAULT_REPO: &str = "THUDM/LongBench";

/// The commit of [`DEFAULT_REPO`] that `source: hub` reads unless `revision:` says otherwise:
/// "Update LongBench.py" (Aug 29, 2023), the authors' last commit before the hub's parquet
/// conversion; its `data.zip` (114 MB, uploaded in 4a90f81) is the one `main` still holds.
/// Source: <https://huggingface.co/datasets/THUDM/LongBench/tree/f72191f71cd6fcd0da8a54f0915078efda579449>
/// (and the commit history at
/// <https://huggingface.co/datasets/THUDM/LongBench/commits/47ac8bb45fc28f01f2a837b942995aa20974a207>).
pub const DEFAULT_REVISION: &str = "f72191f71cd6fcd0da8a54f0915078efda579449";

/// `source: parquet` has no default revision: the hub's converter rewrote LongBench's export many
/// times and no commit of it holding all 34 configs could be verified, so an experiment must
/// write `revision:` (a commit of `refs/convert/parquet` pins it; `refs/convert/parquet` itself
/// reads the branch, unpinned, with a warning). [`LongBenchConfig::check_pinned`] says so.
pub const PARQUET_REVISION_REQUIRED: &str = "`source: parquet` needs `revision:`: the hub's \
     parquet export of THUDM/LongBench is a branch its converter rewrites, and kvbench knows no \
     verified commit of it; write `revision: COMMIT` (a commit of refs/convert/parquet, from the \
     dataset's hub page), `revision: refs/convert/parquet` to read the branch unpinned, or use \
     `source: hub` (data.zip at a pinned commit)";

/// `eval.py`'s `dataset2metric`.
pub fn metric(task: &str) -> Option<Metric> {
    Some(match task.strip_suffix("_e").unwrap_or(task) {
        "narrativeqa" | "qasper" | "multifieldqa_en" | "hotpotqa" | "2wikimqa" | "musique"
        | "triviaqa" => Metric::QaF1,
        "multifieldqa_zh" => Metric::QaF1Zh,
        "dureader" | "vcsum" => Metric::RougeZh,
        "gov_report" | "qmsum" | "multi_news" | "samsum" => Metric::RougeL,
        "trec" | "lsht" => Metric::Classification,
        "passage_count" => Metric::Count,
        "passage_retrieval_en" => Metric::Retrieval,
        "passage_retrieval_zh" => Metric::RetrievalZh,
        "lcc" | "repobench-p" => Metric::CodeSim,
        _ => return None,
    })
}

/// The `longbench` dataset as written in an experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongBenchConfig {
    /// Task names ([`TASKS`], [`TASKS_E`]); default: the 21 tasks.
    #[serde(default = "default_tasks")]
    pub tasks: Vec<String>,
    #[serde(default)]
    pub source: DataSource,
    #[serde(default = "default_repo")]
    pub repo: String,
    /// Revision of `repo` (a commit, branch or tag) for `source: hub` or `parquet`; default:
    /// [`DEFAULT_REVISION`] (hub); required for `parquet` ([`PARQUET_REVISION_REQUIRED`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Middle-truncate prompts longer than this many tokens (LongBench's `model2maxlen`).
    #[serde(default)]
    pub max_length: Option<usize>,
    /// At most this many samples per task (the first good ones).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Whether prompts go through the model's chat template: `auto` (where the benchmark's
    /// official code applies one), `true` or `false`. Applied by the harness.
    #[serde(default, skip_serializing_if = "ChatTemplateMode::is_auto")]
    pub chat_template: ChatTemplateMode,
}

fn default_tasks() -> Vec<String> {
    TASKS.iter().map(|t| t.to_string()).collect()
}

fn default_repo() -> String {
    DEFAULT_REPO.into()
}

impl LongBenchConfig {
    /// Every task, from a local directory of `{task}.jsonl` files.
    pub fn local(dir: impl Into<PathBuf>, tasks: &[&str]) -> Self {
        LongBenchConfig {
            chat_template: Default::default(),
            tasks: tasks.iter().map(|t| t.to_string()).collect(),
            source: DataSource::Path(dir.into()),
            repo: default_repo(),
            revision: None,
            max_length: None,
            limit: None,
        }
    }

    /// The revision of `repo` read: `revision:`, else the source's default; `None` for local
    /// files and for `source: parquet` without `revision:` (which [`Self::check_pinned`]
    /// rejects).
    pub fn effective_revision(&self) -> Option<&str> {
        match self.source {
            DataSource::Path(_) => None,
            DataSource::Hub => Some(self.revision.as_deref().unwrap_or(DEFAULT_REVISION)),
            DataSource::Parquet => self.revision.as_deref(),
        }
    }

    /// `source: parquet` without `revision:` is an error (no floating default): the message
    /// says what to write.
    pub fn check_pinned(&self) -> Result<(), String> {
        if self.source == DataSource::Parquet && self.revision.is_none() {
            return Err(PARQUET_REVISION_REQUIRED.to_string());
        }
        Ok(())
    }

    fn check(&self) -> Result<(), SourceError> {
        self.check_pinned().map_err(config_error)?;
        if self.tasks.is_empty() {
            return Err(config_error(
                "`tasks` is empty; expected LongBench task names",
            ));
        }
        for t in &self.tasks {
            if !TASKS.contains(&t.as_str()) && !TASKS_E.contains(&t.as_str()) {
                return Err(config_error(format!(
                    "unknown task `{t}`; expected one of {}, {}",
                    TASKS.join(", "),
                    TASKS_E.join(", ")
                )));
            }
        }
        if self.max_length == Some(0) {
            return Err(config_error("`max_length` is 0; expected a token count"));
        }
        Ok(())
    }

    /// The good samples of every task and the errors of bad records; fails if a file cannot be
    /// had or read.
    pub fn load(
        &self,
        counter: &dyn TokenCounter,
        opts: &LoadOptions,
    ) -> Result<Loaded, SourceError> {
        self.check()?;
        let mut loaded = Loaded::default();
        let revision = self.effective_revision().unwrap_or_default();
        let mut zip: Option<(PathBuf, DataFile)> = None;
        for task in &self.tasks {
            let (path, bytes) = match &self.source {
                DataSource::Path(dir) => {
                    let p = if dir.is_file() {
                        dir.clone()
                    } else {
                        dir.join(format!("{task}.jsonl"))
                    };
                    if p.exists() {
                        record(&mut loaded.files, hashed(&p, || DataFile::local(&p))?);
                    }
                    (p, None)
                }
                DataSource::Hub => {
                    let (archive, file) = match &zip {
                        Some(z) => z.clone(),
                        None => {
                            let z = hub::dataset_file(&self.repo, revision, "data.zip", &opts.hub)?;
                            let f =
                                hashed(&z, || DataFile::hub(&self.repo, revision, "data.zip", &z))?;
                            record(&mut loaded.files, f.clone());
                            zip = Some((z.clone(), f.clone()));
                            (z, f)
                        }
                    };
                    let member = format!("data/{task}.jsonl");
                    let bytes = hub::zip_member(&archive, &member)?;
                    record(&mut loaded.files, DataFile::member(&file, &member, &bytes));
                    (archive.join(member), Some(bytes))
                }
                DataSource::Parquet => {
                    let name = parquet_path(task);
                    let p = hub::dataset_file(&self.repo, revision, &name, &opts.hub)?;
                    let f = hashed(&p, || DataFile::hub(&self.repo, revision, &name, &p))?;
                    record(&mut loaded.files, f);
                    (p, None)
                }
            };
            let one = self.load_task(task, &path, bytes, counter)?;
            loaded.samples.extend(one.samples);
            loaded.errors.extend(one.errors);
        }
        Ok(loaded)
    }

    fn load_task(
        &self,
        task: &str,
        path: &Path,
        bytes: Option<Vec<u8>>,
        counter: &dyn TokenCounter,
    ) -> Result<Loaded, SourceError> {
        let (unit, records) = read_records(path, bytes)?;
        let mut loaded = Loaded::default();
        for r in records {
            if self.limit.is_some_and(|l| loaded.samples.len() >= l) {
                break;
            }
            match r.object.and_then(|o| self.sample(task, o, r.line, counter)) {
                Ok(s) => loaded.samples.push(s),
                Err(problem) => loaded.errors.push(line_error(path, unit, r.line, problem)),
            }
        }
        Ok(loaded)
    }

    fn sample(
        &self,
        task: &str,
        mut o: Map<String, Value>,
        line: usize,
        counter: &dyn TokenCounter,
    ) -> Result<Sample, LineProblem> {
        let context = text_field(&mut o, "context")?;
        // `input` is empty for the summarization and code tasks: their prompt asks the question.
        let input = string_field(&mut o, "input")?;
        let answers = string_list(&mut o, "answers", false)?;
        let base = task.strip_suffix("_e").unwrap_or(task);
        let template = prompts::template(task).expect("checked task");
        let p = prompts::build(template, &context, &input, self.max_length, counter);
        let id = match o.get("_id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => format!("{task}-{line}"),
        };
        let mut sample = Sample::single(
            id,
            p.context,
            Turn::new(p.question, answers),
            task,
            metric(task).expect("checked task"),
            prompts::max_new_tokens(task).expect("checked task"),
        );
        sample.chat_template = !NO_CHAT_TEMPLATE.contains(&base);
        if FIRST_LINE.contains(&base) {
            sample.meta.insert("first_line".into(), true.into());
        }
        if metric(task) == Some(Metric::Classification) {
            let classes = string_list(&mut o, "all_classes", true)?;
            sample.meta.insert("all_classes".into(), classes.into());
        }
        if let Some(v) = o.get("length") {
            let Some(n) = v.as_u64() else {
                return Err(invalid("length", v, "a word count (an integer)"));
            };
            if task.ends_with("_e") {
                sample
                    .meta
                    .insert("length_bucket".into(), length_bucket(n).into());
            }
        }
        for k in ["length", "language", "dataset", "all_classes"] {
            if let Some(v) = o.remove(k) {
                sample.meta.entry(k).or_insert(v);
            }
        }
        Ok(sample)
    }
}

fn config_error(message: impl Into<String>) -> SourceError {
    SourceError::Config {
        dataset: "longbench",
        message: message.into(),
    }
}

pub(crate) fn string_field(o: &mut Map<String, Value>, field: &str) -> Result<String, LineProblem> {
    match o.remove(field) {
        None => Err(LineProblem::Missing {
            field: field.into(),
            expected: "a string",
        }),
        Some(Value::String(s)) => Ok(s),
        Some(v) => Err(invalid(field, &v, "a string")),
    }
}

/// A string field that must hold text (a context, a question): empty or blank is a bad record,
/// skipped with its file and line, never a prompt with nothing to compress or answer.
pub(crate) fn text_field(o: &mut Map<String, Value>, field: &str) -> Result<String, LineProblem> {
    let s = string_field(o, field)?;
    if s.trim().is_empty() {
        return Err(invalid(
            field,
            &Value::String(String::new()),
            "non-empty text",
        ));
    }
    Ok(s)
}

/// A list of strings (`null` allowed, as an empty list, when `nullable`).
pub(crate) fn string_list(
    o: &mut Map<String, Value>,
    field: &str,
    nullable: bool,
) -> Result<Vec<String>, LineProblem> {
    const EXPECTED: &str = "a list of strings";
    match o.remove(field) {
        None | Some(Value::Null) if nullable => Ok(Vec::new()),
        None => Err(LineProblem::Missing {
            field: field.into(),
            expected: EXPECTED,
        }),
        Some(Value::Array(items)) if nullable || !items.is_empty() => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s),
                v => Err(LineProblem::Invalid {
                    field: format!("{field}[{i}]"),
                    found: describe(&v).into(),
                    expected: "a string",
                }),
            })
            .collect(),
        Some(v) => Err(invalid(field, &v, EXPECTED)),
    }
}

/// `eval.py`'s LongBench-E bucket of a record's `length`: `0-4k` below 4000, `4-8k` below 8000,
/// else `8k+`.
pub fn length_bucket(length: u64) -> &'static str {
    if length < 4000 {
        "0-4k"
    } else if length < 8000 {
        "4-8k"
    } else {
        "8k+"
    }
}

/// `scorer_e`: the mean score x100 of each length bucket, rounded to 2 decimals (`NaN` for an empty
/// bucket, as numpy's mean of nothing).
pub fn bucket_scores(scored: impl IntoIterator<Item = (u64, f64)>) -> BTreeMap<&'static str, f64> {
    let mut sums: BTreeMap<&'static str, (f64, usize)> = ["0-4k", "4-8k", "8k+"]
        .into_iter()
        .map(|b| (b, (0.0, 0)))
        .collect();
    for (length, score) in scored {
        let e = sums.get_mut(length_bucket(length)).expect("known bucket");
        e.0 += score;
        e.1 += 1;
    }
    sums.into_iter()
        .map(|(b, (s, n))| {
            let mean = if n == 0 {
                f64::NAN
            } else {
                100.0 * s / n as f64
            };
            (b, crate::metrics::choice::round_half_even(mean, 2))
        })
        .collect()
}

#[cfg(test)]
mod tests;

//! SCBench (microsoft/SCBench, <https://arxiv.org/abs/2412.10319>): 12 shared-context tasks, each
//! record one long `context` and `multi_turns: [{input, answer, ...}]`, from the hub's
//! `data/{task}.jsonl`, its parquet export, or a local directory of `{task}.jsonl`.
//!
//! Both of SCBench's modes, without a chat template (`eval_utils.py`):
//! - `multi_turn` ([`TurnMode::MultiTurn`]): the first turn is `multiturn_templates` split after
//!   the context; follow-ups are `multiturn_follow_up_templates`, which begin with the previous
//!   turn's gold answer (`{pre_ans}`, Python's `str()` of it);
//! - `multi_request` ([`TurnMode::Independent`]): the context template alone is compressed and
//!   every query is appended to it on its own (`create_scdq_prompt`).
//!
//! Scored per turn with SCBench's scorers (`compute_scores.py`): see [`metric`]. Decode lengths
//! are `DATA_NAME_TO_MAX_NEW_TOKENS`, per turn for the two mixed tasks.

pub mod prompts;
mod turn;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::prompt::ChatTemplateMode;
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::datafile::record;
use crate::longbench::text_field;
use crate::records::{invalid, LineProblem};
use crate::records::{line_error, read_records};
use crate::source::{hashed, parquet_path, DataSource, LoadOptions, SourceError};
use crate::{hub, truncate_middle, DataFile, Loaded, Metric, Sample, TokenCounter, Turn, TurnMode};
use turn::RawTurn;

/// The 12 SCBench tasks.
pub const TASKS: &[&str] = &[
    "scbench_kv",
    "scbench_prefix_suffix",
    "scbench_vt",
    "scbench_repoqa",
    "scbench_qa_eng",
    "scbench_qa_chn",
    "scbench_choice_eng",
    "scbench_many_shot",
    "scbench_summary",
    "scbench_mf",
    "scbench_summary_with_needles",
    "scbench_repoqa_and_kv",
];

pub const DEFAULT_REPO: &str = "microsoft/SCBench";

/// The commit of [`DEFAULT_REPO`] that `source: hub` reads (`data/{task}.jsonl`) unless
/// `revision:` says otherwise: "Feature(SCBench): update readme", the last commit that touched
/// `data/` (all twelve `scbench_*.jsonl`, as `main` has them).
/// Source: <https://huggingface.co/datasets/microsoft/SCBench/tree/f43226eed3a026f927a67c60739c228390d959c2/data>
/// (and `tree/main/data`, whose last commit is f43226e).
pub const DEFAULT_REVISION: &str = "f43226eed3a026f927a67c60739c228390d959c2";

/// The commit of the hub's parquet export (`refs/convert/parquet`) that `source: parquet` reads
/// unless `revision:` says otherwise: the converter's "Update parquet files" of Dec 24, 2024, the
/// newest in the export's history, after every config moved from `train/` to `test/`.
/// Source: <https://huggingface.co/datasets/microsoft/SCBench/commits/70f4e5c38e8454b86fb4ed0a235b840bda72aa70>
/// and <https://huggingface.co/datasets/microsoft/SCBench/tree/70f4e5c38e8454b86fb4ed0a235b840bda72aa70/scbench_kv/test>.
pub const PARQUET_DEFAULT_REVISION: &str = "70f4e5c38e8454b86fb4ed0a235b840bda72aa70";

/// The scorer of a task, or of a turn's own task in the mixed ones (`scbench_summary`,
/// `scbench_passkey`, `scbench_repoqa`, `scbench_kv`): `compute_scores.py`'s mapping through
/// InfiniteBench's `get_score_one_*`.
pub fn metric(task: &str) -> Option<Metric> {
    Some(match task {
        "scbench_kv" | "scbench_prefix_suffix" => Metric::Substring,
        "scbench_vt" => Metric::StringMatchAllRounded,
        "scbench_repoqa" => Metric::RepoQa,
        "scbench_qa_eng" | "scbench_many_shot" => Metric::UpperSubstring,
        "scbench_qa_chn" => Metric::QaF1ZhChars,
        "scbench_choice_eng" => Metric::ChoiceEng,
        "scbench_summary" => Metric::RougeLsum,
        "scbench_mf" => Metric::MathFind,
        "scbench_passkey" => Metric::FirstInt,
        _ => return None,
    })
}

/// `DATA_NAME_TO_MAX_NEW_TOKENS` of a task or of a mixed task's turn task.
pub fn max_new_tokens(task: &str, turn_task: Option<&str>) -> usize {
    match (task, turn_task) {
        ("scbench_summary_with_needles", Some("scbench_passkey")) => 15,
        ("scbench_summary_with_needles", _) => 800,
        ("scbench_repoqa_and_kv", Some("scbench_kv")) => 80,
        ("scbench_repoqa_and_kv", _) => 1024,
        ("scbench_choice_eng" | "scbench_qa_eng" | "scbench_qa_chn", _) => 40,
        ("scbench_kv" | "scbench_prefix_suffix", _) => 150,
        ("scbench_mf", _) => 5,
        ("scbench_repoqa", _) => 1024,
        ("scbench_summary", _) => 200,
        ("scbench_vt", _) => 30,
        ("scbench_many_shot", _) => 10,
        _ => 128,
    }
}

/// SCBench's two ways to share a context.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScbenchMode {
    #[default]
    MultiTurn,
    MultiRequest,
}

/// The `scbench` dataset as written in an experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScbenchConfig {
    #[serde(default = "default_tasks")]
    pub tasks: Vec<String>,
    #[serde(default)]
    pub mode: ScbenchMode,
    #[serde(default)]
    pub source: DataSource,
    #[serde(default = "default_repo")]
    pub repo: String,
    /// Revision of `repo` (a commit, branch or tag) for `source: hub` or `parquet`; default:
    /// [`DEFAULT_REVISION`] (hub), [`PARQUET_DEFAULT_REVISION`] (parquet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Middle-truncate the first prompt to this many tokens (SCBench's `max_input_length`:
    /// `max_seq_length - max_new_tokens * turns`, minus 1000 in multi-request mode).
    #[serde(default)]
    pub max_length: Option<usize>,
    /// Keep the first turns only (`--max_turns`).
    #[serde(default)]
    pub max_turns: Option<usize>,
    /// At most this many samples per task.
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

impl ScbenchConfig {
    pub fn local(dir: impl Into<PathBuf>, tasks: &[&str], mode: ScbenchMode) -> Self {
        ScbenchConfig {
            chat_template: Default::default(),
            tasks: tasks.iter().map(|t| t.to_string()).collect(),
            mode,
            source: DataSource::Path(dir.into()),
            repo: default_repo(),
            revision: None,
            max_length: None,
            max_turns: None,
            limit: None,
        }
    }

    /// The revision of `repo` read: `revision:`, else the source's default; `None` for local
    /// files.
    pub fn effective_revision(&self) -> Option<&str> {
        let default = match self.source {
            DataSource::Path(_) => return None,
            DataSource::Hub => DEFAULT_REVISION,
            DataSource::Parquet => PARQUET_DEFAULT_REVISION,
        };
        Some(self.revision.as_deref().unwrap_or(default))
    }

    pub fn load(
        &self,
        counter: &dyn TokenCounter,
        opts: &LoadOptions,
    ) -> Result<Loaded, SourceError> {
        if self.tasks.is_empty() {
            return Err(config_error(
                "`tasks` is empty; expected SCBench task names".into(),
            ));
        }
        for t in &self.tasks {
            if !TASKS.contains(&t.as_str()) {
                return Err(config_error(format!(
                    "unknown task `{t}`; expected one of {}",
                    TASKS.join(", ")
                )));
            }
        }
        let mut loaded = Loaded::default();
        let revision = self.effective_revision().unwrap_or_default();
        for task in &self.tasks {
            let (path, file) = match &self.source {
                DataSource::Path(dir) => {
                    let p = if dir.is_file() {
                        dir.clone()
                    } else {
                        dir.join(format!("{task}.jsonl"))
                    };
                    let f = match p.exists() {
                        true => Some(hashed(&p, || DataFile::local(&p))?),
                        false => None,
                    };
                    (p, f)
                }
                DataSource::Hub | DataSource::Parquet => {
                    let name = match self.source {
                        DataSource::Parquet => parquet_path(task),
                        _ => format!("data/{task}.jsonl"),
                    };
                    let p = hub::dataset_file(&self.repo, revision, &name, &opts.hub)?;
                    let f = hashed(&p, || DataFile::hub(&self.repo, revision, &name, &p))?;
                    (p, Some(f))
                }
            };
            if let Some(f) = file {
                record(&mut loaded.files, f);
            }
            let (unit, records) = read_records(&path, None)?;
            let mut samples = Vec::new();
            for r in records {
                if self.limit.is_some_and(|l| samples.len() >= l) {
                    break;
                }
                match r.object.and_then(|o| self.sample(task, o, r.line, counter)) {
                    Ok(s) => samples.push(s),
                    Err(p) => loaded.errors.push(line_error(&path, unit, r.line, p)),
                }
            }
            share_repo_needles(&mut samples);
            loaded.samples.extend(samples);
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
        let context = context_field(task, &mut o)?;
        let turns = match o.remove("multi_turns") {
            Some(Value::Array(t)) if !t.is_empty() => t,
            None => {
                return Err(LineProblem::Missing {
                    field: "multi_turns".into(),
                    expected: "a non-empty list of {input, answer} objects",
                })
            }
            Some(v) => {
                return Err(invalid(
                    "multi_turns",
                    &v,
                    "a non-empty list of {input, answer} objects",
                ))
            }
        };
        let n = self.max_turns.map_or(turns.len(), |m| m.min(turns.len()));
        let mut raw = Vec::new();
        for (i, t) in turns.into_iter().take(n).enumerate() {
            raw.push(RawTurn::parse(t, i)?);
        }
        let id = match o.get("id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => format!("{task}-{line}"),
        };
        let (ctx, turns) = match self.mode {
            ScbenchMode::MultiTurn => multi_turn(task, &context, &raw)?,
            ScbenchMode::MultiRequest => multi_request(task, &context, &raw)?,
        };
        let ctx = match self.max_length {
            Some(max) => truncate_first_prompt(counter, ctx, &turns[0].question, max),
            None => ctx,
        };
        let mut sample = Sample::single(
            id,
            ctx,
            turns[0].clone(),
            task,
            metric_of(task, &raw[0]),
            max_new_tokens(task, None),
        );
        sample.turns = turns;
        sample.mode = match self.mode {
            ScbenchMode::MultiTurn => TurnMode::MultiTurn,
            ScbenchMode::MultiRequest => TurnMode::Independent,
        };
        for k in ["lang", "repo"] {
            if let Some(v) = o.remove(k) {
                sample.meta.insert(k.into(), v);
            }
        }
        Ok(sample)
    }
}

/// The record's `context`: a string, or for `scbench_mf` (whose hub records hold the numbers as a
/// JSON list) the list as SCBench's prompt shows it: `str.format` of the list, Python's `str()`,
/// `[3, 1, 4]`.
fn context_field(task: &str, o: &mut Map<String, Value>) -> Result<String, LineProblem> {
    match o.get("context") {
        Some(Value::Array(items)) if task == "scbench_mf" => {
            if let Some(v) = items.iter().find(|v| !v.is_number()) {
                return Err(invalid("context[]", v, "a number (scbench_mf)"));
            }
            let list = o.remove("context").expect("present");
            Ok(prompts::python_str(&list))
        }
        _ => text_field(o, "context"),
    }
}

fn config_error(message: String) -> SourceError {
    SourceError::Config {
        dataset: "scbench",
        message,
    }
}

fn metric_of(task: &str, turn: &RawTurn) -> Metric {
    turn.task
        .as_deref()
        .and_then(metric)
        .or_else(|| metric(task))
        .unwrap_or(Metric::Substring)
}

/// `re.findall(r"The .+ is", input)[0].lower()[:-3]` as `What is {target}?`.
fn mf_prefix(input: &str) -> Result<String, LineProblem> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"The .+ is").expect("valid regex"));
    let m = re.find(input).ok_or_else(|| LineProblem::Invalid {
        field: "multi_turns[].input".into(),
        found: format!("{input:?}"),
        expected: "a question containing \"The ... is\" (scbench_mf)",
    })?;
    let lower = m.as_str().to_lowercase();
    Ok(format!("What is {}?", &lower[..lower.len() - 3]))
}

fn make_turn(task: &str, raw: &RawTurn, question: String) -> Result<Turn, LineProblem> {
    let (answers, iterate) = raw.answers(task)?;
    let mut turn = Turn::new(question, answers);
    let own = metric_of(task, raw);
    if metric(task) != Some(own) {
        turn.metric = Some(own);
    }
    let n = max_new_tokens(task, raw.task.as_deref());
    if n != max_new_tokens(task, None) {
        turn.max_new_tokens = Some(n);
    }
    if iterate {
        turn.meta.insert("iterate_characters".into(), true.into());
    }
    if let Some(name) = &raw.name {
        turn.meta.insert("name".into(), name.clone().into());
    }
    if let Some(t) = &raw.task {
        turn.meta.insert("task".into(), t.clone().into());
    }
    Ok(turn)
}

/// `create_multiturn_prompt` without a chat template, the first prompt split after the context.
fn multi_turn(
    task: &str,
    context: &str,
    turns: &[RawTurn],
) -> Result<(String, Vec<Turn>), LineProblem> {
    let mut out = Vec::new();
    let mut head = String::new();
    for (i, t) in turns.iter().enumerate() {
        let mut values: Vec<(&str, &str)> = vec![("input", t.input.as_str())];
        values.extend(t.choice_values());
        let prefix = if task == "scbench_mf" {
            mf_prefix(&t.input)?
        } else {
            String::new()
        };
        values.push(("prefix", &prefix));
        let pre_ans;
        let question = if i == 0 {
            let template = prompts::first_turn(task);
            let at = template
                .find("{context}")
                .expect("templates hold the context")
                + "{context}".len();
            head = prompts::fill(
                &template[..at],
                &[("context", context), ("prefix", &prefix)],
            );
            prompts::fill(&template[at..], &values)
        } else {
            pre_ans = prompts::python_str(&turns[i - 1].answer);
            values.push(("pre_ans", &pre_ans));
            prompts::fill(prompts::follow_up(task), &values)
        };
        let mut turn = make_turn(task, t, question)?;
        if i > 0 {
            turn.previous_answer = Some(prompts::python_str(&turns[i - 1].answer));
        }
        out.push(turn);
    }
    Ok((head, out))
}

/// `create_scdq_prompt` without a chat template.
fn multi_request(
    task: &str,
    context: &str,
    turns: &[RawTurn],
) -> Result<(String, Vec<Turn>), LineProblem> {
    // scbench_mf's shared context is prefixed with the *first* turn's raw input
    let head = prompts::fill(
        prompts::request_context(task),
        &[("context", context), ("prefix", &turns[0].input)],
    );
    let mut out = Vec::new();
    for t in turns {
        let prefix = if task == "scbench_mf" {
            mf_prefix(&t.input)?
        } else {
            String::new()
        };
        let mut values: Vec<(&str, &str)> = vec![("input", t.input.as_str()), ("prefix", &prefix)];
        values.extend(t.choice_values());
        out.push(make_turn(
            task,
            t,
            prompts::fill(prompts::request_query(task), &values),
        )?);
    }
    Ok((head, out))
}

/// SCBench truncates the first prompt (context and, in multi-turn mode, the first question) in
/// the middle; the first question is kept whole here.
fn truncate_first_prompt(
    counter: &dyn TokenCounter,
    context: String,
    first_question: &str,
    max: usize,
) -> String {
    let full = format!("{context}{first_question}");
    let t = truncate_middle(counter, &full, max);
    match t.strip_suffix(first_question) {
        Some(c) => c.to_string(),
        None => truncate_middle(
            counter,
            &context,
            max.saturating_sub(counter.count_tokens(first_question)),
        ),
    }
}

/// repoqa scores a prediction against every function asked about in the same repository across
/// the file (`needle_by_repo`); each sample gets that list as `needles`.
fn share_repo_needles(samples: &mut [Sample]) {
    let mut by_repo: HashMap<String, Vec<Value>> = HashMap::new();
    for s in samples.iter() {
        let repo = s
            .meta
            .get("repo")
            .and_then(|r| r.as_str())
            .unwrap_or(&s.id)
            .to_string();
        for t in &s.turns {
            let is_repoqa = t.metric.unwrap_or(s.metric) == Metric::RepoQa;
            if let (true, Some(name)) = (is_repoqa, t.meta.get("name")) {
                by_repo
                    .entry(repo.clone())
                    .or_default()
                    .push(serde_json::json!({"name": name, "needle": t.answers[0]}));
            }
        }
    }
    for s in samples.iter_mut() {
        let repo = s
            .meta
            .get("repo")
            .and_then(|r| r.as_str())
            .unwrap_or(&s.id)
            .to_string();
        if let Some(n) = by_repo.get(&repo) {
            s.meta.insert("needles".into(), Value::Array(n.clone()));
        }
    }
}

#[cfg(test)]
mod tests;

//! Generic datasets: one sample per JSONL line (or per element of a `.json` list, or per `.parquet`
//! row), `{"context", "question", "answers"}`.
//!
//! `answers` is a string or a list of strings. Optional per-line fields: `id` (string or integer;
//! default `{file stem}-{line}`), `task`, `metric` (a [`Metric`] name), `max_new_tokens` and
//! `answer_prefix`; lines without them take the config's defaults. Field names of the three
//! required fields and of the id can be remapped ([`FieldMap`]); every other field is kept in the
//! sample's `meta`.
//!
//! `answer_prefix` (a string, as in kvpress's datasets) is the start of the answer, the turn's
//! [`Turn::answer_prefix`]: with a chat template it begins the assistant's message, after the
//! generation prompt; in plain text it follows the formatted question directly, with nothing in
//! between. The default `question_template` ends in its own `"\nAnswer:"` cue; data that brings
//! its answer prefix usually wants `question_template: "\n\nQuestion: {question}\n"` (kvpress's
//! plain-text layout: question, newline, answer prefix).
//!
//! Errors name the file, the line and the field, and say what was expected. [`JsonlConfig::load`]
//! stops at the first one; [`JsonlConfig::load_lenient`] returns the good samples with the per-line
//! errors, so a runner can report bad lines and go on (an unreadable file still fails).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::PathBuf;

use crate::prompt::ChatTemplateMode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::records::{describe, invalid, json_problem};
pub use crate::records::{LineError, LineProblem, Loaded, Unit};
use crate::{Metric, Sample, Turn};

/// Names of the fields a line's values are read from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldMap {
    pub context_field: String,
    pub question_field: String,
    pub answers_field: String,
    pub id_field: String,
}

impl Default for FieldMap {
    fn default() -> Self {
        FieldMap {
            context_field: "context".into(),
            question_field: "question".into(),
            answers_field: "answers".into(),
            id_field: "id".into(),
        }
    }
}

/// The `jsonl` dataset as written in an experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlConfig {
    pub path: PathBuf,
    #[serde(default)]
    pub fields: FieldMap,
    /// Keep at most this many samples (the first good ones).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Task of lines without `task`; default: the file stem.
    #[serde(default)]
    pub task: Option<String>,
    /// Metric of lines without `metric`.
    #[serde(default = "default_metric")]
    pub metric: Metric,
    /// Decode length of lines without `max_new_tokens`.
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    /// The sample's context: `{context}` is replaced by the line's context.
    #[serde(default = "default_context_template")]
    pub context_template: String,
    /// The turn's question, appended after the compressed context: `{question}` is replaced by
    /// the line's question. The default ends in an answer prefix, which completion-style models
    /// need.
    #[serde(default = "default_question_template")]
    pub question_template: String,
    /// Whether prompts go through the model's chat template: `auto` (where the benchmark's
    /// official code applies one), `true` or `false`. Applied by the harness.
    #[serde(default, skip_serializing_if = "ChatTemplateMode::is_auto")]
    pub chat_template: ChatTemplateMode,
}

fn default_metric() -> Metric {
    Metric::QaF1
}

/// LongBench's budget for its QA tasks.
fn default_max_new_tokens() -> usize {
    32
}

fn default_context_template() -> String {
    "{context}".into()
}

fn default_question_template() -> String {
    "\n\nQuestion: {question}\nAnswer:".into()
}

impl JsonlConfig {
    /// A config with every default, reading `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JsonlConfig {
            chat_template: Default::default(),
            path: path.into(),
            fields: FieldMap::default(),
            limit: None,
            task: None,
            metric: default_metric(),
            max_new_tokens: default_max_new_tokens(),
            context_template: default_context_template(),
            question_template: default_question_template(),
        }
    }
}

/// Why a JSONL dataset could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Line(#[from] LineError),
    #[error("{}: no samples; expected one JSON object per line", path.display())]
    NoSamples { path: PathBuf },
    #[error("jsonl {}: `{field}` {template:?} does not contain `{placeholder}`", path.display())]
    Template {
        path: PathBuf,
        field: &'static str,
        template: String,
        placeholder: &'static str,
    },
    #[error("jsonl {}: `fields` maps two fields to `{}`; expected distinct names", .1.display(), .0)]
    SameField(String, PathBuf),
    #[error("{0}")]
    Records(String),
}

const ANSWERS_EXPECTED: &str = "a string or a list of strings";

impl JsonlConfig {
    /// Every sample of the file, or the first error.
    pub fn load(&self) -> Result<Vec<Sample>, JsonlError> {
        let samples = self.load_records(true)?.samples;
        if samples.is_empty() && self.limit != Some(0) {
            return Err(JsonlError::NoSamples {
                path: self.path.clone(),
            });
        }
        Ok(samples)
    }

    /// The good samples and the per-line errors; fails only when the file cannot be read or the
    /// config is invalid.
    pub fn load_lenient(&self) -> Result<Loaded, JsonlError> {
        self.load_records(false)
    }

    /// JSONL, a `.json` list, or `.parquet` rows ([`crate::records::read_records`]).
    fn load_records(&self, strict: bool) -> Result<Loaded, JsonlError> {
        let is_jsonl = !matches!(
            self.path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("json" | "parquet")
        );
        if is_jsonl {
            let bytes = self.read()?;
            return self.parse(&bytes, strict);
        }
        self.check()?;
        let (unit, records) =
            crate::records::read_records(&self.path, None).map_err(|e| match e {
                crate::records::RecordsError::Read { path, source } => {
                    JsonlError::Read { path, source }
                }
                e => JsonlError::Records(e.to_string()),
            })?;
        let stem = self.stem();
        let mut loaded = Loaded::default();
        let mut ids: HashMap<String, usize> = HashMap::new();
        for r in records {
            if self
                .limit
                .is_some_and(|limit| loaded.samples.len() >= limit)
            {
                break;
            }
            let result = r
                .object
                .and_then(|o| self.parse_object(o, r.line, &stem))
                .and_then(|sample| match ids.get(&sample.id) {
                    Some(&first) => Err(LineProblem::DuplicateId {
                        id: sample.id.clone(),
                        first,
                    }),
                    None => Ok(sample),
                });
            match result {
                Ok(sample) => {
                    ids.insert(sample.id.clone(), r.line);
                    loaded.samples.push(sample);
                }
                Err(problem) => {
                    let error = LineError {
                        path: self.path.clone(),
                        line: r.line,
                        unit,
                        problem,
                    };
                    if strict {
                        return Err(error.into());
                    }
                    loaded.errors.push(error);
                }
            }
        }
        Ok(loaded)
    }

    fn stem(&self) -> String {
        self.path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("jsonl")
            .to_string()
    }

    /// As [`JsonlConfig::load_lenient`], for file contents already in memory; errors still name
    /// `self.path`.
    pub fn parse_lenient(&self, bytes: &[u8]) -> Result<Loaded, JsonlError> {
        self.parse(bytes, false)
    }

    fn read(&self) -> Result<Vec<u8>, JsonlError> {
        fs::read(&self.path).map_err(|source| JsonlError::Read {
            path: self.path.clone(),
            source,
        })
    }

    fn check(&self) -> Result<(), JsonlError> {
        let f = &self.fields;
        let names = [
            &f.context_field,
            &f.question_field,
            &f.answers_field,
            &f.id_field,
        ];
        for (i, a) in names.iter().enumerate() {
            if names[..i].contains(a) {
                return Err(JsonlError::SameField(a.to_string(), self.path.clone()));
            }
        }
        for (field, template, placeholder) in [
            ("context_template", &self.context_template, "{context}"),
            ("question_template", &self.question_template, "{question}"),
        ] {
            if !template.contains(placeholder) {
                return Err(JsonlError::Template {
                    path: self.path.clone(),
                    field,
                    template: template.clone(),
                    placeholder,
                });
            }
        }
        Ok(())
    }

    /// Parses every line; with `strict`, returns the first line error as `Err`.
    fn parse(&self, bytes: &[u8], strict: bool) -> Result<Loaded, JsonlError> {
        self.check()?;
        let stem = self
            .path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("jsonl")
            .to_string();
        let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
        let mut loaded = Loaded::default();
        let mut ids: HashMap<String, usize> = HashMap::new();
        for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            if self
                .limit
                .is_some_and(|limit| loaded.samples.len() >= limit)
            {
                break;
            }
            let line = i + 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let result =
                self.parse_line(raw, line, &stem)
                    .and_then(|sample| match ids.get(&sample.id) {
                        Some(&first) => Err(LineProblem::DuplicateId {
                            id: sample.id.clone(),
                            first,
                        }),
                        None => Ok(sample),
                    });
            match result {
                Ok(sample) => {
                    ids.insert(sample.id.clone(), line);
                    loaded.samples.push(sample);
                }
                Err(problem) => {
                    let error = LineError {
                        path: self.path.clone(),
                        line,
                        unit: Unit::Line,
                        problem,
                    };
                    if strict {
                        return Err(error.into());
                    }
                    loaded.errors.push(error);
                }
            }
        }
        Ok(loaded)
    }

    fn parse_line(&self, raw: &[u8], line: usize, stem: &str) -> Result<Sample, LineProblem> {
        let text = std::str::from_utf8(raw).map_err(|_| LineProblem::Utf8)?;
        let value: Value = serde_json::from_str(text).map_err(json_problem)?;
        let Value::Object(object) = value else {
            return Err(LineProblem::NotObject(describe(&value)));
        };
        self.parse_object(object, line, stem)
    }

    fn parse_object(
        &self,
        mut object: Map<String, Value>,
        line: usize,
        stem: &str,
    ) -> Result<Sample, LineProblem> {
        let f = &self.fields;
        let context = required_string(&mut object, &f.context_field)?;
        let question = required_string(&mut object, &f.question_field)?;
        // Nothing to prefill or nothing to ask: the line is skipped (named), never the run.
        for (field, text) in [(&f.context_field, &context), (&f.question_field, &question)] {
            if text.trim().is_empty() {
                return Err(invalid(
                    field,
                    &Value::String(text.clone()),
                    "a non-empty string",
                ));
            }
        }
        let answers = answers(&mut object, &f.answers_field)?;
        let id = match object.remove(&f.id_field) {
            None | Some(Value::Null) => format!("{stem}-{line}"),
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
            Some(v) => return Err(invalid(&f.id_field, &v, "a non-empty string or an integer")),
        };
        let task = match optional(&mut object, "task") {
            None => self.task.clone().unwrap_or_else(|| stem.to_string()),
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(v) => return Err(invalid("task", &v, "a non-empty string")),
        };
        let metric = match optional(&mut object, "metric") {
            None => self.metric,
            Some(Value::String(s)) => {
                s.parse::<Metric>()
                    .map_err(|_| LineProblem::UnknownMetric {
                        field: "metric".into(),
                        found: s,
                        expected: Metric::ALL
                            .iter()
                            .map(|m| m.name())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?
            }
            Some(v) => return Err(invalid("metric", &v, "a metric name")),
        };
        let max_new_tokens = match optional(&mut object, "max_new_tokens") {
            None => self.max_new_tokens,
            Some(v) => match v
                .as_u64()
                .filter(|&n| n > 0)
                .and_then(|n| usize::try_from(n).ok())
            {
                Some(n) => n,
                None => return Err(invalid("max_new_tokens", &v, "a positive integer")),
            },
        };
        let answer_prefix = match optional(&mut object, "answer_prefix") {
            None => String::new(),
            Some(Value::String(s)) => s,
            Some(v) => return Err(invalid("answer_prefix", &v, "a string")),
        };
        let turn = Turn::new(
            self.question_template.replace("{question}", &question),
            answers,
        )
        .with_answer_prefix(answer_prefix);
        let context = self.context_template.replace("{context}", &context);
        let mut sample = Sample::single(id, context, turn, task, metric, max_new_tokens);
        sample.meta = object;
        Ok(sample)
    }
}

/// Removes an optional field; `null` counts as absent.
pub(crate) fn optional(object: &mut Map<String, Value>, field: &str) -> Option<Value> {
    object.remove(field).filter(|v| !v.is_null())
}

pub(crate) fn required_string(
    object: &mut Map<String, Value>,
    field: &str,
) -> Result<String, LineProblem> {
    match object.remove(field) {
        None => Err(LineProblem::Missing {
            field: field.into(),
            expected: "a string",
        }),
        Some(Value::String(s)) => Ok(s),
        Some(v) => Err(invalid(field, &v, "a string")),
    }
}

pub(crate) fn answers(
    object: &mut Map<String, Value>,
    field: &str,
) -> Result<Vec<String>, LineProblem> {
    match object.remove(field) {
        None => Err(LineProblem::Missing {
            field: field.into(),
            expected: ANSWERS_EXPECTED,
        }),
        Some(Value::String(s)) if !s.is_empty() => Ok(vec![s]),
        Some(Value::Array(items)) if !items.is_empty() => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) if !s.is_empty() => Ok(s),
                v => Err(invalid(&format!("{field}[{i}]"), &v, "a non-empty string")),
            })
            .collect(),
        Some(v) => Err(invalid(
            field,
            &v,
            "a non-empty string or a non-empty list of strings",
        )),
    }
}

#[cfg(test)]
mod tests;

//! LongBench v2 (THUDM/LongBench-v2, <https://arxiv.org/abs/2412.15204>): 503 multiple-choice
//! questions over long contexts, from the hub's `data.json` or a local `.json`/`.jsonl` file.
//!
//! Prompt: the official 0-shot template (`prompts/0shot.txt`, verbatim beside this module), with
//! `context`, `question` and the four choices stripped and substituted in `pred.py`'s order; the
//! part up to `</text>` is compressed, the question and choices are appended. Middle truncation as
//! `pred.py`: `ids[:max//2] + ids[-max//2:]` (Python's floor division gives the tail the extra
//! token of an odd `max`), decoded once. Scored by [`Metric::Choice`]; [`accuracy`] reports
//! overall, easy/hard and short/medium/long as `result.py`.

use std::path::PathBuf;

use crate::prompt::ChatTemplateMode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::longbench::{string_field, text_field};
use crate::metrics::strip_python;
use crate::records::LineProblem;
use crate::records::{line_error, read_records};
use crate::source::{hashed, DataSource, LoadOptions, SourceError};
use crate::{hub, DataFile, Loaded, Metric, Sample, TokenCounter, Turn};

pub const TASK: &str = "longbench_v2";
pub const DEFAULT_REPO: &str = "THUDM/LongBench-v2";
/// The commit of [`DEFAULT_REPO`] read unless `revision:` says otherwise: "Update README.md" by
/// the authors, with the 465 MB `data.json`.
/// Source: <https://huggingface.co/datasets/THUDM/LongBench-v2/tree/2b48e494f2c7a2f0af81aae178e05c7e1dde0fe9>.
pub const DEFAULT_REVISION: &str = "2b48e494f2c7a2f0af81aae178e05c7e1dde0fe9";
/// `pred.py`'s `max_new_tokens` without chain of thought.
pub const MAX_NEW_TOKENS: usize = 128;
const TEMPLATE: &str = include_str!("longbench/v2_0shot.txt");
/// Where the appended part of the template begins.
const QUESTION_START: &str = "What is the correct answer to this question:";

/// The `longbench_v2` dataset as written in an experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongBenchV2Config {
    #[serde(default)]
    pub source: DataSource,
    #[serde(default = "default_repo")]
    pub repo: String,
    /// Revision of `repo` (a commit, branch or tag); default [`DEFAULT_REVISION`].
    #[serde(default = "default_revision")]
    pub revision: String,
    /// Middle-truncate prompts longer than this many tokens (`pred.py`'s `model2maxlen`).
    #[serde(default)]
    pub max_length: Option<usize>,
    #[serde(default)]
    pub limit: Option<usize>,
    /// Whether prompts go through the model's chat template: `auto` (where the benchmark's
    /// official code applies one), `true` or `false`. Applied by the harness.
    #[serde(default, skip_serializing_if = "ChatTemplateMode::is_auto")]
    pub chat_template: ChatTemplateMode,
}

fn default_repo() -> String {
    DEFAULT_REPO.into()
}

fn default_revision() -> String {
    DEFAULT_REVISION.into()
}

impl LongBenchV2Config {
    pub fn local(path: impl Into<PathBuf>) -> Self {
        LongBenchV2Config {
            chat_template: Default::default(),
            source: DataSource::Path(path.into()),
            repo: default_repo(),
            revision: default_revision(),
            max_length: None,
            limit: None,
        }
    }

    pub fn load(
        &self,
        counter: &dyn TokenCounter,
        opts: &LoadOptions,
    ) -> Result<Loaded, SourceError> {
        let mut loaded = Loaded::default();
        let path = match &self.source {
            DataSource::Path(p) => {
                if p.exists() {
                    loaded.files.push(hashed(p, || DataFile::local(p))?);
                }
                p.clone()
            }
            DataSource::Hub => {
                let p = hub::dataset_file(&self.repo, &self.revision, "data.json", &opts.hub)?;
                let f = hashed(&p, || {
                    DataFile::hub(&self.repo, &self.revision, "data.json", &p)
                })?;
                loaded.files.push(f);
                p
            }
            DataSource::Parquet => {
                return Err(SourceError::Config {
                    dataset: TASK,
                    message: "`source: parquet` is not offered; use `hub` (data.json) or a path"
                        .into(),
                })
            }
        };
        let (unit, records) = read_records(&path, None)?;
        for r in records {
            if self.limit.is_some_and(|l| loaded.samples.len() >= l) {
                break;
            }
            match r.object.and_then(|o| self.sample(o, r.line, counter)) {
                Ok(s) => loaded.samples.push(s),
                Err(p) => loaded.errors.push(line_error(&path, unit, r.line, p)),
            }
        }
        Ok(loaded)
    }

    fn sample(
        &self,
        mut o: Map<String, Value>,
        line: usize,
        counter: &dyn TokenCounter,
    ) -> Result<Sample, LineProblem> {
        let context = text_field(&mut o, "context")?;
        let question = text_field(&mut o, "question")?;
        let mut choices = Vec::new();
        for k in ["choice_A", "choice_B", "choice_C", "choice_D"] {
            choices.push(string_field(&mut o, k)?);
        }
        let answer = string_field(&mut o, "answer")?;
        if !matches!(answer.as_str(), "A" | "B" | "C" | "D") {
            return Err(LineProblem::Invalid {
                field: "answer".into(),
                found: format!("{answer:?}"),
                expected: "one of A, B, C, D",
            });
        }
        let (ctx, q) = prompt(&context, &question, &choices, self.max_length, counter);
        let id = match o.get("_id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => format!("{TASK}-{line}"),
        };
        let mut sample = Sample::single(
            id,
            ctx,
            Turn::new(q, vec![answer]),
            TASK,
            Metric::Choice,
            MAX_NEW_TOKENS,
        );
        for k in ["difficulty", "length", "domain", "sub_domain"] {
            if let Some(v) = o.remove(k) {
                sample.meta.insert(k.into(), v);
            }
        }
        Ok(sample)
    }
}

/// The 0-shot prompt split before the question, truncated as `pred.py` when `max_length` is set.
pub fn prompt(
    context: &str,
    question: &str,
    choices: &[String],
    max_length: Option<usize>,
    counter: &dyn TokenCounter,
) -> (String, String) {
    // pred.py: template.replace('$DOC$', ...).replace('$Q$', ...).replace('$C_A$', ...)...
    let fill = |t: &str| -> String {
        let mut s = t.replace("$DOC$", strip_python(context));
        s = s.replace("$Q$", strip_python(question));
        for (p, c) in ["$C_A$", "$C_B$", "$C_C$", "$C_D$"].iter().zip(choices) {
            s = s.replace(p, strip_python(c));
        }
        s
    };
    let at = TEMPLATE
        .find(QUESTION_START)
        .expect("template has the question");
    let (head, tail) = (fill(&TEMPLATE[..at]), fill(&TEMPLATE[at..]));
    let Some(max) = max_length else {
        return (head, tail);
    };
    let full = format!("{head}{tail}");
    let truncated = match counter.encode(&full) {
        Some(ids) if ids.len() > max => {
            // ids[:max//2] + ids[-max//2:], with Python's floor division on -max
            let tail_n = max.div_ceil(2);
            let mut kept = ids[..max / 2].to_vec();
            kept.extend_from_slice(&ids[ids.len() - tail_n..]);
            counter.decode(&kept)
        }
        Some(_) => Some(full.clone()),
        None => None,
    }
    .unwrap_or_else(|| crate::truncate_middle(counter, &full, max));
    match truncated.strip_suffix(tail.as_str()) {
        Some(h) => (h.to_string(), tail),
        None => {
            let left = max.saturating_sub(counter.count_tokens(&tail));
            (crate::truncate_middle(counter, &head, left), tail)
        }
    }
}

/// `result.py`'s row: accuracy x100 rounded to 1 decimal, overall and by difficulty (`easy`,
/// anything else is `hard`) and length (`short`, `medium`, anything else is `long`); `NaN` for an
/// empty group. Input: `(difficulty, length, score)` per item.
pub fn accuracy<'a>(
    items: impl IntoIterator<Item = (&'a str, &'a str, f64)>,
) -> Vec<(&'static str, f64)> {
    let names = ["overall", "easy", "hard", "short", "medium", "long"];
    let mut sums = [(0.0f64, 0usize); 6];
    for (difficulty, length, score) in items {
        let d = if difficulty == "easy" { 1 } else { 2 };
        let l = match length {
            "short" => 3,
            "medium" => 4,
            _ => 5,
        };
        for i in [0, d, l] {
            sums[i].0 += score;
            sums[i].1 += 1;
        }
    }
    names
        .iter()
        .zip(sums)
        .map(|(n, (s, c))| {
            let v = if c == 0 {
                f64::NAN
            } else {
                100.0 * s / c as f64
            };
            (*n, crate::metrics::choice::round_half_even(v, 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::temp_file;
    use crate::WhitespaceTokens;

    fn record(id: &str, answer: &str) -> String {
        serde_json::json!({
            "_id": id, "domain": "d", "sub_domain": "s", "difficulty": "easy", "length": "short",
            "question": " Which? ", "choice_A": "a1", "choice_B": "b1 ", "choice_C": "c1",
            "choice_D": "d1", "answer": answer, "context": "  The document.  "
        })
        .to_string()
    }

    #[test]
    fn prompt_is_the_official_template() {
        let path = temp_file(
            "v2.json",
            &format!("[{}, {}]", record("x1", "B"), record("x2", "E")),
        );
        let loaded = LongBenchV2Config::local(&path)
            .load(&WhitespaceTokens, &LoadOptions::from_env())
            .unwrap();
        assert_eq!(loaded.samples.len(), 1);
        let s = &loaded.samples[0];
        assert_eq!(
            s.context,
            "Please read the following text and answer the question below.\n\n<text>\nThe document.\n</text>\n\n"
        );
        assert_eq!(
            s.turns[0].question,
            "What is the correct answer to this question: Which?\nChoices:\n(A) a1\n(B) b1\n(C) c1\n(D) d1\n\nFormat your response as follows: \"The correct answer is (insert answer here)\"."
        );
        assert_eq!((s.metric, s.max_new_tokens), (Metric::Choice, 128));
        assert_eq!(s.meta["difficulty"], "easy");
        assert_eq!(s.score(0, "The correct answer is (B)"), 1.0);
        assert_eq!(
            loaded.errors[0].to_string(),
            format!(
                "{} record 2: field `answer` is \"E\"; expected one of A, B, C, D",
                path.display()
            )
        );
    }

    struct CharIds;
    impl TokenCounter for CharIds {
        fn count_tokens(&self, t: &str) -> usize {
            t.chars().count()
        }
        fn encode(&self, t: &str) -> Option<Vec<u32>> {
            Some(t.chars().map(|c| c as u32).collect())
        }
        fn decode(&self, ids: &[u32]) -> Option<String> {
            Some(ids.iter().filter_map(|&i| char::from_u32(i)).collect())
        }
    }

    #[test]
    fn truncation_gives_the_tail_the_odd_token() {
        let choices: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let (h, t) = prompt("x".repeat(1000).as_str(), "q", &choices, None, &CharIds);
        let total = h.chars().count() + t.chars().count();
        // max 401: head 200 characters, tail 201 (ids[-401//2:] = ids[-201:])
        let (h2, t2) = prompt(
            "x".repeat(1000).as_str(),
            "q",
            &choices,
            Some(401),
            &CharIds,
        );
        assert_eq!(t2, t);
        assert_eq!(h2.chars().count() + t2.chars().count(), 401);
        assert!(total > 401);
        assert!(h2.starts_with("Please read"));
    }

    #[test]
    fn accuracy_by_group() {
        let items = [
            ("easy", "short", 1.0),
            ("hard", "long", 0.0),
            ("hard", "medium", 1.0),
        ];
        let a = accuracy(items);
        // overall 2/3 -> 66.7; easy 100; hard 50; short 100; medium 100; long 0
        assert_eq!(
            a,
            [
                ("overall", 66.7),
                ("easy", 100.0),
                ("hard", 50.0),
                ("short", 100.0),
                ("medium", 100.0),
                ("long", 0.0)
            ]
        );
    }
}

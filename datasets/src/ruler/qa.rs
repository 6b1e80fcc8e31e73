//! RULER's `qa_1` (SQuAD) and `qa_2` (HotpotQA) (`scripts/data/synthetic/qa.py`): the gold
//! document(s) of a question among distractor documents, as many as fit.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use rand::seq::{index, SliceRandom};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use super::{split_prompt, Built, Generator, RulerError};
use crate::Metric;

pub const TEMPLATE: &str = "Answer the question based on the given documents. Only give me the answer and do not output any other words.\n\nThe following are given documents.\n\n{context}\n\nAnswer the question based on the given documents. Only give me the answer and do not output any other words.\n\nQuestion: {query}";
pub const ANSWER_PREFIX: &str = " Answer:";

struct Question {
    query: String,
    outputs: Vec<String>,
    docs: Vec<usize>,
    more: Vec<usize>,
}

/// Questions and their documents; sample `i` asks question `i`.
pub struct Qa {
    task: &'static str,
    docs: Vec<String>,
    questions: Vec<Question>,
    index: std::cell::Cell<usize>,
}

fn input_err(path: &Path, message: impl Into<String>) -> RulerError {
    RulerError::Input {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn read_json(path: &Path) -> Result<Value, RulerError> {
    let text = std::fs::read_to_string(path).map_err(|e| input_err(path, e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| input_err(path, format!("not valid JSON ({e})")))
}

impl Qa {
    /// `read_squad`: documents are the distinct paragraph contexts (sorted); questions the
    /// answerable ones, with the other paragraphs of their article as preferred distractors.
    pub(crate) fn squad(path: &Path) -> Result<Self, RulerError> {
        let v = read_json(path)?;
        let bad = |what: &str| {
            input_err(path, format!("{what}; expected SQuAD v2 JSON ({{\"data\": [{{\"paragraphs\": [{{\"context\", \"qas\"}}]}}]}})"))
        };
        let articles = v
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no `data` list"))?;
        let mut contexts = BTreeSet::new();
        for a in articles {
            for p in a
                .get("paragraphs")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("an article without `paragraphs`"))?
            {
                contexts.insert(
                    p.get("context")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad("a paragraph without `context`"))?
                        .to_string(),
                );
            }
        }
        let docs: Vec<String> = contexts.into_iter().collect();
        let idx: HashMap<&str, usize> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| (d.as_str(), i))
            .collect();
        let mut questions = Vec::new();
        for a in articles {
            let paragraphs = a["paragraphs"].as_array().expect("checked");
            let article_docs: Vec<usize> = paragraphs
                .iter()
                .map(|p| idx[p["context"].as_str().expect("checked")])
                .collect();
            for p in paragraphs {
                let own = idx[p["context"].as_str().expect("checked")];
                for q in p.get("qas").and_then(Value::as_array).into_iter().flatten() {
                    if q.get("is_impossible").and_then(Value::as_bool) == Some(true) {
                        continue;
                    }
                    let query = q
                        .get("question")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad("a question without `question`"))?;
                    let outputs: Vec<String> = q
                        .get("answers")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|a| a.get("text").and_then(Value::as_str).map(str::to_string))
                        .collect();
                    questions.push(Question {
                        query: query.to_string(),
                        outputs,
                        docs: vec![own],
                        more: article_docs.iter().copied().filter(|&d| d != own).collect(),
                    });
                }
            }
        }
        Self::done("qa_1", path, docs, questions)
    }

    /// `read_hotpotqa`: documents are `"{title}\n{sentences joined}"` of every context entry.
    pub(crate) fn hotpotqa(path: &Path) -> Result<Self, RulerError> {
        let v = read_json(path)?;
        let bad = |what: &str| {
            input_err(path, format!("{what}; expected HotpotQA JSON ([{{\"question\", \"answer\", \"context\": [[title, [sentences]]]}}])"))
        };
        let items = v.as_array().ok_or_else(|| bad("not a list"))?;
        let doc_of = |c: &Value| -> Option<String> {
            let title = c.get(0)?.as_str()?;
            let sents: Option<Vec<&str>> =
                c.get(1)?.as_array()?.iter().map(Value::as_str).collect();
            Some(format!("{title}\n{}", sents?.concat()))
        };
        let mut all = BTreeSet::new();
        for it in items {
            for c in it
                .get("context")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("an item without `context`"))?
            {
                all.insert(
                    doc_of(c)
                        .ok_or_else(|| bad("a context entry that is not [title, [sentences]]"))?,
                );
            }
        }
        let docs: Vec<String> = all.into_iter().collect();
        let idx: HashMap<&str, usize> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| (d.as_str(), i))
            .collect();
        let mut questions = Vec::new();
        for it in items {
            let query = it
                .get("question")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("an item without `question`"))?;
            let answer = it
                .get("answer")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("an item without `answer`"))?;
            let own = it["context"]
                .as_array()
                .expect("checked")
                .iter()
                .map(|c| idx[doc_of(c).expect("checked").as_str()])
                .collect();
            questions.push(Question {
                query: query.into(),
                outputs: vec![answer.into()],
                docs: own,
                more: Vec::new(),
            });
        }
        Self::done("qa_2", path, docs, questions)
    }

    fn done(
        task: &'static str,
        path: &Path,
        docs: Vec<String>,
        questions: Vec<Question>,
    ) -> Result<Self, RulerError> {
        if questions.is_empty() {
            return Err(input_err(path, "no answerable question"));
        }
        Ok(Qa {
            task,
            docs,
            questions,
            index: std::cell::Cell::new(0),
        })
    }

    /// The question the next built samples ask (sample `i` asks question `i mod count`).
    pub(crate) fn ask(&self, i: usize) {
        self.index.set(i % self.questions.len());
    }
}

impl Generator for Qa {
    fn task(&self) -> &str {
        self.task
    }
    fn metric(&self) -> Metric {
        Metric::StringMatchPart
    }
    fn tokens_to_generate(&self) -> usize {
        32
    }
    fn incremental(&self, _length: usize) -> usize {
        10
    }
    fn question_index(&self, index: usize) {
        self.ask(index);
    }
    fn build(&self, size: usize, rng: &mut ChaCha8Rng) -> Result<Built, RulerError> {
        let q = &self.questions[self.index.get()];
        let n = size.max(q.docs.len());
        let mut chosen: Vec<usize> = if n < self.docs.len() {
            let mut c = q.docs.clone();
            if n - q.docs.len() > q.more.len() {
                c.extend(&q.more);
                let taken: BTreeSet<usize> = c.iter().copied().collect();
                let rest: Vec<usize> = (0..self.docs.len())
                    .filter(|d| !taken.contains(d))
                    .collect();
                let k = (n - c.len()).min(rest.len());
                c.extend(index::sample(rng, rest.len(), k).iter().map(|i| rest[i]));
            } else {
                let k = n - q.docs.len();
                c.extend(
                    index::sample(rng, q.more.len(), k)
                        .iter()
                        .map(|i| q.more[i]),
                );
            }
            c
        } else {
            (0..n).map(|i| i % self.docs.len()).collect()
        };
        chosen.shuffle(rng);
        let context = chosen
            .iter()
            .enumerate()
            .map(|(i, d)| format!("Document {}:\n{}", i + 1, self.docs[*d]))
            .collect::<Vec<_>>()
            .join("\n\n");
        let parts = split_prompt(
            TEMPLATE,
            ANSWER_PREFIX,
            &[("context", &context), ("query", &q.query)],
        );
        Ok(Built {
            context: parts.context,
            question: parts.question,
            answer_prefix: parts.answer_prefix,
            answers: q.outputs.clone(),
        })
    }
}

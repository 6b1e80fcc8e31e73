//! The unit of work: one context and the questions asked about it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Metric;

/// One context and the turns that share it.
///
/// Single-question tasks have one turn; multi-turn tasks (SCBench) ask several questions of the
/// same prefilled, compressed context. `context`, each turn's `question` and its `answer_prefix`
/// are the text the model sees, already formatted (see [`crate::prompt`]): the runner only
/// concatenates them, or places them around a chat template's markup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Unique within its dataset; part of the record key that makes re-runs skip finished work.
    pub id: String,
    /// Everything before the question: prefilled once and compressed without seeing the question.
    pub context: String,
    pub turns: Vec<Turn>,
    /// Task name for grouping in reports (`niah`, `hotpotqa`, ...).
    pub task: String,
    /// Metric of every turn that does not name its own ([`Turn::metric`]).
    pub metric: Metric,
    /// Greedy decode length of every turn that does not set its own ([`Turn::max_new_tokens`]).
    pub max_new_tokens: usize,
    /// How the turns share the context; see [`TurnMode`].
    #[serde(default, skip_serializing_if = "TurnMode::is_independent")]
    pub mode: TurnMode,
    /// Whether a chat template may wrap this sample's prompt. LongBench keeps the raw
    /// completion-style prompt for trec, triviaqa, samsum, lsht, lcc and repobench-p (its
    /// `pred.py`: "chat models are better off without build prompts on these tasks").
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub chat_template: bool,
    /// Task-specific facts for reports and scoring, e.g. a needle's target length and depth,
    /// LongBench's `all_classes` and `length`, LongBench v2's `difficulty`.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub meta: Map<String, Value>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// How the turns of a sample relate to the shared context.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnMode {
    /// Every turn is its own request against the same compressed context: prefill and compress
    /// the context once, then for each turn append its question to a fork of that cache and
    /// decode (SCBench's multi-request mode; every single-question task).
    #[default]
    Independent,
    /// One growing conversation (SCBench's multi-turn mode): compress the context once, then for
    /// each turn in order append its question to the *persistent* cache and decode from a fork of
    /// it; the generated tokens are dropped, not kept. Turn `i > 0`'s question already begins with
    /// the gold answer of turn `i - 1` ([`Turn::previous_answer`]), as SCBench writes its
    /// follow-up prompts, so the conversation history holds the reference answers, never the
    /// model's own.
    MultiTurn,
}

impl TurnMode {
    pub fn is_independent(&self) -> bool {
        *self == TurnMode::Independent
    }
}

/// One question about a sample's context, and the answers that score as correct.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// Appended after the compressed context: the user's text of the turn. Where the benchmark's
    /// official code ends the *user* message with an answer cue (LongBench's `"\nAnswer:"`,
    /// SCBench's), the cue is part of the question; an answer prefix that the official code puts
    /// after the chat template's generation prompt is [`Turn::answer_prefix`] instead.
    pub question: String,
    /// The start of the answer, written for the model (kvpress's and RULER's `answer_prefix`):
    /// with a chat template it goes after the generation prompt, so the assistant's message
    /// begins with it (`question + end of user turn + generation prompt + answer_prefix`); in
    /// plain text it follows `question` directly, byte for byte (RULER's base template
    /// `task_template + answer_prefix`). Whatever separates the two in plain text belongs to one of
    /// them: RULER's prefixes start with a space, the needle question ends with a newline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_prefix: Option<String>,
    /// Reference answers; how they combine depends on the turn's [`Metric`].
    pub answers: Vec<String>,
    /// This turn's metric, where it differs from the sample's (SCBench's mixed tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<Metric>,
    /// This turn's decode length, where it differs from the sample's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_new_tokens: Option<usize>,
    /// [`TurnMode::MultiTurn`] only: the gold answer of the previous turn, which `question`
    /// starts with. A runner that renders chat messages shows it as the assistant's reply, after
    /// the previous turn's [`Turn::answer_prefix`] if it has one (the reply the model was steered
    /// to write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_answer: Option<String>,
    /// Facts the turn's metric needs (SCBench choice options, repoqa function names).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub meta: Map<String, Value>,
}

impl Turn {
    /// A turn with only a question and its answers.
    pub fn new(question: impl Into<String>, answers: Vec<String>) -> Self {
        Turn {
            question: question.into(),
            answers,
            metric: None,
            max_new_tokens: None,
            previous_answer: None,
            answer_prefix: None,
            meta: Map::new(),
        }
    }

    /// This turn with `prefix` as its [`Turn::answer_prefix`] (`None` if empty).
    pub fn with_answer_prefix(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        self.answer_prefix = (!prefix.is_empty()).then_some(prefix);
        self
    }

    /// The turn as plain text: the question, then the answer prefix if any.
    pub fn plain_text(&self) -> String {
        format!(
            "{}{}",
            self.question,
            self.answer_prefix.as_deref().unwrap_or("")
        )
    }
}

impl Sample {
    /// A single-turn, independent sample with no meta.
    pub fn single(
        id: impl Into<String>,
        context: impl Into<String>,
        turn: Turn,
        task: impl Into<String>,
        metric: Metric,
        max_new_tokens: usize,
    ) -> Self {
        Sample {
            id: id.into(),
            context: context.into(),
            turns: vec![turn],
            task: task.into(),
            metric,
            max_new_tokens,
            mode: TurnMode::Independent,
            chat_template: true,
            meta: Map::new(),
        }
    }

    /// The metric of turn `turn` (its own, else the sample's).
    pub fn turn_metric(&self, turn: usize) -> Metric {
        self.turns
            .get(turn)
            .and_then(|t| t.metric)
            .unwrap_or(self.metric)
    }

    /// The decode length of turn `turn` (its own, else the sample's).
    pub fn turn_max_new_tokens(&self, turn: usize) -> usize {
        self.turns
            .get(turn)
            .and_then(|t| t.max_new_tokens)
            .unwrap_or(self.max_new_tokens)
    }

    /// Scores `prediction` for turn `turn` with that turn's metric, exactly as the task's
    /// reference scorer does, with the facts it needs from `meta` (see [`crate::metrics::score_turn`]).
    pub fn score(&self, turn: usize, prediction: &str) -> f64 {
        crate::metrics::score_turn(self, turn, prediction)
    }
}

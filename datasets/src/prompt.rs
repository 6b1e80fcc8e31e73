//! Prompt templates: how a sample and one of its turns become the two strings the runner feeds.
//!
//! The split is the contract with the runner: [`Prompt::context`] is prefilled and compressed
//! query-agnostically, [`Prompt::question`] is appended after compression and ends where the model
//! should start answering. Everything before the question belongs in `context`, so that the
//! compressed part is the same for every turn and every method.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Sample, Turn, TurnMode};

/// A dataset's `chat_template:` option: whether prompts go through the model's chat template.
///
/// - `auto` (default): where the benchmark's official code applies one, i.e. every sample whose
///   [`Sample::chat_template`] is true, if the model has a template;
/// - `true`: every sample, and a model without a template is an error before any work;
/// - `false`: never; plain text (completion style).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChatTemplateMode {
    #[default]
    Auto,
    Always,
    Never,
}

impl ChatTemplateMode {
    pub fn is_auto(&self) -> bool {
        *self == ChatTemplateMode::Auto
    }

    /// Whether `sample` is rendered through a template, given whether the model has one.
    pub fn applies(&self, sample: &Sample, model_has_template: bool) -> bool {
        match self {
            ChatTemplateMode::Auto => sample.chat_template && model_has_template,
            ChatTemplateMode::Always => true,
            ChatTemplateMode::Never => false,
        }
    }

    /// The YAML spelling: `auto`, `true` or `false`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ChatTemplateMode::Auto => "auto",
            ChatTemplateMode::Always => "true",
            ChatTemplateMode::Never => "false",
        }
    }
}

impl Serialize for ChatTemplateMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ChatTemplateMode::Auto => s.serialize_str("auto"),
            ChatTemplateMode::Always => s.serialize_bool(true),
            ChatTemplateMode::Never => s.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for ChatTemplateMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Str(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("`chat_template`: expected auto, true or false")
        })? {
            Raw::Bool(true) => Ok(ChatTemplateMode::Always),
            Raw::Bool(false) => Ok(ChatTemplateMode::Never),
            Raw::Str(s) => match s.as_str() {
                "auto" => Ok(ChatTemplateMode::Auto),
                "true" => Ok(ChatTemplateMode::Always),
                "false" => Ok(ChatTemplateMode::Never),
                other => Err(serde::de::Error::custom(format!(
                    "`chat_template: {other}`: expected auto, true or false"
                ))),
            },
        }
    }
}

/// The two parts of one model input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    /// Prefilled once and compressed before the question is seen.
    pub context: String,
    /// Appended after compression: the turn's question, then its answer prefix if it has one.
    pub question: String,
}

/// Turns a sample and one of its turns into a [`Prompt`].
///
/// The harness implements it for chat templates (wrapping the context in the user message and
/// ending the question with the assistant header); this crate provides [`Plain`].
pub trait PromptTemplate {
    fn build(&self, sample: &Sample, turn: &Turn) -> Prompt;
}

/// The sample's text verbatim: datasets in this crate format their questions at load time
/// (`"\n\nQuestion: ...\nAnswer:"`), so completion-style models need nothing more. A turn's
/// [`Turn::answer_prefix`] follows its question directly ([`Turn::plain_text`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Plain;

impl PromptTemplate for Plain {
    fn build(&self, sample: &Sample, turn: &Turn) -> Prompt {
        Prompt {
            context: sample.context.clone(),
            question: turn.plain_text(),
        }
    }
}

/// The [`Plain`] prompt of one turn.
pub fn build_prompt(sample: &Sample, turn: &Turn) -> Prompt {
    Plain.build(sample, turn)
}

/// The [`Plain`] prompt of turn `index` as the runner should feed it, whatever the sample's
/// [`TurnMode`]:
///
/// - [`TurnMode::Independent`]: the sample's context and this turn's question;
/// - [`TurnMode::MultiTurn`]: the context, then the questions of turns `0..=index` in order.
///   Each follow-up question already begins with the previous turn's gold answer (after the
///   previous turn's answer prefix, if any, as the model's reply would), so this is
///   the conversation SCBench's multi-turn mode builds (gold history, the model's own answers
///   dropped). A runner that keeps the conversation's cache between turns can instead append
///   only `turns[index].question`; this form lets a runner that forks the compressed context
///   per turn get the same tokens, the history prefilled with full attention.
///
/// Every question is followed by its turn's answer prefix ([`Turn::plain_text`]).
///
/// `None` if the sample has no such turn.
pub fn turn_prompt(sample: &Sample, index: usize) -> Option<Prompt> {
    let turn = sample.turns.get(index)?;
    let question = match sample.mode {
        TurnMode::Independent => turn.plain_text(),
        TurnMode::MultiTurn => sample.turns[..=index]
            .iter()
            .map(Turn::plain_text)
            .collect(),
    };
    Some(Prompt {
        context: sample.context.clone(),
        question,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Metric;

    #[test]
    fn chat_template_mode_reads_auto_true_false() {
        for (yaml, want) in [
            ("\"auto\"", ChatTemplateMode::Auto),
            ("true", ChatTemplateMode::Always),
            ("false", ChatTemplateMode::Never),
        ] {
            let m: ChatTemplateMode = serde_json::from_str(yaml).unwrap();
            assert_eq!(m, want);
            assert_eq!(serde_json::to_string(&m).unwrap(), yaml);
        }
        let err = serde_json::from_str::<ChatTemplateMode>("\"maybe\"").unwrap_err();
        assert!(err.to_string().contains("auto, true or false"), "{err}");
        let turn = Turn::new("Q", vec![]);
        let mut s = Sample::single("s", "C", turn, "t", Metric::QaF1, 4);
        assert!(ChatTemplateMode::Auto.applies(&s, true));
        assert!(!ChatTemplateMode::Auto.applies(&s, false));
        s.chat_template = false;
        assert!(!ChatTemplateMode::Auto.applies(&s, true));
        assert!(ChatTemplateMode::Always.applies(&s, true));
        assert!(!ChatTemplateMode::Never.applies(&s, true));
    }

    #[test]
    fn plain_keeps_the_split() {
        let turn = Turn::new("\nQ?\nAnswer:", vec!["x".into()]);
        let sample = Sample::single("s", "Some text.", turn, "t", Metric::QaF1, 4);
        let p = build_prompt(&sample, &sample.turns[0]);
        assert_eq!(p.context, "Some text.");
        assert_eq!(p.question, "\nQ?\nAnswer:");
        assert_eq!(
            format!("{}{}", p.context, p.question),
            "Some text.\nQ?\nAnswer:"
        );
    }

    #[test]
    fn plain_text_puts_the_answer_prefix_right_after_the_question() {
        let turn = Turn::new("\nQ?", vec![]).with_answer_prefix(" The answer is");
        assert_eq!(turn.answer_prefix.as_deref(), Some(" The answer is"));
        let sample = Sample::single("s", "C", turn, "t", Metric::QaF1, 4);
        let p = build_prompt(&sample, &sample.turns[0]);
        assert_eq!(p.question, "\nQ? The answer is");
        assert_eq!(turn_prompt(&sample, 0).unwrap(), p);
        // An empty prefix is no prefix.
        assert_eq!(
            Turn::new("Q", vec![]).with_answer_prefix("").answer_prefix,
            None
        );
    }

    #[test]
    fn answer_prefix_round_trips_and_is_omitted_when_absent() {
        let turn = Turn::new("Q", vec![]);
        let json = serde_json::to_string(&turn).unwrap();
        assert!(!json.contains("answer_prefix"), "{json}");
        let back: Turn = serde_json::from_str(&json).unwrap();
        assert_eq!(back.answer_prefix, None);
        let turn = turn.with_answer_prefix("A:");
        let json = serde_json::to_string(&turn).unwrap();
        assert!(json.contains(r#""answer_prefix":"A:""#), "{json}");
        assert_eq!(serde_json::from_str::<Turn>(&json).unwrap(), turn);
    }

    #[test]
    fn multi_turn_prompts_carry_the_history() {
        let turns = vec![
            Turn::new("\n\nQ1", vec!["a1".into()]),
            Turn::new("a1\n\nQ2", vec!["a2".into()]),
        ];
        let mut s = Sample::single("s", "C", turns[0].clone(), "t", Metric::Substring, 4);
        s.turns = turns;
        assert_eq!(turn_prompt(&s, 1).unwrap().question, "a1\n\nQ2");
        s.mode = TurnMode::MultiTurn;
        let p = turn_prompt(&s, 1).unwrap();
        assert_eq!(
            (p.context.as_str(), p.question.as_str()),
            ("C", "\n\nQ1a1\n\nQ2")
        );
        assert_eq!(turn_prompt(&s, 0).unwrap().question, "\n\nQ1");
        assert_eq!(turn_prompt(&s, 2), None);
        // Each turn's answer prefix sits between its question and the next turn's gold answer.
        s.turns[0].answer_prefix = Some("\nA:".into());
        s.turns[1].answer_prefix = Some("\nA:".into());
        assert_eq!(
            turn_prompt(&s, 1).unwrap().question,
            "\n\nQ1\nA:a1\n\nQ2\nA:"
        );
    }
}

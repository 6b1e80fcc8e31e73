//! One turn of a sample as the two texts the runner feeds, with or without the model's chat
//! template, and their token ids.
//!
//! With a template, the split is kvpress's (`KVPressTextGenerationPipeline.preprocess`): render
//! the conversation whose first user message is `context + SEP` (`SEP` a marker that cannot
//! occur in the text) with `add_generation_prompt=True` and `enable_thinking=False`, and cut the
//! rendering at `SEP`. The context part is everything before it, so it ends inside the user
//! message and compression never sees the question; the question part is kvpress's
//! `question + question_suffix + answer_prefix`: the turn's question, everything after `SEP` (the
//! rest of the user message and the generation prompt), then the turn's
//! [`Turn::answer_prefix`], so the assistant's message starts with it (RULER's `prepare.py` does
//! the same: `model_template.format(task_template) + answer_prefix`). The question itself is not
//! passed through the template (kvpress), so a template that trims message content does not trim
//! it. An answer cue that a benchmark keeps in the user message (LongBench's `pred.py`,
//! SCBench's `...\nAnswer:`) is part of the question and stays there.
//!
//! Multi-turn samples (SCBench's multi-turn mode) render the gold history as chat: the first user
//! message carries the context and the first question, each later turn is the previous gold
//! answer as the assistant's message and the follow-up as a user message, without the
//! `{pre_ans}\n\n` the plain-text follow-up starts with (SCBench's
//! `multiturn_follow_up_templates_in_chat_tempate`). The question part is then everything after
//! `SEP`, followed by the last turn's answer prefix. An earlier turn's answer prefix starts that
//! turn's assistant message, before its gold answer: the reply the model was steered to write,
//! and the order of the plain text (question, answer prefix, gold answer, next question).
//! SCBench itself has no answer prefixes.
//!
//! Tokens: a rendered context already holds whatever BOS the template writes, so it is encoded
//! without the tokenizer's post-processor (kvpress's `add_special_tokens=False`); plain text gets
//! BOS as the tokenizer says. The question part never gets BOS.

use kvbench_datasets::{turn_prompt, Sample, Turn, TurnMode};
use serde_json::{Map, Value};

use crate::chat_template::{ChatMessage, ChatTemplate, ChatTemplateError};
use crate::tokenizer::{TextTokenizer, TokenizerError};

#[derive(thiserror::Error, Debug)]
pub enum PromptError {
    #[error("sample `{sample}` has no turn {turn}")]
    NoTurn { sample: String, turn: usize },
    #[error(transparent)]
    Template(#[from] ChatTemplateError),
    #[error(
        "the chat template's rendering holds the separator {count} times, expected once; the \
         template transforms the message content in a way kvbench cannot split"
    )]
    Split { count: usize },
    #[error("sample `{sample}` turn {turn}: multi-turn follow-up without `previous_answer`")]
    NoPreviousAnswer { sample: String, turn: usize },
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

/// The two texts of one turn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnText {
    /// Prefilled once and compressed before the question is seen.
    pub context: String,
    /// Appended after compression; ends where the model starts answering.
    pub question: String,
    /// Whether the chat template rendered them (then the context holds the template's BOS).
    pub templated: bool,
}

/// The keyword arguments kvpress passes to `apply_chat_template`.
pub fn template_kwargs() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("enable_thinking".into(), Value::Bool(false));
    m
}

/// A separator that occurs in none of `texts`: `[`, a run of `#` longer than any in them, `]`
/// (the brackets keep a `#` next to it from extending the run).
fn separator<'a>(texts: impl Iterator<Item = &'a str>) -> String {
    let longest = texts
        .flat_map(|t| t.split(|c| c != '#').map(str::len))
        .max()
        .unwrap_or(0);
    format!("[{}]", "#".repeat(longest + 8))
}

/// The user's text of a multi-turn follow-up: the question without the previous gold answer it
/// starts with and the `\n\n` (`.\n\n` for SCBench's passkey turns) after it.
fn follow_up_text<'a>(turn: &'a Turn, previous_answer: &str) -> &'a str {
    let q = turn.question.as_str();
    let rest = q.strip_prefix(previous_answer).unwrap_or(q);
    rest.strip_prefix(".\n\n")
        .or_else(|| rest.strip_prefix("\n\n"))
        .unwrap_or(rest)
}

/// Render and split at `sep`: (before, after).
fn render_split(
    template: &ChatTemplate,
    messages: &[ChatMessage],
    sep: &str,
) -> Result<(String, String), PromptError> {
    let rendered = template.render(messages, true, &template_kwargs())?;
    let count = rendered.matches(sep).count();
    if count != 1 {
        return Err(PromptError::Split { count });
    }
    let (a, b) = rendered.split_once(sep).expect("counted once");
    Ok((a.to_string(), b.to_string()))
}

/// The texts of turn `index` of `sample`: through `template` when given, else plain (the
/// sample's context and question, the history of a multi-turn sample included).
pub fn turn_text(
    sample: &Sample,
    index: usize,
    template: Option<&ChatTemplate>,
) -> Result<TurnText, PromptError> {
    let no_turn = || PromptError::NoTurn {
        sample: sample.id.clone(),
        turn: index,
    };
    let Some(template) = template else {
        let p = turn_prompt(sample, index).ok_or_else(no_turn)?;
        return Ok(TurnText {
            context: p.context,
            question: p.question,
            templated: false,
        });
    };
    let turn = sample.turns.get(index).ok_or_else(no_turn)?;
    let sep = separator(
        std::iter::once(sample.context.as_str())
            .chain(sample.turns.iter().map(|t| t.question.as_str()))
            .chain(
                sample
                    .turns
                    .iter()
                    .flat_map(|t| t.previous_answer.as_deref()),
            )
            .chain(sample.turns.iter().flat_map(|t| t.answer_prefix.as_deref())),
    );
    let answer_prefix = turn.answer_prefix.as_deref().unwrap_or("");
    if sample.mode == TurnMode::Independent || index == 0 {
        // kvpress: render the context alone; question + the template's suffix + answer prefix.
        let user = ChatMessage::new("user", format!("{}{sep}", sample.context));
        let (context, suffix) = render_split(template, &[user], &sep)?;
        return Ok(TurnText {
            context,
            question: format!("{}{suffix}{answer_prefix}", turn.question),
            templated: true,
        });
    }
    let mut messages = vec![ChatMessage::new(
        "user",
        format!("{}{sep}{}", sample.context, sample.turns[0].question),
    )];
    for (k, t) in sample.turns.iter().enumerate().take(index + 1).skip(1) {
        let previous =
            t.previous_answer
                .as_deref()
                .ok_or_else(|| PromptError::NoPreviousAnswer {
                    sample: sample.id.clone(),
                    turn: k,
                })?;
        // the previous turn's reply: its answer prefix, then its gold answer
        let reply = match &sample.turns[k - 1].answer_prefix {
            Some(prefix) => format!("{prefix}{previous}"),
            None => previous.to_string(),
        };
        messages.push(ChatMessage::new("assistant", reply));
        messages.push(ChatMessage::new("user", follow_up_text(t, previous)));
    }
    let (context, history) = render_split(template, &messages, &sep)?;
    Ok(TurnText {
        context,
        question: format!("{history}{answer_prefix}"),
        templated: true,
    })
}

/// Token ids of a turn's texts: a templated context without the tokenizer's post-processor (its
/// BOS is in the text), a plain one with BOS as the tokenizer says; the question never with BOS.
pub fn tokenize(tok: &TextTokenizer, text: &TurnText) -> Result<(Vec<u32>, Vec<u32>), PromptError> {
    let context = if text.templated {
        tok.encode_raw(&text.context)?
    } else {
        tok.encode(&text.context)?
    };
    let question = tok.encode_raw(&text.question)?;
    Ok((context, question))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvbench_datasets::Metric;

    fn chatml() -> ChatTemplate {
        ChatTemplate::new(
            "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
            None,
            Some("<|im_end|>".into()),
        )
    }

    #[test]
    fn separator_is_longer_than_any_run_of_hashes() {
        let sep = separator(["a ### b", "#########"].into_iter());
        assert_eq!(sep, format!("[{}]", "#".repeat(17)));
        assert!(!"a ### b".contains(&sep));
    }

    #[test]
    fn single_turn_split_is_kvpress() {
        let s = Sample::single(
            "s",
            "Text #.",
            Turn::new("\nQ?\nAnswer:", vec![]),
            "t",
            Metric::QaF1,
            4,
        );
        let t = turn_text(&s, 0, Some(&chatml())).unwrap();
        assert_eq!(t.context, "<|im_start|>user\nText #.");
        assert_eq!(
            t.question,
            "\nQ?\nAnswer:<|im_end|>\n<|im_start|>assistant\n"
        );
        let plain = turn_text(&s, 0, None).unwrap();
        assert_eq!(
            (plain.context.as_str(), plain.templated),
            ("Text #.", false)
        );
    }

    #[test]
    fn multi_turn_history_is_gold_assistant_turns() {
        let mut t1 = Turn::new("a0\n\nQ1", vec!["a1".into()]);
        t1.previous_answer = Some("a0".into());
        let mut t2 = Turn::new("a1.\n\nQ2", vec![]);
        t2.previous_answer = Some("a1".into());
        let mut s = Sample::single(
            "s",
            "C",
            Turn::new("\n\nQ0", vec!["a0".into()]),
            "t",
            Metric::Substring,
            4,
        );
        s.turns = vec![s.turns[0].clone(), t1, t2];
        s.mode = TurnMode::MultiTurn;
        let t = turn_text(&s, 2, Some(&chatml())).unwrap();
        assert_eq!(t.context, "<|im_start|>user\nC");
        assert_eq!(
            t.question,
            "\n\nQ0<|im_end|>\n<|im_start|>assistant\na0<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n\
             <|im_start|>assistant\na1<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n"
        );
        s.turns[1].previous_answer = None;
        assert!(matches!(
            turn_text(&s, 1, Some(&chatml())),
            Err(PromptError::NoPreviousAnswer { turn: 1, .. })
        ));
    }

    #[test]
    fn the_answer_prefix_starts_the_assistant_message() {
        let turn = Turn::new("\nQ?\n", vec![]).with_answer_prefix("Answer: It is");
        let s = Sample::single("s", "C", turn, "t", Metric::QaF1, 4);
        let t = turn_text(&s, 0, Some(&chatml())).unwrap();
        assert_eq!(t.context, "<|im_start|>user\nC");
        assert_eq!(
            t.question,
            "\nQ?\n<|im_end|>\n<|im_start|>assistant\nAnswer: It is"
        );
        // plain: right after the question
        assert_eq!(
            turn_text(&s, 0, None).unwrap().question,
            "\nQ?\nAnswer: It is"
        );
    }

    #[test]
    fn multi_turn_prefixes_start_each_reply_and_end_the_question() {
        let t0 = Turn::new("\n\nQ0", vec!["a0".into()]).with_answer_prefix(" A:");
        let mut t1 = Turn::new("a0\n\nQ1", vec!["a1".into()]).with_answer_prefix(" A:");
        t1.previous_answer = Some("a0".into());
        let mut s = Sample::single("s", "C", t0, "t", Metric::Substring, 4);
        s.turns.push(t1);
        s.mode = TurnMode::MultiTurn;
        let t = turn_text(&s, 1, Some(&chatml())).unwrap();
        assert_eq!(
            t.question,
            "\n\nQ0<|im_end|>\n<|im_start|>assistant\n A:a0<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n\
             <|im_start|>assistant\n A:"
        );
        assert_eq!(
            turn_text(&s, 1, None).unwrap().question,
            "\n\nQ0 A:a0\n\nQ1 A:"
        );
    }

    #[test]
    fn a_template_that_drops_the_content_cannot_be_split() {
        let t = ChatTemplate::new("{{ messages | length }}", None, None);
        let s = Sample::single("s", "C", Turn::new("Q", vec![]), "t", Metric::QaF1, 4);
        assert!(matches!(
            turn_text(&s, 0, Some(&t)),
            Err(PromptError::Split { count: 0 })
        ));
    }

    /// A byte-level tokenizer whose post-processor adds BOS (`<s>` = 0) and whose template
    /// writes `bos_token` itself, as Llama 3's and Gemma 3's do.
    fn bos_tokenizer() -> TextTokenizer {
        use candle_core::quantized::gguf_file::{self, Value as V};
        let tokens = ["<s>", "<|u|>", "<|a|>", "a", "b", "ab", "Ġ", "Ġab"];
        let types = [3, 3, 3, 1, 1, 1, 1, 1];
        let template = "{{ bos_token }}{% for m in messages %}<|u|>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<|a|>{% endif %}";
        let mut md = std::collections::HashMap::new();
        md.insert("tokenizer.ggml.model".into(), V::String("gpt2".into()));
        md.insert("tokenizer.ggml.pre".into(), V::String("gpt2".into()));
        md.insert(
            "tokenizer.ggml.tokens".into(),
            V::Array(tokens.iter().map(|t| V::String(t.to_string())).collect()),
        );
        md.insert(
            "tokenizer.ggml.token_type".into(),
            V::Array(types.iter().map(|&t| V::I32(t)).collect()),
        );
        md.insert(
            "tokenizer.ggml.merges".into(),
            V::Array(vec![V::String("a b".into()), V::String("Ġ ab".into())]),
        );
        md.insert("tokenizer.ggml.bos_token_id".into(), V::U32(0));
        md.insert("tokenizer.ggml.add_bos_token".into(), V::Bool(true));
        md.insert("tokenizer.chat_template".into(), V::String(template.into()));
        let content = gguf_file::Content {
            magic: gguf_file::VersionedMagic::GgufV3,
            metadata: md,
            tensor_infos: std::collections::HashMap::new(),
            tensor_data_offset: 0,
        };
        TextTokenizer::from_gguf(&content).unwrap()
    }

    #[test]
    fn bos_comes_once_from_the_template_or_the_tokenizer_never_in_the_question() {
        let tok = bos_tokenizer();
        assert!(tok.add_bos());
        let s = Sample::single("s", "ab", Turn::new(" ab", vec![]), "t", Metric::QaF1, 4);
        let template = tok.template().unwrap();
        let text = turn_text(&s, 0, Some(&template)).unwrap();
        assert_eq!(text.context, "<s><|u|>ab");
        let (c, q) = tokenize(&tok, &text).unwrap();
        // One BOS (written by the template), not a second one from the post-processor.
        assert_eq!(c, vec![0, 1, 5]);
        assert_eq!(q, vec![7, 2]);
        // Plain text: BOS as the tokenizer says; the question still without.
        let plain = turn_text(&s, 0, None).unwrap();
        let (c, q) = tokenize(&tok, &plain).unwrap();
        assert_eq!(c, vec![0, 5]);
        assert_eq!(q, vec![7]);
    }
}

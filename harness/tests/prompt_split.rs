//! kvpress's context/question split through real chat templates (Llama 3.1, Qwen 2.5, Gemma 3,
//! SmolLM2 from `../shared/data/reference/chat/chat_templates.json`): the two parts concatenate to
//! the conversation the template renders on its own, the context part ends inside the user
//! message with no question text in it, a multi-turn history renders the gold answers as the
//! assistant's turns, and an answer prefix (kvpress's, RULER's) starts the assistant's message.

use kvbench::chat_template::{ChatMessage, ChatTemplate};
use kvbench::prompt::{template_kwargs, turn_text};
use kvbench::testing::shared_data;
use kvbench_datasets::{Metric, NeedleConfig, Sample, Turn, TurnMode, WhitespaceTokens};
use serde_json::Value;

const MODELS: &[(&str, &str)] = &[
    // (fixture key, the generation prompt its rendering must end with)
    (
        "meta-llama/Llama-3.1-8B-Instruct",
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    (
        "Qwen/Qwen2.5-7B-Instruct",
        "<|im_end|>\n<|im_start|>assistant\n",
    ),
    (
        "google/gemma-3-it (1b/4b/12b/27b)",
        "<end_of_turn>\n<start_of_turn>model\n",
    ),
    (
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "<|im_end|>\n<|im_start|>assistant\n",
    ),
];

fn template(key: &str) -> ChatTemplate {
    let path = shared_data().join("reference/chat/chat_templates.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let t = &v["templates"][key];
    let tok = |k: &str| t[k].as_str().map(str::to_string);
    ChatTemplate::new(
        t["template"].as_str().unwrap(),
        tok("bos_token"),
        tok("eos_token"),
    )
}

const CONTEXT: &str = "The pass key is 71432. ### Remember it. The grass is green.";
const QUESTION: &str = "\n\nQuestion: What is the pass key?\nAnswer:";

fn sample() -> Sample {
    Sample::single(
        "s",
        CONTEXT,
        Turn::new(QUESTION, vec!["71432".into()]),
        "passkey",
        Metric::Substring,
        8,
    )
}

#[test]
fn single_turn_parts_make_the_rendered_conversation() {
    for (key, generation_prompt) in MODELS {
        let t = template(key);
        let text = turn_text(&sample(), 0, Some(&t)).unwrap();
        assert!(text.templated);
        let full = t
            .render(
                &[ChatMessage::new("user", format!("{CONTEXT}{QUESTION}"))],
                true,
                &template_kwargs(),
            )
            .unwrap();
        assert_eq!(format!("{}{}", text.context, text.question), full, "{key}");
        // The context part ends inside the user message, right after the context text.
        assert!(text.context.ends_with(CONTEXT), "{key}: {:?}", text.context);
        assert!(!text.context.contains("pass key?"), "{key}");
        assert!(!text.context.contains(generation_prompt.trim()), "{key}");
        // The question part: the question, the end of the user turn, the generation prompt.
        assert_eq!(
            text.question,
            format!("{QUESTION}{generation_prompt}"),
            "{key}"
        );
    }
    // Llama 3.1 and Gemma 3 write BOS; Qwen and SmolLM2 templates do not.
    let llama = turn_text(&sample(), 0, Some(&template(MODELS[0].0))).unwrap();
    assert!(llama
        .context
        .starts_with("<|begin_of_text|><|start_header_id|>system"));
    let gemma = turn_text(&sample(), 0, Some(&template(MODELS[2].0))).unwrap();
    assert!(gemma.context.starts_with("<bos><start_of_turn>user\n"));
}

#[test]
fn multi_turn_history_renders_gold_answers_as_assistant_turns() {
    let mut s = sample();
    let mut t1 = Turn::new("71432\n\nWhat colour is the grass?", vec!["green".into()]);
    t1.previous_answer = Some("71432".into());
    let mut t2 = Turn::new("green\n\nRepeat the pass key.", vec!["71432".into()]);
    t2.previous_answer = Some("green".into());
    s.turns.push(t1);
    s.turns.push(t2);
    s.mode = TurnMode::MultiTurn;
    for (key, generation_prompt) in MODELS {
        let t = template(key);
        let text = turn_text(&s, 2, Some(&t)).unwrap();
        let full = t
            .render(
                &[
                    ChatMessage::new("user", format!("{CONTEXT}{QUESTION}")),
                    ChatMessage::new("assistant", "71432"),
                    ChatMessage::new("user", "What colour is the grass?"),
                    ChatMessage::new("assistant", "green"),
                    ChatMessage::new("user", "Repeat the pass key."),
                ],
                true,
                &template_kwargs(),
            )
            .unwrap();
        assert_eq!(format!("{}{}", text.context, text.question), full, "{key}");
        assert!(text.context.ends_with(CONTEXT), "{key}");
        assert!(text.question.ends_with(generation_prompt), "{key}");
        // Follow-ups are user messages without the gold answer they start with in plain text.
        assert!(!text.question.contains("71432\n\nWhat colour"), "{key}");
        // Turn 0 of a multi-turn sample is the single-turn split.
        let first = turn_text(&s, 0, Some(&t)).unwrap();
        assert_eq!(first.question, format!("{QUESTION}{generation_prompt}"));
        assert_eq!(
            first.context, text.context,
            "{key}: the context is shared by all turns"
        );
    }
    // The gold answers sit in the assistant's turns (Qwen's markup shown).
    let qwen = turn_text(&s, 2, Some(&template(MODELS[1].0))).unwrap();
    assert!(qwen.question.contains(
        "<|im_start|>assistant\n71432<|im_end|>\n<|im_start|>user\nWhat colour is the grass?<|im_end|>"
    ));
}

#[test]
fn without_a_template_the_text_stays_plain() {
    let text = turn_text(&sample(), 0, None).unwrap();
    assert_eq!(
        (text.context.as_str(), text.question.as_str()),
        (CONTEXT, QUESTION)
    );
    assert!(!text.templated);
}

/// A generated needle sample through Llama 3.1's template: the question part ends with the
/// assistant header followed by the answer prefix (kvpress's `question + question_suffix +
/// answer_prefix`), and the user message holds the question but not the prefix.
#[test]
fn needle_answer_prefix_follows_the_llama_generation_prompt() {
    let config: NeedleConfig =
        serde_json::from_value(serde_json::json!({"lengths": [200], "depths": [0.5]})).unwrap();
    let samples = config.generate(&WhitespaceTokens).unwrap();
    let s = &samples[0];
    let turn = &s.turns[0];
    let prefix = turn
        .answer_prefix
        .clone()
        .expect("needle turns have an answer prefix");
    let name = prefix
        .strip_prefix("Answer: ")
        .and_then(|p| p.strip_suffix(" lives in"))
        .unwrap_or_else(|| panic!("{prefix:?}"));
    assert_eq!(
        turn.question,
        format!("\n\nQuestion: Where does {name} live?\n")
    );

    let text = turn_text(s, 0, Some(&template(MODELS[0].0))).unwrap();
    let header = "<|start_header_id|>assistant<|end_header_id|>\n\n";
    assert!(
        text.question.ends_with(&format!("{header}{prefix}")),
        "{:?}",
        text.question
    );
    assert_eq!(
        text.question,
        format!("{}<|eot_id|>{header}{prefix}", turn.question)
    );
    // The user message: from its header to its <|eot_id|>; the question is in it, the prefix not.
    let full = format!("{}{}", text.context, text.question);
    let user_header = "<|start_header_id|>user<|end_header_id|>\n\n";
    let start = full.find(user_header).expect("a user message") + user_header.len();
    let end = start
        + full[start..]
            .find("<|eot_id|>")
            .expect("the user turn ends");
    let user = &full[start..end];
    assert!(user.starts_with(&s.context[..40]), "{user:?}");
    assert!(user.ends_with(&turn.question), "{user:?}");
    assert!(
        !user.contains(&prefix),
        "the answer prefix leaked into the user message"
    );
    assert!(!user.contains("Answer:"));
    assert_eq!(full.matches(prefix.as_str()).count(), 1);
    assert!(!text.context.contains("Question:"));

    // Without a template: the completion prompt the quickstart has always used.
    let plain = turn_text(s, 0, None).unwrap();
    assert_eq!(
        plain.question,
        format!("\n\nQuestion: Where does {name} live?\nAnswer: {name} lives in")
    );
    assert_eq!(plain.context, s.context);
}

/// An answer prefix ends the question part under every template, right after its generation
/// prompt; the rest is the prefix-less split.
#[test]
fn answer_prefix_comes_right_after_each_generation_prompt() {
    let mut s = sample();
    s.turns[0].question = "\n\nWhat is the special magic number?".into();
    s.turns[0].answer_prefix = Some(" The special magic number is".into());
    for (key, generation_prompt) in MODELS {
        let t = template(key);
        let text = turn_text(&s, 0, Some(&t)).unwrap();
        assert_eq!(
            text.question,
            format!(
                "\n\nWhat is the special magic number?{generation_prompt} The special magic number is"
            ),
            "{key}"
        );
        // RULER's layout: the rendered conversation, then the answer prefix.
        let full = t
            .render(
                &[ChatMessage::new(
                    "user",
                    format!("{CONTEXT}\n\nWhat is the special magic number?"),
                )],
                true,
                &template_kwargs(),
            )
            .unwrap();
        assert_eq!(
            format!("{}{}", text.context, text.question),
            format!("{full} The special magic number is"),
            "{key}"
        );
    }
}

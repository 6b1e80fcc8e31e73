//! `kvbench show-prompt` / `kvbench run --dry-run`: the exact prompts of the first samples, as
//! the run would build them (chat template, context | question split, truncation), with their
//! token counts, without running any method.

use anyhow::Result;
use candle_core::Device;

use crate::experiment::Plan;
use crate::loader::LoadedModel;
use crate::prompt::{turn_text, TurnText};

use super::plan::RunPlan;
use super::prefill::{Engine, TurnPrompt};
use super::TurnRef;

/// The first `samples` samples of each dataset (after `limit`), every turn: the rendered context
/// (prefilled and compressed), the question (appended after compression), token counts, the
/// truncation and the decode length.
pub fn show_prompts(
    plan: &Plan,
    loaded: &LoadedModel,
    limit: Option<usize>,
    samples: usize,
) -> Result<String> {
    let device = Device::Cpu;
    let engine = Engine::new(loaded, &device, plan.raw.attention_chunk);
    let work = RunPlan::new(plan, loaded, limit)?;
    let mut out = format!(
        "plan: {} samples x {} configurations; showing the first {samples} of each dataset\n",
        work.total_samples(),
        work.runs.len()
    );
    for dataset in &work.datasets {
        for sample in dataset.samples.iter().take(samples) {
            for index in 0..sample.turns.len() {
                let turn = TurnRef {
                    dataset: dataset.name,
                    sample,
                    index,
                };
                let prompting = &dataset.prompting;
                let prompt = TurnPrompt::new(&engine, prompting, &turn)?;
                let text = rendered(loaded, prompting, &turn, &prompt)?;
                out += &format!(
                    "\n=== dataset {} · sample {} · task {} · turn {}/{} · chat template: {}\n",
                    dataset.name,
                    sample.id,
                    sample.task,
                    index + 1,
                    sample.turns.len(),
                    if text.templated { "yes" } else { "no" }
                );
                out += &format!(
                    "--- context: {} tokens (prefilled, then compressed){} ---\n",
                    prompt.context_ids.len(),
                    if prompt.truncated_tokens > 0 {
                        format!(
                            "; {} tokens cut from the middle ({})",
                            prompt.truncated_tokens,
                            prompting.truncation.label()
                        )
                    } else {
                        String::new()
                    }
                );
                out += &text.context;
                out += &format!(
                    "\n--- question: {} tokens (appended after compression; the model answers after it) ---\n",
                    prompt.question_ids.len()
                );
                out += &text.question;
                out += &format!(
                    "\n--- answers: {:?} · up to {} new tokens · metric {:?}\n",
                    sample.turns[index].answers,
                    prompt.max_new_tokens,
                    sample.turn_metric(index)
                );
            }
        }
    }
    Ok(out)
}

/// The text a turn's model is fed: the rendered context (where tokens were cut, the decoded kept
/// tokens, which is what was prefilled) and the question. What `show-prompt` prints and what a run
/// keeps in `prompts.jsonl` for `kvbench show`.
pub(super) fn rendered(
    loaded: &LoadedModel,
    prompting: &super::prefill::Prompting,
    turn: &TurnRef,
    prompt: &TurnPrompt,
) -> Result<TurnText> {
    let template = prompting
        .template
        .as_ref()
        .filter(|_| prompting.mode.applies(turn.sample, true));
    let mut text = turn_text(turn.sample, turn.index, template)?;
    if prompt.truncated_tokens > 0 {
        text.context = loaded.tokenizer.decode(&prompt.context_ids)?;
    }
    Ok(text)
}

/// The line `prompts.jsonl` keeps for a turn.
pub(super) fn prompt_line(
    loaded: &LoadedModel,
    prompting: &super::prefill::Prompting,
    turn: &TurnRef,
    prompt: &TurnPrompt,
) -> Result<kvbench_reports::prompts::PromptLine> {
    let text = rendered(loaded, prompting, turn, prompt)?;
    Ok(kvbench_reports::prompts::PromptLine {
        dataset: turn.dataset.to_string(),
        sample_id: turn.sample.id.clone(),
        turn: turn.index,
        templated: text.templated,
        context_tokens: prompt.context_ids.len(),
        question_tokens: prompt.question_ids.len(),
        truncated_tokens: prompt.truncated_tokens,
        context: text.context,
        question: text.question,
    })
}

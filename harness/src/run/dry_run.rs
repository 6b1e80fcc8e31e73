//! `kvbench show-prompt` / `kvbench run --dry-run`: the exact prompts of the first samples, as
//! the run would build them (chat template, context | question split, truncation), with their
//! token counts, without running any method.

use anyhow::Result;
use candle_core::Device;

use crate::experiment::Plan;
use crate::loader::LoadedModel;
use crate::prompt::turn_text;

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
                let template = prompting
                    .template
                    .as_ref()
                    .filter(|_| prompting.mode.applies(sample, true));
                let text = turn_text(sample, index, template)?;
                let prompt = TurnPrompt::new(&engine, prompting, &turn)?;
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
                if prompt.truncated_tokens > 0 {
                    out += &loaded.tokenizer.decode(&prompt.context_ids)?;
                } else {
                    out += &text.context;
                }
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

//! `kvbench show RUN SAMPLE_ID`: every record of one sample, as a researcher reads outputs: per
//! turn and configuration the prediction beside the reference answers, the score and fidelity,
//! the prompt's token counts (and truncation), the exact prompt the model was fed (from the run's
//! `prompts.jsonl`, see [`crate::prompts`]), and the file and line each record came from.

use std::fmt::Write;

use crate::aggregate::{Configs, METHOD_ORDER};
use crate::merge::Merged;
use crate::ReportError;

/// The text `kvbench show` prints; an error naming some sample ids when none matches.
pub fn render(merged: &Merged, sample_id: &str) -> Result<String, ReportError> {
    let mut idx: Vec<usize> = (0..merged.records.len())
        .filter(|&i| merged.records[i].sample_id == sample_id)
        .collect();
    if idx.is_empty() {
        let mut ids: Vec<&str> = merged
            .records
            .iter()
            .map(|r| r.sample_id.as_str())
            .collect();
        ids.sort();
        ids.dedup();
        let near: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| id.contains(sample_id) || sample_id.contains(*id))
            .chain(ids.iter().copied())
            .take(8)
            .collect();
        return Err(ReportError::NoMatch {
            filter: format!("sample_id={sample_id}"),
            field: "sample_id".into(),
            values: format!(
                "{}{}",
                near.join(", "),
                if ids.len() > 8 { ", ..." } else { "" }
            ),
        });
    }
    let configs = Configs::new(&merged.records);
    idx.sort_by_key(|&i| {
        let r = &merged.records[i];
        let rank = METHOD_ORDER
            .iter()
            .position(|m| *m == r.method)
            .unwrap_or(usize::MAX);
        (r.dataset.clone(), r.turn, rank, configs.of(r))
    });
    let first = &merged.records[idx[0]];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sample {sample_id} · dataset {} · task {} · metric {} · {} record(s)",
        first.dataset,
        first.task,
        first.metric,
        idx.len()
    );
    let results: Vec<std::path::PathBuf> =
        merged.sources.iter().map(|s| s.results.clone()).collect();
    let mut prompts: Vec<(String, Vec<crate::prompts::PromptLine>)> = Vec::new();
    let mut shown_prompts = 0;
    let mut turn = (String::new(), usize::MAX);
    for i in idx {
        let r = &merged.records[i];
        if (&r.dataset, r.turn) != (&turn.0, turn.1) {
            turn = (r.dataset.clone(), r.turn);
            let _ = writeln!(
                out,
                "\n== turn {} · context {} tokens{} · question {} tokens · answers: {}",
                r.turn,
                r.context_tokens,
                if r.truncated_tokens > 0 {
                    format!(" ({} cut from the middle)", r.truncated_tokens)
                } else {
                    String::new()
                },
                r.question_tokens,
                serde_json::to_string(&r.answers).unwrap_or_default()
            );
            if !r.meta.is_null() {
                let _ = writeln!(out, "   meta: {}", r.meta);
            }
            if !prompts.iter().any(|(d, _)| *d == r.dataset) {
                let found = crate::prompts::find(&results, &r.dataset, sample_id);
                prompts.push((r.dataset.clone(), found));
            }
            let prompt = prompts
                .iter()
                .filter(|(d, _)| *d == r.dataset)
                .flat_map(|(_, p)| p)
                .find(|p| p.turn == r.turn);
            if let Some(p) = prompt {
                shown_prompts += 1;
                write_prompt(&mut out, p);
            }
        }
        let c = configs.of(r);
        let origin = merged
            .origins
            .get(i)
            .and_then(|(s, line)| Some((merged.sources.get(*s)?, line)))
            .map(|(s, line)| format!("{} line {line}", s.results.display()))
            .unwrap_or_default();
        let _ = writeln!(out, "\n-- {} · {origin}", c.label());
        if let Some(e) = &r.error {
            let _ = writeln!(out, "   failed: {e}");
            continue;
        }
        let _ = writeln!(
            out,
            "   score {:.3} · agreement {:.3} · KL {:.4} · achieved ratio {:.3} · KV {:.2} MiB · TTFT {:.1} ms · {} new tokens",
            r.score,
            r.agreement_with_full,
            r.kl_first_token,
            r.achieved_ratio,
            r.kv_bytes as f64 / (1024.0 * 1024.0),
            r.ttft_ms,
            r.new_tokens
        );
        let _ = writeln!(
            out,
            "   prediction: {}",
            r.prediction.replace('\n', "\n               ")
        );
    }
    if shown_prompts == 0 {
        let _ = writeln!(
            out,
            "\nThis run kept no prompts.jsonl (runs before it did): `kvbench show-prompt EXPERIMENT.yaml` renders prompts exactly as the run did (the run directory keeps its experiment.yaml)."
        );
    }
    Ok(out)
}

/// The prompt as the model got it, in `kvbench show-prompt`'s layout.
fn write_prompt(out: &mut String, p: &crate::prompts::PromptLine) {
    let _ = writeln!(
        out,
        "\n--- prompt as fed to the model (chat template: {}) · context: {} tokens (prefilled, then compressed){} ---",
        if p.templated { "yes" } else { "no" },
        p.context_tokens,
        if p.truncated_tokens > 0 {
            format!("; {} tokens cut from the middle", p.truncated_tokens)
        } else {
            String::new()
        }
    );
    let _ = writeln!(out, "{}", p.context);
    let _ = writeln!(
        out,
        "--- question: {} tokens (appended after compression; the model answers after it) ---",
        p.question_tokens
    );
    let _ = writeln!(out, "{}", p.question);
}

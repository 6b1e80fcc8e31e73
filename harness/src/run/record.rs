//! Record stage: one results line per sample x turn x method run, and the key that lets a re-run
//! skip it.

use kvbench_methods::Method;
use kvbench_reports::Record;
use sha2::{Digest, Sha256};

use crate::experiment::{MethodRun, Plan};

use super::access::ReuseFacts;
use super::generate::Generation;
use super::plan::PlannedRun;
use super::prefill::{Prefilled, TurnPrompt};
use super::score::Scored;
use super::TurnRef;

/// What every record of a run shares.
pub(super) struct RunFacts<'a> {
    pub plan: &'a Plan,
    pub device_label: String,
}

/// One turn after the prompt and prefill stages.
pub(super) struct TurnFacts<'a> {
    pub turn: TurnRef<'a>,
    pub prompt: &'a TurnPrompt,
    pub prefilled: &'a Prefilled,
}

/// One method run's outcome on the turn.
pub(super) struct Outcome<'a> {
    pub planned: &'a PlannedRun<'a>,
    pub generation: &'a Generation,
    pub scored: Scored,
    pub key: String,
    /// With `reuse:`, how the cache was reached.
    pub reuse: Option<ReuseFacts>,
}

/// The key of a record: a digest of everything that identifies it (not of what it measured).
pub(super) fn record_key(plan: &Plan, turn: &TurnRef, run: &MethodRun) -> String {
    let ident = serde_json::json!({
        "experiment": plan.raw.experiment,
        "model": plan.raw.model,
        "dataset": turn.dataset,
        "sample": turn.sample.id,
        "turn": turn.index,
        "method": run.config,
        "budget": run.budget,
        "query_aware": run.query_aware,
        "seed": plan.raw.seed,
    });
    // The access axis joins the key only with `reuse:`, so keys without it stay as they were.
    let mut ident = ident;
    if let Some(a) = &run.access {
        ident["access"] = serde_json::json!(a);
    }
    let digest = Sha256::digest(ident.to_string().as_bytes());
    hex::encode(&digest[..12])
}

pub(super) fn build(run: &RunFacts, facts: &TurnFacts, outcome: Outcome) -> Record {
    let (plan, sample, index) = (run.plan, facts.turn.sample, facts.turn.index);
    let (prompt, prefilled) = (facts.prompt, facts.prefilled);
    let Outcome {
        planned,
        generation: g,
        scored,
        key,
        reuse,
    } = outcome;
    let (method_run, method): (&MethodRun, &dyn Method) = (planned.run, planned.method.as_ref());
    // What the method compressed: the context, or context + question[..n-1] when query-aware.
    let total_entries = prefilled.entries;
    let cache_ms = reuse.as_ref().and_then(|r| r.cache_ms);
    Record {
        experiment: plan.raw.experiment.clone(),
        model: plan.raw.model.clone(),
        dataset: facts.turn.dataset.to_string(),
        task: sample.task.clone(),
        sample_id: sample.id.clone(),
        turn: index,
        method: method.name().to_string(),
        method_params: method.params(),
        budget: method_run
            .budget
            .map(|b| serde_json::to_value(b).expect("budget serializes")),
        budget_label: method_run.budget.map_or("-".to_string(), |b| b.label()),
        query_aware: method_run.query_aware,
        target_ratio: method_run
            .budget
            .map_or(0.0, |b| b.target_ratio(prefilled.tokens)),
        achieved_ratio: 1.0 - g.stored.kept_entries as f64 / total_entries as f64,
        score: scored.score,
        prediction: scored.prediction,
        answers: sample.turns[index].answers.clone(),
        metric: sample.turn_metric(index).name().to_string(),
        agreement_with_full: scored.agreement_with_full,
        kl_first_token: scored.kl_first_token,
        kv_bytes: g.stored.kv_bytes as u64,
        kv_bytes_full: prefilled.kv_bytes as u64,
        peak_device_bytes: if cache_ms.is_some() {
            g.peak_bytes
        } else {
            prefilled.peak_bytes.max(g.peak_bytes)
        },
        prefill_ms: if cache_ms.is_some() {
            0.0
        } else {
            prefilled.prefill_ms
        },
        compress_ms: g.compress_ms,
        question_ms: g.question_ms,
        // Loaded and Cake-built caches: the time to the cache replaces prefill and compression.
        ttft_ms: match cache_ms {
            Some(ms) => ms + g.question_ms,
            None => prefilled.prefill_ms + g.compress_ms + g.question_ms,
        },
        decode_ms_per_token: g.decode_ms_per_token,
        context_tokens: prompt.context_ids.len(),
        question_tokens: prompt.question_ids.len(),
        truncated_tokens: prompt.truncated_tokens,
        new_tokens: g.tokens.len(),
        device: run.device_label.clone(),
        seed: plan.raw.seed,
        kvbench_version: env!("CARGO_PKG_VERSION").to_string(),
        key,
        meta: record_meta(sample, index),
        kv_storage: g.stored.kv_storage.clone(),
        error: None,
        ttft_mode: reuse.as_ref().map(|r| r.mode.name().to_string()),
        kv_bytes_read: reuse.as_ref().map(|r| r.bytes_read),
        bandwidth_gbps: reuse.as_ref().and_then(|r| r.bandwidth_gbps),
        cache_ms,
        cake_split_tokens: reuse.as_ref().and_then(|r| r.split_tokens),
    }
}

/// The record of a method run that failed on this turn (a device out of memory, ...): the
/// identifiers and the reason, no measurement.
pub(super) fn failed(
    run: &RunFacts,
    turn: &TurnRef,
    planned: &PlannedRun,
    key: String,
    reason: String,
) -> Record {
    let (plan, sample, index) = (run.plan, turn.sample, turn.index);
    let (method_run, method): (&MethodRun, &dyn Method) = (planned.run, planned.method.as_ref());
    Record {
        experiment: plan.raw.experiment.clone(),
        model: plan.raw.model.clone(),
        dataset: turn.dataset.to_string(),
        task: sample.task.clone(),
        sample_id: sample.id.clone(),
        turn: index,
        method: method.name().to_string(),
        method_params: method.params(),
        budget: method_run
            .budget
            .map(|b| serde_json::to_value(b).expect("budget serializes")),
        budget_label: method_run.budget.map_or("-".to_string(), |b| b.label()),
        query_aware: method_run.query_aware,
        target_ratio: 0.0,
        achieved_ratio: 0.0,
        score: 0.0,
        prediction: String::new(),
        answers: sample.turns[index].answers.clone(),
        metric: sample.turn_metric(index).name().to_string(),
        agreement_with_full: 0.0,
        kl_first_token: 0.0,
        kv_bytes: 0,
        kv_bytes_full: 0,
        peak_device_bytes: None,
        prefill_ms: 0.0,
        compress_ms: 0.0,
        question_ms: 0.0,
        ttft_ms: 0.0,
        decode_ms_per_token: 0.0,
        context_tokens: 0,
        question_tokens: 0,
        truncated_tokens: 0,
        new_tokens: 0,
        device: run.device_label.clone(),
        seed: plan.raw.seed,
        kvbench_version: env!("CARGO_PKG_VERSION").to_string(),
        key,
        meta: record_meta(sample, index),
        kv_storage: serde_json::Value::Null,
        error: Some(reason),
        ttft_mode: None,
        kv_bytes_read: None,
        bandwidth_gbps: None,
        cache_ms: None,
        cake_split_tokens: None,
    }
}

/// The sample's meta for reports, plus the turn's own task where a mixed task marks it
/// (SCBench's `scbench_summary_with_needles` and `scbench_repoqa_and_kv` turns) as `turn_task`,
/// which the report's per-turn-task table reads; null when there is nothing.
fn record_meta(sample: &kvbench_datasets::Sample, index: usize) -> serde_json::Value {
    let mut meta = sample.meta.clone();
    if let Some(task) = sample.turns[index].meta.get("task") {
        meta.insert("turn_task".into(), task.clone());
    }
    if meta.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::Value::Object(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvbench_datasets::{Metric, Sample, Turn};

    #[test]
    fn a_mixed_tasks_turn_task_joins_the_samples_meta() {
        let mut turn = Turn::new("q", vec!["a".into()]);
        turn.meta.insert("task".into(), "scbench_passkey".into());
        let mut s = Sample::single(
            "s",
            "c",
            Turn::new("q0", vec!["a".into()]),
            "scbench_summary_with_needles",
            Metric::RougeLsum,
            800,
        );
        s.turns.push(turn);
        assert_eq!(record_meta(&s, 0), serde_json::Value::Null);
        assert_eq!(
            record_meta(&s, 1),
            serde_json::json!({ "turn_task": "scbench_passkey" })
        );
        s.meta.insert("repo".into(), "r".into());
        assert_eq!(
            record_meta(&s, 1),
            serde_json::json!({ "repo": "r", "turn_task": "scbench_passkey" })
        );
    }
}

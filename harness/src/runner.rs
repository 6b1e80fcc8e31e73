//! The runner: per sample, prefill the context once with full attention, then for each
//! method x budget fork the cache, compress, append the question, decode greedily, score, and
//! append one record.
//!
//! Sharing the prefill is exact for methods that compress after prefill (kvpress semantics): each
//! layer's compression happens after its attention, and the hidden states passed on are those of
//! full attention, so compressing all layers afterwards gives the same cache.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use kvbench_datasets::{ChatTemplateMode, Sample, TokenCounter};
use kvbench_methods::sliding::on_compressible_layers;
use kvbench_methods::{Budget, KvCache, Method, ObservationNeeds, Observations};
use kvbench_reports::{read_results, Record, ResultsWriter};
use sha2::{Digest, Sha256};

use crate::chat_template::ChatTemplate;
use crate::device::{label, timed};
use crate::experiment::{MethodRun, Plan};
use crate::loader::LoadedModel;
use crate::model::{argmax, ForwardOptions, Logits};
use crate::prompt::{tokenize, turn_text};
use crate::truncation::TruncationPolicy;

pub struct RunOptions {
    pub output: PathBuf,
    /// At most this many samples per dataset.
    pub limit: Option<usize>,
    /// Start over: move existing results aside instead of resuming.
    pub fresh: bool,
    pub progress: bool,
}

pub struct RunOutcome {
    pub results: PathBuf,
    pub written: usize,
    pub skipped: usize,
    /// Every record in the results file after the run (earlier runs included).
    pub records: Vec<Record>,
}

/// What one method produced on one turn.
struct Generation {
    tokens: Vec<u32>,
    /// Log-probabilities of the first generated token, f64.
    first_logprobs: Vec<f64>,
    compress_ms: f64,
    question_ms: f64,
    decode_ms_per_token: f64,
    kv_bytes: usize,
    kept_entries: usize,
    kv_storage: serde_json::Value,
    /// Device memory high-water mark from the fork to the last token (None on CPU).
    peak_bytes: Option<u64>,
}

fn log_softmax(logits: &Tensor) -> Result<Vec<f64>> {
    let v: Vec<f32> = logits.flatten_all()?.to_vec1()?;
    let max = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + v.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
    Ok(v.iter().map(|&x| x as f64 - lse).collect())
}

/// KL(p || q) in nats from log-probabilities.
pub fn kl_divergence(logp: &[f64], logq: &[f64]) -> f64 {
    logp.iter()
        .zip(logq)
        .map(|(&a, &b)| {
            if a.is_finite() {
                a.exp() * (a - b)
            } else {
                0.0
            }
        })
        .sum::<f64>()
        .max(0.0)
}

/// Fraction of the reference's tokens reproduced at the same positions.
pub fn agreement(reference: &[u32], tokens: &[u32]) -> f64 {
    if reference.is_empty() {
        return if tokens.is_empty() { 1.0 } else { 0.0 };
    }
    let same = reference.iter().zip(tokens).filter(|(a, b)| a == b).count();
    same as f64 / reference.len() as f64
}

fn record_key(plan: &Plan, dataset: &str, sample_id: &str, turn: usize, run: &MethodRun) -> String {
    let ident = serde_json::json!({
        "experiment": plan.raw.experiment,
        "model": plan.raw.model,
        "dataset": dataset,
        "sample": sample_id,
        "turn": turn,
        "method": run.config,
        "budget": run.budget,
        "query_aware": run.query_aware,
        "seed": plan.raw.seed,
    });
    let digest = Sha256::digest(ident.to_string().as_bytes());
    hex::encode(&digest[..12])
}

struct Ctx<'a> {
    loaded: &'a LoadedModel,
    device: &'a Device,
    chunk: usize,
}

impl Ctx<'_> {
    fn forward(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        logits: Logits,
        observe: ObservationNeeds,
    ) -> Result<(Option<Tensor>, Observations, f64)> {
        let opts = ForwardOptions {
            logits,
            observe,
            attention_chunk: self.chunk,
        };
        let (out, ms) = timed(self.device, || self.loaded.model.forward(ids, cache, &opts))?;
        Ok((out.logits, out.observations, ms))
    }

    /// Compress (before or after the question, as the run says) and decode greedily.
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        context_cache: &KvCache,
        context_obs: &Observations,
        question: &[u32],
        method: &dyn Method,
        budget: &Budget,
        query_aware: bool,
        max_new_tokens: usize,
    ) -> Result<Generation> {
        crate::memory::reset_peak(self.device);
        let mut cache = context_cache.fork();
        // This request's state: lives from the compression to the last decoded token.
        let mut session = method.session();
        let (first_logits, compress_ms, question_ms, kv_bytes, kept_entries, kv_storage);
        if query_aware {
            // Prefill the question with full attention, then compress context + question.
            let (logits, obs, q_ms) =
                self.forward(question, &mut cache, Logits::Last, method.needs())?;
            let ((), c_ms) = timed(self.device, || {
                Ok(on_compressible_layers(&mut cache, &obs, |c, o| {
                    session.on_prefill(c, o, budget)
                })?)
            })?;
            first_logits = logits.context("question logits")?;
            (compress_ms, question_ms) = (c_ms, q_ms);
            kv_bytes = cache.bytes();
            kept_entries = cache.entries();
            kv_storage = cache.storage_report();
        } else {
            let ((), c_ms) = timed(self.device, || {
                Ok(on_compressible_layers(&mut cache, context_obs, |c, o| {
                    session.on_prefill(c, o, budget)
                })?)
            })?;
            kv_bytes = cache.bytes();
            kept_entries = cache.entries();
            kv_storage = cache.storage_report();
            let (logits, _, q_ms) = self.forward(
                question,
                &mut cache,
                Logits::Last,
                ObservationNeeds::default(),
            )?;
            first_logits = logits.context("question logits")?;
            (compress_ms, question_ms) = (c_ms, q_ms);
        }
        let eos = self.loaded.tokenizer.eos_ids();
        let mut next = argmax(&first_logits)?;
        let mut tokens = vec![next];
        let mut decode_ms = 0.0;
        // Decode hooks (issue 4): each decode forward records what the method's decode hook needs
        // (the new token's query for H2O's decode variant and `decoding`).
        let decode_needs = method.decode_needs();
        while tokens.len() < max_new_tokens && !eos.contains(&next) {
            let (logits, step_obs, ms) =
                self.forward(&[next], &mut cache, Logits::Last, decode_needs)?;
            let step = tokens.len();
            let ((), hook_ms) = timed(self.device, || {
                Ok(on_compressible_layers(&mut cache, &step_obs, |c, o| {
                    session.on_decode(c, step, o, budget)
                })?)
            })?;
            decode_ms += ms + hook_ms;
            next = argmax(&logits.context("decode logits")?)?;
            tokens.push(next);
        }
        if tokens.last().is_some_and(|t| eos.contains(t)) {
            tokens.pop();
        }
        self.device.synchronize()?;
        let peak_bytes = crate::memory::peak_bytes(self.device);
        let steps = tokens.len().saturating_sub(1).max(1);
        Ok(Generation {
            tokens,
            first_logprobs: log_softmax(&first_logits)?,
            compress_ms,
            question_ms,
            decode_ms_per_token: if decode_ms > 0.0 {
                decode_ms / steps as f64
            } else {
                0.0
            },
            kv_bytes,
            kept_entries,
            kv_storage,
            peak_bytes,
        })
    }
}

/// How one dataset's samples become tokens: the model's template (if any), the dataset's
/// `chat_template:` option, and the truncation policy.
struct Prompting<'a> {
    template: Option<&'a ChatTemplate>,
    mode: ChatTemplateMode,
    truncation: TruncationPolicy,
}

struct TokenizerCounter<'a>(&'a crate::tokenizer::TextTokenizer);

impl TokenCounter for TokenizerCounter<'_> {
    fn count_tokens(&self, text: &str) -> usize {
        self.0
            .encode(text)
            .map(|ids| ids.len())
            .unwrap_or(usize::MAX)
    }

    // datasets (issue 6): LongBench / LongBench v2 / SCBench middle truncation cuts token ids.
    fn encode(&self, text: &str) -> Option<Vec<u32>> {
        self.0.encode(text).ok()
    }

    fn decode(&self, ids: &[u32]) -> Option<String> {
        self.0.decode(ids).ok()
    }
}

/// Move an existing results file aside (never delete results).
fn set_aside(path: &Path) -> Result<()> {
    if path.exists() {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let aside = path.with_extension(format!("jsonl.{stamp}.bak"));
        std::fs::rename(path, &aside)
            .with_context(|| format!("moving {} aside", path.display()))?;
        eprintln!("--fresh: previous results moved to {}", aside.display());
    }
    Ok(())
}

/// Run every sample of every dataset through every method run of the plan.
pub fn run(
    plan: &Plan,
    loaded: &LoadedModel,
    device: &Device,
    opts: &RunOptions,
) -> Result<RunOutcome> {
    std::fs::create_dir_all(&opts.output)
        .with_context(|| format!("creating {}", opts.output.display()))?;
    let results = opts.output.join("results.jsonl");
    if opts.fresh {
        set_aside(&results)?;
    }
    let done: HashSet<String> = read_results(&results)?.into_iter().map(|r| r.key).collect();
    let mut writer = ResultsWriter::open(&results)?;
    let ctx = Ctx {
        loaded,
        device,
        chunk: plan.raw.attention_chunk,
    };
    let counter = TokenizerCounter(&loaded.tokenizer);
    let template = loaded.tokenizer.template();
    // Before any dataset work: `chat_template: true` needs a model with a template.
    plan.check_chat_templates(template.is_some())?;
    let window = loaded.model.config().max_position_embeddings;

    let mut datasets = Vec::new();
    for d in &plan.raw.datasets {
        let loaded_set = d
            .build_lenient(&counter)
            .with_context(|| format!("{}: dataset `{}`", plan.source.display(), d.name()))?;
        for e in &loaded_set.errors {
            eprintln!("warning: skipped {e}");
        }
        let mut samples = loaded_set.samples;
        if let Some(n) = opts.limit {
            samples.truncate(n);
        }
        let prompting = Prompting {
            template: template.as_ref(),
            mode: d.chat_template(),
            truncation: TruncationPolicy::new(d.max_length(), window),
        };
        datasets.push((d.name(), samples, prompting));
    }
    let total: usize = datasets.iter().map(|(_, s, _)| s.len()).sum();

    let methods: Vec<Box<dyn Method>> = plan.runs.iter().map(|r| r.config.build()).collect();
    let needs = plan
        .runs
        .iter()
        .zip(&methods)
        .filter(|(r, _)| !r.query_aware)
        .fold(ObservationNeeds::default(), |acc, (_, m)| {
            acc.union(m.needs())
        });
    let full = kvbench_methods::full::Full;
    let device_label = label(device);

    // Warm-up so the first sample's timings do not include one-off initialisation.
    let mut warm = loaded.model.new_cache();
    ctx.forward(&[0u32; 8], &mut warm, Logits::Last, needs)?;
    drop(warm);

    let bar = if opts.progress {
        ProgressBar::new(total as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} samples {msg}",
        )
        .expect("valid template"),
    );
    let (mut written, mut skipped) = (0, 0);
    for (dataset, samples, prompting) in &datasets {
        for sample in samples {
            bar.set_message(sample.id.clone());
            let (w, s) = run_sample(
                plan,
                &ctx,
                &mut writer,
                &done,
                dataset,
                sample,
                prompting,
                &plan.runs,
                &methods,
                needs,
                &full,
                &device_label,
            )
            .with_context(|| format!("sample `{}` of dataset `{dataset}`", sample.id))?;
            written += w;
            skipped += s;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(RunOutcome {
        records: read_results(&results)?,
        results,
        written,
        skipped,
    })
}

#[allow(clippy::too_many_arguments)]
fn run_sample(
    plan: &Plan,
    ctx: &Ctx,
    writer: &mut ResultsWriter,
    done: &HashSet<String>,
    dataset: &str,
    sample: &Sample,
    prompting: &Prompting,
    runs: &[MethodRun],
    methods: &[Box<dyn Method>],
    needs: ObservationNeeds,
    full: &dyn Method,
    device_label: &str,
) -> Result<(usize, usize)> {
    let tok = &ctx.loaded.tokenizer;
    let (mut written, mut skipped) = (0, 0);
    for (turn_index, turn) in sample.turns.iter().enumerate() {
        let keys: Vec<String> = runs
            .iter()
            .map(|r| record_key(plan, dataset, &sample.id, turn_index, r))
            .collect();
        if keys.iter().all(|k| done.contains(k)) {
            skipped += keys.len();
            continue;
        }
        // Multi-turn samples (SCBench) carry the gold history before the turn.
        let max_new_tokens = sample.turn_max_new_tokens(turn_index);
        let template = prompting
            .mode
            .applies(sample, prompting.template.is_some())
            .then_some(prompting.template)
            .flatten();
        let text = turn_text(sample, turn_index, template)?;
        let (mut context_ids, question_ids) = tokenize(tok, &text)?;
        let truncated_tokens =
            prompting
                .truncation
                .apply(&mut context_ids, question_ids.len(), max_new_tokens)?;
        anyhow::ensure!(
            !context_ids.is_empty() && !question_ids.is_empty(),
            "empty context or question after tokenization"
        );

        let mut context_cache = ctx.loaded.model.new_cache();
        crate::memory::reset_peak(ctx.device);
        let (_, obs, prefill_ms) =
            ctx.forward(&context_ids, &mut context_cache, Logits::None, needs)?;
        // A request's peak is the larger of the shared prefill's and its own compress+decode's.
        let prefill_peak = crate::memory::peak_bytes(ctx.device);
        let kv_bytes_full = context_cache.bytes();
        let entries_full = context_cache.entries();
        let reference = ctx.generate(
            &context_cache,
            &obs,
            &question_ids,
            full,
            &Budget::CompressionRatio(0.0),
            false,
            max_new_tokens,
        )?;

        for ((run, method), key) in runs.iter().zip(methods).zip(&keys) {
            if done.contains(key) {
                skipped += 1;
                continue;
            }
            let budget = run.budget.unwrap_or(Budget::CompressionRatio(0.0));
            let generation;
            let g = if method.name() == "full" && !run.query_aware {
                &reference
            } else {
                generation = ctx.generate(
                    &context_cache,
                    &obs,
                    &question_ids,
                    method.as_ref(),
                    &budget,
                    run.query_aware,
                    max_new_tokens,
                )?;
                &generation
            };
            let prediction = tok.decode(&g.tokens)?;
            let total_entries = if run.query_aware {
                entries_full
                    + question_ids.len()
                        * ctx.loaded.model.config().n_layers
                        * ctx.loaded.model.config().n_kv_heads
            } else {
                entries_full
            };
            let record = Record {
                experiment: plan.raw.experiment.clone(),
                model: plan.raw.model.clone(),
                dataset: dataset.to_string(),
                task: sample.task.clone(),
                sample_id: sample.id.clone(),
                turn: turn_index,
                method: method.name().to_string(),
                method_params: method.params(),
                budget: run
                    .budget
                    .map(|b| serde_json::to_value(b).expect("budget serializes")),
                budget_label: run.budget.map_or("-".to_string(), |b| b.label()),
                query_aware: run.query_aware,
                target_ratio: run
                    .budget
                    .map_or(0.0, |b| b.target_ratio(context_ids.len())),
                achieved_ratio: 1.0 - g.kept_entries as f64 / total_entries as f64,
                score: sample.score(turn_index, &prediction),
                prediction,
                answers: turn.answers.clone(),
                metric: sample.turn_metric(turn_index).name().to_string(),
                agreement_with_full: agreement(&reference.tokens, &g.tokens),
                kl_first_token: kl_divergence(&reference.first_logprobs, &g.first_logprobs),
                kv_bytes: g.kv_bytes as u64,
                kv_bytes_full: kv_bytes_full as u64,
                peak_device_bytes: prefill_peak.max(g.peak_bytes),
                prefill_ms,
                compress_ms: g.compress_ms,
                question_ms: g.question_ms,
                ttft_ms: prefill_ms + g.compress_ms + g.question_ms,
                decode_ms_per_token: g.decode_ms_per_token,
                context_tokens: context_ids.len(),
                question_tokens: question_ids.len(),
                truncated_tokens,
                new_tokens: g.tokens.len(),
                device: device_label.to_string(),
                seed: plan.raw.seed,
                kvbench_version: env!("CARGO_PKG_VERSION").to_string(),
                key: key.clone(),
                meta: if sample.meta.is_empty() {
                    serde_json::Value::Null
                } else {
                    serde_json::Value::Object(sample.meta.clone())
                },
                kv_storage: g.kv_storage.clone(),
            };
            writer.append(&record)?;
            written += 1;
        }
    }
    Ok((written, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_is_zero_for_identical_and_positive_otherwise() {
        let p = [0.5f64.ln(), 0.5f64.ln()];
        let q = [0.9f64.ln(), 0.1f64.ln()];
        assert!(kl_divergence(&p, &p).abs() < 1e-12);
        // 0.5 ln(0.5/0.9) + 0.5 ln(0.5/0.1) = 0.5108...
        assert!((kl_divergence(&p, &q) - 0.510_825_6).abs() < 1e-6);
    }

    #[test]
    fn agreement_counts_positions() {
        assert_eq!(agreement(&[1, 2, 3, 4], &[1, 2, 9, 4]), 0.75);
        assert_eq!(agreement(&[1, 2], &[1]), 0.5);
        assert_eq!(agreement(&[], &[]), 1.0);
    }
}

//! The runner, as stages:
//!
//! ```text
//! plan     (plan.rs)      datasets -> samples and prompting; method runs built, reference marked
//! for each sample x turn:
//!   prompt (prefill.rs)     tokens: context and question
//!   for each split (query-agnostic, then query-aware when the grid has such runs):
//!     prefill (prefill.rs)  the turn up to the split's cut, once, with full attention
//!     for each method run of the split (the reference with the query-agnostic runs):
//!       fork -> compress -> question (generate.rs)
//!     decode all of them in lockstep, one batched step per token (lockstep.rs; or one after
//!       another with `batch_decoding: false`)
//!     for each method run of the split:
//!       score   (score.rs)    task metric; agreement and first-token KL against the reference
//!       record  (record.rs)   one results line, keyed so re-runs skip it
//! ```
//!
//! The reference (full cache, query-agnostic) is computed on every turn from the query-agnostic
//! prefill, so fidelity numbers never depend on which runs a resumed run still has to do.

mod access;
#[cfg(test)]
mod access_tests;
#[cfg(test)]
mod batch_tests;
mod cake;
mod dry_run;
mod failure;
mod generate;
pub mod interrupt;
mod lockstep;
mod plan;
mod prefill;
mod progress;
mod record;
mod score;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::Device;
use kvbench_datasets::Sample;
use kvbench_reports::{Record, ResultsWriter};

use crate::experiment::Plan;
use crate::loader::LoadedModel;
use crate::scale::status::{ShardStatus, State};
use crate::scale::{Claim, DirPolicy, Shard};

use failure::{injected_oom, is_oom, without_backtrace};
use generate::{Generation, Request};
use lockstep::generate_all;
use plan::{DatasetWork, PlannedRun, Role, RunPlan};
use prefill::{Engine, Split, TurnPrompt};
use record::{record_key, Outcome, RunFacts, TurnFacts};
use score::Scored;

pub use dry_run::show_prompts;
pub use progress::duration;
pub use score::{agreement, kl_divergence};

pub struct RunOptions {
    pub output: PathBuf,
    /// At most this many samples of each task of each dataset (the first ones).
    pub limit: Option<usize>,
    /// Start over: move existing results aside instead of resuming.
    pub fresh: bool,
    pub progress: bool,
    /// Count failed records (a device out of memory, ...) as done; by default a re-run retries
    /// them.
    pub keep_failed: bool,
}

pub struct RunOutcome {
    pub results: PathBuf,
    pub written: usize,
    /// Of `written`, the failed records (with an `error`).
    pub failed: usize,
    pub skipped: usize,
    /// Turns skipped for their own data (empty context or question, ...), with a warning each.
    pub skipped_turns: usize,
    /// Every record in the output directory after the run (earlier runs and every shard's file
    /// included), each key once.
    pub records: Vec<Record>,
    /// Per dataset, the revision and the files its samples were read from (for `run.json`).
    pub data: Vec<crate::manifest::DatasetData>,
    /// Stopped early by Ctrl-C ([`interrupt`]): every finished record is in the results file.
    pub interrupted: bool,
}

/// One turn of one sample of one dataset.
#[derive(Clone, Copy)]
struct TurnRef<'a> {
    dataset: &'a str,
    sample: &'a Sample,
    index: usize,
}

/// Run every sample of every dataset through every method run of the plan, into
/// `OUTPUT/results.jsonl` (locked for the run; the directory's experiment checked).
pub fn run(
    plan: &Plan,
    loaded: &LoadedModel,
    device: &Device,
    opts: &RunOptions,
) -> Result<RunOutcome> {
    let policy = if opts.fresh {
        DirPolicy::Fresh
    } else {
        DirPolicy::Resume
    };
    let claim = Claim::acquire(&opts.output, Shard::WHOLE, plan, policy)?;
    run_claimed(plan, loaded, device, opts, &claim)
}

/// [`run`] for the shard and results file `claim` holds: only the shard's samples, skipping
/// records already in its file (or in a results file of another split), with a status file
/// beside it for `kvbench status`.
pub fn run_claimed(
    plan: &Plan,
    loaded: &LoadedModel,
    device: &Device,
    opts: &RunOptions,
    claim: &Claim,
) -> Result<RunOutcome> {
    let results = claim.results.clone();
    if opts.fresh {
        set_aside(&results)?;
    }
    let done = crate::scale::done_keys(&opts.output, claim.shard, opts.keep_failed)?;
    let mut writer = ResultsWriter::open(&results)?;
    let prompts_file = kvbench_reports::prompts::prompts_path(&results)
        .unwrap_or_else(|| results.with_extension("prompts.jsonl"));
    let mut prompts = ResultsWriter::open(&prompts_file)?;
    let engine = Engine::new(loaded, device, plan.raw.attention_chunk);
    let mut work = RunPlan::new(plan, loaded, opts.limit)?;
    // Shards get about equal text (context and questions), so `--gpus` workers finish together.
    claim
        .shard
        .retain_balanced(work.datasets.iter_mut().map(|d| &mut d.samples), |s| {
            (s.context.len() + s.turns.iter().map(|t| t.question.len()).sum::<usize>()) as u64
        });
    let mut status = shard_status(plan, &work, &done, claim);
    let status_path = claim.shard.status(&opts.output);
    status.write(&status_path)?;
    let mut runner = SampleRunner {
        engine: &engine,
        work: &work,
        done: &done,
        writer: &mut writer,
        prompts: &mut prompts,
        facts: RunFacts {
            plan,
            device_label: crate::device::label(device),
        },
        written: 0,
        failed: 0,
        skipped: 0,
        skipped_turns: 0,
        store: plan.raw.reuse.as_ref().map(|r| {
            let model = crate::kv_store::ModelShape::of(&plan.raw.model, &loaded.model.new_cache());
            let location = match r.directory(&opts.output) {
                Some(dir) => crate::kv_store::Location::Directory(dir),
                None => crate::kv_store::Location::Memory,
            };
            crate::kv_store::KvStore::new(location, model, r.layers_per_file)
        }),
    };
    let configurations = work.runs.len();
    let turns: usize = work
        .datasets
        .iter()
        .flat_map(|d| &d.samples)
        .map(|s| s.turns.len())
        .sum();
    let per_dataset: Vec<String> = work
        .datasets
        .iter()
        .map(|d| format!("{} {}", d.name, d.samples.len()))
        .collect();
    eprintln!(
        "plan: {} samples ({}){} x {configurations} configurations = {} generations; {} record(s) already in {}",
        work.total_samples(),
        per_dataset.join(", "),
        if turns != work.total_samples() {
            format!(", {turns} turns")
        } else {
            String::new()
        },
        turns * configurations,
        done.len(),
        results.display()
    );
    let mut progress = progress::Progress::new(opts.progress, work.total_samples(), configurations);
    let mut interrupted = false;
    let mut samples = || -> Result<()> {
        engine.warm_up(work.needs.union())?;
        if plan.raw.batch_decoding {
            lockstep::warm_up(&engine)?;
        }
        for dataset in &work.datasets {
            for sample in &dataset.samples {
                if interrupt::requested() {
                    interrupted = true;
                    return Ok(());
                }
                progress.start(&sample.id);
                let before = runner.written;
                runner.sample(dataset, sample).with_context(|| {
                    format!("sample `{}` of dataset `{}`", sample.id, dataset.name)
                })?;
                if runner.written == before {
                    progress.resumed();
                } else {
                    progress.finished();
                }
            }
        }
        Ok(())
    };
    let ran = samples();
    interrupted |= interrupt::requested();
    progress.finish();
    status.updated = crate::scale::now_secs();
    match &ran {
        Ok(()) => status.state = State::Finished,
        Err(e) => {
            status.state = State::Failed;
            status.error = Some(format!("{e:#}"));
        }
    }
    status.write(&status_path)?;
    ran?;
    let (written, skipped) = (runner.written, runner.skipped);
    // Every record of the directory (all shards), each key once.
    let records = match kvbench_reports::merge::load_runs(std::slice::from_ref(&opts.output)) {
        Ok(m) => m.records,
        // A shard's own work is done; another shard's damaged file is that shard's problem.
        Err(e) if !claim.shard.is_whole() => {
            eprintln!("warning: merging the directory's shards: {e}");
            kvbench_reports::read_results(&results)?
        }
        Err(e) => return Err(e.into()),
    };
    let (failed, skipped_turns) = (runner.failed, runner.skipped_turns);
    Ok(RunOutcome {
        data: work.datasets.iter().map(|d| d.data.clone()).collect(),
        records,
        results,
        written,
        failed,
        skipped,
        skipped_turns,
        interrupted,
    })
}

/// The shard's status at the start: how many records its samples need, how many exist.
fn shard_status(plan: &Plan, work: &RunPlan, done: &HashSet<String>, claim: &Claim) -> ShardStatus {
    let (mut total, mut done_at_start) = (0, 0);
    for d in &work.datasets {
        for sample in &d.samples {
            for index in 0..sample.turns.len() {
                let turn = TurnRef {
                    dataset: d.name,
                    sample,
                    index,
                };
                for p in &work.runs {
                    total += 1;
                    done_at_start += done.contains(&record_key(plan, &turn, p.run)) as usize;
                }
            }
        }
    }
    let now = crate::scale::now_secs();
    ShardStatus {
        shard: claim.shard.to_string(),
        state: State::Running,
        total,
        done_at_start,
        lines_at_start: crate::scale::status::count_lines(&claim.results),
        pid: std::process::id(),
        host: crate::scale::host_name(),
        started: now,
        updated: now,
        error: None,
    }
}

/// The sample loop's state: what it reads and where it writes.
struct SampleRunner<'a> {
    engine: &'a Engine<'a>,
    work: &'a RunPlan<'a>,
    /// Keys of the records already in the results file.
    done: &'a HashSet<String>,
    writer: &'a mut ResultsWriter,
    /// `prompts.jsonl`: each prefilled turn's exact prompt, once, for `kvbench show`.
    prompts: &'a mut ResultsWriter,
    facts: RunFacts<'a>,
    written: usize,
    failed: usize,
    skipped: usize,
    skipped_turns: usize,
    /// With `reuse:`, the run's KV store (contexts stored by earlier requests).
    store: Option<crate::kv_store::KvStore>,
}

impl SampleRunner<'_> {
    /// Every turn of `sample` through every method run whose record is not written yet.
    fn sample(&mut self, dataset: &DatasetWork, sample: &Sample) -> Result<()> {
        for index in 0..sample.turns.len() {
            if interrupt::requested() {
                return Ok(());
            }
            let turn = TurnRef {
                dataset: dataset.name,
                sample,
                index,
            };
            let keys: Vec<String> = self
                .work
                .runs
                .iter()
                .map(|p| record_key(self.facts.plan, &turn, p.run))
                .collect();
            if keys.iter().all(|k| self.done.contains(k)) {
                self.skipped += keys.len();
                continue;
            }
            self.turn(turn, &dataset.prompting, keys)?;
        }
        Ok(())
    }

    /// Prompt once; per split, prefill once and run that split's pending method runs; the
    /// reference comes from the query-agnostic prefill.
    fn turn(
        &mut self,
        turn: TurnRef,
        prompting: &prefill::Prompting,
        keys: Vec<String>,
    ) -> Result<()> {
        let engine = self.engine;
        let prompt = match TurnPrompt::new(engine, prompting, &turn) {
            Ok(p) => p,
            Err(e) if e.downcast_ref::<prefill::SkipSample>().is_some() => {
                eprintln!(
                    "warning: skipped sample `{}` (dataset `{}`, turn {}): {e}",
                    turn.sample.id, turn.dataset, turn.index
                );
                self.skipped_turns += 1;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let line = dry_run::prompt_line(engine.loaded, prompting, &turn, &prompt)?;
        self.prompts.append_json(&line)?;
        let mut pending: Vec<(&PlannedRun, String)> = Vec::new();
        for (planned, key) in self.work.runs.iter().zip(keys) {
            if self.done.contains(&key) {
                self.skipped += 1;
            } else {
                pending.push((planned, key));
            }
        }
        let needs = self.work.needs;
        let agnostic = injected_oom(&turn.sample.id).and_then(|()| {
            engine.prefill(
                &prompt,
                Split::QueryAgnostic,
                needs.of(Split::QueryAgnostic),
            )
        });
        let agnostic = match agnostic {
            Ok(agnostic) => agnostic,
            // Nothing of this turn can run: every pending record fails with the reason.
            Err(e) if is_oom(&e) => return self.fail_all(turn, &pending, &e),
            Err(e) => return Err(e),
        };
        // The reference decodes in the same batch as the split's compressed runs.
        let mut generations = self.generate_split(&prompt, &agnostic, &pending, true)?;
        let reference = match generations.remove(0) {
            Ok(reference) => reference,
            Err(e) => return self.fail_all(turn, &pending, &e),
        };
        self.split_runs(turn, &prompt, &agnostic, &reference, &pending, generations)?;
        drop(agnostic);
        if interrupt::requested() {
            return Ok(());
        }
        if pending.iter().any(|(p, _)| p.split() == Split::QueryAware) {
            let aware =
                match engine.prefill(&prompt, Split::QueryAware, needs.of(Split::QueryAware)) {
                    Ok(aware) => aware,
                    Err(e) if is_oom(&e) => {
                        let aware_runs = pending
                            .iter()
                            .filter(|(p, _)| p.split() == Split::QueryAware);
                        for (planned, key) in aware_runs {
                            self.fail(turn, planned, key, &e)?;
                        }
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
            let generations = self.generate_split(&prompt, &aware, &pending, false)?;
            self.split_runs(turn, &prompt, &aware, &reference, &pending, generations)?;
        }
        Ok(())
    }

    /// Generate every pending compressed run of `prefilled`'s split (after the full-cache
    /// reference when `with_reference`), batched unless the experiment turned batching off.
    /// Slots hold each run's generation or its out-of-memory error.
    fn generate_split(
        &self,
        prompt: &TurnPrompt,
        prefilled: &prefill::Prefilled,
        pending: &[(&PlannedRun, String)],
        with_reference: bool,
    ) -> Result<Vec<Result<Generation>>> {
        let max_new_tokens = prompt.max_new_tokens;
        let mut requests = Vec::new();
        if with_reference {
            requests.push(Request::reference(max_new_tokens));
        }
        requests.extend(
            pending
                .iter()
                .filter(|(p, _)| {
                    p.split() == prefilled.split && p.role == Role::Compressed && !self.reuses(p)
                })
                .map(|(p, _)| p.request(max_new_tokens)),
        );
        generate_all(
            self.engine,
            prefilled,
            &requests,
            self.facts.plan.raw.batch_decoding,
        )
    }

    /// Whether `planned` gets its cache from the KV store (loaded or built by Cake) instead of
    /// the shared prefill: such runs generate on their own, outside the batch.
    fn reuses(&self, planned: &PlannedRun) -> bool {
        planned.run.access.is_some() && self.store.is_some() && self.facts.plan.raw.reuse.is_some()
    }

    /// Score and record every pending run of `prefilled`'s split: the reference's record from
    /// `reference`, the compressed runs' from `generations` (in `pending`'s order).
    fn split_runs(
        &mut self,
        turn: TurnRef,
        prompt: &TurnPrompt,
        prefilled: &prefill::Prefilled,
        reference: &Generation,
        pending: &[(&PlannedRun, String)],
        generations: Vec<Result<Generation>>,
    ) -> Result<()> {
        let engine = self.engine;
        let facts = TurnFacts {
            turn,
            prompt,
            prefilled,
        };
        let mut generations = generations.into_iter();
        for (planned, key) in pending.iter().filter(|(p, _)| p.split() == prefilled.split) {
            let own: Generation;
            let mut reuse = None;
            let reused = match (
                planned.run.access,
                self.store.as_mut(),
                &self.facts.plan.raw.reuse,
            ) {
                (Some(a), Some(store), Some(config)) => Some(access::generate_reused(
                    engine, store, config, prompt, prefilled, planned, a,
                )),
                _ => None,
            };
            let g = match (reused, planned.role) {
                (Some(result), _) => match result {
                    Ok((g, facts)) => {
                        own = g;
                        reuse = Some(facts);
                        &own
                    }
                    Err(e) if is_oom(&e) || e.downcast_ref::<cake::Refused>().is_some() => {
                        self.fail(turn, planned, key, &e)?;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
                (None, Role::Reference) => reference,
                (None, Role::Compressed) => {
                    match generations
                        .next()
                        .context("a generation per compressed run")?
                    {
                        Ok(g) => own = g,
                        Err(e) => {
                            self.fail(turn, planned, key, &e)?;
                            continue;
                        }
                    }
                    &own
                }
            };
            let prediction = engine.loaded.tokenizer.decode(&g.tokens)?;
            let outcome = Outcome {
                planned,
                generation: g,
                scored: Scored::new(&turn, prediction, g, reference),
                key: key.clone(),
                reuse,
            };
            self.writer
                .append(&record::build(&self.facts, &facts, outcome))?;
            self.written += 1;
            // On Ctrl-C the split's generations are already done (they decoded as one batch):
            // all their records are written, and the turn stops after this split.
            interrupt::record_written();
        }
        Ok(())
    }

    /// Every pending record of the turn fails with `e` (the run goes on).
    fn fail_all(
        &mut self,
        turn: TurnRef,
        pending: &[(&PlannedRun, String)],
        e: &anyhow::Error,
    ) -> Result<()> {
        for (planned, key) in pending {
            self.fail(turn, planned, key, e)?;
        }
        Ok(())
    }

    /// Record that `planned` failed on this turn (the run goes on; a re-run retries it).
    fn fail(
        &mut self,
        turn: TurnRef,
        planned: &PlannedRun,
        key: &str,
        e: &anyhow::Error,
    ) -> Result<()> {
        let reason = without_backtrace(&format!("{e:#}"));
        eprintln!(
            "warning: sample `{}` (dataset `{}`, turn {}), {}: failed: {reason}; recorded as \
             failed, the run goes on",
            turn.sample.id,
            turn.dataset,
            turn.index,
            planned.method.name()
        );
        let record = record::failed(&self.facts, &turn, planned, key.to_string(), reason);
        self.writer.append(&record)?;
        self.written += 1;
        self.failed += 1;
        Ok(())
    }
}

/// Move an existing results file aside (never delete results).
fn set_aside(path: &Path) -> Result<()> {
    if path.exists() {
        let aside = kvbench_reports::unique_backup(path);
        std::fs::rename(path, &aside)
            .with_context(|| format!("moving {} aside", path.display()))?;
        eprintln!("--fresh: previous results moved to {}", aside.display());
    }
    Ok(())
}

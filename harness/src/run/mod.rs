//! The runner, as stages:
//!
//! ```text
//! plan     (plan.rs)      datasets -> samples and prompting; method runs built, reference marked
//! for each sample x turn:
//!   prompt (prefill.rs)     tokens: context and question
//!   for each split (query-agnostic, then query-aware when the grid has such runs):
//!     prefill (prefill.rs)  the turn up to the split's cut, once, with full attention
//!     for each method run of the split:
//!       fork -> compress -> decode (generate.rs)   the reference once, then every other run
//!       score   (score.rs)    task metric; agreement and first-token KL against the reference
//!       record  (record.rs)   one results line, keyed so re-runs skip it
//! ```
//!
//! The reference (full cache, query-agnostic) is computed on every turn from the query-agnostic
//! prefill, so fidelity numbers never depend on which runs a resumed run still has to do.

mod dry_run;
mod generate;
pub mod interrupt;
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
use kvbench_reports::{read_results, Record, ResultsWriter};

use crate::experiment::Plan;
use crate::loader::LoadedModel;

use generate::{generate, Generation, Request};
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
}

pub struct RunOutcome {
    pub results: PathBuf,
    pub written: usize,
    pub skipped: usize,
    /// Every record in the results file after the run (earlier runs included).
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
    let engine = Engine::new(loaded, device, plan.raw.attention_chunk);
    let work = RunPlan::new(plan, loaded, opts.limit)?;
    let mut runner = SampleRunner {
        engine: &engine,
        work: &work,
        done: &done,
        writer: &mut writer,
        facts: RunFacts {
            plan,
            device_label: crate::device::label(device),
        },
        written: 0,
        skipped: 0,
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
    engine.warm_up(work.needs.union())?;
    let mut progress = progress::Progress::new(opts.progress, work.total_samples(), configurations);
    let mut interrupted = false;
    'samples: for dataset in &work.datasets {
        for sample in &dataset.samples {
            if interrupt::requested() {
                interrupted = true;
                break 'samples;
            }
            progress.start(&sample.id);
            let before = runner.written;
            runner
                .sample(dataset, sample)
                .with_context(|| format!("sample `{}` of dataset `{}`", sample.id, dataset.name))?;
            if runner.written == before {
                progress.resumed();
            } else {
                progress.finished();
            }
        }
    }
    interrupted |= interrupt::requested();
    progress.finish();
    let (written, skipped) = (runner.written, runner.skipped);
    Ok(RunOutcome {
        data: work.datasets.iter().map(|d| d.data.clone()).collect(),
        records: read_results(&results)?,
        results,
        written,
        skipped,
        interrupted,
    })
}

/// The sample loop's state: what it reads and where it writes.
struct SampleRunner<'a> {
    engine: &'a Engine<'a>,
    work: &'a RunPlan<'a>,
    /// Keys of the records already in the results file.
    done: &'a HashSet<String>,
    writer: &'a mut ResultsWriter,
    facts: RunFacts<'a>,
    written: usize,
    skipped: usize,
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
        let prompt = TurnPrompt::new(engine, prompting, &turn)?;
        let mut pending: Vec<(&PlannedRun, String)> = Vec::new();
        for (planned, key) in self.work.runs.iter().zip(keys) {
            if self.done.contains(&key) {
                self.skipped += 1;
            } else {
                pending.push((planned, key));
            }
        }
        let needs = self.work.needs;
        let agnostic = engine.prefill(
            &prompt,
            Split::QueryAgnostic,
            needs.of(Split::QueryAgnostic),
        )?;
        let reference = generate(
            engine,
            &agnostic,
            &Request::reference(prompt.max_new_tokens),
        )?;
        self.split_runs(turn, &prompt, &agnostic, &reference, &pending)?;
        drop(agnostic);
        if interrupt::requested() {
            return Ok(());
        }
        if pending.iter().any(|(p, _)| p.split() == Split::QueryAware) {
            let aware = engine.prefill(&prompt, Split::QueryAware, needs.of(Split::QueryAware))?;
            self.split_runs(turn, &prompt, &aware, &reference, &pending)?;
        }
        Ok(())
    }

    /// Generate, score and record every pending run of `prefilled`'s split.
    fn split_runs(
        &mut self,
        turn: TurnRef,
        prompt: &TurnPrompt,
        prefilled: &prefill::Prefilled,
        reference: &Generation,
        pending: &[(&PlannedRun, String)],
    ) -> Result<()> {
        let engine = self.engine;
        let facts = TurnFacts {
            turn,
            prompt,
            prefilled,
        };
        for (planned, key) in pending.iter().filter(|(p, _)| p.split() == prefilled.split) {
            let own: Generation;
            let g = match planned.role {
                Role::Reference => reference,
                Role::Compressed => {
                    own = generate(engine, prefilled, &planned.request(prompt.max_new_tokens))?;
                    &own
                }
            };
            let prediction = engine.loaded.tokenizer.decode(&g.tokens)?;
            let outcome = Outcome {
                planned,
                generation: g,
                scored: Scored::new(&turn, prediction, g, reference),
                key: key.clone(),
            };
            self.writer
                .append(&record::build(&self.facts, &facts, outcome))?;
            self.written += 1;
            interrupt::record_written();
            if interrupt::requested() {
                // Ctrl-C: the record in flight is written; stop here.
                return Ok(());
            }
        }
        Ok(())
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

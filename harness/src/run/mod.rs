//! The runner, as stages:
//!
//! ```text
//! plan     (plan.rs)      datasets -> samples and prompting; method runs built, reference marked
//! for each sample x turn:
//!   prompt + prefill (prefill.rs)   tokens; the context prefilled once with full attention
//!   for each method run:
//!     fork -> compress -> decode (generate.rs)   the reference once, then every other run
//!     score   (score.rs)    task metric; agreement and first-token KL against the reference
//!     record  (record.rs)   one results line, keyed so re-runs skip it
//! ```

mod generate;
mod plan;
mod prefill;
mod record;
mod score;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use kvbench_datasets::Sample;
use kvbench_reports::{read_results, Record, ResultsWriter};

use crate::experiment::Plan;
use crate::loader::LoadedModel;

use generate::{generate, Generation, Request};
use plan::{DatasetWork, Role, RunPlan};
use prefill::{Engine, TurnPrompt};
use record::{record_key, Outcome, RunFacts, TurnFacts};
use score::Scored;

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
    engine.warm_up(work.needs)?;
    let config = loaded.model.config();
    let mut runner = SampleRunner {
        engine: &engine,
        work: &work,
        done: &done,
        writer: &mut writer,
        facts: RunFacts {
            plan,
            device_label: crate::device::label(device),
            entries_per_token: config.n_layers * config.n_kv_heads,
        },
        written: 0,
        skipped: 0,
    };
    let bar = progress_bar(opts.progress, work.total_samples());
    for dataset in &work.datasets {
        for sample in &dataset.samples {
            bar.set_message(sample.id.clone());
            runner
                .sample(dataset, sample)
                .with_context(|| format!("sample `{}` of dataset `{}`", sample.id, dataset.name))?;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let (written, skipped) = (runner.written, runner.skipped);
    Ok(RunOutcome {
        data: work.datasets.iter().map(|d| d.data.clone()).collect(),
        records: read_results(&results)?,
        results,
        written,
        skipped,
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

    /// Prompt and prefill once, generate the reference, then each pending method run.
    fn turn(
        &mut self,
        turn: TurnRef,
        prompting: &prefill::Prompting,
        keys: Vec<String>,
    ) -> Result<()> {
        let engine = self.engine;
        let prompt = TurnPrompt::new(engine, prompting, &turn)?;
        let prefilled = engine.prefill(&prompt, self.work.needs)?;
        let question = &prompt.question_ids;
        let reference = generate(
            engine,
            &prefilled,
            question,
            &Request::reference(prompt.max_new_tokens),
        )?;
        let facts = TurnFacts {
            turn,
            prompt: &prompt,
            prefilled: &prefilled,
        };
        for (planned, key) in self.work.runs.iter().zip(keys) {
            if self.done.contains(&key) {
                self.skipped += 1;
                continue;
            }
            let own: Generation;
            let g = match planned.role {
                Role::Reference => &reference,
                Role::Compressed => {
                    let request = planned.request(prompt.max_new_tokens);
                    own = generate(engine, &prefilled, question, &request)?;
                    &own
                }
            };
            let prediction = engine.loaded.tokenizer.decode(&g.tokens)?;
            let outcome = Outcome {
                planned,
                generation: g,
                scored: Scored::new(&turn, prediction, g, &reference),
                key,
            };
            self.writer
                .append(&record::build(&self.facts, &facts, outcome))?;
            self.written += 1;
        }
        Ok(())
    }
}

fn progress_bar(show: bool, total: usize) -> ProgressBar {
    let bar = if show {
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
    bar
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

//! Plan stage: what a run will do, resolved against the loaded model before the first sample:
//! each dataset's samples and how they become prompts, each method run of the grid with its built
//! method and its role, and the observations the shared prefill must record.

use std::collections::HashMap;

use anyhow::{Context, Result};
use kvbench_datasets::{Sample, TokenCounter};
use kvbench_methods::sliding::compressible_layers;
use kvbench_methods::{Budget, MethodConfig, MethodSpec, ObservationNeeds};

use crate::experiment::{MethodRun, Plan};
use crate::loader::LoadedModel;
use crate::manifest::DatasetData;
use crate::truncation::TruncationPolicy;

use super::generate::Request;
use super::prefill::{Prompting, Split};

/// One dataset's samples (after `--limit`) and its prompting.
pub(super) struct DatasetWork {
    pub name: &'static str,
    pub samples: Vec<Sample>,
    pub prompting: Prompting,
    /// The revision and the files the samples were read from, for `run.json`.
    pub data: DatasetData,
}

/// What a method run is to the runner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// No compression, query-agnostic: its generation is the full-cache reference that every
    /// run's fidelity is measured against, computed once per turn.
    Reference,
    /// Everything else: its own fork, compression and decode.
    Compressed,
}

/// One cell of the grid with its built method.
pub(super) struct PlannedRun<'a> {
    pub run: &'a MethodRun,
    pub method: Box<dyn kvbench_methods::Method>,
    pub role: Role,
}

impl PlannedRun<'_> {
    /// Where this run cuts the turn.
    pub fn split(&self) -> Split {
        Split::of(self.run.query_aware)
    }

    /// The generation request for this run on a turn that allows `max_new_tokens`.
    pub fn request(&self, max_new_tokens: usize) -> Request<'_> {
        Request {
            method: self.method.as_ref(),
            budget: self.run.budget.unwrap_or(Budget::CompressionRatio(0.0)),
            max_new_tokens,
        }
    }
}

/// The run's work, resolved.
pub(super) struct RunPlan<'a> {
    pub datasets: Vec<DatasetWork>,
    pub runs: Vec<PlannedRun<'a>>,
    /// What each split's shared prefill records: the union of its runs' needs.
    pub needs: SplitNeeds,
}

/// The observations each split's prefill records.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct SplitNeeds {
    pub query_agnostic: ObservationNeeds,
    pub query_aware: ObservationNeeds,
}

impl SplitNeeds {
    pub fn of(&self, split: Split) -> ObservationNeeds {
        match split {
            Split::QueryAgnostic => self.query_agnostic,
            Split::QueryAware => self.query_aware,
        }
    }

    pub fn union(&self) -> ObservationNeeds {
        self.query_agnostic.union(self.query_aware)
    }
}

impl<'a> RunPlan<'a> {
    pub fn new(plan: &'a Plan, loaded: &LoadedModel, limit: Option<usize>) -> Result<Self> {
        let template = loaded.tokenizer.template();
        // Before any dataset work: `chat_template: true` needs a model with a template.
        plan.check_chat_templates(template.is_some())?;
        // Before the first sample: the methods' parameters against the model's shape, counting
        // the layers methods see (sliding-window layers are never compressed).
        let c = loaded.model.config();
        let compressible = match compressible_layers(&loaded.model.new_cache()).len() {
            0 => c.n_layers, // every layer slides: methods see them all (below the window)
            n => n,
        };
        plan.check_model_shape(compressible, c.n_kv_heads, c.head_dim)?;
        let window = loaded.model.config().max_position_embeddings;
        let counter = TokenizerCounter(&loaded.tokenizer);
        let mut datasets = Vec::new();
        for d in &plan.raw.datasets {
            let loaded_set = d
                .build_lenient(&counter)
                .with_context(|| format!("{}: dataset `{}`", plan.source.display(), d.name()))?;
            for e in &loaded_set.errors {
                eprintln!("warning: skipped {e}");
            }
            let mut samples = loaded_set.samples;
            if samples.is_empty() && limit != Some(0) {
                anyhow::bail!(
                    "{}: dataset `{}` yields 0 samples ({} record(s) skipped, see the warnings \
                     above); nothing to run",
                    plan.source.display(),
                    d.name(),
                    loaded_set.errors.len()
                );
            }
            if let Some(n) = limit {
                samples = first_per_task(samples, n);
            }
            let prompting = Prompting {
                template: template.clone(),
                mode: d.chat_template(),
                truncation: TruncationPolicy::new(d.max_length(), window),
            };
            datasets.push(DatasetWork {
                name: d.name(),
                samples,
                prompting,
                data: DatasetData {
                    name: d.name().to_string(),
                    revision: d.revision().map(str::to_string),
                    files: loaded_set.files,
                },
            });
        }
        let runs: Vec<PlannedRun> = plan.runs.iter().map(plan_run).collect();
        let needs_of = |split: Split| {
            runs.iter()
                .filter(|p| p.split() == split)
                .fold(ObservationNeeds::default(), |acc, p| {
                    acc.union(p.method.needs())
                })
        };
        let needs = SplitNeeds {
            query_agnostic: needs_of(Split::QueryAgnostic),
            query_aware: needs_of(Split::QueryAware),
        };
        Ok(Self {
            datasets,
            runs,
            needs,
        })
    }

    pub fn total_samples(&self) -> usize {
        self.datasets.iter().map(|d| d.samples.len()).sum()
    }
}

/// `--limit N`: the first `n` samples of each task (`Sample::task`), in their order, so a dataset
/// of several tasks (LongBench, SCBench, RULER) keeps every task.
pub(super) fn first_per_task(samples: Vec<Sample>, n: usize) -> Vec<Sample> {
    let mut taken: HashMap<String, usize> = HashMap::new();
    samples
        .into_iter()
        .filter(|s| {
            let count = taken.entry(s.task.clone()).or_default();
            *count += 1;
            *count <= n
        })
        .collect()
}

fn plan_run(run: &MethodRun) -> PlannedRun<'_> {
    let role = if is_uncompressed(&run.config) && !run.query_aware {
        Role::Reference
    } else {
        Role::Compressed
    };
    PlannedRun {
        run,
        method: run.config.build(),
        role,
    }
}

/// `full`, alone or as the only part of a composition (which builds the same method).
fn is_uncompressed(spec: &MethodSpec) -> bool {
    match spec {
        MethodSpec::One(c) => matches!(c, MethodConfig::Full),
        MethodSpec::Composed(parts) => matches!(parts.as_slice(), [MethodConfig::Full]),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_keeps_the_first_samples_of_each_task_in_order() {
        let sample = |id: &str, task: &str| {
            Sample::single(
                id,
                "c",
                kvbench_datasets::Turn::new("q", vec!["a".into()]),
                task,
                kvbench_datasets::Metric::QaF1,
                4,
            )
        };
        let samples = vec![
            sample("a1", "a"),
            sample("a2", "a"),
            sample("b1", "b"),
            sample("a3", "a"),
            sample("b2", "b"),
            sample("b3", "b"),
            sample("c1", "c"),
        ];
        let ids = |v: Vec<Sample>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
        assert_eq!(
            ids(first_per_task(samples.clone(), 2)),
            ["a1", "a2", "b1", "b2", "c1"]
        );
        assert_eq!(ids(first_per_task(samples.clone(), 1)), ["a1", "b1", "c1"]);
        assert!(first_per_task(samples.clone(), 0).is_empty());
        assert_eq!(first_per_task(samples, 9).len(), 7);
    }

    fn runs(yaml_methods: &str, query_aware: &str) -> Vec<(String, Option<Budget>, bool, Role)> {
        let text = format!(
            "experiment: t\nmodel: smollm2-135m-instruct-q4_1\ndatasets:\n  - name: niah\n    lengths: [100]\nmethods:\n{yaml_methods}budgets:\n  - compression_ratio: 0.5\nquery_aware: {query_aware}\n"
        );
        let plan = Plan::parse(&text, std::path::Path::new("t.yaml")).unwrap();
        plan.runs
            .iter()
            .map(plan_run)
            .map(|p| {
                (
                    p.method.name().to_string(),
                    p.run.budget,
                    p.run.query_aware,
                    p.role,
                )
            })
            .collect()
    }

    #[test]
    fn only_the_uncompressed_query_agnostic_run_is_the_reference() {
        let got = runs(
            "  - method: full\n  - method: snapkv\n  - method: kivi\n  - [{method: full}]\n",
            "[false, true]",
        );
        let roles: Vec<(&str, bool, Role)> = got
            .iter()
            .map(|(m, _, qa, r)| (m.as_str(), *qa, *r))
            .collect();
        assert_eq!(
            roles,
            [
                ("full", false, Role::Reference),
                ("snapkv", false, Role::Compressed),
                ("snapkv", true, Role::Compressed),
                ("kivi", false, Role::Compressed),
                ("full", false, Role::Reference),
            ]
        );
    }

    #[test]
    fn a_composition_with_full_is_compressed() {
        let got = runs("  - [{method: full}, {method: snapkv}]\n", "[false]");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].3, Role::Compressed);
    }

    /// On a model with sliding-window layers, `per_layer` gives one ratio per layer that methods
    /// compress (the full-attention ones), checked when the plan meets the model.
    #[test]
    fn per_layer_counts_the_layers_methods_compress() {
        use crate::fetch::{resolve, FetchOptions, ModelSpec};
        let dir = crate::testing::shared_data().join("reference/arch/gemma3");
        let files = resolve(&ModelSpec::Local(dir), &FetchOptions::from_env()).unwrap();
        let loaded = crate::loader::load(&files, &candle_core::Device::Cpu).unwrap();
        let layers = loaded.model.config().n_layers;
        let global = compressible_layers(&loaded.model.new_cache()).len();
        assert!(global > 0 && global < layers, "{global} of {layers}");
        let plan = |n: usize| {
            let ratios = vec!["0.5"; n].join(", ");
            let text = format!(
                "experiment: t\nmodel: ./tiny-gemma\ndatasets:\n  - name: niah\n    lengths: [40]\n    samples_per_cell: 1\nmethods:\n  - method: per_layer\n    ratios: [{ratios}]\nbudgets:\n  - compression_ratio: 0.5\n"
            );
            Plan::parse(&text, std::path::Path::new("t.yaml")).unwrap()
        };
        assert!(RunPlan::new(&plan(global), &loaded, Some(1)).is_ok());
        let err = RunPlan::new(&plan(layers), &loaded, Some(1))
            .err()
            .expect("one ratio per layer of the model is refused");
        let err = format!("{err:#}");
        assert!(err.contains(&format!("give exactly {global}")), "{err}");
    }
}

//! Records to statistics: per dataset x task x configuration (model, method, budget, query
//! awareness) the mean of every metric with its bootstrap interval; per dataset the benchmark
//! average (mean of task means, as LongBench and RULER average); and deltas against a baseline
//! method with the interval of the difference.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::bootstrap::{
    cell_seed, macro_average, mean_ci, paired_difference, unpaired_difference, BootstrapConfig,
    Estimate,
};
pub use crate::labels::{method_labels, method_labels_of};
pub use crate::metric::Metric;
use crate::Record;

/// Methods in the order tables list them (the uncompressed baseline first, then roughly by
/// family); methods not listed follow in name order.
pub const METHOD_ORDER: &[&str] = &[
    "full",
    "streaming_llm",
    "h2o",
    "snapkv",
    "tova",
    "knorm",
    "random",
    "expected_attention",
    "keydiff",
    "lagkv",
    "pyramidkv",
    "adakv",
];

/// A budget as tables sort it: none (the baseline) first, then ratios from mild to strong, then
/// token budgets from large to small.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BudgetKey {
    kind: u8,
    order: i64,
    pub label: String,
}

impl BudgetKey {
    pub fn of(r: &Record) -> Self {
        let b = r.budget.as_ref();
        if let Some(x) = b
            .and_then(|b| b.get("compression_ratio"))
            .and_then(|v| v.as_f64())
        {
            BudgetKey {
                kind: 1,
                order: (x * 1e6).round() as i64,
                label: r.budget_label.clone(),
            }
        } else if let Some(k) = b.and_then(|b| b.get("tokens")).and_then(|v| v.as_i64()) {
            BudgetKey {
                kind: 2,
                order: -k,
                label: r.budget_label.clone(),
            }
        } else {
            BudgetKey {
                kind: 0,
                order: 0,
                label: r.budget_label.clone(),
            }
        }
    }

    pub fn is_none(&self) -> bool {
        self.kind == 0
    }
}

/// What produced a record, apart from the sample: one row of a table, one point of a plot.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Config {
    pub model: String,
    method_rank: usize,
    /// Method name, with its parameters where one method runs with several settings.
    pub method: String,
    /// The registered method name (without parameters): what the plot colours follow.
    pub base_method: String,
    /// The method's parameters as the records wrote them (JSON), for `--compare` to match a
    /// published `kivi(bits=4)` whatever the label.
    pub params: String,
    pub budget: BudgetKey,
    pub query_aware: bool,
}

impl Config {
    /// `snapkv r=0.50`, `full`, `snapkv r=0.50 (query-aware)`.
    pub fn label(&self) -> String {
        let mut s = self.method.clone();
        if !self.budget.is_none() {
            s = format!("{s} {}", self.budget.label);
        }
        if self.query_aware {
            s += " (query-aware)";
        }
        s
    }

    pub(crate) fn identity(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.model, self.method, self.budget.label, self.query_aware
        )
    }
}

/// Sorts records into configurations.
pub struct Configs {
    labels: HashMap<(String, String), String>,
}

impl Configs {
    pub fn new(records: &[Record]) -> Self {
        Configs {
            labels: method_labels(records),
        }
    }

    pub fn of(&self, r: &Record) -> Config {
        let key = (r.method.clone(), r.method_params.to_string());
        let rank = METHOD_ORDER
            .iter()
            .position(|m| *m == r.method)
            .unwrap_or(METHOD_ORDER.len());
        Config {
            model: r.model.clone(),
            method_rank: rank,
            method: self
                .labels
                .get(&key)
                .cloned()
                .unwrap_or_else(|| r.method.clone()),
            base_method: r.method.clone(),
            params: r.method_params.to_string(),
            budget: BudgetKey::of(r),
            query_aware: r.query_aware,
        }
    }
}

/// Statistics of one dataset x task x configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub dataset: String,
    pub task: String,
    /// The task metric's name (`string_match_all`, `qa_f1`, ...).
    pub metric: String,
    pub config: Config,
    pub n: usize,
    pub stats: BTreeMap<Metric, Estimate>,
}

/// The benchmark average of one dataset x configuration: the mean over tasks of each task's mean.
#[derive(Clone, Debug, PartialEq)]
pub struct Benchmark {
    pub dataset: String,
    pub config: Config,
    pub tasks: usize,
    pub n: usize,
    pub stats: BTreeMap<Metric, Estimate>,
}

/// The metrics compared against the baseline.
pub const DELTA_METRICS: [Metric; 4] = [
    Metric::Score,
    Metric::TtftMs,
    Metric::DecodeTokS,
    Metric::KvMib,
];

/// One configuration against the baseline on one task (or, with `task` None, on the dataset's
/// benchmark average).
#[derive(Clone, Debug, PartialEq)]
pub struct Delta {
    pub dataset: String,
    pub task: Option<String>,
    pub config: Config,
    pub baseline: Config,
    /// Whether samples were paired (same sample and turn in both); else the means of independent
    /// samples are compared.
    pub paired: bool,
    pub n: usize,
    pub stats: BTreeMap<Metric, Estimate>,
}

/// Everything a report shows, computed once.
#[derive(Clone, Debug, Default)]
pub struct Aggregate {
    pub cells: Vec<Cell>,
    pub benchmarks: Vec<Benchmark>,
    pub deltas: Vec<Delta>,
    /// Configurations in table order.
    pub configs: Vec<Config>,
    /// (dataset, task) in order.
    pub tasks: Vec<(String, String)>,
    pub baseline: String,
}

/// Records grouped by dataset, task and configuration, each group sorted by sample, turn and key
/// so that statistics never depend on the order of the input files.
pub type Groups<'a> = BTreeMap<(String, String, Config), Vec<&'a Record>>;

pub fn group<'a>(records: &'a [Record], configs: &Configs) -> Groups<'a> {
    use polars::prelude::{Column, DataFrame};
    let of: Vec<Config> = records.iter().map(|r| configs.of(r)).collect();
    let column = |name: &str, f: &dyn Fn(usize) -> String| {
        Column::new(
            name.into(),
            (0..records.len()).map(f).collect::<Vec<String>>(),
        )
    };
    let df = DataFrame::new(
        records.len(),
        vec![
            column("dataset", &|i| records[i].dataset.clone()),
            column("task", &|i| records[i].task.clone()),
            column("config", &|i| of[i].identity()),
        ],
    )
    .expect("three columns of one length");
    let rows = crate::frame::group_rows(&df, &["dataset", "task", "config"])
        .expect("grouping string columns");
    let mut groups: Groups = BTreeMap::new();
    for idx in rows {
        let first = &records[idx[0]];
        let mut rs: Vec<&Record> = idx.iter().map(|&i| &records[i]).collect();
        rs.sort_by(|a, b| (&a.sample_id, a.turn, &a.key).cmp(&(&b.sample_id, b.turn, &b.key)));
        groups.insert(
            (
                first.dataset.clone(),
                first.task.clone(),
                of[idx[0]].clone(),
            ),
            rs,
        );
    }
    groups
}

fn values(rs: &[&Record], m: Metric) -> Vec<f64> {
    rs.iter().filter_map(|r| m.value(r)).collect()
}

/// Aggregate `records` (already merged, each key once) against `baseline`.
pub fn aggregate(records: &[Record], baseline: &str, cfg: BootstrapConfig) -> Aggregate {
    let configs = Configs::new(records);
    let groups = group(records, &configs);
    let mut out = Aggregate {
        baseline: baseline.to_string(),
        ..Default::default()
    };
    let all: BTreeSet<Config> = groups.keys().map(|(_, _, c)| c.clone()).collect();
    out.configs = all.into_iter().collect();
    out.tasks = groups
        .keys()
        .map(|(d, t, _)| (d.clone(), t.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();

    for ((dataset, task, config), rs) in &groups {
        let id = format!("{dataset}|{task}|{}", config.identity());
        let stats = Metric::ALL
            .iter()
            .filter_map(|&m| {
                Some((
                    m,
                    mean_ci(
                        &values(rs, m),
                        cfg,
                        cell_seed(cfg.seed, &format!("{id}|{}", m.key())),
                    )?,
                ))
            })
            .collect();
        out.cells.push(Cell {
            dataset: dataset.clone(),
            task: task.clone(),
            metric: rs[0].metric.clone(),
            config: config.clone(),
            n: rs.len(),
            stats,
        });
    }

    // Benchmark averages: per dataset x configuration, every task of the dataset.
    let mut by_dataset: BTreeMap<(String, Config), Vec<&Vec<&Record>>> = BTreeMap::new();
    for ((dataset, _, config), rs) in &groups {
        by_dataset
            .entry((dataset.clone(), config.clone()))
            .or_default()
            .push(rs);
    }
    for ((dataset, config), tasks) in &by_dataset {
        let id = format!("{dataset}|average|{}", config.identity());
        let stats = Metric::ALL
            .iter()
            .filter_map(|&m| {
                let strata: Vec<Vec<f64>> = tasks.iter().map(|rs| values(rs, m)).collect();
                let refs: Vec<&[f64]> = strata.iter().map(|s| s.as_slice()).collect();
                Some((
                    m,
                    macro_average(
                        &refs,
                        cfg,
                        cell_seed(cfg.seed, &format!("{id}|{}", m.key())),
                    )?,
                ))
            })
            .collect();
        out.benchmarks.push(Benchmark {
            dataset: dataset.clone(),
            config: config.clone(),
            tasks: tasks.len(),
            n: tasks.iter().map(|t| t.len()).sum(),
            stats,
        });
    }

    out.deltas = deltas(&groups, &out.configs, baseline, cfg);
    out
}

/// The baseline configuration `config` is compared with: the baseline method at the same budget
/// and query awareness if it ran so, else the baseline method without a budget.
fn baseline_for<'c>(config: &Config, all: &'c [Config], baseline: &str) -> Option<&'c Config> {
    let candidates: Vec<&Config> = all
        .iter()
        .filter(|c| c.base_method == baseline && c.model == config.model)
        .collect();
    candidates
        .iter()
        .find(|c| c.budget == config.budget && c.query_aware == config.query_aware)
        .or_else(|| candidates.iter().find(|c| c.budget.is_none()))
        .or_else(|| {
            if candidates.len() == 1 {
                candidates.first()
            } else {
                None
            }
        })
        .copied()
}

fn deltas(groups: &Groups, all: &[Config], baseline: &str, cfg: BootstrapConfig) -> Vec<Delta> {
    let mut out = Vec::new();
    let datasets: BTreeSet<&String> = groups.keys().map(|(d, _, _)| d).collect();
    for dataset in datasets {
        for config in all {
            let Some(base) = baseline_for(config, all, baseline) else {
                continue;
            };
            if base == config {
                continue;
            }
            // (task, this config's records, the baseline's records) for every task both ran.
            let tasks: Vec<(&String, &Vec<&Record>, &Vec<&Record>)> = groups
                .iter()
                .filter(|((d, _, c), _)| d == dataset && c == config)
                .filter_map(|((_, t, _), rs)| {
                    Some((
                        t,
                        rs,
                        groups.get(&(dataset.clone(), t.clone(), base.clone()))?,
                    ))
                })
                .collect();
            if tasks.is_empty() {
                continue;
            }
            let mut per_task_pairs = Vec::new();
            for (task, rs, bs) in &tasks {
                let id = format!(
                    "{dataset}|{task}|{}|vs|{}",
                    config.identity(),
                    base.identity()
                );
                let (paired, n, stats) = compare(rs, bs, &id, cfg);
                per_task_pairs.push(paired);
                out.push(Delta {
                    dataset: dataset.clone(),
                    task: Some((*task).clone()),
                    config: config.clone(),
                    baseline: base.clone(),
                    paired,
                    n,
                    stats,
                });
            }
            // The benchmark average's delta: mean over tasks of each task's mean difference.
            let id = format!(
                "{dataset}|average|{}|vs|{}",
                config.identity(),
                base.identity()
            );
            let paired = per_task_pairs.iter().all(|p| *p);
            let mut stats = BTreeMap::new();
            for m in DELTA_METRICS {
                let seed = cell_seed(cfg.seed, &format!("{id}|{}", m.key()));
                let est = if paired {
                    let strata: Vec<Vec<f64>> = tasks
                        .iter()
                        .map(|(_, rs, bs)| pairs(rs, bs, m).iter().map(|(a, b)| a - b).collect())
                        .collect();
                    let refs: Vec<&[f64]> = strata.iter().map(|s| s.as_slice()).collect();
                    macro_average(&refs, cfg, seed)
                } else {
                    let a: Vec<Vec<f64>> = tasks.iter().map(|(_, rs, _)| values(rs, m)).collect();
                    let b: Vec<Vec<f64>> = tasks.iter().map(|(_, _, bs)| values(bs, m)).collect();
                    let ma = macro_average(
                        &a.iter().map(|s| s.as_slice()).collect::<Vec<_>>(),
                        cfg,
                        seed,
                    );
                    let mb = macro_average(
                        &b.iter().map(|s| s.as_slice()).collect::<Vec<_>>(),
                        cfg,
                        seed ^ 1,
                    );
                    // Unpaired benchmark averages: the difference of the means, with the interval
                    // of the two independent intervals combined in quadrature.
                    ma.zip(mb).map(|(a, b)| {
                        let d = a.mean - b.mean;
                        let lo = ((a.mean - a.lo).powi(2) + (b.hi - b.mean).powi(2)).sqrt();
                        let hi = ((a.hi - a.mean).powi(2) + (b.mean - b.lo).powi(2)).sqrt();
                        Estimate {
                            mean: d,
                            lo: d - lo,
                            hi: d + hi,
                            n: a.n,
                        }
                    })
                };
                if let Some(e) = est {
                    stats.insert(m, e);
                }
            }
            let n = stats.get(&Metric::Score).map_or(0, |e| e.n);
            out.push(Delta {
                dataset: dataset.clone(),
                task: None,
                config: config.clone(),
                baseline: base.clone(),
                paired,
                n,
                stats,
            });
        }
    }
    out
}

/// Values of `m` for the (sample, turn)s both groups hold, in the group's order.
fn pairs(rs: &[&Record], bs: &[&Record], m: Metric) -> Vec<(f64, f64)> {
    let base: HashMap<(&str, usize), &Record> = bs
        .iter()
        .map(|b| ((b.sample_id.as_str(), b.turn), *b))
        .collect();
    rs.iter()
        .filter_map(|r| {
            let b = base.get(&(r.sample_id.as_str(), r.turn))?;
            Some((m.value(r)?, m.value(b)?))
        })
        .collect()
}

/// Differences of one task: paired where at least one (sample, turn) matches, else unpaired.
pub(crate) fn compare(
    rs: &[&Record],
    bs: &[&Record],
    id: &str,
    cfg: BootstrapConfig,
) -> (bool, usize, BTreeMap<Metric, Estimate>) {
    let paired = !pairs(rs, bs, Metric::Score).is_empty();
    let mut stats = BTreeMap::new();
    for m in DELTA_METRICS {
        let seed = cell_seed(cfg.seed, &format!("{id}|{}", m.key()));
        let est = if paired {
            paired_difference(&pairs(rs, bs, m), cfg, seed)
        } else {
            unpaired_difference(&values(rs, m), &values(bs, m), cfg, seed)
        };
        if let Some(e) = est {
            stats.insert(m, e);
        }
    }
    let n = stats.get(&Metric::Score).map_or(0, |e| e.n);
    (paired, n, stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        method: &str,
        params: serde_json::Value,
        budget: Option<serde_json::Value>,
        label: &str,
    ) -> Record {
        let mut r: Record = serde_json::from_value(serde_json::json!({
            "experiment": "e", "model": "m", "dataset": "d", "task": "t", "sample_id": "s", "turn": 0,
            "method": method, "method_params": params, "budget": budget, "budget_label": label, "query_aware": false,
            "target_ratio": 0.0, "achieved_ratio": 0.0, "prediction": "p", "answers": ["a"], "metric": "m",
            "score": 1.0, "agreement_with_full": 1.0, "kl_first_token": 0.0, "kv_bytes": 10, "kv_bytes_full": 10,
            "peak_device_bytes": null, "prefill_ms": 1.0, "compress_ms": 0.0, "question_ms": 1.0, "ttft_ms": 2.0,
            "decode_ms_per_token": 0.0, "context_tokens": 5, "question_tokens": 2, "new_tokens": 1,
            "device": "cpu", "seed": 0, "kvbench_version": "0", "key": "k"
        }))
        .unwrap();
        r.key = format!("{method}{params}{label}");
        r
    }

    #[test]
    fn a_method_run_with_two_settings_is_named_by_the_setting_that_differs() {
        let rs = vec![
            record(
                "streaming_llm",
                serde_json::json!({"sinks": 4, "window": 0}),
                None,
                "-",
            ),
            record(
                "streaming_llm",
                serde_json::json!({"sinks": 8, "window": 0}),
                None,
                "-",
            ),
            record("snapkv", serde_json::json!({"window": 32}), None, "-"),
        ];
        let c = Configs::new(&rs);
        assert_eq!(c.of(&rs[0]).method, "streaming_llm(sinks=4)");
        assert_eq!(c.of(&rs[1]).method, "streaming_llm(sinks=8)");
        assert_eq!(c.of(&rs[2]).method, "snapkv");
    }

    #[test]
    fn budgets_sort_from_none_to_mild_to_strong() {
        let b = |v: Option<serde_json::Value>, l: &str| {
            BudgetKey::of(&record("x", serde_json::json!({}), v, l))
        };
        let mut keys = vec![
            b(Some(serde_json::json!({"tokens": 128})), "k=128"),
            b(
                Some(serde_json::json!({"compression_ratio": 0.75})),
                "r=0.75",
            ),
            b(None, "-"),
            b(Some(serde_json::json!({"tokens": 1024})), "k=1024"),
            b(
                Some(serde_json::json!({"compression_ratio": 0.25})),
                "r=0.25",
            ),
        ];
        keys.sort();
        let labels: Vec<&str> = keys.iter().map(|k| k.label.as_str()).collect();
        assert_eq!(labels, ["-", "r=0.25", "r=0.75", "k=1024", "k=128"]);
    }

    #[test]
    fn decode_rate_is_missing_for_one_token_answers() {
        let r = record("full", serde_json::json!({}), None, "-");
        assert_eq!(Metric::DecodeTokS.value(&r), None);
        assert_eq!(Metric::PeakMib.value(&r), None);
        assert_eq!(Metric::KvMib.value(&r), Some(10.0 / (1024.0 * 1024.0)));
    }
}

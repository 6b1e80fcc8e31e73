//! Records to statistics: per dataset x task x configuration (model, method, budget, query
//! awareness) the mean of every metric with its bootstrap interval; per dataset the benchmark
//! average (mean of task means, as LongBench and RULER average); and deltas against a baseline
//! method with the interval of the difference.

use std::collections::{BTreeMap, HashMap};

mod compute;

pub use compute::aggregate;

use crate::bootstrap::{BootstrapConfig, Estimate};
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
        Self::from_parts(
            b.and_then(|b| b.get("compression_ratio"))
                .and_then(|v| v.as_f64()),
            b.and_then(|b| b.get("tokens")).and_then(|v| v.as_i64()),
            &r.budget_label,
        )
    }

    /// From a results frame's `budget_compression_ratio`, `budget_tokens` and `budget_label`.
    pub fn from_parts(ratio: Option<f64>, tokens: Option<i64>, label: &str) -> Self {
        let (kind, order) = match (ratio, tokens) {
            (Some(x), _) => (1, (x * 1e6).round() as i64),
            (None, Some(k)) => (2, -k),
            (None, None) => (0, 0),
        };
        BudgetKey {
            kind,
            order,
            label: label.to_string(),
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
    /// A configuration from its parts (a results frame's columns).
    pub(crate) fn new(
        model: String,
        method: String,
        base_method: String,
        params: String,
        budget: BudgetKey,
        query_aware: bool,
    ) -> Self {
        let method_rank = METHOD_ORDER
            .iter()
            .position(|m| *m == base_method)
            .unwrap_or(METHOD_ORDER.len());
        Config {
            model,
            method_rank,
            method,
            base_method,
            params,
            budget,
            query_aware,
        }
    }

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
        Config::new(
            r.model.clone(),
            self.labels
                .get(&key)
                .cloned()
                .unwrap_or_else(|| r.method.clone()),
            r.method.clone(),
            key.1,
            BudgetKey::of(r),
            r.query_aware,
        )
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

/// The baseline configuration `config` is compared with: the baseline method at the same budget
/// and query awareness if it ran so, else the baseline method without a budget.
pub(crate) fn baseline_for<'c>(
    config: &Config,
    all: &'c [Config],
    baseline: &str,
) -> Option<&'c Config> {
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

/// Differences of one task between two groups of records (`compare A B`): paired where at least
/// one (sample, turn) matches, else unpaired.
pub(crate) fn compare(
    rs: &[&Record],
    bs: &[&Record],
    id: &str,
    cfg: BootstrapConfig,
) -> (bool, usize, BTreeMap<Metric, Estimate>) {
    let values = |g: &[&Record], m: Metric| g.iter().filter_map(|r| m.value(r)).collect();
    compute::difference(
        &|m| pairs(rs, bs, m),
        &|m| values(rs, m),
        &|m| values(bs, m),
        id,
        cfg,
    )
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

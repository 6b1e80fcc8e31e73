//! The benchmarks' own breakdowns, each a table that appears only when the run has its data:
//!
//! - [`ruler`]: RULER per context length, with the average and RULER's two weighted averages;
//! - [`longbench`]: LongBench's category averages (English and Chinese) and LongBench-E by
//!   length interval (0-4k, 4-8k, 8k+);
//! - [`longbench_v2`]: LongBench v2 overall, easy/hard and short/medium/long;
//! - [`scbench`]: SCBench's two mixed tasks per turn task (summary vs passkey, repoqa vs kv).
//!
//! Every cell is a (weighted) mean over strata (tasks, lengths) of each stratum's mean score,
//! with a seeded bootstrap interval that resamples within strata, as the benchmark averages do.

pub mod longbench;
pub mod longbench_v2;
pub mod ruler;
pub mod scbench;

use std::collections::BTreeMap;

use crate::aggregate::{Aggregate, Config, Configs};
use crate::bootstrap::{cell_seed, weighted_macro_average, BootstrapConfig, Estimate};
use crate::tables::{config_columns, config_values, Column, Kind, Table, Value, CI_NOTE};
use crate::Record;

/// The names of the breakdown tables (their file stems), in report order.
pub const NAMES: [&str; 5] = [
    "ruler_lengths",
    "longbench_categories",
    "longbench_e_lengths",
    "longbench_v2",
    "scbench_turn_tasks",
];

/// Every breakdown table the records have data for, in a fixed order.
pub fn breakdown_tables(records: &[Record], agg: &Aggregate, cfg: BootstrapConfig) -> Vec<Table> {
    let ctx = Context::new(records, agg, cfg);
    [
        ruler::lengths_table(&ctx),
        longbench::categories_table(&ctx),
        longbench::lengths_table(&ctx),
        longbench_v2::table(&ctx),
        scbench::turn_tasks_table(&ctx),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// What every breakdown needs: records by configuration, in table order, and the bootstrap.
pub struct Context<'a> {
    by_config: Vec<(Config, Vec<&'a Record>)>,
    cfg: BootstrapConfig,
}

impl<'a> Context<'a> {
    pub fn new(records: &'a [Record], agg: &Aggregate, cfg: BootstrapConfig) -> Self {
        let configs = Configs::new(records);
        let mut map: BTreeMap<Config, Vec<&Record>> = BTreeMap::new();
        for r in records {
            map.entry(configs.of(r)).or_default().push(r);
        }
        // Sorted, so that intervals never depend on the order of the input files.
        for rs in map.values_mut() {
            rs.sort_by(|a, b| {
                (&a.dataset, &a.task, &a.sample_id, a.turn, &a.key).cmp(&(
                    &b.dataset,
                    &b.task,
                    &b.sample_id,
                    b.turn,
                    &b.key,
                ))
            });
        }
        let by_config = agg
            .configs
            .iter()
            .filter_map(|c| Some((c.clone(), map.remove(c)?)))
            .collect();
        Context { by_config, cfg }
    }

    /// Each configuration with its records of `dataset` that `keep` accepts; configurations
    /// without any are left out.
    pub fn records(
        &self,
        dataset: &str,
        keep: impl Fn(&Record) -> bool,
    ) -> Vec<(&Config, Vec<&'a Record>)> {
        self.by_config
            .iter()
            .filter_map(|(c, rs)| {
                let rs: Vec<&Record> = rs
                    .iter()
                    .copied()
                    .filter(|r| r.dataset == dataset && keep(r))
                    .collect();
                (!rs.is_empty()).then_some((c, rs))
            })
            .collect()
    }

    /// The weighted mean over `strata` (scores, weight) with its interval, seeded by `identity`.
    pub fn estimate(&self, strata: &[(Vec<f64>, f64)], identity: &str) -> Option<Estimate> {
        let refs: Vec<(&[f64], f64)> = strata.iter().map(|(s, w)| (s.as_slice(), *w)).collect();
        weighted_macro_average(&refs, self.cfg, cell_seed(self.cfg.seed, identity))
    }
}

/// Scores of `records` per stratum (task, or any other key), in key order.
pub fn strata<'r>(
    records: impl IntoIterator<Item = &'r Record>,
    key: impl Fn(&Record) -> Option<String>,
) -> BTreeMap<String, Vec<f64>> {
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in records {
        if let Some(k) = key(r) {
            out.entry(k).or_default().push(r.score);
        }
    }
    out
}

/// Equal weights: the plain mean of the strata means.
pub fn equal(strata: BTreeMap<String, Vec<f64>>) -> Vec<(Vec<f64>, f64)> {
    strata.into_values().map(|s| (s, 1.0)).collect()
}

/// A breakdown as rows of configurations (with an optional row group: a language, a category)
/// and one score column per group of records.
pub struct Breakdown {
    pub name: &'static str,
    pub title: String,
    pub note: String,
    /// Key and header of the row-group column, if the table has one.
    pub group: Option<(&'static str, &'static str)>,
    /// Key and header of each score column.
    pub columns: Vec<(String, String)>,
    pub rows: Vec<(Config, Option<String>, Vec<Option<Estimate>>)>,
}

impl Breakdown {
    pub fn table(self) -> Table {
        let mut columns = config_columns();
        if let Some((key, header)) = self.group {
            columns.push(Column::new(key, header, Kind::Text));
        }
        columns.push(Column::new("n", "n", Kind::Int));
        columns.extend(
            self.columns
                .iter()
                .map(|(k, h)| Column::new(k.clone(), h.clone(), Kind::Est { decimals: 3 })),
        );
        let rows = self
            .rows
            .into_iter()
            .map(|(config, group, values)| {
                let mut row = config_values(&config);
                if self.group.is_some() {
                    row.push(Value::Text(group.unwrap_or_default()));
                }
                let n = values.iter().flatten().map(|e| e.n).max().unwrap_or(0);
                row.push(Value::Int(n as u64));
                row.extend(values.into_iter().map(Value::Est));
                row
            })
            .collect();
        Table {
            name: self.name.into(),
            title: self.title,
            note: format!(
                "{} Scores are the task metric (0-1); n: records behind the row's widest cell. {CI_NOTE}",
                self.note
            ),
            columns,
            rows,
        }
    }
}

/// A string field of a record's meta (`difficulty`, `length_bucket`).
pub fn meta_str<'r>(r: &'r Record, key: &str) -> Option<&'r str> {
    r.meta.get(key).and_then(|v| v.as_str())
}

/// An integer field of a record's meta (`length`).
pub fn meta_u64(r: &Record, key: &str) -> Option<u64> {
    r.meta.get(key).and_then(|v| v.as_u64())
}

#[cfg(test)]
pub(crate) mod testing {
    use crate::aggregate::aggregate;
    use crate::bootstrap::BootstrapConfig;
    use crate::tables::{Table, Value};
    use crate::Record;

    /// A record of `dataset`/`task` scored `score`, with `meta`, for one method and budget.
    pub fn record(
        dataset: &str,
        task: &str,
        id: &str,
        method: &str,
        score: f64,
        meta: serde_json::Value,
    ) -> Record {
        let (budget, label) = if method == "full" {
            (serde_json::Value::Null, "-")
        } else {
            (serde_json::json!({"tokens": 128}), "k=128")
        };
        serde_json::from_value(serde_json::json!({
            "experiment": "e", "model": "m", "dataset": dataset, "task": task, "sample_id": id,
            "turn": 0, "method": method, "method_params": {}, "budget": budget,
            "budget_label": label, "query_aware": false, "target_ratio": 0.0,
            "achieved_ratio": 0.0, "prediction": "p", "answers": ["a"], "metric": "qa_f1",
            "score": score, "agreement_with_full": 1.0, "kl_first_token": 0.0, "kv_bytes": 1,
            "kv_bytes_full": 1, "peak_device_bytes": null, "prefill_ms": 1.0, "compress_ms": 0.0,
            "question_ms": 1.0, "ttft_ms": 2.0, "decode_ms_per_token": 1.0, "context_tokens": 5,
            "question_tokens": 2, "new_tokens": 1, "device": "cpu", "seed": 0,
            "kvbench_version": "0", "key": format!("{dataset}|{task}|{id}|{method}"), "meta": meta
        }))
        .expect("a valid record")
    }

    /// The breakdown tables of `records`.
    pub fn tables(records: &[Record]) -> Vec<Table> {
        let cfg = BootstrapConfig {
            seed: 1,
            resamples: 50,
        };
        super::breakdown_tables(records, &aggregate(records, "full", cfg), cfg)
    }

    /// The mean in the cell of row `row` (counting from 0) and column `key`.
    pub fn mean(t: &Table, row: usize, key: &str) -> Option<f64> {
        let i = t.columns.iter().position(|c| c.key == key)?;
        match &t.rows[row][i] {
            Value::Est(e) => e.map(|e| e.mean),
            _ => None,
        }
    }

    /// The text in the cell of row `row` and column `key`.
    pub fn text(t: &Table, row: usize, key: &str) -> String {
        let i = t.columns.iter().position(|c| c.key == key).expect("column");
        match &t.rows[row][i] {
            Value::Text(s) => s.clone(),
            v => format!("{v:?}"),
        }
    }

    pub fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }
}

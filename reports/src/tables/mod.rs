//! Tables: one typed model ([`Table`]) built from the aggregate, written as Markdown, CSV,
//! Parquet and LaTeX (booktabs) by the modules below, and as HTML by the report page.

pub mod frame;
pub mod latex;
pub mod markdown;

use polars::prelude::{
    ChunkCompareEq, Column as PlColumn, DataFrame, DataFrameJoinOps, JoinArgs, JoinType,
    PolarsResult,
};

use crate::aggregate::{Aggregate, Config, Metric, DELTA_METRICS};
use crate::bootstrap::Estimate;

/// How a column's values are typed and shown.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Text,
    Int,
    Num {
        decimals: usize,
    },
    /// A mean with its 95% interval: one column in Markdown, LaTeX and HTML (`0.812 [0.70, 0.91]`),
    /// four in CSV and Parquet (`x`, `x_lo`, `x_hi`, `x_n`).
    Est {
        decimals: usize,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    /// Machine name: CSV header and Parquet field.
    pub key: String,
    /// Human header, with its unit.
    pub header: String,
    pub kind: Kind,
    /// Left out of the human formats when every row has the same value (the model of a
    /// one-model report); the value then goes in the table's note.
    pub elide_if_constant: bool,
}

impl Column {
    pub(crate) fn new(key: impl Into<String>, header: impl Into<String>, kind: Kind) -> Self {
        Column {
            key: key.into(),
            header: header.into(),
            kind,
            elide_if_constant: false,
        }
    }

    fn elidable(mut self) -> Self {
        self.elide_if_constant = true;
        self
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Text(String),
    Int(u64),
    Num(Option<f64>),
    Est(Option<Estimate>),
}

impl Value {
    /// As shown in Markdown and HTML.
    pub fn display(&self, kind: Kind) -> String {
        match (self, kind) {
            (Value::Text(s), _) => s.clone(),
            (Value::Int(i), _) => i.to_string(),
            (Value::Num(Some(x)), Kind::Num { decimals } | Kind::Est { decimals }) => {
                format!("{x:.decimals$}")
            }
            (Value::Est(Some(e)), Kind::Est { decimals } | Kind::Num { decimals }) => {
                format!("{:.d$} [{:.d$}, {:.d$}]", e.mean, e.lo, e.hi, d = decimals)
            }
            _ => "–".to_string(),
        }
    }
}

/// A table with a name (its file stem), a title and a note (how to read it).
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub name: String,
    pub title: String,
    pub note: String,
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
}

impl Table {
    /// Indices of the columns the human formats show, and a note naming the constant values of
    /// the columns they leave out.
    pub fn shown_columns(&self) -> (Vec<usize>, String) {
        let mut shown = Vec::new();
        let mut constants = Vec::new();
        for (i, c) in self.columns.iter().enumerate() {
            let first = self.rows.first().map(|r| &r[i]);
            let constant = self.rows.iter().all(|r| Some(&r[i]) == first);
            if c.elide_if_constant && constant && !self.rows.is_empty() {
                constants.push(format!(
                    "{}: {}",
                    c.header,
                    first.map(|v| v.display(c.kind)).unwrap_or_default()
                ));
            } else {
                shown.push(i);
            }
        }
        (shown, constants.join("; "))
    }
}

pub(crate) const CI_NOTE: &str =
    "Means with 95% percentile-bootstrap intervals in brackets (seeded; resampling samples).";

/// The identity columns of a configuration.
pub(crate) fn config_columns() -> Vec<Column> {
    vec![
        Column::new("model", "model", Kind::Text).elidable(),
        Column::new("method", "method", Kind::Text),
        Column::new("budget", "budget", Kind::Text),
        Column::new("query_aware", "query-aware", Kind::Text).elidable(),
    ]
}

pub(crate) fn config_values(c: &Config) -> Vec<Value> {
    vec![
        Value::Text(c.model.clone()),
        Value::Text(c.method.clone()),
        Value::Text(c.budget.label.clone()),
        Value::Text(if c.query_aware { "yes" } else { "no" }.into()),
    ]
}

fn metric_column(m: Metric) -> Column {
    Column::new(
        m.key(),
        m.label(),
        Kind::Est {
            decimals: m.decimals(),
        },
    )
}

/// Every metric per dataset x task x configuration.
pub fn metrics_table(agg: &Aggregate) -> Table {
    let mut columns = vec![
        Column::new("dataset", "dataset", Kind::Text),
        Column::new("task", "task", Kind::Text),
    ];
    columns.push(Column::new("task_metric", "task metric", Kind::Text).elidable());
    columns.extend(config_columns());
    columns.push(Column::new("n", "n", Kind::Int));
    columns.extend(Metric::ALL.iter().map(|&m| metric_column(m)));
    let rows = agg
        .cells
        .iter()
        .map(|c| {
            let mut row = vec![
                Value::Text(c.dataset.clone()),
                Value::Text(c.task.clone()),
                Value::Text(c.metric.clone()),
            ];
            row.extend(config_values(&c.config));
            row.push(Value::Int(c.n as u64));
            row.extend(
                Metric::ALL
                    .iter()
                    .map(|m| Value::Est(c.stats.get(m).copied())),
            );
            row
        })
        .collect();
    Table {
        name: "metrics".into(),
        title: "Every metric per task and configuration".into(),
        note: format!(
            "{CI_NOTE} score: the task metric (0-1); agreement: fraction of the full-cache greedy tokens reproduced; \
             KL: KL(full || method) of the first answer token; TTFT = prefill + compress + question; \
             decode: tokens/s after the first token, per request, averaged; peak: device memory high-water mark (– where the device cannot report it)."
        ),
        columns,
        rows,
    }
}

/// Benchmark averages: per dataset, the mean over its tasks of each task's mean.
pub fn benchmarks_table(agg: &Aggregate) -> Table {
    let mut columns = vec![Column::new("dataset", "dataset", Kind::Text)];
    columns.extend(config_columns());
    columns.push(Column::new("tasks", "tasks", Kind::Int));
    columns.push(Column::new("n", "n", Kind::Int));
    columns.extend(Metric::ALL.iter().map(|&m| metric_column(m)));
    let rows = agg
        .benchmarks
        .iter()
        .map(|b| {
            let mut row = vec![Value::Text(b.dataset.clone())];
            row.extend(config_values(&b.config));
            row.push(Value::Int(b.tasks as u64));
            row.push(Value::Int(b.n as u64));
            row.extend(
                Metric::ALL
                    .iter()
                    .map(|m| Value::Est(b.stats.get(m).copied())),
            );
            row
        })
        .collect();
    Table {
        name: "benchmarks".into(),
        title: "Benchmark averages".into(),
        note: format!(
            "Mean over a dataset's tasks of each task's mean, as LongBench and RULER average (every task weighs \
             the same, whatever its sample count); intervals resample within each task. {CI_NOTE}"
        ),
        columns,
        rows,
    }
}

/// Differences against the baseline, per task and on each benchmark average.
pub fn deltas_table(agg: &Aggregate) -> Table {
    let mut columns = vec![
        Column::new("dataset", "dataset", Kind::Text),
        Column::new("task", "task", Kind::Text),
    ];
    columns.extend(config_columns());
    columns.push(Column::new("baseline", "baseline", Kind::Text));
    columns.push(Column::new("pairing", "pairing", Kind::Text));
    columns.push(Column::new("n", "n", Kind::Int));
    columns.extend(DELTA_METRICS.iter().map(|&m| {
        Column::new(
            format!("delta_{}", m.key()),
            format!("Δ {}", m.label()),
            Kind::Est {
                decimals: m.decimals(),
            },
        )
    }));
    let rows = agg
        .deltas
        .iter()
        .map(|d| {
            let mut row = vec![
                Value::Text(d.dataset.clone()),
                Value::Text(d.task.clone().unwrap_or_else(|| "(average)".into())),
            ];
            row.extend(config_values(&d.config));
            row.push(Value::Text(d.baseline.label()));
            row.push(Value::Text(
                if d.paired { "paired" } else { "unpaired" }.into(),
            ));
            row.push(Value::Int(d.n as u64));
            row.extend(
                DELTA_METRICS
                    .iter()
                    .map(|m| Value::Est(d.stats.get(m).copied())),
            );
            row
        })
        .collect();
    Table {
        name: "deltas".into(),
        title: format!("Differences against `{}`", agg.baseline),
        note: format!(
            "Method minus baseline. Paired: over the samples both ran, resampling samples; unpaired: difference of \
             independent means. A difference whose interval excludes 0 is unlikely to be resampling noise. \
             (average): the difference of the benchmark averages. {CI_NOTE}"
        ),
        columns,
        rows,
    }
}

/// The paper layout: one row per configuration, one column per task and per benchmark average,
/// the task metric in each cell.
pub fn scores_table(agg: &Aggregate) -> Table {
    let mut columns = config_columns();
    let datasets: Vec<&String> = {
        let mut d: Vec<&String> = agg.tasks.iter().map(|(d, _)| d).collect();
        d.dedup();
        d
    };
    let multi = datasets.len() > 1;
    for (d, t) in &agg.tasks {
        let header = if multi { format!("{d}/{t}") } else { t.clone() };
        columns.push(Column::new(
            format!("{d}/{t}"),
            header,
            Kind::Est { decimals: 3 },
        ));
    }
    // An average column only for datasets of several tasks (one task's average is that task).
    let averaged: Vec<&String> = datasets
        .iter()
        .copied()
        .filter(|d| agg.tasks.iter().filter(|(x, _)| x == *d).count() > 1)
        .collect();
    for d in &averaged {
        columns.push(Column::new(
            format!("{d}/average"),
            format!("{d} avg."),
            Kind::Est { decimals: 3 },
        ));
    }
    let keys: Vec<String> = columns[config_columns().len()..]
        .iter()
        .map(|c| c.key.clone())
        .collect();
    let wide = pivot_scores(agg, &keys).expect("pivoting columns polars built");
    let rows = agg
        .configs
        .iter()
        .zip(wide)
        .map(|(c, scores)| {
            let mut row = config_values(c);
            row.extend(scores.into_iter().map(Value::Est));
            row
        })
        .collect();
    Table {
        name: "scores".into(),
        title: "Task scores per configuration".into(),
        note: format!(
            "The task metric (0-1) per task, and each dataset's benchmark average. {CI_NOTE}"
        ),
        columns,
        rows,
    }
}

/// The scores' wide layout (one row per configuration, one column per `keys`: `dataset/task` or
/// `dataset/average`) from the long cells and benchmark averages: a polars pivot written as a
/// left join of every configuration with each column's cells (polars' own pivot is lazy-only).
fn pivot_scores(agg: &Aggregate, keys: &[String]) -> PolarsResult<Vec<Vec<Option<Estimate>>>> {
    let index = |c: &Config| agg.configs.binary_search(c).ok().map(|i| i as u32);
    let (mut config, mut column, mut estimate) = (Vec::new(), Vec::new(), Vec::new());
    let scored = agg
        .cells
        .iter()
        .map(|x| (&x.config, format!("{}/{}", x.dataset, x.task), &x.stats))
        .chain(
            agg.benchmarks
                .iter()
                .map(|b| (&b.config, format!("{}/average", b.dataset), &b.stats)),
        );
    let mut estimates = Vec::new();
    for (c, key, stats) in scored {
        if let (Some(i), Some(e)) = (index(c), stats.get(&Metric::Score)) {
            config.push(i);
            column.push(key);
            estimate.push(estimates.len() as u32);
            estimates.push(*e);
        }
    }
    let long = DataFrame::new_infer_height(vec![
        PlColumn::new("config".into(), config),
        PlColumn::new("column".into(), column),
        PlColumn::new("estimate".into(), estimate),
    ])?;
    let n = agg.configs.len() as u32;
    let all = DataFrame::new_infer_height(vec![PlColumn::new(
        "config".into(),
        (0..n).collect::<Vec<u32>>(),
    )])?;
    let mut wide = vec![vec![None; keys.len()]; agg.configs.len()];
    for (k, key) in keys.iter().enumerate() {
        let mask = long.column("column")?.str()?.equal(key.as_str());
        let cells = long.filter(&mask)?.select(["config", "estimate"])?;
        let joined = all.join(
            &cells,
            ["config"],
            ["config"],
            JoinArgs::new(JoinType::Left),
            None,
        )?;
        let rows = joined.column("config")?.u32()?.clone();
        let found = joined.column("estimate")?.u32()?.clone();
        for (row, e) in rows.iter().zip(found.iter()) {
            if let (Some(row), Some(e)) = (row, e) {
                wide[row as usize][k] = Some(estimates[e as usize]);
            }
        }
    }
    Ok(wide)
}

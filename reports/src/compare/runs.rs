//! `kvbench compare A B`: run B against run A, cell by cell (dataset x task x configuration):
//! the difference B - A of score, TTFT, decode rate and cache size, with its bootstrap interval,
//! paired over the samples both ran (else the difference of independent means).

use std::collections::BTreeSet;

use crate::aggregate::{compare, group, Configs, DELTA_METRICS};
use crate::bootstrap::BootstrapConfig;
use crate::tables::{config_columns, config_values, Column, Kind, Table, Value};
use crate::Record;

/// The per-cell differences of `b` against `a` (labels name the runs in the title and status).
pub fn compare_runs(
    a: &[Record],
    b: &[Record],
    labels: (&str, &str),
    cfg: BootstrapConfig,
) -> Table {
    let a: Vec<Record> = a.iter().filter(|r| !r.is_failed()).cloned().collect();
    let b: Vec<Record> = b.iter().filter(|r| !r.is_failed()).cloned().collect();
    let all: Vec<Record> = a.iter().chain(&b).cloned().collect();
    let configs = Configs::new(&all);
    let (ga, gb) = (group(&a, &configs), group(&b, &configs));
    let cells: BTreeSet<_> = ga.keys().chain(gb.keys()).cloned().collect();
    let mut columns = vec![
        Column::new("dataset", "dataset", Kind::Text),
        Column::new("task", "task", Kind::Text),
    ];
    columns.extend(config_columns());
    columns.push(Column::new("status", "status", Kind::Text));
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
    let (la, lb) = labels;
    let rows = cells
        .iter()
        .map(|key| {
            let (dataset, task, config) = key;
            let mut row = vec![Value::Text(dataset.clone()), Value::Text(task.clone())];
            row.extend(config_values(config));
            match (ga.get(key), gb.get(key)) {
                (Some(ra), Some(rb)) => {
                    let id = format!("runs|{dataset}|{task}|{}", config.label());
                    let (paired, n, stats) = compare(rb, ra, &id, cfg);
                    row.push(Value::Text("both".into()));
                    row.push(Value::Text(
                        if paired { "paired" } else { "unpaired" }.into(),
                    ));
                    row.push(Value::Int(n as u64));
                    row.extend(
                        DELTA_METRICS
                            .iter()
                            .map(|m| Value::Est(stats.get(m).copied())),
                    );
                }
                (only_a, _) => {
                    let which = if only_a.is_some() { la } else { lb };
                    row.push(Value::Text(format!("only in {which}")));
                    row.push(Value::Text("-".into()));
                    row.push(Value::Int(0));
                    row.extend(DELTA_METRICS.iter().map(|_| Value::Est(None)));
                }
            }
            row
        })
        .collect();
    Table {
        name: "compare_runs".into(),
        title: format!("{lb} minus {la}, per cell"),
        note: format!(
            "Each cell (dataset x task x configuration): {lb} minus {la}. Paired over the samples both runs \
             ran, resampling samples; unpaired: difference of independent means. An interval that excludes 0 \
             is unlikely to be resampling noise. {}",
            crate::tables::CI_NOTE
        ),
        columns,
        rows,
    }
}

//! [`aggregate`]: the report's statistics from the aggregation path shared with the run's summary
//! ([`crate::grouped`]): per-group rows from one polars group-by, baseline partners from one polars
//! join on the sample key, then bootstrap intervals over those grouped columns.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use polars::prelude::{DataFrame, PolarsResult};

use super::{
    baseline_for, Aggregate, Benchmark, BudgetKey, Cell, Config, Delta, Metric, DELTA_METRICS,
};
use crate::bootstrap::{
    cell_seed, macro_average, mean_ci, paired_difference, unpaired_difference, BootstrapConfig,
    Estimate,
};
use crate::frame::{floats, strings};
use crate::grouped::{Prepared, CONFIG, LABEL};
use crate::Record;

/// Rows of the prepared frame per dataset x task x configuration, each group sorted by sample,
/// turn and key so that statistics never depend on the order of the input files.
type RowGroups = BTreeMap<(String, String, Config), Vec<usize>>;

/// Aggregate `records` (already merged, each key once) against `baseline`.
pub fn aggregate(records: &[Record], baseline: &str, cfg: BootstrapConfig) -> Aggregate {
    aggregate_frame(&crate::frame::records_frame(records), baseline, cfg)
        .expect("a records frame has every column the aggregation reads")
}

/// [`aggregate`] on a results frame ([`crate::frame`]).
pub fn aggregate_frame(
    df: &DataFrame,
    baseline: &str,
    cfg: BootstrapConfig,
) -> PolarsResult<Aggregate> {
    let p = Prepared::new(df)?;
    let groups = row_groups(&p)?;
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

    let metric = strings(&p.df, "metric")?;
    for ((dataset, task, config), rows) in &groups {
        let id = format!("{dataset}|{task}|{}", config.identity());
        let stats = Metric::ALL
            .iter()
            .filter_map(|&m| {
                let seed = cell_seed(cfg.seed, &format!("{id}|{}", m.key()));
                Some((m, mean_ci(&p.values_at(m, rows), cfg, seed)?))
            })
            .collect();
        out.cells.push(Cell {
            dataset: dataset.clone(),
            task: task.clone(),
            metric: metric[rows[0]].clone(),
            config: config.clone(),
            n: rows.len(),
            stats,
        });
    }

    // Benchmark averages: per dataset x configuration, every task of the dataset.
    let mut by_dataset: BTreeMap<(String, Config), Vec<&Vec<usize>>> = BTreeMap::new();
    for ((dataset, _, config), rows) in &groups {
        by_dataset
            .entry((dataset.clone(), config.clone()))
            .or_default()
            .push(rows);
    }
    for ((dataset, config), tasks) in &by_dataset {
        let id = format!("{dataset}|average|{}", config.identity());
        let stats = Metric::ALL
            .iter()
            .filter_map(|&m| {
                let strata: Vec<Vec<f64>> = tasks.iter().map(|rows| p.values_at(m, rows)).collect();
                let refs: Vec<&[f64]> = strata.iter().map(|s| s.as_slice()).collect();
                let seed = cell_seed(cfg.seed, &format!("{id}|{}", m.key()));
                Some((m, macro_average(&refs, cfg, seed)?))
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

    out.deltas = deltas(&p, &groups, &out.configs, baseline, cfg)?;
    Ok(out)
}

/// The polars group-by at the report's level (dataset x task x configuration), each group's
/// configuration read from its first row.
fn row_groups(p: &Prepared) -> PolarsResult<RowGroups> {
    let df = &p.df;
    let grouped = crate::grouped::group(df, &["dataset", "task", CONFIG], &[])?;
    let [dataset, task, sample, key, model, label, method, params, budget] = [
        "dataset",
        "task",
        "sample_id",
        "key",
        "model",
        LABEL,
        "method",
        "method_params",
        "budget_label",
    ]
    .map(|c| strings(df, c));
    let (dataset, task, sample, key) = (dataset?, task?, sample?, key?);
    let (model, label, method, params, budget) = (model?, label?, method?, params?, budget?);
    let turn = df.column("turn")?.u64()?.clone();
    let ratio = floats(df, "budget_compression_ratio")?;
    let tokens = df.column("budget_tokens")?.i64()?.clone();
    let aware = df.column("query_aware")?.bool()?.clone();
    let mut groups = RowGroups::new();
    for mut rows in grouped.rows {
        let first = rows[0];
        let config = Config::new(
            model[first].clone(),
            label[first].clone(),
            method[first].clone(),
            params[first].clone(),
            BudgetKey::from_parts(ratio[first], tokens.get(first), &budget[first]),
            aware.get(first).unwrap_or(false),
        );
        let order = |i: usize| (&sample[i], turn.get(i), &key[i]);
        rows.sort_by(|&a, &b| order(a).cmp(&order(b)));
        groups.insert((dataset[first].clone(), task[first].clone(), config), rows);
    }
    Ok(groups)
}

fn deltas(
    p: &Prepared,
    groups: &RowGroups,
    all: &[Config],
    baseline: &str,
    cfg: BootstrapConfig,
) -> PolarsResult<Vec<Delta>> {
    let mut baseline_of = HashMap::new();
    for c in all {
        if let Some(b) = baseline_for(c, all, baseline).filter(|b| *b != c) {
            baseline_of.insert(c.identity(), b.identity());
        }
    }
    // Each row's baseline record on the same sample and turn (polars join on the sample key).
    let partner = crate::grouped::partners(p, &baseline_of)?;
    let pairs = |rows: &[usize], m: Metric| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|&i| Some((p.value(m, i)?, p.value(m, partner[i]?)?)))
            .collect()
    };
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
            // (task, this config's rows, the baseline's rows) for every task both ran.
            let tasks: Vec<(&String, &Vec<usize>, &Vec<usize>)> = groups
                .iter()
                .filter(|((d, _, c), _)| d == dataset && c == config)
                .filter_map(|((_, t, _), rows)| {
                    Some((
                        t,
                        rows,
                        groups.get(&(dataset.clone(), t.clone(), base.clone()))?,
                    ))
                })
                .collect();
            if tasks.is_empty() {
                continue;
            }
            let mut per_task_pairs = Vec::new();
            for (task, rows, base_rows) in &tasks {
                let id = format!(
                    "{dataset}|{task}|{}|vs|{}",
                    config.identity(),
                    base.identity()
                );
                let (paired, n, stats) = difference(
                    &|m| pairs(rows, m),
                    &|m| p.values_at(m, rows),
                    &|m| p.values_at(m, base_rows),
                    &id,
                    cfg,
                );
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
                let macro_of = |strata: Vec<Vec<f64>>, seed| {
                    let refs: Vec<&[f64]> = strata.iter().map(|s| s.as_slice()).collect();
                    macro_average(&refs, cfg, seed)
                };
                let est = if paired {
                    let strata = tasks
                        .iter()
                        .map(|(_, rows, _)| pairs(rows, m).iter().map(|(a, b)| a - b).collect())
                        .collect();
                    macro_of(strata, seed)
                } else {
                    let a = tasks.iter().map(|(_, r, _)| p.values_at(m, r)).collect();
                    let b = tasks.iter().map(|(_, _, b)| p.values_at(m, b)).collect();
                    // Unpaired benchmark averages: the difference of the means, with the interval
                    // of the two independent intervals combined in quadrature.
                    macro_of(a, seed)
                        .zip(macro_of(b, seed ^ 1))
                        .map(|(a, b)| quadrature(a, b))
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
    Ok(out)
}

/// The difference of two independent estimates, their intervals combined in quadrature.
fn quadrature(a: Estimate, b: Estimate) -> Estimate {
    let d = a.mean - b.mean;
    let lo = ((a.mean - a.lo).powi(2) + (b.hi - b.mean).powi(2)).sqrt();
    let hi = ((a.hi - a.mean).powi(2) + (b.mean - b.lo).powi(2)).sqrt();
    Estimate {
        mean: d,
        lo: d - lo,
        hi: d + hi,
        n: a.n,
    }
}

/// Differences of one task, A minus B, from its grouped columns: paired where at least one
/// (sample, turn) matches (`pairs`), else the unpaired difference of `a`'s and `b`'s values.
pub(super) fn difference(
    pairs: &dyn Fn(Metric) -> Vec<(f64, f64)>,
    a: &dyn Fn(Metric) -> Vec<f64>,
    b: &dyn Fn(Metric) -> Vec<f64>,
    id: &str,
    cfg: BootstrapConfig,
) -> (bool, usize, BTreeMap<Metric, Estimate>) {
    let paired = !pairs(Metric::Score).is_empty();
    let mut stats = BTreeMap::new();
    for m in DELTA_METRICS {
        let seed = cell_seed(cfg.seed, &format!("{id}|{}", m.key()));
        let est = if paired {
            paired_difference(&pairs(m), cfg, seed)
        } else {
            unpaired_difference(&a(m), &b(m), cfg, seed)
        };
        if let Some(e) = est {
            stats.insert(m, e);
        }
    }
    let n = stats.get(&Metric::Score).map_or(0, |e| e.n);
    (paired, n, stats)
}

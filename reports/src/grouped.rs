//! The one aggregation path, shared by `run`'s end-of-run summary and `report`'s tables.
//!
//! A results frame ([`crate::frame`]) gets its configuration columns (the method's label, the
//! configuration's identity, the summary's way to the cache) and its per-[`Metric`] values; a
//! polars group-by at the level a view needs (dataset x task x configuration for the report,
//! dataset x method x budget for the summary) gives each group's rows, count and means; a polars
//! join pairs each configuration's rows with its baseline's on the sample key. The bootstrap
//! ([`crate::bootstrap`]) then resamples the grouped columns.

use std::collections::HashMap;

use polars::prelude::*;

use crate::frame::strings;
use crate::metric::Metric;

/// The method's name, with its parameters where one method ran with several settings.
pub const LABEL: &str = "method_label";
/// A configuration's identity: model | method label | budget | query awareness.
pub const CONFIG: &str = "config";
/// The summary's row label: the method label and, with reuse, the way to the cache.
pub const WAY: &str = "way_label";

/// A results frame ready to group at the report's level: [`prepare`]'s frame with [`CONFIG`],
/// and each metric's values per row.
pub struct Prepared {
    pub df: DataFrame,
    /// Per metric (in [`Metric::ALL`] order), its value per row; None where not measured.
    pub values: Vec<Vec<Option<f64>>>,
}

impl Prepared {
    /// [`prepare`] plus the configuration identity and the metric values (the report's level;
    /// the summary, which averages raw columns over a million rows, does without them).
    pub fn new(df: &DataFrame) -> PolarsResult<Self> {
        let mut df = prepare(df)?;
        let models = strings(&df, "model")?;
        let labels = strings(&df, LABEL)?;
        let budgets = strings(&df, "budget_label")?;
        let aware = df.column("query_aware")?.bool()?.clone();
        let config: Vec<String> = (0..df.height())
            .map(|i| {
                let qa = aware.get(i).unwrap_or(false);
                format!("{}|{}|{}|{qa}", models[i], labels[i], budgets[i])
            })
            .collect();
        df.with_column(Column::new(CONFIG.into(), config))?;
        let values = Metric::ALL
            .iter()
            .map(|m| m.frame_values(&df))
            .collect::<PolarsResult<_>>()?;
        Ok(Prepared { df, values })
    }

    /// The values of `m` at `rows`, where measured (what the bootstrap resamples).
    pub fn values_at(&self, m: Metric, rows: &[usize]) -> Vec<f64> {
        let v = &self.values[m as usize];
        rows.iter().filter_map(|&i| v[i]).collect()
    }

    pub fn value(&self, m: Metric, row: usize) -> Option<f64> {
        self.values[m as usize][row]
    }
}

/// Add the method label ([`LABEL`]) and the summary's row label ([`WAY`]) to a results frame
/// (rows kept as they are).
pub fn prepare(df: &DataFrame) -> PolarsResult<DataFrame> {
    let mut df = df.clone();
    let methods = strings(&df, "method")?;
    let params = strings(&df, "method_params")?;
    let labels = crate::labels::method_labels_of(
        methods
            .iter()
            .map(String::as_str)
            .zip(params.iter().map(String::as_str)),
    );
    let label: Vec<String> = methods
        .iter()
        .zip(&params)
        .map(|(m, p)| {
            labels
                .get(&(m.clone(), p.clone()))
                .cloned()
                .unwrap_or_else(|| m.clone())
        })
        .collect();
    let modes = df.column("ttft_mode")?.str()?.clone();
    let bandwidths = crate::frame::floats(&df, "bandwidth_gbps")?;
    // With reuse, each way to the cache is its own summary row (`full [load @ 4 GB/s]`).
    let way: Vec<String> = label
        .iter()
        .enumerate()
        .map(|(i, method)| match (modes.get(i), bandwidths[i]) {
            (None, _) => method.clone(),
            (Some("compute"), None) => format!("{method} [compute]"),
            (Some(mode), None) => format!("{method} [{mode} @ uncapped]"),
            (Some(mode), Some(g)) => format!("{method} [{mode} @ {g} GB/s]"),
        })
        .collect();
    df.with_column(Column::new(LABEL.into(), label))?;
    df.with_column(Column::new(WAY.into(), way))?;
    Ok(df)
}

/// One polars group-by: per group its key values, `n` and the mean of each of `means`
/// (`<column>_mean`) in `table`, and its rows (indices into the frame, in frame order) in `rows`.
/// Groups in order of first appearance.
pub struct Grouped {
    pub table: DataFrame,
    pub rows: Vec<Vec<usize>>,
}

pub fn group(df: &DataFrame, keys: &[&str], means: &[&str]) -> PolarsResult<Grouped> {
    if df.height() == 0 {
        return Ok(Grouped {
            table: DataFrame::empty(),
            rows: Vec::new(),
        });
    }
    let gb = df.group_by_stable(keys.iter().copied())?;
    let rows = gb
        .get_groups()
        .iter()
        .map(|g| match g {
            GroupsIndicator::Idx((_, idx)) => idx.iter().map(|&i| i as usize).collect(),
            GroupsIndicator::Slice([first, len]) => {
                (first as usize..(first + len) as usize).collect()
            }
        })
        .collect();
    // The eager group-by's aggregations (deprecated upstream in favour of the lazy engine, which
    // this crate leaves out to keep the build small; polars is pinned, so they stay).
    #[allow(deprecated)]
    let mut table = gb.clone().select(["key"]).count()?;
    table.rename("key_count", "n".into())?;
    if !means.is_empty() {
        #[allow(deprecated)]
        let m = gb.select(means.iter().copied()).mean()?;
        for name in means {
            table.with_column(m.column(&format!("{name}_mean"))?.clone())?;
        }
    }
    Ok(Grouped { table, rows })
}

/// For every row, the row of its baseline configuration (`baseline_of` maps a configuration's
/// identity to its baseline's) on the same dataset, task, sample and turn: a polars join on the
/// sample key. Where the baseline holds the key twice, the record with the greater key is the
/// partner (a deterministic choice, whatever the input order).
pub fn partners(
    p: &Prepared,
    baseline_of: &HashMap<String, String>,
) -> PolarsResult<Vec<Option<usize>>> {
    let df = &p.df;
    let n = df.height();
    let mut partner = vec![None; n];
    if n == 0 || baseline_of.is_empty() {
        return Ok(partner);
    }
    let config = strings(df, CONFIG)?;
    let pair: Vec<Option<&str>> = config
        .iter()
        .map(|c| baseline_of.get(c).map(String::as_str))
        .collect();
    let keys = ["dataset", "task", "sample_id", "turn"];
    let mut left = df.select(keys)?;
    left.with_column(Column::new("pair_config".into(), pair))?;
    left.with_column(Column::new("row".into(), (0..n as u32).collect::<Vec<_>>()))?;
    let mut right = df.select(keys)?;
    right.with_column(df.column(CONFIG)?.clone())?;
    right.with_column(Column::new(
        "base_row".into(),
        (0..n as u32).collect::<Vec<_>>(),
    ))?;
    let joined = left.join(
        &right,
        ["dataset", "task", "pair_config", "sample_id", "turn"],
        ["dataset", "task", CONFIG, "sample_id", "turn"],
        JoinArgs::new(JoinType::Inner),
        None,
    )?;
    let key = strings(df, "key")?;
    let rows = joined.column("row")?.u32()?.clone();
    let bases = joined.column("base_row")?.u32()?.clone();
    for (r, b) in rows.iter().zip(bases.iter()) {
        let (Some(r), Some(b)) = (r, b) else { continue };
        let (r, b) = (r as usize, b as usize);
        let better = match partner[r] {
            None => true,
            Some(old) => (&key[b], b) > (&key[old], old),
        };
        if better {
            partner[r] = Some(b);
        }
    }
    Ok(partner)
}

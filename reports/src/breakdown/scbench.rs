//! SCBench's two mixed tasks per turn task, as its `compute_scores.py` scores them (one accuracy
//! per subtask, never pooled): `scbench_summary_with_needles` as `scbench_summary` and
//! `scbench_passkey` turns, `scbench_repoqa_and_kv` as `scbench_repoqa` and `scbench_kv` turns.
//! A record's turn task is its meta's `turn_task` (what the harness copies from the SCBench
//! turn); records written before it existed are told apart by the turn's metric.

use std::collections::BTreeMap;

use super::{meta_str, Breakdown, Context};
use crate::tables::Table;
use crate::Record;

pub const DATASET: &str = "scbench";

/// The mixed tasks, their turn tasks, and the metric each turn task is scored with.
pub const MIXED: [(&str, [(&str, &str); 2]); 2] = [
    (
        "scbench_summary_with_needles",
        [
            ("scbench_summary", "rouge_lsum"),
            ("scbench_passkey", "first_int"),
        ],
    ),
    (
        "scbench_repoqa_and_kv",
        [("scbench_repoqa", "repo_qa"), ("scbench_kv", "substring")],
    ),
];

/// The turn task of a record of a mixed task.
pub fn turn_task(r: &Record) -> Option<String> {
    if let Some(t) = meta_str(r, "turn_task") {
        return Some(t.to_string());
    }
    let (_, subtasks) = MIXED.iter().find(|(task, _)| *task == r.task)?;
    subtasks
        .iter()
        .find(|(_, metric)| *metric == r.metric)
        .map(|(t, _)| t.to_string())
}

/// The per-turn-task table; None without records of a mixed task.
pub fn turn_tasks_table(ctx: &Context) -> Option<Table> {
    let is_mixed = |r: &Record| MIXED.iter().any(|(t, _)| *t == r.task);
    let rows = ctx.records(DATASET, is_mixed);
    if rows.is_empty() {
        return None;
    }
    let ran: Vec<&str> = MIXED
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| rows.iter().any(|(_, rs)| rs.iter().any(|r| r.task == *t)))
        .collect();
    // Every subtask of a mixed task that ran, plus any turn task found that is not listed.
    let mut columns: Vec<(String, String)> = Vec::new();
    for (task, subtasks) in MIXED.iter().filter(|(t, _)| ran.contains(t)) {
        let mut found: Vec<String> = subtasks.iter().map(|(s, _)| s.to_string()).collect();
        for (_, rs) in &rows {
            for r in rs.iter().filter(|r| r.task == *task) {
                let t = turn_task(r).unwrap_or_else(|| "(unmarked)".into());
                if !found.contains(&t) {
                    found.push(t);
                }
            }
        }
        let short = task.trim_start_matches("scbench_");
        columns.extend(
            found
                .into_iter()
                .map(|s| (format!("{task}/{s}"), format!("{short}: {s}"))),
        );
    }
    let rows = rows
        .into_iter()
        .map(|(config, rs)| {
            let mut by: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for r in rs {
                let t = turn_task(r).unwrap_or_else(|| "(unmarked)".into());
                by.entry(format!("{}/{t}", r.task))
                    .or_default()
                    .push(r.score);
            }
            let values = columns
                .iter()
                .map(|(key, _)| {
                    let s = by.get(key)?.clone();
                    ctx.estimate(
                        &[(s, 1.0)],
                        &format!("scbench_turn_tasks|{}|{key}", config.identity()),
                    )
                })
                .collect();
            (config.clone(), None, values)
        })
        .collect();
    Some(
        Breakdown {
            name: "scbench_turn_tasks",
            title: "SCBench mixed tasks per turn task".into(),
            note: "The two mixed SCBench tasks scored per turn task, as SCBench's compute_scores.py reports them \
                   (the scores table pools their turns): each cell is the mean over the turns of that task."
                .into(),
            group: None,
            columns,
            rows,
        }
        .table(),
    )
}

#[cfg(test)]
mod tests {
    use super::super::testing::{close, mean, record, tables};
    use super::*;

    #[test]
    fn mixed_tasks_split_by_turn_task() {
        let turn = |t: &str| serde_json::json!({ "turn_task": t });
        let mut rs = Vec::new();
        // summary turns 0.2 and 0.4 -> 0.3; passkey turns 1, 1, 0 -> 2/3
        for (i, (tt, s)) in [
            ("scbench_summary", 0.2),
            ("scbench_passkey", 1.0),
            ("scbench_summary", 0.4),
            ("scbench_passkey", 1.0),
            ("scbench_passkey", 0.0),
        ]
        .into_iter()
        .enumerate()
        {
            let mut r = record(
                DATASET,
                "scbench_summary_with_needles",
                "s",
                "full",
                s,
                turn(tt),
            );
            r.turn = i;
            r.key = format!("k{i}");
            rs.push(r);
        }
        // repoqa_and_kv from older records without the marker: told apart by the metric
        for (i, (metric, s)) in [("repo_qa", 0.5), ("substring", 1.0), ("substring", 0.0)]
            .into_iter()
            .enumerate()
        {
            let mut r = record(
                DATASET,
                "scbench_repoqa_and_kv",
                "r",
                "full",
                s,
                serde_json::Value::Null,
            );
            r.metric = metric.into();
            r.turn = i;
            r.key = format!("r{i}");
            rs.push(r);
        }
        // a plain SCBench task is not part of the table
        rs.push(record(
            DATASET,
            "scbench_kv",
            "x",
            "full",
            0.0,
            serde_json::Value::Null,
        ));
        let t = tables(&rs);
        assert_eq!(t.len(), 1);
        let t = &t[0];
        let keys: Vec<&str> = t.columns.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(
            &keys[keys.len() - 4..],
            [
                "scbench_summary_with_needles/scbench_summary",
                "scbench_summary_with_needles/scbench_passkey",
                "scbench_repoqa_and_kv/scbench_repoqa",
                "scbench_repoqa_and_kv/scbench_kv"
            ]
        );
        assert!(close(mean(t, 0, keys[keys.len() - 4]), 0.3));
        assert!(close(mean(t, 0, keys[keys.len() - 3]), 2.0 / 3.0));
        assert!(close(mean(t, 0, keys[keys.len() - 2]), 0.5));
        assert!(close(mean(t, 0, keys[keys.len() - 1]), 0.5));
        assert_eq!(
            t.rows[0][keys.iter().position(|k| *k == "n").unwrap()],
            crate::tables::Value::Int(3)
        );
    }
}

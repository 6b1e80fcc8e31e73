//! LongBench v2 as its `result.py` reports it: overall accuracy, then easy / hard (the sample's
//! `difficulty`) and short / medium / long (its `length`), each the mean over its samples.

use super::{meta_str, Breakdown, Context};
use crate::tables::Table;

pub const DATASET: &str = "longbench_v2";

const GROUPS: [(&str, &str); 5] = [
    ("difficulty", "easy"),
    ("difficulty", "hard"),
    ("length", "short"),
    ("length", "medium"),
    ("length", "long"),
];

/// The breakdown; None without LongBench v2 records carrying a difficulty or a length class.
pub fn table(ctx: &Context) -> Option<Table> {
    let has = |r: &crate::Record| GROUPS.iter().any(|(k, v)| meta_str(r, k) == Some(*v));
    let rows = ctx.records(DATASET, has);
    if rows.is_empty() {
        return None;
    }
    let mut columns = vec![("overall".to_string(), "overall".to_string())];
    columns.extend(GROUPS.iter().map(|(_, v)| (v.to_string(), v.to_string())));
    let rows = rows
        .into_iter()
        .map(|(config, rs)| {
            let id = |col: &str| format!("longbench_v2|{}|{col}", config.identity());
            let all: Vec<f64> = rs.iter().map(|r| r.score).collect();
            let mut values = vec![ctx.estimate(&[(all, 1.0)], &id("overall"))];
            values.extend(GROUPS.iter().map(|(k, v)| {
                let s: Vec<f64> = rs
                    .iter()
                    .filter(|r| meta_str(r, k) == Some(*v))
                    .map(|r| r.score)
                    .collect();
                ctx.estimate(&[(s, 1.0)], &id(v))
            }));
            (config.clone(), None, values)
        })
        .collect();
    Some(
        Breakdown {
            name: "longbench_v2",
            title: "LongBench v2 by difficulty and length".into(),
            note: "Accuracy over the samples of each difficulty (easy, hard) and length class (short, medium, \
                   long), as LongBench v2's result.py; overall over every sample with one of them."
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
    fn difficulty_and_length_classes() {
        let m = |d: &str, l: &str| serde_json::json!({ "difficulty": d, "length": l });
        let rs: Vec<_> = [
            ("a", 1.0, m("easy", "short")),
            ("b", 0.0, m("easy", "long")),
            ("c", 1.0, m("hard", "long")),
            ("d", 1.0, m("hard", "medium")),
            ("e", 0.0, m("hard", "short")),
        ]
        .into_iter()
        .map(|(id, s, meta)| record(DATASET, DATASET, id, "full", s, meta))
        .collect();
        let t = tables(&rs);
        assert_eq!(t.len(), 1);
        let t = &t[0];
        assert!(close(mean(t, 0, "overall"), 0.6));
        assert!(close(mean(t, 0, "easy"), 0.5));
        assert!(close(mean(t, 0, "hard"), 2.0 / 3.0));
        assert!(close(mean(t, 0, "short"), 0.5));
        assert!(close(mean(t, 0, "medium"), 1.0));
        assert!(close(mean(t, 0, "long"), 0.5));
    }
}

//! RULER's main table (NVIDIA/RULER README): one column per context length, each the mean over
//! the tasks run at that length, then `Avg.` (the mean over lengths) and the two weighted
//! averages, `wAvg. (inc)` and `wAvg. (dec)`, whose weights grow (shrink) linearly with the
//! length's rank: 1, 2, ..., n from the shortest length (from the longest). A record's length is
//! its meta's `length` (the target length the RULER loader generated it for).

use std::collections::{BTreeMap, BTreeSet};

use super::{meta_u64, strata, Breakdown, Context};
use crate::tables::Table;

pub const DATASET: &str = "ruler";

/// `4k` for 4096, `128k` for 131072; other lengths as they are.
pub fn length_header(length: u64) -> String {
    if length >= 1024 && length.is_multiple_of(1024) {
        format!("{}k", length / 1024)
    } else {
        length.to_string()
    }
}

/// The per-length table; None without RULER records carrying a length.
pub fn lengths_table(ctx: &Context) -> Option<Table> {
    let rows = ctx.records(DATASET, |r| meta_u64(r, "length").is_some());
    let lengths: BTreeSet<u64> = rows
        .iter()
        .flat_map(|(_, rs)| rs.iter().filter_map(|r| meta_u64(r, "length")))
        .collect();
    if lengths.is_empty() {
        return None;
    }
    let averaged = lengths.len() > 1;
    let mut columns: Vec<(String, String)> = lengths
        .iter()
        .map(|l| (format!("L{l}"), length_header(*l)))
        .collect();
    if averaged {
        columns.push(("avg".into(), "Avg.".into()));
        columns.push(("wavg_inc".into(), "wAvg. (inc)".into()));
        columns.push(("wavg_dec".into(), "wAvg. (dec)".into()));
    }
    let rows = rows
        .into_iter()
        .map(|(config, rs)| {
            // length -> task -> scores
            let mut by_length: BTreeMap<u64, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
            for l in &lengths {
                let at = strata(
                    rs.iter()
                        .copied()
                        .filter(|r| meta_u64(r, "length") == Some(*l)),
                    |r| Some(r.task.clone()),
                );
                if !at.is_empty() {
                    by_length.insert(*l, at);
                }
            }
            let id = |col: &str| format!("ruler_lengths|{}|{col}", config.identity());
            let mut values: Vec<_> = lengths
                .iter()
                .map(|l| {
                    let tasks = by_length.get(l)?;
                    let strata: Vec<(Vec<f64>, f64)> =
                        tasks.values().map(|s| (s.clone(), 1.0)).collect();
                    ctx.estimate(&strata, &id(&format!("L{l}")))
                })
                .collect();
            if averaged {
                // Each length weighs `w(rank)`, shared equally by its tasks; ranks count the
                // lengths this configuration ran, shortest first.
                let n = by_length.len();
                let weighted = |w: &dyn Fn(usize) -> f64, col: &str| {
                    let strata: Vec<(Vec<f64>, f64)> = by_length
                        .values()
                        .enumerate()
                        .flat_map(|(rank, tasks)| {
                            let share = w(rank) / tasks.len() as f64;
                            tasks.values().map(move |s| (s.clone(), share))
                        })
                        .collect();
                    ctx.estimate(&strata, &id(col))
                };
                values.push(weighted(&|_| 1.0, "avg"));
                values.push(weighted(&|rank| (rank + 1) as f64, "wavg_inc"));
                values.push(weighted(&|rank| (n - rank) as f64, "wavg_dec"));
            }
            (config.clone(), None, values)
        })
        .collect();
    Some(
        Breakdown {
            name: "ruler_lengths",
            title: "RULER per context length".into(),
            note: "As RULER's table: each length is the mean over the tasks run at that length; Avg. is the mean \
                   over lengths; wAvg. (inc) and (dec) weigh the lengths 1, 2, ..., n from the shortest (from the \
                   longest)."
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
    fn lengths_and_their_averages() {
        let json = |l: u64| serde_json::json!({ "length": l, "ruler": true });
        let mut rs = Vec::new();
        // full: at 4096, niah 1.0 (two samples: 1, 1) and vt 0.5 (1, 0) -> 0.75;
        //       at 8192, niah 0.5 (1, 0) and vt 0.0 -> 0.25.
        for (task, l, id, s) in [
            ("niah_single_1", 4096, "a", 1.0),
            ("niah_single_1", 4096, "b", 1.0),
            ("vt", 4096, "a", 1.0),
            ("vt", 4096, "b", 0.0),
            ("niah_single_1", 8192, "a", 1.0),
            ("niah_single_1", 8192, "b", 0.0),
            ("vt", 8192, "a", 0.0),
        ] {
            rs.push(record(
                DATASET,
                task,
                &format!("{l}{id}"),
                "full",
                s,
                json(l),
            ));
        }
        // snapkv: only at 4096, one task: 0.5.
        rs.push(record(DATASET, "vt", "x", "snapkv", 1.0, json(4096)));
        rs.push(record(DATASET, "vt", "y", "snapkv", 0.0, json(4096)));
        // another dataset's records do not count
        rs.push(record("niah", "niah", "z", "full", 0.0, json(4096)));
        let t = tables(&rs);
        assert_eq!(t.len(), 1);
        let t = &t[0];
        assert_eq!(t.name, "ruler_lengths");
        let headers: Vec<&str> = t.columns.iter().map(|c| c.header.as_str()).collect();
        assert_eq!(
            &headers[headers.len() - 5..],
            ["4k", "8k", "Avg.", "wAvg. (inc)", "wAvg. (dec)"]
        );
        assert!(close(mean(t, 0, "L4096"), 0.75));
        assert!(close(mean(t, 0, "L8192"), 0.25));
        assert!(close(mean(t, 0, "avg"), 0.5));
        // inc: (1 x 0.75 + 2 x 0.25) / 3; dec: (2 x 0.75 + 1 x 0.25) / 3
        assert!(close(mean(t, 0, "wavg_inc"), 1.25 / 3.0));
        assert!(close(mean(t, 0, "wavg_dec"), 1.75 / 3.0));
        assert!(close(mean(t, 1, "L4096"), 0.5));
        assert_eq!(mean(t, 1, "L8192"), None);
        assert!(close(mean(t, 1, "avg"), 0.5));
    }

    #[test]
    fn no_table_without_ruler_lengths() {
        let rs = vec![record(
            DATASET,
            "vt",
            "a",
            "full",
            1.0,
            serde_json::Value::Null,
        )];
        assert!(tables(&rs).is_empty());
        assert_eq!(length_header(131072), "128k");
        assert_eq!(length_header(3000), "3000");
    }
}

//! LongBench's category averages and LongBench-E's length intervals.
//!
//! Categories as LongBench's leaderboard (THUDM/LongBench README, "English" and "Chinese"
//! tables): Single-Doc QA, Multi-Doc QA, Summarization, Few-shot Learning, Code Completion and
//! Synthetic Tasks, each the mean of its tasks, and `Avg` the mean of the categories (the README's
//! Avg is the mean of its six category columns). The two code tasks belong to both languages.
//! A category or language appears only where the run has one of its tasks; a category averages
//! the tasks that ran.
//!
//! LongBench-E (`{task}_e`) by the record's `length_bucket` (`0-4k`, `4-8k`, `8k+` of the
//! record's word count `length`, as `eval.py --e`; computed from `length` when only that is
//! there): per category and, in the `all` rows, the mean over categories.

use std::collections::BTreeMap;

use super::{meta_str, meta_u64, strata, Breakdown, Context};
use crate::bootstrap::Estimate;
use crate::tables::Table;
use crate::Record;

pub const DATASET: &str = "longbench";

/// The official categories in the leaderboard's column order, with their English and Chinese
/// tasks (kvbench's task names).
pub const CATEGORIES: [(&str, &str, &[&str], &[&str]); 6] = [
    (
        "single_doc_qa",
        "Single-Doc QA",
        &["narrativeqa", "qasper", "multifieldqa_en"],
        &["multifieldqa_zh"],
    ),
    (
        "multi_doc_qa",
        "Multi-Doc QA",
        &["hotpotqa", "2wikimqa", "musique"],
        &["dureader"],
    ),
    (
        "summarization",
        "Summarization",
        &["gov_report", "qmsum", "multi_news"],
        &["vcsum"],
    ),
    (
        "few_shot",
        "Few-shot Learning",
        &["trec", "triviaqa", "samsum"],
        &["lsht"],
    ),
    (
        "code",
        "Code Completion",
        &["lcc", "repobench-p"],
        &["lcc", "repobench-p"],
    ),
    (
        "synthetic",
        "Synthetic Tasks",
        &["passage_count", "passage_retrieval_en"],
        &["passage_retrieval_zh"],
    ),
];

/// The category of a task (a LongBench-E task by its base name), for English.
pub fn category(task: &str) -> Option<&'static str> {
    let base = task.strip_suffix("_e").unwrap_or(task);
    CATEGORIES
        .iter()
        .find(|(_, _, en, zh)| en.contains(&base) || zh.contains(&base))
        .map(|(key, ..)| *key)
}

/// LongBench-E's interval of a word count (`eval.py --e`).
pub fn bucket_of(length: u64) -> &'static str {
    match length {
        0..4000 => "0-4k",
        4000..8000 => "4-8k",
        _ => "8k+",
    }
}

pub const BUCKETS: [&str; 3] = ["0-4k", "4-8k", "8k+"];

fn bucket(r: &Record) -> Option<String> {
    meta_str(r, "length_bucket")
        .map(str::to_string)
        .or_else(|| meta_u64(r, "length").map(|l| bucket_of(l).to_string()))
}

/// A category's key and its tasks in one language.
type Category = (&'static str, &'static [&'static str]);

/// The mean over categories of each category's mean over its tasks (`all`), or one category's
/// mean over its tasks; `tasks` maps task -> scores, `cats` the categories to cover.
fn category_strata(tasks: &BTreeMap<String, Vec<f64>>, cats: &[Category]) -> Vec<(Vec<f64>, f64)> {
    let present: Vec<Vec<&Vec<f64>>> = cats
        .iter()
        .map(|(_, members)| {
            tasks
                .iter()
                .filter(|(t, _)| members.contains(&t.strip_suffix("_e").unwrap_or(t)))
                .map(|(_, s)| s)
                .collect::<Vec<_>>()
        })
        .filter(|m| !m.is_empty())
        .collect();
    present
        .iter()
        .flat_map(|members| {
            let w = 1.0 / members.len() as f64;
            members.iter().map(move |s| ((*s).clone(), w))
        })
        .collect()
}

/// Category averages per language; None without a LongBench task of a category.
pub fn categories_table(ctx: &Context) -> Option<Table> {
    let rows = ctx.records(DATASET, |r| {
        !r.task.ends_with("_e") && category(&r.task).is_some()
    });
    if rows.is_empty() {
        return None;
    }
    let mut columns = vec![("avg".to_string(), "Avg".to_string())];
    columns.extend(
        CATEGORIES
            .iter()
            .map(|(k, h, ..)| (k.to_string(), h.to_string())),
    );
    let languages = [("English", false), ("Chinese", true)];
    let mut out = Vec::new();
    for (config, rs) in rows {
        let tasks = strata(rs.iter().copied(), |r| Some(r.task.clone()));
        for (language, chinese) in languages {
            let cats: Vec<Category> = CATEGORIES
                .iter()
                .map(|(key, _, en, zh)| (*key, if chinese { *zh } else { *en }))
                .collect();
            // A language shows when a task of its own (not only the shared code tasks) ran.
            let own = cats
                .iter()
                .filter(|(k, _)| *k != "code")
                .any(|(_, m)| m.iter().any(|t| tasks.contains_key(*t)));
            if !own {
                continue;
            }
            let id = |col: &str| {
                format!(
                    "longbench_categories|{}|{language}|{col}",
                    config.identity()
                )
            };
            let mut values: Vec<Option<Estimate>> =
                vec![ctx.estimate(&category_strata(&tasks, &cats), &id("avg"))];
            values.extend(
                cats.iter()
                    .map(|c| ctx.estimate(&category_strata(&tasks, &[*c]), &id(c.0))),
            );
            out.push((config.clone(), Some(language.to_string()), values));
        }
    }
    if out.is_empty() {
        return None;
    }
    Some(
        Breakdown {
            name: "longbench_categories",
            title: "LongBench category averages".into(),
            note: "LongBench's leaderboard categories: each category is the mean of its tasks that ran, Avg the \
                   mean of the categories; the code tasks (lcc, repobench-p) count in both languages."
                .into(),
            group: Some(("language", "language")),
            columns,
            rows: out,
        }
        .table(),
    )
}

/// LongBench-E by length interval, overall (`all`) and per category; None without LongBench-E
/// records that carry a length.
pub fn lengths_table(ctx: &Context) -> Option<Table> {
    let rows = ctx.records(DATASET, |r| r.task.ends_with("_e") && bucket(r).is_some());
    if rows.is_empty() {
        return None;
    }
    let columns: Vec<(String, String)> = BUCKETS
        .iter()
        .map(|b| (b.to_string(), b.to_string()))
        .collect();
    let all: Vec<Category> = CATEGORIES.iter().map(|(k, _, en, _)| (*k, *en)).collect();
    let mut out = Vec::new();
    for (config, rs) in rows {
        let by_bucket: BTreeMap<&str, BTreeMap<String, Vec<f64>>> = BUCKETS
            .iter()
            .map(|b| {
                let at = rs
                    .iter()
                    .copied()
                    .filter(|r| bucket(r).as_deref() == Some(*b));
                (*b, strata(at, |r| Some(r.task.clone())))
            })
            .collect();
        let mut groups: Vec<(&str, Vec<Category>)> = vec![("all", all.clone())];
        for c in &all {
            let ran = by_bucket
                .values()
                .any(|t| t.keys().any(|k| category(k) == Some(c.0)));
            if ran {
                groups.push((c.0, vec![*c]));
            }
        }
        for (group, cats) in groups {
            let values = BUCKETS
                .iter()
                .map(|b| {
                    ctx.estimate(
                        &category_strata(&by_bucket[b], &cats),
                        &format!("longbench_e_lengths|{}|{group}|{b}", config.identity()),
                    )
                })
                .collect();
            let label = CATEGORIES
                .iter()
                .find(|c| c.0 == group)
                .map_or(group, |c| c.1);
            out.push((config.clone(), Some(label.to_string()), values));
        }
    }
    Some(
        Breakdown {
            name: "longbench_e_lengths",
            title: "LongBench-E by length interval".into(),
            note: "LongBench-E tasks by the sample's word count (0-4k, 4-8k, 8k+, as eval.py --e): per category \
                   the mean of its tasks, `all` the mean of the categories."
                .into(),
            group: Some(("group", "categories")),
            columns,
            rows: out,
        }
        .table(),
    )
}

#[cfg(test)]
mod tests {
    use super::super::testing::{close, mean, record, tables, text};
    use super::*;

    #[test]
    fn categories_average_their_tasks_and_avg_averages_categories() {
        let none = serde_json::Value::Null;
        let mut rs = Vec::new();
        // Single-Doc: qasper 0.5 (1, 0), narrativeqa 1.0 -> 0.75
        // Multi-Doc: hotpotqa 0.2
        // Code: lcc 0.4
        // Chinese: multifieldqa_zh 0.6; with code 0.4 -> avg 0.5
        for (task, id, s) in [
            ("qasper", "a", 1.0),
            ("qasper", "b", 0.0),
            ("narrativeqa", "a", 1.0),
            ("hotpotqa", "a", 0.2),
            ("lcc", "a", 0.4),
            ("multifieldqa_zh", "a", 0.6),
        ] {
            rs.push(record(DATASET, task, id, "full", s, none.clone()));
        }
        // not a category task, nor a LongBench-E one: ignored here
        rs.push(record(DATASET, "qasper_e", "e", "full", 0.0, none.clone()));
        let t = tables(&rs);
        let t = t.iter().find(|t| t.name == "longbench_categories").unwrap();
        assert_eq!(t.rows.len(), 2);
        assert_eq!(text(t, 0, "language"), "English");
        assert!(close(mean(t, 0, "single_doc_qa"), 0.75));
        assert!(close(mean(t, 0, "multi_doc_qa"), 0.2));
        assert!(close(mean(t, 0, "code"), 0.4));
        assert_eq!(mean(t, 0, "summarization"), None);
        assert!(close(mean(t, 0, "avg"), (0.75 + 0.2 + 0.4) / 3.0));
        assert_eq!(text(t, 1, "language"), "Chinese");
        assert!(close(mean(t, 1, "single_doc_qa"), 0.6));
        assert!(close(mean(t, 1, "avg"), 0.5));
    }

    #[test]
    fn longbench_e_by_length_bucket() {
        let b = |bucket: &str| serde_json::json!({ "length_bucket": bucket, "length": 10 });
        let mut rs = Vec::new();
        // 0-4k: qasper_e 1.0, hotpotqa_e 0.0 -> categories 1.0 and 0.0 -> all 0.5
        // 4-8k: qasper_e 0.5 (1, 0)
        // 8k+: from `length` alone: hotpotqa_e 0.25
        for (task, id, s, meta) in [
            ("qasper_e", "a", 1.0, b("0-4k")),
            ("hotpotqa_e", "a", 0.0, b("0-4k")),
            ("qasper_e", "b", 1.0, b("4-8k")),
            ("qasper_e", "c", 0.0, b("4-8k")),
            (
                "hotpotqa_e",
                "b",
                0.25,
                serde_json::json!({ "length": 9000 }),
            ),
        ] {
            rs.push(record(DATASET, task, id, "full", s, meta));
        }
        let t = tables(&rs);
        let t = t.iter().find(|t| t.name == "longbench_e_lengths").unwrap();
        // all, single_doc_qa, multi_doc_qa
        assert_eq!(t.rows.len(), 3);
        assert_eq!(text(t, 0, "group"), "all");
        assert!(close(mean(t, 0, "0-4k"), 0.5));
        assert!(close(mean(t, 0, "4-8k"), 0.5));
        assert!(close(mean(t, 0, "8k+"), 0.25));
        assert_eq!(text(t, 1, "group"), "Single-Doc QA");
        assert!(close(mean(t, 1, "0-4k"), 1.0));
        assert_eq!(mean(t, 1, "8k+"), None);
        assert_eq!(text(t, 2, "group"), "Multi-Doc QA");
        assert!(close(mean(t, 2, "0-4k"), 0.0));
        // the category table does not count LongBench-E tasks
        assert!(!tables(&rs).iter().any(|t| t.name == "longbench_categories"));
        assert_eq!(bucket_of(3999), "0-4k");
        assert_eq!(bucket_of(4000), "4-8k");
        assert_eq!(bucket_of(8000), "8k+");
    }
}

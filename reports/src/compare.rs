//! Our numbers beside published ones (`kvbench report --compare published.csv`).
//!
//! `published.csv` has a header line and the columns
//! `source,model,dataset,task,method,budget,score`:
//! - `source`: where the number is printed (`SnapKV arXiv:2404.14469 Table 1`);
//! - `model`: the Hugging Face repo the paper used (`mistralai/Mistral-7B-Instruct-v0.2`);
//! - `dataset`, `task`: as kvbench names them (`longbench`, `qasper`); task `average` for the
//!   benchmark average;
//! - `method`, `budget`: kvbench's method name and budget label (`snapkv`, `k=1024`, `r=0.50`,
//!   `-` for the full cache);
//! - `score`: on the paper's 0-100 scale.
//!
//! A published row is matched when our run used the same model (compared without `hf:`, a
//! revision, an organisation prefix or letter case), dataset, task, method and budget; rows of
//! other models are listed with the reason they were not matched.

use std::path::Path;

use crate::aggregate::{Aggregate, Metric};
use crate::bootstrap::Estimate;
use crate::tables::{Column, Kind, Table, Value};
use crate::ReportError;

#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    pub source: String,
    pub model: String,
    pub dataset: String,
    pub task: String,
    pub method: String,
    pub budget: String,
    pub score: f64,
}

const COLUMNS: [&str; 7] = [
    "source", "model", "dataset", "task", "method", "budget", "score",
];

pub fn read_published(path: &Path) -> Result<Vec<Published>, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io {
        path: path.into(),
        source,
    })?;
    parse_published(&text, path)
}

/// `published.csv`'s rows from its text, through the `csv` crate (RFC 4180 quoting): lines
/// starting with `#` and blank lines are skipped, fields are trimmed, columns found by name.
/// Errors name `path` and the line.
fn parse_published(text: &str, path: &Path) -> Result<Vec<Published>, ReportError> {
    let bad = |line: u64, message: String| ReportError::Compare {
        path: path.into(),
        line: line as usize,
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut records = reader.records().filter(|r| match r {
        // a line of blanks is as blank as an empty one
        Ok(r) => !r.iter().all(str::is_empty),
        Err(_) => true,
    });
    let line_of = |e: &csv::Error| e.position().map_or(1, |p| p.line());
    let header = match records.next() {
        None => return Err(bad(1, "empty file".into())),
        Some(Err(e)) => return Err(bad(line_of(&e), e.to_string())),
        Some(Ok(h)) => h,
    };
    let index: Vec<usize> = COLUMNS
        .iter()
        .map(|c| {
            header.iter().position(|h| h == *c).ok_or_else(|| {
                bad(
                    1,
                    format!("missing column `{c}`; expected {}", COLUMNS.join(",")),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for record in records {
        let f = record.map_err(|e| bad(line_of(&e), e.to_string()))?;
        let line = f.position().map_or(1, |p| p.line());
        let get = |k: usize| f.get(index[k]).unwrap_or_default().to_string();
        let score = get(6)
            .parse::<f64>()
            .map_err(|_| bad(line, format!("score `{}` is not a number", get(6))))?;
        out.push(Published {
            source: get(0),
            model: get(1),
            dataset: get(2),
            task: get(3),
            method: get(4),
            budget: get(5),
            score,
        });
    }
    Ok(out)
}

/// A model name reduced for matching: no `hf:`, no `@revision` or `:file`, no organisation,
/// lower case.
pub fn model_key(m: &str) -> String {
    let m = m.strip_prefix("hf:").unwrap_or(m);
    let m = m.split(['@', ':']).next().unwrap_or(m);
    m.rsplit('/').next().unwrap_or(m).to_lowercase()
}

/// The comparison table: every published row, ours beside it where it matched.
pub fn compare_table(published: &[Published], agg: &Aggregate) -> Table {
    let ours = |p: &Published| -> (Option<Estimate>, String) {
        let same_model = |m: &str| model_key(m) == model_key(&p.model);
        let stats = if p.task == "average" {
            agg.benchmarks
                .iter()
                .find(|b| {
                    b.dataset == p.dataset
                        && same_model(&b.config.model)
                        && b.config.method == p.method
                        && b.config.budget.label == p.budget
                        && !b.config.query_aware
                })
                .and_then(|b| b.stats.get(&Metric::Score).copied())
        } else {
            agg.cells
                .iter()
                .find(|c| {
                    c.dataset == p.dataset
                        && c.task == p.task
                        && same_model(&c.config.model)
                        && c.config.method == p.method
                        && c.config.budget.label == p.budget
                        && !c.config.query_aware
                })
                .and_then(|c| c.stats.get(&Metric::Score).copied())
        };
        let scaled = stats.map(|e| Estimate {
            mean: e.mean * 100.0,
            lo: e.lo * 100.0,
            hi: e.hi * 100.0,
            n: e.n,
        });
        let note = match (&scaled, agg.configs.iter().any(|c| same_model(&c.model))) {
            (Some(_), _) => "matched".to_string(),
            (None, false) => format!(
                "not run: our runs used {}",
                agg.configs
                    .first()
                    .map_or("no model".into(), |c| c.model.clone())
            ),
            (None, true) => "not run: no matching dataset, task, method and budget".to_string(),
        };
        (scaled, note)
    };
    let columns = vec![
        Column {
            key: "source".into(),
            header: "source".into(),
            kind: Kind::Text,
            elide_if_constant: false,
        },
        Column {
            key: "model".into(),
            header: "model".into(),
            kind: Kind::Text,
            elide_if_constant: true,
        },
        Column {
            key: "dataset".into(),
            header: "dataset".into(),
            kind: Kind::Text,
            elide_if_constant: false,
        },
        Column {
            key: "task".into(),
            header: "task".into(),
            kind: Kind::Text,
            elide_if_constant: false,
        },
        Column {
            key: "method".into(),
            header: "method".into(),
            kind: Kind::Text,
            elide_if_constant: false,
        },
        Column {
            key: "budget".into(),
            header: "budget".into(),
            kind: Kind::Text,
            elide_if_constant: false,
        },
        Column {
            key: "published".into(),
            header: "published (0-100)".into(),
            kind: Kind::Num { decimals: 2 },
            elide_if_constant: false,
        },
        Column {
            key: "kvbench".into(),
            header: "kvbench (0-100)".into(),
            kind: Kind::Est { decimals: 2 },
            elide_if_constant: false,
        },
        Column {
            key: "difference".into(),
            header: "kvbench - published".into(),
            kind: Kind::Num { decimals: 2 },
            elide_if_constant: false,
        },
        Column {
            key: "status".into(),
            header: "status".into(),
            kind: Kind::Text,
            elide_if_constant: false,
        },
    ];
    let rows = published
        .iter()
        .map(|p| {
            let (est, note) = ours(p);
            vec![
                Value::Text(p.source.clone()),
                Value::Text(p.model.clone()),
                Value::Text(p.dataset.clone()),
                Value::Text(p.task.clone()),
                Value::Text(p.method.clone()),
                Value::Text(p.budget.clone()),
                Value::Num(Some(p.score)),
                Value::Est(est),
                Value::Num(est.map(|e| e.mean - p.score)),
                Value::Text(note),
            ]
        })
        .collect();
    Table {
        name: "compare".into(),
        title: "kvbench beside published numbers".into(),
        note: "Published scores as printed (0-100); ours scaled to 0-100 with 95% bootstrap intervals. Numbers are comparable \
               only where the model, data, prompt and decoding match the paper's."
            .into(),
        columns,
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_keys_ignore_prefixes_and_case() {
        assert_eq!(
            model_key("hf:mistralai/Mistral-7B-Instruct-v0.2@main"),
            "mistral-7b-instruct-v0.2"
        );
        assert_eq!(
            model_key("mistralai/Mistral-7B-Instruct-v0.2"),
            "mistral-7b-instruct-v0.2"
        );
        assert_eq!(
            model_key("smollm2-135m-instruct-q4_1"),
            "smollm2-135m-instruct-q4_1"
        );
    }

    #[test]
    fn csv_fields_with_quotes() {
        let text = "# comment\nsource,model,dataset,task,method,budget,score\n\n   \n\
                    a,\"b, c\",\"d \"\"e\"\"\", t ,m,k=1,1\nx,y,z,t,m,-,oops\n";
        let path = Path::new("published.csv");
        let e = parse_published(text, path).unwrap_err().to_string();
        assert!(e.contains("line 6") && e.contains("score `oops`"), "{e}");
        let rows = parse_published(&text.replace("oops", "2.5"), path).unwrap();
        assert_eq!(
            (
                rows[0].source.as_str(),
                rows[0].model.as_str(),
                rows[0].dataset.as_str()
            ),
            ("a", "b, c", "d \"e\"")
        );
        assert_eq!((rows[0].task.as_str(), rows[0].score), ("t", 1.0));
        assert_eq!(rows[1].score, 2.5);
    }
}

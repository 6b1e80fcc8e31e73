//! `published.csv`: published scores, one row per paper cell.
//!
//! A header line names the columns; these seven are required:
//! - `source`: where the number is printed (`SnapKV arXiv:2404.14469 Table 1`, a repository file
//!   or pull request);
//! - `model`: the Hugging Face repo the source used (`mistralai/Mistral-7B-Instruct-v0.2`);
//! - `dataset`, `task`: as kvbench names them (`longbench`, `qasper`); task `average` for a
//!   benchmark average;
//! - `method`: kvbench's method name (`snapkv`, `full`), with the parameters that identify the
//!   published setting where one method has several (`kivi(bits=4)`,
//!   `adakv(scorer.method=expected_attention)`: dotted keys reach into nested parameters);
//! - `budget`: kvbench's budget label (`k=1024`, `r=0.50`, `-` for none);
//! - `score`: on the source's 0-100 scale.
//!
//! and these are optional:
//! - `query_aware`: `true` when the source compressed with the question in view (SnapKV's and
//!   KVCache-Factory's LongBench scripts), `false` when not (kvpress); empty: either, the
//!   query-agnostic run first;
//! - `tasks`: for an `average`, the tasks it averages, space-separated (KIVI's 15 tasks); empty:
//!   every task of the dataset the run has (the report's benchmark average);
//! - `provenance`: `checked` (read in the original: the paper, the repository file, the pull
//!   request) or `transcription` (copied from a third party, not yet checked against the original).
//!
//! Lines starting with `#` and blank lines are skipped; fields are trimmed; RFC 4180 quoting.

use std::path::Path;

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
    pub query_aware: Option<bool>,
    /// The tasks an `average` covers; empty for every task the run has.
    pub tasks: Vec<String>,
    pub provenance: String,
}

pub const REQUIRED: [&str; 7] = [
    "source", "model", "dataset", "task", "method", "budget", "score",
];
pub const OPTIONAL: [&str; 3] = ["query_aware", "tasks", "provenance"];

pub fn read_published(path: &Path) -> Result<Vec<Published>, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io {
        op: "reading",
        path: path.into(),
        source,
    })?;
    parse_published(&text, path)
}

/// `published.csv`'s rows from its text, through the `csv` crate: columns found by name. Errors
/// name `path` and the line.
pub fn parse_published(text: &str, path: &Path) -> Result<Vec<Published>, ReportError> {
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
    let header_line = header.position().map_or(1, |p| p.line());
    let index: Vec<usize> = REQUIRED
        .iter()
        .map(|c| {
            header.iter().position(|h| h == *c).ok_or_else(|| {
                bad(
                    header_line,
                    format!(
                        "missing column `{c}`; expected {} (optional: {})",
                        REQUIRED.join(","),
                        OPTIONAL.join(",")
                    ),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let optional: Vec<Option<usize>> = OPTIONAL
        .iter()
        .map(|c| header.iter().position(|h| h == *c))
        .collect();
    let mut out = Vec::new();
    for record in records {
        let f = record.map_err(|e| bad(line_of(&e), e.to_string()))?;
        let line = f.position().map_or(1, |p| p.line());
        let get = |k: usize| f.get(index[k]).unwrap_or_default().to_string();
        let opt = |k: usize| {
            optional[k]
                .and_then(|i| f.get(i))
                .unwrap_or_default()
                .to_string()
        };
        let score = get(6)
            .parse::<f64>()
            .map_err(|_| bad(line, format!("score `{}` is not a number", get(6))))?;
        let query_aware = match opt(0).as_str() {
            "" => None,
            "true" => Some(true),
            "false" => Some(false),
            other => {
                return Err(bad(
                    line,
                    format!("query_aware `{other}` is not true, false or empty"),
                ))
            }
        };
        let provenance = opt(2);
        if !matches!(provenance.as_str(), "" | "checked" | "transcription") {
            return Err(bad(
                line,
                format!("provenance `{provenance}` is not checked, transcription or empty"),
            ));
        }
        out.push(Published {
            source: get(0),
            model: get(1),
            dataset: get(2),
            task: get(3),
            method: get(4),
            budget: get(5),
            score,
            query_aware,
            tasks: opt(1).split_whitespace().map(str::to_string).collect(),
            provenance,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!((rows[1].query_aware, rows[1].tasks.len()), (None, 0));
    }

    #[test]
    fn a_quoted_line_break_stays_in_its_field_and_later_lines_keep_their_numbers() {
        let text = "source,model,dataset,task,method,budget,score\n\
                    \"Table 1,\nrow 2\",m,d,t,snapkv,-,1\n\
                    s,m,d,t,snapkv,-,bad\n";
        let path = Path::new("published.csv");
        let e = parse_published(text, path).unwrap_err().to_string();
        assert!(
            e.contains("published.csv line 4") && e.contains("score `bad`"),
            "{e}"
        );
        let rows = parse_published(&text.replace("bad", "3"), path).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].source, "Table 1,\nrow 2");
        assert_eq!(rows[0].method, "snapkv");
    }

    #[test]
    fn optional_columns() {
        let path = Path::new("p.csv");
        let text = "source,model,dataset,task,method,budget,score,query_aware,tasks,provenance\n\
                    s,m,longbench,average,kivi(bits=2),-,42.4,,qasper  lcc,checked\n\
                    s,m,longbench,qasper,snapkv,k=1024,29.5,true,,transcription\n";
        let rows = parse_published(text, path).unwrap();
        assert_eq!(rows[0].tasks, ["qasper", "lcc"]);
        assert_eq!(rows[0].provenance, "checked");
        assert_eq!(rows[1].query_aware, Some(true));
        let e = parse_published(&text.replace("true", "yes"), path)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 3") && e.contains("query_aware `yes`"),
            "{e}"
        );
        let e = parse_published("source,model\n", path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing column `dataset`"), "{e}");
    }
}

//! Files of JSON objects, whatever their container: JSONL (one object per line), a JSON list
//! (`[{...}, ...]`, LongBench v2's `data.json`) or parquet (the hub's `refs/convert/parquet`
//! exports). Each record comes with its position and unit for error messages, and a record that
//! is not an object is an error of that record, not of the file.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::{DataFile, Sample};

/// One bad line: `data.jsonl line 3: field `answers` is missing; expected a string or a list of
/// strings`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{} {unit} {line}: {problem}", path.display())]
pub struct LineError {
    pub path: PathBuf,
    /// 1-based line of a JSONL file, or index of a record in a JSON list or a parquet file.
    pub line: usize,
    pub unit: Unit,
    pub problem: LineProblem,
}

/// What [`LineError::line`] counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unit {
    /// A line of a JSONL file.
    #[default]
    Line,
    /// An element of a JSON list (1-based).
    Record,
    /// A row of a parquet file (1-based).
    Row,
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unit::Line => "line",
            Unit::Record => "record",
            Unit::Row => "row",
        })
    }
}

/// What is wrong with a line.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum LineProblem {
    #[error("not valid UTF-8; expected UTF-8 text")]
    Utf8,
    #[error("not valid JSON ({0}); expected one JSON object per line")]
    Json(String),
    #[error("expected a JSON object, found {0}")]
    NotObject(&'static str),
    #[error("field `{field}` is missing; expected {expected}")]
    Missing {
        field: String,
        expected: &'static str,
    },
    #[error("field `{field}` is {found}; expected {expected}")]
    Invalid {
        field: String,
        found: String,
        expected: &'static str,
    },
    #[error("field `{field}` is `{found}`; expected one of {expected}")]
    UnknownMetric {
        field: String,
        found: String,
        expected: String,
    },
    #[error("id `{id}` repeats line {first}; expected unique ids")]
    DuplicateId { id: String, first: usize },
}

/// The good samples of a dataset, the errors of its bad lines and the files it was read from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Loaded {
    pub samples: Vec<Sample>,
    pub errors: Vec<LineError>,
    /// Every data file read, with its sha256 (empty for generated data without input files).
    pub files: Vec<DataFile>,
}

/// serde_json's message with its location given as a column only: the line is ours.
pub(crate) fn json_problem(e: serde_json::Error) -> LineProblem {
    let message = e.to_string();
    let location = format!(" at line {} column {}", e.line(), e.column());
    match message.strip_suffix(&location) {
        Some(what) => LineProblem::Json(format!("{what} at column {}", e.column())),
        None => LineProblem::Json(message),
    }
}

/// `a string`, `a number`, ...: how a JSON value is named in error messages.
pub(crate) fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(s) if s.is_empty() => "an empty string",
        Value::String(_) => "a string",
        Value::Array(a) if a.is_empty() => "an empty list",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn invalid(field: &str, value: &Value, expected: &'static str) -> LineProblem {
    LineProblem::Invalid {
        field: field.into(),
        found: describe(value).into(),
        expected,
    }
}

/// One record: its 1-based position and its object, or what is wrong with it.
pub struct Record {
    pub line: usize,
    pub object: Result<Map<String, Value>, LineProblem>,
}

/// A file that could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not valid JSON ({message}); expected a JSON list of objects", path.display())]
    Json { path: PathBuf, message: String },
    #[error("{}: not a readable parquet file ({message})", path.display())]
    Parquet { path: PathBuf, message: String },
    #[error("{}: parquet files need kvbench built with the `parquet` feature", path.display())]
    NoParquet { path: PathBuf },
}

/// The records of `path`, by its extension: `.parquet`, `.json` (a list, or one object per line
/// if the file is JSONL after all) or anything else as JSONL. `bytes`, if given, is the file's
/// content already in memory (not for parquet).
pub fn read_records(
    path: &Path,
    bytes: Option<Vec<u8>>,
) -> Result<(Unit, Vec<Record>), RecordsError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if ext.as_deref() == Some("parquet") {
        return Ok((Unit::Row, parquet_rows(path)?));
    }
    let bytes = match bytes {
        Some(b) => b,
        None => std::fs::read(path).map_err(|source| RecordsError::Read {
            path: path.to_path_buf(),
            source,
        })?,
    };
    let bytes = bytes
        .strip_prefix("\u{feff}".as_bytes())
        .map(<[u8]>::to_vec)
        .unwrap_or(bytes);
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if ext.as_deref() == Some("json") && first == Some(&b'[') {
        let list: Vec<Value> = serde_json::from_slice(&bytes).map_err(|e| RecordsError::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let records = list
            .into_iter()
            .enumerate()
            .map(|(i, v)| Record {
                line: i + 1,
                object: into_object(v),
            })
            .collect();
        return Ok((Unit::Record, records));
    }
    Ok((Unit::Line, jsonl_records(&bytes)))
}

/// One record per non-blank line.
pub fn jsonl_records(bytes: &[u8]) -> Vec<Record> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter_map(|(i, raw)| {
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw.iter().all(u8::is_ascii_whitespace) {
                return None;
            }
            let object = std::str::from_utf8(raw)
                .map_err(|_| LineProblem::Utf8)
                .and_then(|t| serde_json::from_str::<Value>(t).map_err(json_problem))
                .and_then(into_object);
            Some(Record {
                line: i + 1,
                object,
            })
        })
        .collect()
}

fn into_object(v: Value) -> Result<Map<String, Value>, LineProblem> {
    match v {
        Value::Object(o) => Ok(o),
        v => Err(LineProblem::NotObject(describe(&v))),
    }
}

/// The error of record `line` of `path`.
pub fn line_error(path: &Path, unit: Unit, line: usize, problem: LineProblem) -> LineError {
    LineError {
        path: path.to_path_buf(),
        line,
        unit,
        problem,
    }
}

#[cfg(feature = "parquet")]
fn parquet_rows(path: &Path) -> Result<Vec<Record>, RecordsError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let err = |message: String| RecordsError::Parquet {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|source| RecordsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = SerializedFileReader::new(file).map_err(|e| err(e.to_string()))?;
    let rows = reader.get_row_iter(None).map_err(|e| err(e.to_string()))?;
    let mut out = Vec::new();
    for (i, row) in rows.enumerate() {
        let row = row.map_err(|e| err(format!("row {}: {e}", i + 1)))?;
        out.push(Record {
            line: i + 1,
            object: into_object(row.to_json_value()),
        });
    }
    Ok(out)
}

#[cfg(not(feature = "parquet"))]
fn parquet_rows(path: &Path) -> Result<Vec<Record>, RecordsError> {
    Err(RecordsError::NoParquet {
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::temp_file;

    #[test]
    fn jsonl_and_json_lists() {
        let p = temp_file("r.jsonl", "{\"a\": 1}\n\n[1]\n{bad\n");
        let (unit, r) = read_records(&p, None).unwrap();
        assert_eq!(unit, Unit::Line);
        assert_eq!(r.iter().map(|r| r.line).collect::<Vec<_>>(), [1, 3, 4]);
        assert!(r[0].object.is_ok());
        assert_eq!(
            r[1].object.as_ref().unwrap_err(),
            &LineProblem::NotObject("a list")
        );
        assert!(matches!(r[2].object, Err(LineProblem::Json(_))));
        let p = temp_file("r.json", " [{\"a\": 1}, \"x\"]");
        let (unit, r) = read_records(&p, None).unwrap();
        assert_eq!((unit, r.len()), (Unit::Record, 2));
        assert_eq!(
            r[1].object.as_ref().unwrap_err(),
            &LineProblem::NotObject("a string")
        );
        let e = line_error(&p, unit, 2, LineProblem::NotObject("a string")).to_string();
        assert_eq!(
            e,
            format!(
                "{} record 2: expected a JSON object, found a string",
                p.display()
            )
        );
        let p = temp_file("broken.json", "[{\"a\": 1}");
        assert!(read_records(&p, None)
            .err()
            .unwrap()
            .to_string()
            .contains("expected a JSON list of objects"));
    }
}

/// Writes a parquet file shaped like the hub's LongBench export: string columns `input`,
/// `context`, `_id` and a list-of-strings column `answers`.
#[cfg(all(test, feature = "parquet"))]
pub(crate) fn write_test_parquet(path: &Path, rows: &[(&str, &str, &[&str], &str)]) {
    use std::sync::Arc;

    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    let schema = "message schema {
        REQUIRED BYTE_ARRAY input (UTF8);
        REQUIRED BYTE_ARRAY context (UTF8);
        OPTIONAL group answers (LIST) { REPEATED group list { OPTIONAL BYTE_ARRAY element (UTF8); } }
        REQUIRED BYTE_ARRAY _id (UTF8);
    }";
    let schema = Arc::new(parse_message_type(schema).expect("schema"));
    let props = Arc::new(WriterProperties::builder().build());
    let file = std::fs::File::create(path).expect("create parquet");
    let mut writer = SerializedFileWriter::new(file, schema, props).expect("writer");
    let mut group = writer.next_row_group().expect("row group");
    let bytes = |s: &str| ByteArray::from(s.as_bytes().to_vec());
    let mut column = 0;
    while let Some(mut col) = group.next_column().expect("column") {
        let w = col.typed::<ByteArrayType>();
        match column {
            2 => {
                let (mut values, mut def, mut rep) = (Vec::new(), Vec::new(), Vec::new());
                for (_, _, answers, _) in rows {
                    for (i, a) in answers.iter().enumerate() {
                        values.push(bytes(a));
                        def.push(3);
                        rep.push(if i == 0 { 0 } else { 1 });
                    }
                }
                w.write_batch(&values, Some(&def), Some(&rep))
                    .expect("write list");
            }
            c => {
                let values: Vec<ByteArray> = rows
                    .iter()
                    .map(|r| {
                        bytes(match c {
                            0 => r.0,
                            1 => r.1,
                            _ => r.3,
                        })
                    })
                    .collect();
                w.write_batch(&values, None, None).expect("write strings");
            }
        }
        col.close().expect("close column");
        column += 1;
    }
    group.close().expect("close row group");
    writer.close().expect("close file");
}

#[cfg(all(test, feature = "parquet"))]
mod parquet_tests {
    use super::*;
    use crate::testutil::temp_file;

    #[test]
    fn parquet_rows_become_objects() {
        let path = temp_file("rows.parquet", "");
        write_test_parquet(
            &path,
            &[("q1", "c1", &["a"], "x1"), ("q2", "c2", &["b", "c"], "x2")],
        );
        let (unit, rows) = read_records(&path, None).unwrap();
        assert_eq!(unit, Unit::Row);
        let objects: Vec<Map<String, Value>> =
            rows.into_iter().map(|r| r.object.unwrap()).collect();
        assert_eq!(objects[1]["input"], "q2");
        assert_eq!(objects[1]["answers"], serde_json::json!(["b", "c"]));
        assert_eq!(objects[0]["_id"], "x1");
        let bad = temp_file("bad.parquet", "not parquet");
        let e = read_records(&bad, None).err().unwrap().to_string();
        assert!(
            e.starts_with(&format!("{}: not a readable parquet file", bad.display())),
            "{e}"
        );
    }
}

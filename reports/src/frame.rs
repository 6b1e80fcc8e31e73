//! Records as a polars data frame: the typed, flat form every aggregation starts from and the
//! schema of `results.parquet`.
//!
//! One column per record field, nested fields flattened: the budget becomes
//! `budget_compression_ratio` / `budget_tokens` (null where the budget is of the other kind or
//! absent), `answers` a list of strings, and the free-form objects (`method_params`, `meta`,
//! `kv_storage`) their JSON text. Optional fields (`peak_device_bytes`, `error`) are nullable.
//!
//! [`FrameBuilder`] takes records one at a time, so a million-line results file becomes columns
//! without ever holding a million [`Record`]s.

use std::path::Path;

use polars::prelude::*;

use crate::Record;

/// The columns of a results frame, in order (the `results.parquet` schema).
pub const COLUMNS: [&str; 46] = [
    "experiment",
    "model",
    "dataset",
    "task",
    "sample_id",
    "turn",
    "method",
    "method_params",
    "budget_compression_ratio",
    "budget_tokens",
    "budget_label",
    "query_aware",
    "target_ratio",
    "achieved_ratio",
    "prediction",
    "answers",
    "metric",
    "score",
    "agreement_with_full",
    "kl_first_token",
    "kv_bytes",
    "kv_bytes_full",
    "peak_device_bytes",
    "prefill_ms",
    "compress_ms",
    "question_ms",
    "ttft_ms",
    "decode_ms_per_token",
    "context_tokens",
    "question_tokens",
    "truncated_tokens",
    "new_tokens",
    "device",
    "seed",
    "kvbench_version",
    "key",
    "meta",
    "kv_storage",
    "error",
    // The reuse study's fields (null without `reuse:`).
    "ttft_mode",
    "kv_bytes_read",
    "bandwidth_gbps",
    "cache_ms",
    "cake_split_tokens",
    // Derived for aggregation: 1 - kv_bytes / kv_bytes_full.
    "byte_ratio",
    // Derived: the source file and line each record came from (`show`, error messages).
    "source",
];

/// Column-wise accumulation of records.
#[derive(Default)]
pub struct FrameBuilder {
    text: [Vec<String>; 14],
    opt_text: [Vec<Option<String>>; 4],
    answers: Vec<Vec<String>>,
    floats: [Vec<f64>; 11],
    opt_floats: [Vec<Option<f64>>; 3],
    uints: [Vec<u64>; 8],
    opt_uints: [Vec<Option<u64>>; 3],
    opt_ints: [Vec<Option<i64>>; 1],
    bools: Vec<bool>,
}

fn json_text(v: &serde_json::Value) -> Option<String> {
    (!v.is_null()).then(|| v.to_string())
}

impl FrameBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.bools.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bools.is_empty()
    }

    /// Add one record; `source` is where it was read (`results.jsonl:12`), empty if nowhere.
    pub fn push(&mut self, r: &Record, source: &str) {
        let b = r.budget.as_ref();
        let t = [
            &r.experiment,
            &r.model,
            &r.dataset,
            &r.task,
            &r.sample_id,
            &r.method,
            &r.budget_label,
            &r.prediction,
            &r.metric,
            &r.device,
            &r.kvbench_version,
            &r.key,
        ];
        for (col, v) in self.text.iter_mut().zip(t) {
            col.push(v.clone());
        }
        self.text[12].push(r.method_params.to_string());
        self.text[13].push(source.to_string());
        self.opt_text[0].push(json_text(&r.meta));
        self.opt_text[1].push(json_text(&r.kv_storage));
        self.opt_text[2].push(r.error.clone());
        self.opt_text[3].push(r.ttft_mode.clone());
        self.answers.push(r.answers.clone());
        let byte_ratio = 1.0 - r.kv_bytes as f64 / r.kv_bytes_full.max(1) as f64;
        let f = [
            r.target_ratio,
            r.achieved_ratio,
            r.score,
            r.agreement_with_full,
            r.kl_first_token,
            r.prefill_ms,
            r.compress_ms,
            r.question_ms,
            r.ttft_ms,
            r.decode_ms_per_token,
            byte_ratio,
        ];
        for (col, v) in self.floats.iter_mut().zip(f) {
            col.push(v);
        }
        self.opt_floats[0].push(
            b.and_then(|b| b.get("compression_ratio"))
                .and_then(|v| v.as_f64()),
        );
        self.opt_ints[0].push(b.and_then(|b| b.get("tokens")).and_then(|v| v.as_i64()));
        let u = [
            r.turn as u64,
            r.kv_bytes,
            r.kv_bytes_full,
            r.context_tokens as u64,
            r.question_tokens as u64,
            r.truncated_tokens as u64,
            r.new_tokens as u64,
            r.seed,
        ];
        for (col, v) in self.uints.iter_mut().zip(u) {
            col.push(v);
        }
        self.opt_uints[0].push(r.peak_device_bytes);
        self.opt_uints[1].push(r.kv_bytes_read);
        self.opt_uints[2].push(r.cake_split_tokens.map(|t| t as u64));
        self.opt_floats[1].push(r.bandwidth_gbps);
        self.opt_floats[2].push(r.cache_ms);
        self.bools.push(r.query_aware);
    }

    /// The frame, columns in [`COLUMNS`] order.
    pub fn finish(self) -> DataFrame {
        let FrameBuilder {
            text,
            opt_text,
            answers,
            floats,
            opt_floats,
            uints,
            opt_uints,
            opt_ints,
            bools,
        } = self;
        let [experiment, model, dataset, task, sample_id, method, budget_label, prediction, metric, device, version, key, params, source] =
            text;
        let [meta, kv_storage, error, ttft_mode] = opt_text;
        let [target_ratio, achieved_ratio, score, agreement, kl, prefill, compress, question, ttft, decode, byte_ratio] =
            floats;
        let [turn, kv_bytes, kv_bytes_full, context_tokens, question_tokens, truncated_tokens, new_tokens, seed] =
            uints;
        let [ratio, bandwidth, cache_ms] = opt_floats;
        let [tokens] = opt_ints;
        let [peak, kv_bytes_read, cake_split] = opt_uints;
        let mut answers_col =
            ListStringChunkedBuilder::new("answers".into(), answers.len(), answers.len());
        for a in &answers {
            answers_col.append_values_iter(a.iter().map(String::as_str));
        }
        let c = |name: &str, s: Series| -> Column { s.with_name(name.into()).into_column() };
        let s = |v: Vec<String>| Series::new("".into(), v);
        let os = |v: Vec<Option<String>>| Series::new("".into(), v);
        let f = |v: Vec<f64>| Series::new("".into(), v);
        let u = |v: Vec<u64>| Series::new("".into(), v);
        let columns = vec![
            c("experiment", s(experiment)),
            c("model", s(model)),
            c("dataset", s(dataset)),
            c("task", s(task)),
            c("sample_id", s(sample_id)),
            c("turn", u(turn)),
            c("method", s(method)),
            c("method_params", s(params)),
            c("budget_compression_ratio", Series::new("".into(), ratio)),
            c("budget_tokens", Series::new("".into(), tokens)),
            c("budget_label", s(budget_label)),
            c("query_aware", Series::new("".into(), bools)),
            c("target_ratio", f(target_ratio)),
            c("achieved_ratio", f(achieved_ratio)),
            c("prediction", s(prediction)),
            answers_col.finish().into_series().into_column(),
            c("metric", s(metric)),
            c("score", f(score)),
            c("agreement_with_full", f(agreement)),
            c("kl_first_token", f(kl)),
            c("kv_bytes", u(kv_bytes)),
            c("kv_bytes_full", u(kv_bytes_full)),
            c("peak_device_bytes", Series::new("".into(), peak)),
            c("prefill_ms", f(prefill)),
            c("compress_ms", f(compress)),
            c("question_ms", f(question)),
            c("ttft_ms", f(ttft)),
            c("decode_ms_per_token", f(decode)),
            c("context_tokens", u(context_tokens)),
            c("question_tokens", u(question_tokens)),
            c("truncated_tokens", u(truncated_tokens)),
            c("new_tokens", u(new_tokens)),
            c("device", s(device)),
            c("seed", u(seed)),
            c("kvbench_version", s(version)),
            c("key", s(key)),
            c("meta", os(meta)),
            c("kv_storage", os(kv_storage)),
            c("error", os(error)),
            c("ttft_mode", os(ttft_mode)),
            c("kv_bytes_read", Series::new("".into(), kv_bytes_read)),
            c("bandwidth_gbps", Series::new("".into(), bandwidth)),
            c("cache_ms", Series::new("".into(), cache_ms)),
            c("cake_split_tokens", Series::new("".into(), cake_split)),
            c("byte_ratio", f(byte_ratio)),
            c("source", s(source)),
        ];
        DataFrame::new_infer_height(columns).expect("columns of one length, distinct names")
    }
}

/// The frame of `records` (no source positions).
pub fn records_frame(records: &[Record]) -> DataFrame {
    let mut b = FrameBuilder::new();
    for r in records {
        b.push(r, "");
    }
    b.finish()
}

/// The string values of column `name` (empty strings for nulls).
pub fn strings(df: &DataFrame, name: &str) -> PolarsResult<Vec<String>> {
    Ok(df
        .column(name)?
        .str()?
        .iter()
        .map(|s| s.unwrap_or_default().to_string())
        .collect())
}

/// The `f64` values of column `name` (any numeric type), nulls as `None`.
pub fn floats(df: &DataFrame, name: &str) -> PolarsResult<Vec<Option<f64>>> {
    let col = df.column(name)?.cast(&DataType::Float64)?;
    Ok(col.f64()?.iter().collect())
}

/// Rows grouped by the values of `keys`, groups in order of first appearance, each group's row
/// indices in frame order (polars' stable group-by).
pub fn group_rows(df: &DataFrame, keys: &[&str]) -> PolarsResult<Vec<Vec<usize>>> {
    if df.height() == 0 {
        return Ok(Vec::new());
    }
    let gb = df.group_by_stable(keys.iter().copied())?;
    Ok(gb
        .get_groups()
        .iter()
        .map(|g| match g {
            GroupsIndicator::Idx((_, idx)) => idx.iter().map(|&i| i as usize).collect(),
            GroupsIndicator::Slice([first, len]) => {
                (first as usize..(first + len) as usize).collect()
            }
        })
        .collect())
}

/// Rows with no `error` and each `key` once (the first), as reports count them.
pub fn measured(df: &DataFrame) -> PolarsResult<DataFrame> {
    let ok = df.column("error")?.is_null();
    let df = df.filter(&ok)?;
    df.unique_stable(Some(&["key".to_string()]), UniqueKeepStrategy::First, None)
}

/// `df` as CSV (header line, RFC 4180 quoting where needed, `\n` line ends) through polars.
pub fn to_csv(df: &mut DataFrame) -> PolarsResult<String> {
    let mut buf = Vec::new();
    CsvWriter::new(&mut buf)
        .include_header(true)
        .with_line_terminator("\n".into())
        .n_threads(1)
        .finish(df)?;
    Ok(String::from_utf8(buf).expect("polars writes UTF-8 CSV"))
}

/// `df` as Parquet file bytes (snappy) through polars.
pub fn to_parquet(df: &mut DataFrame) -> PolarsResult<Vec<u8>> {
    let mut buf = Vec::new();
    ParquetWriter::new(&mut buf)
        .with_compression(ParquetCompression::Snappy)
        .finish(df)?;
    Ok(buf)
}

/// The frame as written to `results.parquet` (without the derived columns).
pub fn parquet_frame(df: &DataFrame) -> PolarsResult<DataFrame> {
    df.drop("byte_ratio")?.drop("source")
}

/// Read a Parquet file (tests, and users of the library).
pub fn read_parquet(path: &Path) -> PolarsResult<DataFrame> {
    let file = std::fs::File::open(path)?;
    ParquetReader::new(file).finish()
}

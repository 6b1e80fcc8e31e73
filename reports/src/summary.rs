//! The end-of-run summary: mean score, fidelity, memory and latency per dataset x method x budget.

use polars::prelude::*;

use crate::frame::strings;
use crate::Record;

/// One row of the summary table.
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryRow {
    pub dataset: String,
    pub method: String,
    pub budget: String,
    pub query_aware: bool,
    pub n: usize,
    pub score: f64,
    pub agreement: f64,
    pub kl: f64,
    pub achieved_ratio: f64,
    /// 1 - stored bytes / full-cache bytes (what storage-side methods save).
    pub byte_ratio: f64,
    pub kv_bytes: f64,
    pub ttft_ms: f64,
    pub decode_ms_per_token: f64,
}

/// Aggregate records into rows, in a stable order: dataset, then method as first seen, then budget.
/// A method run with several parameter sets is one row per set, labelled with the parameters that
/// vary (`kivi(bits=2)`), as in the report's tables. One budget is one row, whatever the samples:
/// a token budget (`k=256`) removes a different fraction of each context, and still makes one row.
///
/// A record key seen more than once (two runs that wrote one file, a shard given twice) counts
/// once: the first record with the key.
pub fn summarize(records: &[Record]) -> Vec<SummaryRow> {
    summarize_frame(&crate::frame::records_frame(records))
        .expect("a records frame has every summary column")
}

/// Value columns the summary averages, in [`SummaryRow`] order.
const MEANS: [&str; 9] = [
    "score",
    "agreement_with_full",
    "kl_first_token",
    "achieved_ratio",
    "byte_ratio",
    "kv_bytes",
    "ttft_ms",
    "decode_ms_per_token",
    "target_ratio",
];

/// [`summarize`] on a results frame ([`crate::frame`]): failed records and repeated keys left
/// out, then the report's aggregation path ([`crate::grouped`]) at the summary's level: one polars
/// group-by (dataset x method label and way to the cache x budget x query awareness) for the means
/// and counts.
pub fn summarize_frame(df: &DataFrame) -> PolarsResult<Vec<SummaryRow>> {
    let df = crate::frame::measured(df)?;
    if df.height() == 0 {
        return Ok(Vec::new());
    }
    let prepared = crate::grouped::prepare(&df)?;
    let mut method_order: Vec<String> = Vec::new();
    for l in strings(&prepared, crate::grouped::WAY)? {
        if !method_order.contains(&l) {
            method_order.push(l);
        }
    }
    let keys = [
        "dataset",
        crate::grouped::WAY,
        "budget_label",
        "query_aware",
    ];
    let means = crate::grouped::group(&prepared, &keys, &MEANS)?.table;
    let counts = &means;
    let n = crate::frame::floats(counts, "n")?;
    let dataset = strings(&means, "dataset")?;
    let label = strings(&means, crate::grouped::WAY)?;
    let budget = strings(&means, "budget_label")?;
    let qa: Vec<bool> = means
        .column("query_aware")?
        .bool()?
        .iter()
        .map(|b| b.unwrap_or(false))
        .collect();
    let col = |name: &str| -> PolarsResult<Vec<f64>> {
        Ok(crate::frame::floats(&means, &format!("{name}_mean"))?
            .into_iter()
            .map(|x| x.unwrap_or(f64::NAN))
            .collect())
    };
    let m: Vec<Vec<f64>> = MEANS.iter().map(|c| col(c)).collect::<PolarsResult<_>>()?;
    let mut rows: Vec<(String, SummaryRow)> = (0..means.height())
        .map(|i| {
            let sort = format!("{:>12.6}|{}", m[8][i], budget[i]);
            let row = SummaryRow {
                dataset: dataset[i].clone(),
                method: label[i].clone(),
                budget: budget[i].clone(),
                query_aware: qa[i],
                n: n[i].unwrap_or(0.0) as usize,
                score: m[0][i],
                agreement: m[1][i],
                kl: m[2][i],
                achieved_ratio: m[3][i],
                byte_ratio: m[4][i],
                kv_bytes: m[5][i],
                ttft_ms: m[6][i],
                decode_ms_per_token: m[7][i],
            };
            (sort, row)
        })
        .collect();
    rows.sort_by(|(sa, a), (sb, b)| {
        let rank = |r: &SummaryRow| method_order.iter().position(|m| *m == r.method);
        (&a.dataset, rank(a), sa, a.query_aware).cmp(&(&b.dataset, rank(b), sb, b.query_aware))
    });
    Ok(rows.into_iter().map(|(_, r)| r).collect())
}

const HEADERS: [&str; 12] = [
    "dataset",
    "method",
    "budget",
    "n",
    "score",
    "agreement",
    "kl",
    "achieved_ratio",
    "byte_ratio",
    "kv_mib",
    "ttft_ms",
    "decode_ms_per_token",
];

fn cells(r: &SummaryRow) -> Vec<String> {
    let budget = if r.query_aware {
        format!("{} (query-aware)", r.budget)
    } else {
        r.budget.clone()
    };
    vec![
        r.dataset.clone(),
        r.method.clone(),
        budget,
        r.n.to_string(),
        format!("{:.3}", r.score),
        format!("{:.3}", r.agreement),
        format!("{:.4}", r.kl),
        format!("{:.3}", r.achieved_ratio),
        format!("{:.3}", r.byte_ratio),
        format!("{:.2}", r.kv_bytes / (1024.0 * 1024.0)),
        format!("{:.1}", r.ttft_ms),
        format!("{:.2}", r.decode_ms_per_token),
    ]
}

/// A Markdown table (also what the CLI prints).
pub fn to_markdown(rows: &[SummaryRow]) -> String {
    let body: Vec<Vec<String>> = rows.iter().map(cells).collect();
    let widths: Vec<usize> = (0..HEADERS.len())
        .map(|i| {
            body.iter()
                .map(|r| r[i].len())
                .chain([HEADERS[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cols: Vec<String>| {
        let padded: Vec<String> = cols
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(HEADERS.iter().map(|s| s.to_string()).collect());
    out += &line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for r in body {
        out += &line(r);
    }
    out
}

/// CSV with a header line (RFC 4180 quoting where needed), written by polars.
pub fn to_csv(rows: &[SummaryRow]) -> String {
    let mut header = HEADERS.to_vec();
    header.push("query_aware");
    let mut cols: Vec<Vec<String>> = vec![Vec::with_capacity(rows.len()); header.len()];
    for r in rows {
        let mut c = cells(r);
        c[2] = r.budget.clone();
        c.push(r.query_aware.to_string());
        for (col, v) in cols.iter_mut().zip(c) {
            col.push(v);
        }
    }
    let columns = header
        .iter()
        .zip(cols)
        .map(|(h, v)| Column::new((*h).into(), v))
        .collect();
    let mut df = DataFrame::new(rows.len(), columns).expect("summary columns of one length");
    crate::frame::to_csv(&mut df).expect("CSV into memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_written_twice_counts_once() {
        let record = |key: &str, score: f64| -> Record {
            serde_json::from_value(serde_json::json!({
                "experiment": "e", "model": "m", "dataset": "d", "task": "t", "sample_id": key, "turn": 0,
                "method": "full", "method_params": {}, "budget": null, "budget_label": "-", "query_aware": false,
                "target_ratio": 0.0, "achieved_ratio": 0.0, "prediction": "p", "answers": ["a"], "metric": "m",
                "score": score, "agreement_with_full": 1.0, "kl_first_token": 0.0, "kv_bytes": 10, "kv_bytes_full": 10,
                "peak_device_bytes": null, "prefill_ms": 1.0, "compress_ms": 0.0, "question_ms": 1.0, "ttft_ms": 2.0,
                "decode_ms_per_token": 1.0, "context_tokens": 5, "question_tokens": 2, "new_tokens": 1,
                "device": "cpu", "seed": 0, "kvbench_version": "0", "key": key
            }))
            .unwrap()
        };
        // Two concurrent runs into one file wrote `a` twice: n = 2 samples, not 3.
        let rows = summarize(&[record("a", 1.0), record("b", 0.0), record("a", 1.0)]);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].n, 2);
        assert_eq!(rows[0].score, 0.5);
        // With reuse, each way to the cache is a row of its own.
        let mut loaded = record("c", 1.0);
        loaded.ttft_mode = Some("load".into());
        loaded.bandwidth_gbps = Some(4.0);
        let mut computed = record("d", 0.0);
        computed.ttft_mode = Some("compute".into());
        let rows = summarize(&[loaded, computed]);
        let methods: Vec<&str> = rows.iter().map(|r| r.method.as_str()).collect();
        assert_eq!(methods, vec!["full [load @ 4 GB/s]", "full [compute]"]);
    }

    #[test]
    fn one_token_budget_is_one_row_whatever_each_sample_removed() {
        let record = |i: usize, target: f64| -> Record {
            serde_json::from_value(serde_json::json!({
                "experiment": "e", "model": "m", "dataset": "d", "task": "t", "sample_id": format!("s{i}"), "turn": 0,
                "method": "snapkv", "method_params": {}, "budget": {"tokens": 256}, "budget_label": "k=256", "query_aware": false,
                "target_ratio": target, "achieved_ratio": target, "prediction": "p", "answers": ["a"], "metric": "m",
                "score": 1.0, "agreement_with_full": 1.0, "kl_first_token": 0.0, "kv_bytes": 10, "kv_bytes_full": 40,
                "peak_device_bytes": null, "prefill_ms": 1.0, "compress_ms": 0.0, "question_ms": 1.0, "ttft_ms": 2.0,
                "decode_ms_per_token": 1.0, "context_tokens": 5, "question_tokens": 2, "new_tokens": 1,
                "device": "cpu", "seed": 0, "kvbench_version": "0", "key": format!("k{i}")
            }))
            .unwrap()
        };
        // k=256 of contexts of different lengths removes a different fraction of each.
        let rows = summarize(&[record(0, 0.5), record(1, 0.75), record(2, 0.875)]);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].n, 3);
        assert!((rows[0].achieved_ratio - 0.708333).abs() < 1e-5);
        assert!((rows[0].byte_ratio - 0.75).abs() < 1e-12);
    }

    #[test]
    fn summary_csv_bytes() {
        let row = |method: &str, budget: &str, query_aware: bool| SummaryRow {
            dataset: "niah".into(),
            method: method.into(),
            budget: budget.into(),
            query_aware,
            n: 3,
            score: 0.5,
            agreement: 1.0,
            kl: 0.0,
            achieved_ratio: 0.25,
            byte_ratio: 0.125,
            kv_bytes: 3.0 * 1024.0 * 1024.0,
            ttft_ms: 12.0,
            decode_ms_per_token: 1.5,
        };
        let csv = to_csv(&[
            row("full", "-", false),
            row("kivi(bits=2, group=32)", "r=0.50", true),
            row("say \"hi\"", "k=64", false),
        ]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "dataset,method,budget,n,score,agreement,kl,achieved_ratio,byte_ratio,kv_mib,ttft_ms,\
             decode_ms_per_token,query_aware"
        );
        // a comma or a quote is quoted (quotes doubled); the budget column has no suffix
        assert!(lines[1].starts_with("niah,full,-,3,"), "{}", lines[1]);
        assert!(lines[1].ends_with(",false"), "{}", lines[1]);
        assert!(
            lines[2].starts_with("niah,\"kivi(bits=2, group=32)\",r=0.50,3,"),
            "{}",
            lines[2]
        );
        assert!(lines[2].ends_with(",true"), "{}", lines[2]);
        assert!(
            lines[3].starts_with("niah,\"say \"\"hi\"\"\",k=64,"),
            "{}",
            lines[3]
        );
        assert!(csv.ends_with('\n') && !csv.contains('\r'));
        assert_eq!(lines.len(), 4);
    }
}

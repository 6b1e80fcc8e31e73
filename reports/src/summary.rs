//! The end-of-run summary: mean score, fidelity, memory and latency per dataset x method x budget.

use std::collections::BTreeMap;

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
/// vary (`kivi(bits=2)`), as in the report's tables.
///
/// A record key seen more than once (two runs that wrote one file, a shard given twice) counts
/// once: the first record with the key.
pub fn summarize(records: &[Record]) -> Vec<SummaryRow> {
    // Failed records hold no measurement (see [`Record::error`]).
    if records.iter().any(Record::is_failed) {
        let ok: Vec<Record> = records.iter().filter(|r| !r.is_failed()).cloned().collect();
        return summarize(&ok);
    }
    let mut keys = std::collections::HashSet::new();
    let unique: Vec<Record>;
    let records = if records.iter().all(|r| keys.insert(&r.key)) {
        records
    } else {
        keys.clear();
        unique = records
            .iter()
            .filter(|r| keys.insert(&r.key))
            .cloned()
            .collect();
        &unique[..]
    };
    let labels = crate::aggregate::method_labels(records);
    let label = |r: &Record| {
        let method = labels
            .get(&(r.method.clone(), r.method_params.to_string()))
            .cloned()
            .unwrap_or_else(|| r.method.clone());
        // With reuse, each way to the cache is its own row (`full [load @ 4 GB/s]`).
        match (&r.ttft_mode, r.bandwidth_gbps) {
            (None, _) => method,
            (Some(mode), None) if mode == "compute" => format!("{method} [{mode}]"),
            (Some(mode), None) => format!("{method} [{mode} @ uncapped]"),
            (Some(mode), Some(g)) => format!("{method} [{mode} @ {g} GB/s]"),
        }
    };
    let mut method_order: Vec<String> = Vec::new();
    for r in records {
        let l = label(r);
        if !method_order.contains(&l) {
            method_order.push(l);
        }
    }
    let mut groups: BTreeMap<(String, usize, String, bool), Vec<&Record>> = BTreeMap::new();
    for r in records {
        let l = label(r);
        let m = method_order.iter().position(|m| *m == l).unwrap_or(0);
        let budget_sort = format!("{:>12.6}|{}", r.target_ratio, r.budget_label);
        groups
            .entry((r.dataset.clone(), m, budget_sort, r.query_aware))
            .or_default()
            .push(r);
    }
    groups
        .into_values()
        .map(|rs| {
            let mean =
                |f: &dyn Fn(&Record) -> f64| rs.iter().map(|r| f(r)).sum::<f64>() / rs.len() as f64;
            SummaryRow {
                dataset: rs[0].dataset.clone(),
                method: label(rs[0]),
                budget: rs[0].budget_label.clone(),
                query_aware: rs[0].query_aware,
                n: rs.len(),
                score: mean(&|r| r.score),
                agreement: mean(&|r| r.agreement_with_full),
                kl: mean(&|r| r.kl_first_token),
                achieved_ratio: mean(&|r| r.achieved_ratio),
                byte_ratio: mean(&|r| 1.0 - r.kv_bytes as f64 / (r.kv_bytes_full.max(1)) as f64),
                kv_bytes: mean(&|r| r.kv_bytes as f64),
                ttft_ms: mean(&|r| r.ttft_ms),
                decode_ms_per_token: mean(&|r| r.decode_ms_per_token),
            }
        })
        .collect()
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

/// CSV with a header line (RFC 4180 quoting, through the `csv` crate).
pub fn to_csv(rows: &[SummaryRow]) -> String {
    let mut header = HEADERS.to_vec();
    header.push("query_aware");
    let body = rows.iter().map(|r| {
        let mut c = cells(r);
        c[2] = r.budget.clone();
        c.push(r.query_aware.to_string());
        c
    });
    crate::tables::csv::write_csv(&header, body)
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

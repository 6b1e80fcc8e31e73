//! The reuse study's tables (records with `ttft_mode`, from an experiment with `reuse:`): time to
//! first token by context length for each way to the cache, and compute vs load vs Cake per
//! bandwidth with where Cake's compute and load met.
//!
//! - `ttft_vs_context`: per stored form (method and budget), context length and mode (`load` and
//!   `cake` once per bandwidth cap): mean TTFT, time to the cache, bytes read, agreement with the
//!   full-cache run.
//! - `cake_vs_bandwidth`: per stored form, context length and bandwidth: the three modes' mean
//!   TTFT side by side, Cake's speed-up over the slower and the faster of compute and load, and
//!   the mean split (context tokens computed; the rest was loaded).
//!
//! Records without `ttft_mode` give no rows, and then no tables.

use std::collections::BTreeMap;

use crate::aggregate::Configs;
use crate::tables::{Column, Kind, Table, Value};
use crate::Record;

/// A bandwidth cap as shown: `4 GB/s`, or `uncapped`.
pub(crate) fn cap_label(gbps: Option<f64>) -> String {
    gbps.map_or("uncapped".to_string(), |g| format!("{g} GB/s"))
}

fn mean(xs: impl Iterator<Item = f64>) -> Option<f64> {
    let (mut sum, mut n) = (0.0, 0usize);
    for x in xs {
        sum += x;
        n += 1;
    }
    (n > 0).then(|| sum / n as f64)
}

/// Sort key of a bandwidth: capped ones by rate, uncapped last.
pub(crate) fn cap_key(gbps: Option<f64>) -> u64 {
    gbps.map_or(u64::MAX, |g| (g * 1e6) as u64)
}

pub(crate) fn mode_rank(mode: &str) -> usize {
    ["compute", "load", "cake"]
        .iter()
        .position(|m| *m == mode)
        .unwrap_or(3)
}

/// The reuse tables, or none when no record reused a stored cache.
pub fn tables(records: &[Record]) -> Vec<Table> {
    let reused: Vec<&Record> = records.iter().filter(|r| r.ttft_mode.is_some()).collect();
    if reused.is_empty() {
        return Vec::new();
    }
    let configs = Configs::new(records);
    let form = |r: &Record| {
        let c = configs.of(r);
        format!("{} {}", c.method, c.budget.label)
    };
    vec![by_context(&reused, &form), by_bandwidth(&reused, &form)]
}

type Key = (String, usize, usize, u64);
/// Per (stored form, context, cap): the cap and its load and cake records.
type Capped<'a> = BTreeMap<(String, usize, u64), (Option<f64>, Vec<&'a Record>)>;

fn by_context(records: &[&Record], form: &dyn Fn(&Record) -> String) -> Table {
    let mut groups: BTreeMap<Key, Vec<&Record>> = BTreeMap::new();
    for r in records {
        let mode = r.ttft_mode.as_deref().unwrap_or("");
        let key = (
            form(r),
            r.context_tokens,
            mode_rank(mode),
            cap_key(r.bandwidth_gbps),
        );
        groups.entry(key).or_default().push(r);
    }
    let rows = groups
        .values()
        .map(|rs| {
            let r = rs[0];
            let mode = r.ttft_mode.clone().unwrap_or_default();
            let mode = if mode == "compute" {
                mode
            } else {
                format!("{mode} @ {}", cap_label(r.bandwidth_gbps))
            };
            vec![
                Value::Text(form(r)),
                Value::Int(r.context_tokens as u64),
                Value::Text(mode),
                Value::Int(rs.len() as u64),
                Value::Num(mean(rs.iter().map(|r| r.ttft_ms))),
                Value::Num(mean(rs.iter().filter_map(|r| r.cache_ms))),
                Value::Num(mean(
                    rs.iter().map(|r| r.kv_bytes_read.unwrap_or(0) as f64 / 1e6),
                )),
                Value::Num(mean(rs.iter().map(|r| r.agreement_with_full))),
            ]
        })
        .collect();
    Table {
        name: "ttft_vs_context".into(),
        title: "Time to first token by context length: compute, load and Cake".into(),
        note: "Means over the samples of each cell. compute: prefill and compression; load: the \
               stored cache read (at the bandwidth cap, a real pacing of reads) and rebuilt on the \
               device; cake: computed from the front while loaded from the back. Cache ms is the \
               time to the cache for load and cake (TTFT adds the question's forward)."
            .into(),
        columns: vec![
            Column::new("stored_form", "stored form", Kind::Text),
            Column::new("context_tokens", "context tokens", Kind::Int),
            Column::new("mode", "mode", Kind::Text),
            Column::new("n", "n", Kind::Int),
            Column::new("ttft_ms", "TTFT (ms)", Kind::Num { decimals: 1 }),
            Column::new("cache_ms", "cache (ms)", Kind::Num { decimals: 1 }),
            Column::new("mb_read", "read (MB)", Kind::Num { decimals: 2 }),
            Column::new("agreement", "agreement", Kind::Num { decimals: 3 }),
        ],
        rows,
    }
}

fn by_bandwidth(records: &[&Record], form: &dyn Fn(&Record) -> String) -> Table {
    // compute has no cap: its mean per (form, context) stands beside every bandwidth.
    let mut compute: BTreeMap<(String, usize), Vec<f64>> = BTreeMap::new();
    let mut capped: Capped = BTreeMap::new();
    for r in records {
        match r.ttft_mode.as_deref() {
            Some("compute") => compute
                .entry((form(r), r.context_tokens))
                .or_default()
                .push(r.ttft_ms),
            _ => capped
                .entry((form(r), r.context_tokens, cap_key(r.bandwidth_gbps)))
                .or_insert_with(|| (r.bandwidth_gbps, Vec::new()))
                .1
                .push(r),
        }
    }
    let rows = capped
        .iter()
        .map(|((form, ctx, _), (gbps, rs))| {
            let of = |mode: &str| {
                mean(
                    rs.iter()
                        .filter(|r| r.ttft_mode.as_deref() == Some(mode))
                        .map(|r| r.ttft_ms),
                )
            };
            let c = compute
                .get(&(form.clone(), *ctx))
                .and_then(|v| mean(v.iter().copied()));
            let (l, k) = (of("load"), of("cake"));
            let (slower, faster) = match (c, l) {
                (Some(c), Some(l)) => (Some(c.max(l)), Some(c.min(l))),
                _ => (None, None),
            };
            let ratio = |base: Option<f64>| match (base, k) {
                (Some(b), Some(k)) if k > 0.0 => Some(b / k),
                _ => None,
            };
            let cake: Vec<&&Record> = rs
                .iter()
                .filter(|r| r.ttft_mode.as_deref() == Some("cake"))
                .collect();
            let split = mean(
                cake.iter()
                    .filter_map(|r| r.cake_split_tokens.map(|s| s as f64)),
            );
            let split_fraction = mean(cake.iter().filter_map(|r| {
                r.cake_split_tokens
                    .map(|s| s as f64 / r.context_tokens.max(1) as f64)
            }));
            vec![
                Value::Text(form.clone()),
                Value::Int(*ctx as u64),
                Value::Text(cap_label(*gbps)),
                Value::Num(c),
                Value::Num(l),
                Value::Num(k),
                Value::Num(ratio(slower)),
                Value::Num(ratio(faster)),
                Value::Num(split),
                Value::Num(split_fraction),
            ]
        })
        .collect();
    Table {
        name: "cake_vs_bandwidth".into(),
        title: "Compute, load or both (Cake), per bandwidth cap".into(),
        note: "Mean TTFT (ms) of each mode for each stored form, context length and read cap; \
               speed-ups are the slower (faster) of compute and load over Cake (above 1: Cake is \
               faster). Split: context tokens Cake computed before it met the loader (the rest \
               was loaded), and that as a fraction of the context."
            .into(),
        columns: vec![
            Column::new("stored_form", "stored form", Kind::Text),
            Column::new("context_tokens", "context tokens", Kind::Int),
            Column::new("bandwidth", "bandwidth", Kind::Text),
            Column::new("compute_ms", "compute (ms)", Kind::Num { decimals: 1 }),
            Column::new("load_ms", "load (ms)", Kind::Num { decimals: 1 }),
            Column::new("cake_ms", "cake (ms)", Kind::Num { decimals: 1 }),
            Column::new(
                "speedup_vs_slower",
                "x vs slower",
                Kind::Num { decimals: 2 },
            ),
            Column::new(
                "speedup_vs_faster",
                "x vs faster",
                Kind::Num { decimals: 2 },
            ),
            Column::new(
                "cake_split_tokens",
                "split (tokens)",
                Kind::Num { decimals: 0 },
            ),
            Column::new(
                "cake_split_fraction",
                "split / context",
                Kind::Num { decimals: 2 },
            ),
        ],
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(mode: Option<&str>, gbps: Option<f64>, ttft: f64, split: Option<usize>) -> Record {
        let mut r: Record = serde_json::from_value(serde_json::json!({
            "experiment": "e", "model": "m", "dataset": "d", "task": "t", "sample_id": "s", "turn": 0,
            "method": "full", "method_params": {}, "budget": null, "budget_label": "-", "query_aware": false,
            "target_ratio": 0.0, "achieved_ratio": 0.0, "prediction": "p", "answers": ["a"], "metric": "m",
            "score": 1.0, "agreement_with_full": 1.0, "kl_first_token": 0.0, "kv_bytes": 10, "kv_bytes_full": 10,
            "peak_device_bytes": null, "prefill_ms": 1.0, "compress_ms": 0.0, "question_ms": 1.0, "ttft_ms": ttft,
            "decode_ms_per_token": 0.0, "context_tokens": 1000, "question_tokens": 2, "new_tokens": 1,
            "device": "cpu", "seed": 0, "kvbench_version": "0", "key": "k"
        }))
        .unwrap();
        r.ttft_mode = mode.map(str::to_string);
        r.bandwidth_gbps = gbps;
        r.cake_split_tokens = split;
        r.kv_bytes_read = mode.map(|_| 2_000_000);
        r
    }

    #[test]
    fn no_reuse_no_tables() {
        assert!(tables(&[record(None, None, 5.0, None)]).is_empty());
    }

    #[test]
    fn cake_is_compared_with_compute_and_load_at_each_cap() {
        let rs = vec![
            record(Some("compute"), None, 100.0, None),
            record(Some("load"), Some(1.0), 200.0, None),
            record(Some("cake"), Some(1.0), 50.0, Some(256)),
            record(Some("load"), None, 40.0, None),
            record(Some("cake"), None, 40.0, Some(0)),
        ];
        let t = tables(&rs);
        assert_eq!(t[0].rows.len(), 5);
        assert_eq!(t[0].rows[1][2], Value::Text("load @ 1 GB/s".into()));
        let bw = &t[1];
        assert_eq!(bw.rows.len(), 2);
        let one = &bw.rows[0];
        assert_eq!(one[2], Value::Text("1 GB/s".into()));
        // slower = load 200 -> 4x; faster = compute 100 -> 2x; split 256 of 1000.
        assert_eq!(one[6], Value::Num(Some(4.0)));
        assert_eq!(one[7], Value::Num(Some(2.0)));
        assert_eq!(one[9], Value::Num(Some(0.256)));
        assert_eq!(bw.rows[1][2], Value::Text("uncapped".into()));
    }
}

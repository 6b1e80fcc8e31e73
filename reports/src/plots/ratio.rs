//! The compression-ratio plots' data: per panel and configuration a metric averaged over the
//! panel's tasks, placed on the compression axis, as lines, reference lines and points.

use std::collections::BTreeMap;

use super::figures::series_key;
use super::lines::{Point, Series, SeriesKind};
use crate::aggregate::{Config, Groups, Metric};
use crate::bootstrap::{cell_seed, macro_average, BootstrapConfig, Estimate};
use crate::Record;

/// Where a record sits on the compression axis: the fraction of entries removed, or for storage
/// methods (KIVI, per-token quantization, low rank) that keep every entry in fewer bytes, the
/// fraction of bytes saved, whichever is larger: a 2-bit cache is not drawn at 0 like the baseline.
pub fn compression_x(r: &Record) -> f64 {
    let bytes = 1.0 - r.kv_bytes as f64 / r.kv_bytes_full.max(1) as f64;
    r.achieved_ratio.max(bytes)
}

/// Per (panel, configuration): `metric` averaged over the panel's tasks (each task weighs the same,
/// intervals resample within tasks) and the achieved ratio averaged the same way.
pub(crate) fn panel_stats(
    groups: &Groups,
    panel_of: &dyn Fn(&str, &str) -> String,
    metric: Metric,
    cfg: BootstrapConfig,
) -> BTreeMap<(String, Config), (Estimate, f64)> {
    let mut strata: BTreeMap<(String, Config), Vec<&Vec<&Record>>> = BTreeMap::new();
    for ((d, t, c), rs) in groups {
        strata
            .entry((panel_of(d, t), c.clone()))
            .or_default()
            .push(rs);
    }
    let mut out = BTreeMap::new();
    for ((panel, c), tasks) in strata {
        let vals = |m: Metric| -> Vec<Vec<f64>> {
            tasks
                .iter()
                .map(|rs| rs.iter().filter_map(|r| m.value(r)).collect())
                .collect()
        };
        let ys = vals(metric);
        let refs: Vec<&[f64]> = ys.iter().map(|v| v.as_slice()).collect();
        let seed = cell_seed(
            cfg.seed,
            &format!("plot|{panel}|{}|{}|{}", c.label(), c.model, metric.key()),
        );
        let Some(y) = macro_average(&refs, cfg, seed) else {
            continue;
        };
        let xs: Vec<Vec<f64>> = tasks
            .iter()
            .map(|rs| rs.iter().map(|r| compression_x(r)).collect())
            .collect();
        let xs: Vec<f64> = xs
            .iter()
            .filter(|v| !v.is_empty())
            .map(|v| v.iter().sum::<f64>() / v.len() as f64)
            .collect();
        let x = if xs.is_empty() {
            0.0
        } else {
            xs.iter().sum::<f64>() / xs.len() as f64
        };
        out.insert((panel, c), (y, x));
    }
    out
}

/// Series of one panel: a line per method across its budgets, a reference line per configuration
/// without a budget.
pub(crate) fn ratio_series(
    stats: &BTreeMap<(String, Config), (Estimate, f64)>,
    panel: &str,
) -> Vec<Series> {
    let mut by_key: BTreeMap<(bool, String), Vec<Point>> = BTreeMap::new();
    let mut order: Vec<(bool, String)> = Vec::new();
    for ((p, c), (y, x)) in stats {
        if p != panel {
            continue;
        }
        // A reference line only for what compresses nothing (the baseline); a storage method
        // without a budget is a point at its byte ratio.
        let k = (c.budget.is_none() && *x < 0.005, series_key(c));
        if !order.contains(&k) {
            order.push(k.clone());
        }
        by_key.entry(k).or_default().push(Point {
            x: *x,
            y: y.mean,
            ci: Some((y.lo, y.hi)),
            tag: None,
        });
    }
    // Methods that land on the same point (two selection methods at one ratio and score) would
    // hide each other: each line is shifted by a fixed, small x step (half a percent of the
    // axis per line, centred), so every marker and interval stays visible.
    let lines = order.iter().filter(|k| !k.0).count();
    let mut j = 0;
    order
        .into_iter()
        .map(|k| {
            let mut points = by_key.remove(&k).unwrap_or_default();
            if !k.0 {
                let shift = (j as f64 - (lines as f64 - 1.0) / 2.0) * DODGE;
                j += 1;
                for p in &mut points {
                    p.x += shift;
                }
            }
            Series {
                kind: if k.0 {
                    SeriesKind::Reference
                } else {
                    SeriesKind::Line
                },
                points,
                key: k.1,
            }
        })
        .collect()
}

/// The x step between the lines of a ratio plot (see [`ratio_series`]).
const DODGE: f64 = 0.005;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Configs;

    fn record(method: &str, budget: Option<f64>, achieved: f64, kv_bytes: u64) -> Record {
        serde_json::from_value(serde_json::json!({
            "experiment": "e", "model": "m", "dataset": "d", "task": "t", "sample_id": "s", "turn": 0,
            "method": method, "method_params": {}, "budget": budget.map(|b| serde_json::json!({"compression_ratio": b})),
            "budget_label": budget.map_or("-".to_string(), |b| format!("r={b:.2}")), "query_aware": false,
            "target_ratio": budget.unwrap_or(0.0), "achieved_ratio": achieved, "prediction": "p", "answers": ["a"],
            "metric": "m", "score": 0.5, "agreement_with_full": 1.0, "kl_first_token": 0.0, "kv_bytes": kv_bytes,
            "kv_bytes_full": 1000, "peak_device_bytes": null, "prefill_ms": 1.0, "compress_ms": 0.0,
            "question_ms": 1.0, "ttft_ms": 2.0, "decode_ms_per_token": 1.0, "context_tokens": 5,
            "question_tokens": 2, "new_tokens": 2, "device": "cpu", "seed": 0, "kvbench_version": "0",
            "key": format!("{method}{budget:?}")
        }))
        .unwrap()
    }

    #[test]
    fn storage_methods_sit_at_their_byte_ratio_not_on_the_baseline_line() {
        let rs = vec![
            record("full", None, 0.0, 1000),
            // 2-bit KIVI: every entry kept, a quarter of the bytes.
            record("kivi", None, 0.0, 250),
            record("snapkv", Some(0.5), 0.5, 500),
            record("h2o", Some(0.5), 0.5, 500),
        ];
        assert_eq!(compression_x(&rs[1]), 0.75);
        assert_eq!(compression_x(&rs[2]), 0.5);
        let configs = Configs::new(&rs);
        let groups = crate::aggregate::group(&rs, &configs);
        let cfg = BootstrapConfig {
            seed: 0,
            resamples: 10,
        };
        let stats = panel_stats(&groups, &|_, _| "all".to_string(), Metric::Score, cfg);
        let series = ratio_series(&stats, "all");
        let kind = |key: &str| series.iter().find(|s| s.key == key).unwrap();
        assert_eq!(kind("full").kind, SeriesKind::Reference);
        assert_eq!(kind("kivi").kind, SeriesKind::Line);
        assert!((kind("kivi").points[0].x - 0.75).abs() < 0.01);
        // snapkv and h2o at the same point: shifted apart, both visible.
        let (a, b) = (kind("snapkv").points[0].x, kind("h2o").points[0].x);
        assert!((a - b).abs() >= DODGE * 0.99 && (a - 0.5).abs() < 0.01 && (b - 0.5).abs() < 0.01);
    }
}

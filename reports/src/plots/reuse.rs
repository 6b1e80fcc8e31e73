//! The reuse study's figure (records with `ttft_mode`): time to first token against context
//! length, one panel per stored form, one line per way to the cache (compute, and load and Cake
//! at each bandwidth cap). Where Cake's line runs under both others, computing and loading at
//! once wins; the `cake_vs_bandwidth` table gives the numbers and where the two halves met.

use std::collections::BTreeMap;

use super::lines::{LineFigure, Panel, Point, Series, SeriesKind};
use super::{LegendEntry, Palette, Swatch};
use crate::aggregate::Configs;
use crate::cake::{cap_key, cap_label, mode_rank};
use crate::Record;

/// A way to the cache as a series key: `compute`, or `load @ 4 GB/s`, `cake @ uncapped`, ...
fn way(r: &Record) -> Option<((usize, u64), String)> {
    let mode = r.ttft_mode.as_deref()?;
    Some(if mode == "compute" {
        ((mode_rank(mode), 0), mode.to_string())
    } else {
        (
            (mode_rank(mode), cap_key(r.bandwidth_gbps)),
            format!("{mode} @ {}", cap_label(r.bandwidth_gbps)),
        )
    })
}

/// TTFT vs context length per stored form, or `None` without reuse records.
pub fn ttft_figure(records: &[Record]) -> Option<LineFigure> {
    let configs = Configs::new(records);
    // form -> way (ordered) -> length bin -> records
    type Cells<'a> = BTreeMap<((usize, u64), String), BTreeMap<u64, Vec<&'a Record>>>;
    let mut forms: BTreeMap<String, Cells> = BTreeMap::new();
    for r in records {
        let Some(w) = way(r) else { continue };
        let c = configs.of(r);
        let form = format!("{} {}", c.method, c.budget.label);
        forms
            .entry(form.trim_end_matches(" -").to_string())
            .or_default()
            .entry(w)
            .or_default()
            .entry(super::figures::length_bin(r))
            .or_default()
            .push(r);
    }
    if forms.is_empty() {
        return None;
    }
    let mut ways: Vec<((usize, u64), String)> =
        forms.values().flat_map(|w| w.keys().cloned()).collect();
    ways.sort();
    ways.dedup();
    let keys: Vec<String> = ways.iter().map(|(_, k)| k.clone()).collect();
    let palette = Palette::new(&keys, "compute");
    let mean = |xs: &mut dyn Iterator<Item = f64>| {
        let v: Vec<f64> = xs.collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let panels = forms
        .into_iter()
        .map(|(form, by_way)| Panel {
            title: format!("stored form: {form}"),
            x_label: "context length (tokens)".into(),
            y_label: "time to first token (ms, mean)".into(),
            series: by_way
                .into_iter()
                .map(|((_, key), bins)| Series {
                    key,
                    kind: SeriesKind::Line,
                    points: bins
                        .values()
                        .map(|rs| Point {
                            x: mean(&mut rs.iter().map(|r| r.context_tokens as f64)),
                            y: mean(&mut rs.iter().map(|r| r.ttft_ms)),
                            ci: None,
                            tag: None,
                        })
                        .collect(),
                })
                .collect(),
            y_from_zero: true,
            ..Default::default()
        })
        .collect();
    let mut legend = vec![LegendEntry {
        swatch: Swatch::Heading,
        text: "way to the cache".into(),
    }];
    legend.extend(
        keys.iter()
            .map(|k| LegendEntry::method(&palette, k, k.clone())),
    );
    Some(LineFigure {
        title: "Time to first token: compute, load or both (Cake)".into(),
        panels,
        legend,
        palette,
        max_cols: 2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        method: &str,
        mode: &str,
        gbps: Option<f64>,
        length: u64,
        tokens: usize,
        ms: f64,
    ) -> Record {
        let mut r: Record = serde_json::from_value(serde_json::json!({
            "experiment": "e", "model": "m", "dataset": "niah", "task": "niah",
            "sample_id": format!("niah-L{length}-D0.50-0"), "turn": 0, "method": method,
            "method_params": {}, "budget": null, "budget_label": "-", "query_aware": false,
            "target_ratio": 0.0, "achieved_ratio": 0.0, "prediction": "p", "answers": ["a"],
            "metric": "m", "score": 1.0, "agreement_with_full": 1.0, "kl_first_token": 0.0,
            "kv_bytes": 10, "kv_bytes_full": 10, "peak_device_bytes": null, "prefill_ms": 1.0,
            "compress_ms": 0.0, "question_ms": 1.0, "ttft_ms": ms, "decode_ms_per_token": 0.0,
            "context_tokens": tokens, "question_tokens": 2, "new_tokens": 1, "device": "cpu",
            "seed": 0, "kvbench_version": "0", "key": format!("{method}{mode}{gbps:?}{tokens}"),
            "meta": {"length": length},
        }))
        .unwrap();
        r.ttft_mode = Some(mode.into());
        r.bandwidth_gbps = gbps;
        r
    }

    #[test]
    fn one_panel_per_stored_form_and_one_line_per_way_ordered_by_context() {
        let mut rs = Vec::new();
        for (len, tokens) in [(8192, 8187), (4096, 4086)] {
            let t = len as f64 / 1000.0;
            rs.push(record("full", "compute", None, len, tokens, 60.0 * t));
            rs.push(record("kivi", "compute", None, len, tokens, 70.0 * t));
            for g in [Some(4.0), None] {
                rs.push(record("full", "load", g, len, tokens, 200.0 * t));
                rs.push(record("full", "cake", g, len, tokens, 30.0 * t));
            }
        }
        // A second sample in one cell: the point is the mean.
        rs.push(record(
            "full",
            "compute",
            None,
            4096,
            4090,
            60.0 * 4.096 + 10.0,
        ));
        let fig = ttft_figure(&rs).unwrap();
        let titles: Vec<&str> = fig.panels.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(titles, ["stored form: full", "stored form: kivi"]);
        let full = &fig.panels[0];
        let keys: Vec<&str> = full.series.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "compute",
                "load @ 4 GB/s",
                "load @ uncapped",
                "cake @ 4 GB/s",
                "cake @ uncapped"
            ]
        );
        let compute = &full.series[0].points;
        assert_eq!(compute.len(), 2);
        assert_eq!(compute[0].x, (4086.0 + 4090.0) / 2.0);
        assert!((compute[0].y - (60.0 * 4.096 + 5.0)).abs() < 1e-9);
        assert!(compute[0].x < compute[1].x);
        assert_eq!(fig.panels[1].series.len(), 1);
        assert_eq!(fig.legend.len(), 1 + 5);
        assert!(ttft_figure(&rs[..0]).is_none());
    }
}

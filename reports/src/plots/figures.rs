//! The report's figures, built from the records and the aggregate, each saved as PNG and SVG.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::bars::{Bar, StackedBars, SHADES};
use super::lines::{LineFigure, Panel, Point, Series, SeriesKind};
use super::ratio::{panel_stats, ratio_series};
use super::{save, tint, LegendEntry, Palette, PlotFile, Swatch, BASELINE_COLOUR, GREY};
use crate::aggregate::{group, Aggregate, Config, Configs, Metric};
use crate::bootstrap::{cell_seed, mean_ci, BootstrapConfig};
use crate::{Record, ReportError};

const RATIO_AXIS: &str = "achieved compression (fraction of entries or bytes removed)";

/// The family a task belongs to, for one panel per family: LongBench's six categories, RULER's
/// four, needle retrieval; any other task is its own family.
pub fn task_family(task: &str) -> String {
    let t = task.trim_end_matches("_e");
    let family = match t {
        "narrativeqa" | "qasper" | "multifieldqa_en" | "multifieldqa_zh" => "single-doc QA",
        "hotpotqa" | "2wikimqa" | "musique" | "dureader" => "multi-doc QA",
        "gov_report" | "qmsum" | "multi_news" | "vcsum" => "summarization",
        "trec" | "triviaqa" | "samsum" | "lsht" => "few-shot",
        "passage_count" | "passage_retrieval_en" | "passage_retrieval_zh" => "synthetic",
        "lcc" | "repobench-p" => "code",
        "vt" => "multi-hop tracing",
        "cwe" | "fwe" => "aggregation",
        "qa_1" | "qa_2" => "QA",
        t if t == "niah" || t.starts_with("niah_") => "retrieval (needle)",
        t => t,
    };
    family.to_string()
}

/// The palette key of a configuration: its method, query-aware runs apart.
pub fn series_key(c: &Config) -> String {
    if c.query_aware {
        format!("{} (query-aware)", c.method)
    } else {
        c.method.clone()
    }
}

pub fn palette(agg: &Aggregate) -> Palette {
    let keys: Vec<String> = agg.configs.iter().map(series_key).collect();
    Palette::new(&keys, &agg.baseline)
}

fn method_legend(p: &Palette, keys: &BTreeSet<String>, with_ci: bool) -> Vec<LegendEntry> {
    let mut out = vec![LegendEntry {
        swatch: Swatch::Heading,
        text: "method".into(),
    }];
    for m in p.methods() {
        if !keys.contains(m) {
            continue;
        }
        if m == p.baseline() {
            out.push(LegendEntry {
                swatch: Swatch::Dashed(BASELINE_COLOUR),
                text: format!("{m} (no compression)"),
            });
        } else {
            out.push(LegendEntry::method(p, m, m.clone()));
        }
    }
    if with_ci {
        out.push(LegendEntry {
            swatch: Swatch::Interval,
            text: "95% bootstrap CI".into(),
        });
    }
    out
}

fn keys_of(panels: &[Panel]) -> BTreeSet<String> {
    panels
        .iter()
        .flat_map(|p| p.series.iter().map(|s| s.key.clone()))
        .collect()
}

fn line_figure(title: &str, panels: Vec<Panel>, palette: &Palette, max_cols: usize) -> LineFigure {
    let legend = method_legend(palette, &keys_of(&panels), true);
    LineFigure {
        title: title.into(),
        panels,
        legend,
        palette: palette.clone(),
        max_cols,
    }
}

/// Context-length bin of a record: the dataset's target length where it has one, else the
/// nearest power of two of the context's tokens.
pub(super) fn length_bin(r: &Record) -> u64 {
    r.meta
        .get("length")
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| 2f64.powf((r.context_tokens.max(1) as f64).log2().round()) as u64)
}

/// Draw every figure into `dir`. Returns the plots written and, for each plot left out, why.
pub fn write_all(
    records: &[Record],
    agg: &Aggregate,
    cfg: BootstrapConfig,
    dir: &Path,
) -> Result<(Vec<PlotFile>, Vec<(String, String)>), ReportError> {
    let configs = Configs::new(records);
    let groups = group(records, &configs);
    let palette = palette(agg);
    let mut plots = Vec::new();
    let mut skipped = Vec::new();

    // 1. Score vs compression ratio, one panel per task family.
    let family = |_: &str, t: &str| task_family(t);
    let stats = panel_stats(&groups, &family, Metric::Score, cfg);
    let mut families: Vec<String> = stats.keys().map(|(p, _)| p.clone()).collect();
    families.dedup();
    let metric_names = |fam: &str| -> String {
        let names: BTreeSet<&str> = agg
            .cells
            .iter()
            .filter(|c| task_family(&c.task) == fam)
            .map(|c| c.metric.as_str())
            .collect();
        names.into_iter().collect::<Vec<_>>().join(", ")
    };
    let panels = families
        .iter()
        .map(|f| Panel {
            title: format!("{f} ({})", metric_names(f)),
            x_label: RATIO_AXIS.into(),
            x_range: Some((0.0, 1.0)),
            y_label: "score (task metric, 0-1)".into(),
            series: ratio_series(&stats, f),
            y_range: Some((-0.02, 1.02)),
            ..Default::default()
        })
        .collect();
    let fig = line_figure("Task score vs compression ratio", panels, &palette, 2);
    plots.push(save(&fig, dir, "score_vs_ratio", "Score vs compression ratio", "Mean task score per task family (tasks weigh equally) against the compression each configuration achieved (entries removed, or bytes saved for storage methods; lines shifted apart by 0.005 each so equal points stay visible); dashed: the uncompressed baseline, its band its 95% interval; bars: 95% bootstrap intervals.")?);

    // 2. Fidelity: agreement and KL vs ratio.
    let all = |_: &str, _: &str| String::from("all");
    let fid = [
        (
            Metric::Agreement,
            "greedy agreement with full cache",
            "agreement (fraction of tokens, 0-1)",
            Some((-0.02, 1.02)),
            false,
        ),
        (
            Metric::Kl,
            "first-token KL(full || method)",
            "KL divergence (nats)",
            None,
            true,
        ),
    ];
    let panels = fid
        .iter()
        .map(|(m, title, y, range, zero)| Panel {
            title: (*title).into(),
            x_label: RATIO_AXIS.into(),
            x_range: Some((0.0, 1.0)),
            y_label: (*y).into(),
            series: ratio_series(&panel_stats(&groups, &all, *m, cfg), "all"),
            y_range: *range,
            y_from_zero: *zero,
            ..Default::default()
        })
        .collect();
    let fig = line_figure(
        "Fidelity to the uncompressed model vs compression ratio",
        panels,
        &palette,
        2,
    );
    plots.push(save(&fig, dir, "fidelity_vs_ratio", "Fidelity vs compression ratio", "Left: fraction of the full-cache run's greedy tokens reproduced at the same positions. Right: KL divergence of the first answer token's distribution from the full-cache one (0 = identical). Averaged over tasks, 95% bootstrap intervals.")?);

    // 3. Memory: KV bytes and peak device memory vs ratio.
    let mem = [
        (
            Metric::KvMib,
            "KV cache size (context, after compression)",
            "KV cache (MiB)",
            "",
        ),
        (
            Metric::PeakMib,
            "peak device memory per request",
            "peak device memory (MiB)",
            "peak device memory not recorded (CPU runs cannot report it)",
        ),
    ];
    // One panel per dataset and quantity: datasets of different context lengths are never
    // averaged into one memory figure.
    let by_dataset = |d: &str, _: &str| d.to_string();
    let mut panels = Vec::new();
    for (m, title, y, note) in &mem {
        let stats = panel_stats(&groups, &by_dataset, *m, cfg);
        let mut datasets: Vec<String> = groups.keys().map(|(d, _, _)| d.clone()).collect();
        datasets.dedup();
        for d in &datasets {
            panels.push(Panel {
                title: if datasets.len() > 1 {
                    format!("{d}: {title}")
                } else {
                    (*title).into()
                },
                x_label: RATIO_AXIS.into(),
                x_range: Some((0.0, 1.0)),
                y_label: (*y).into(),
                series: ratio_series(&stats, d),
                y_from_zero: true,
                empty_note: (*note).into(),
                ..Default::default()
            });
        }
    }
    let fig = line_figure("Memory vs compression ratio", panels, &palette, 2);
    plots.push(save(&fig, dir, "memory_vs_ratio", "Memory vs compression ratio", "Per dataset (context lengths differ, so datasets are never averaged together): the bytes the compressed context cache occupies (measured from the stored tensors), then the device memory high-water mark per request (model weights included). Storage methods sit at the fraction of bytes they save.")?);

    // 4. TTFT breakdown.
    let mut by_config: BTreeMap<&Config, Vec<&Record>> = BTreeMap::new();
    for ((_, _, c), rs) in &groups {
        by_config.entry(c).or_default().extend(rs.iter());
    }
    // Bars per dataset x configuration: a TTFT grows with the context, so datasets of different
    // lengths are not averaged together.
    let mut by_dataset_config: BTreeMap<(&String, &Config), Vec<&Record>> = BTreeMap::new();
    for ((d, _, c), rs) in &groups {
        by_dataset_config
            .entry((d, c))
            .or_default()
            .extend(rs.iter());
    }
    let several = by_dataset_config
        .keys()
        .map(|(d, _)| *d)
        .collect::<BTreeSet<_>>()
        .len()
        > 1;
    let bars: Vec<Bar> = by_dataset_config
        .iter()
        .map(|((d, c), rs)| {
            let mean = |m: Metric| {
                let v: Vec<f64> = rs.iter().filter_map(|r| m.value(r)).collect();
                if v.is_empty() {
                    0.0
                } else {
                    v.iter().sum::<f64>() / v.len() as f64
                }
            };
            let ttft: Vec<f64> = rs.iter().filter_map(|r| Metric::TtftMs.value(r)).collect();
            let ci = mean_ci(
                &ttft,
                cfg,
                cell_seed(
                    cfg.seed,
                    &format!("plot|ttft|{}|{}|{d}", c.model, c.label()),
                ),
            );
            Bar {
                label: if several {
                    format!("{d}: {}", c.label())
                } else {
                    c.label()
                },
                key: series_key(c),
                parts: vec![
                    mean(Metric::PrefillMs),
                    mean(Metric::CompressMs),
                    mean(Metric::QuestionMs),
                ],
                total_ci: ci.map(|e| (e.lo, e.hi)),
            }
        })
        .collect();
    let keys: BTreeSet<String> = bars.iter().map(|b| b.key.clone()).collect();
    let mut legend: Vec<LegendEntry> = method_legend(&palette, &keys, false)
        .into_iter()
        .map(|mut e| {
            match e.swatch {
                Swatch::Dashed(c) | Swatch::Method { colour: c, .. } => e.swatch = Swatch::Box(c),
                _ => {}
            }
            e
        })
        .collect();
    legend.push(LegendEntry {
        swatch: Swatch::Heading,
        text: "part (shade)".into(),
    });
    for (text, shade) in [
        "prefill (context, shared)",
        "compression",
        "question + first token",
    ]
    .iter()
    .zip(SHADES)
    {
        legend.push(LegendEntry {
            swatch: Swatch::Box(tint(GREY, shade)),
            text: (*text).into(),
        });
    }
    legend.push(LegendEntry {
        swatch: Swatch::Interval,
        text: "95% CI of the total".into(),
    });
    let fig = StackedBars {
        title: "Time to first token, by part".into(),
        x_label: "time to first token (ms, mean over requests)".into(),
        bars,
        legend,
        palette: palette.clone(),
    };
    plots.push(save(&fig, dir, "ttft_breakdown", "TTFT breakdown", "Mean time to first token per dataset and configuration (datasets of different lengths are never averaged together), split into the shared context prefill, the compression step, and the question's prefill up to the first token.")?);

    // 5. Decode throughput vs context length, one panel per budget.
    let mut budgets: Vec<&Config> = agg.configs.iter().filter(|c| !c.budget.is_none()).collect();
    budgets.sort_by(|a, b| a.budget.cmp(&b.budget));
    let mut labels: Vec<String> = budgets.iter().map(|c| c.budget.label.clone()).collect();
    labels.dedup();
    if labels.is_empty() {
        labels.push(String::new());
    }
    let panels: Vec<Panel> = labels
        .iter()
        .map(|label| {
            let mut series: BTreeMap<&Config, Vec<Point>> = BTreeMap::new();
            for (c, rs) in &by_config {
                if !(c.budget.is_none() || &c.budget.label == label) {
                    continue;
                }
                let mut bins: BTreeMap<u64, Vec<&Record>> = BTreeMap::new();
                for r in rs {
                    bins.entry(length_bin(r)).or_default().push(r);
                }
                for (bin, rs) in bins {
                    let v: Vec<f64> = rs
                        .iter()
                        .filter_map(|r| Metric::DecodeTokS.value(r))
                        .collect();
                    let seed = cell_seed(
                        cfg.seed,
                        &format!("plot|decode|{}|{}|{bin}", c.model, c.label()),
                    );
                    if let Some(e) = mean_ci(&v, cfg, seed) {
                        let x = rs.iter().map(|r| r.context_tokens as f64).sum::<f64>()
                            / rs.len() as f64;
                        series.entry(c).or_default().push(Point {
                            x,
                            y: e.mean,
                            ci: Some((e.lo, e.hi)),
                            tag: None,
                        });
                    }
                }
            }
            Panel {
                title: if label.is_empty() {
                    "no budget".into()
                } else {
                    format!("budget {label}")
                },
                x_label: "context length (tokens)".into(),
                y_label: "decode speed (tokens/s)".into(),
                series: series
                    .into_iter()
                    .map(|(c, points)| Series {
                        key: series_key(c),
                        kind: SeriesKind::Line,
                        points,
                    })
                    .collect(),
                y_from_zero: true,
                empty_note: "no decode timings (every answer was one token)".into(),
                ..Default::default()
            }
        })
        .collect();
    let mut fig = line_figure("Decode throughput vs context length", panels, &palette, 2);
    for e in &mut fig.legend {
        if let Swatch::Dashed(c) = e.swatch {
            e.swatch = Swatch::Method {
                colour: c,
                marker: palette.marker(palette.baseline()),
            };
        }
    }
    plots.push(save(&fig, dir, "throughput_vs_context", "Decode throughput vs context length", "Greedy decode tokens per second after the first token, by context length (the dataset's target length, else the nearest power of two), one panel per budget; the uncompressed baseline appears in every panel.")?);

    // 6. Needle heat map.
    match super::needle::needle_figure(records, &configs, &agg.configs) {
        Some(fig) => plots.push(save(&fig, dir, "needle_heatmap", "Needle in a haystack", "Mean score per context length and needle depth (0 = start of the context), one panel per configuration.")?),
        None => skipped.push(("needle_heatmap".into(), "no needle-in-a-haystack records (none has a context length and depth)".into())),
    }

    // 8. The reuse study (only runs with `reuse:` have its records): TTFT vs context length.
    if let Some(fig) = super::reuse::ttft_figure(records) {
        plots.push(save(&fig, dir, "ttft_vs_context", "Time to first token: compute, load or both (Cake)", "Mean time to first token of a reused context against its length, one panel per stored form: prefill from scratch (compute), the stored cache read at each bandwidth cap (load), and Cake computing from the front while loading from the back. The cake_vs_bandwidth table gives the numbers and where the two halves met.")?);
    }

    // 7. Pareto front: score vs KV bytes per dataset.
    let mut panels = Vec::new();
    let mut datasets: Vec<&String> = agg.benchmarks.iter().map(|b| &b.dataset).collect();
    datasets.dedup();
    for d in datasets {
        let mut series: BTreeMap<String, Vec<Point>> = BTreeMap::new();
        let mut all_points = Vec::new();
        for b in agg.benchmarks.iter().filter(|b| &b.dataset == d) {
            let (Some(s), Some(kv)) = (b.stats.get(&Metric::Score), b.stats.get(&Metric::KvMib))
            else {
                continue;
            };
            let tag = (!b.config.budget.is_none()).then(|| b.config.budget.label.clone());
            let p = Point {
                x: kv.mean,
                y: s.mean,
                ci: Some((s.lo, s.hi)),
                tag,
            };
            all_points.push(p.clone());
            series.entry(series_key(&b.config)).or_default().push(p);
        }
        all_points.sort_by(|a, b| a.x.total_cmp(&b.x).then(b.y.total_cmp(&a.y)));
        let mut front = Vec::new();
        let mut best = f64::NEG_INFINITY;
        for p in all_points {
            if p.y > best {
                best = p.y;
                front.push(Point {
                    ci: None,
                    tag: None,
                    ..p
                });
            }
        }
        // Many configurations: budget labels only on the front, where they are worth reading.
        if series.values().map(|v| v.len()).sum::<usize>() > 12 {
            for p in series.values_mut().flatten() {
                if !front.iter().any(|f| f.x == p.x && f.y == p.y) {
                    p.tag = None;
                }
            }
        }
        let mut s: Vec<Series> = vec![Series {
            key: "Pareto front".into(),
            kind: SeriesKind::Front,
            points: front,
        }];
        let order: Vec<&String> = palette
            .methods()
            .iter()
            .filter(|m| series.contains_key(*m))
            .collect();
        for k in order {
            s.push(Series {
                key: k.clone(),
                kind: SeriesKind::Scatter,
                points: series[k].clone(),
            });
        }
        panels.push(Panel {
            title: format!("{d} (benchmark average)"),
            x_label: "KV cache (MiB, mean over samples)".into(),
            y_label: "score (task metric, 0-1)".into(),
            series: s,
            y_range: Some((-0.02, 1.02)),
            ..Default::default()
        });
    }
    let mut fig = line_figure(
        "Score vs KV cache size: the Pareto front",
        panels,
        &palette,
        2,
    );
    for e in &mut fig.legend {
        if let Swatch::Dashed(c) = e.swatch {
            e.swatch = Swatch::Method {
                colour: c,
                marker: palette.marker(palette.baseline()),
            };
        }
    }
    fig.legend.retain(|e| !e.text.starts_with("Pareto"));
    fig.legend.push(LegendEntry {
        swatch: Swatch::Line(GREY),
        text: "Pareto front".into(),
    });
    plots.push(save(&fig, dir, "pareto", "Score vs KV bytes (Pareto front)", "Each configuration's benchmark-average score against the KV cache it kept; the grey steps join the configurations no other one beats with less memory. Labels: budgets.")?);

    Ok((plots, skipped))
}

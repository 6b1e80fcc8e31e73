//! `report.html`: one self-contained page (styles inline, plots embedded as base64 PNG) that
//! opens from disk with no server: what ran (experiment, model, datasets, device, versions), the
//! plots, the tables, and the configuration.

use std::fmt::Write as _;

use crate::merge::{sample_fingerprint, Merged};
use crate::plots::PlotFile;
use crate::tables::{Kind, Table};

/// What the page says about how it was made.
#[derive(Clone, Debug, Default)]
pub struct PageInfo {
    pub title: String,
    pub baseline: String,
    pub seed: u64,
    pub resamples: usize,
    /// Version and git commit of the kvbench that wrote the report.
    pub generator: String,
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:0;color:#1a1a1a;background:#fff}
main{max-width:1240px;margin:0 auto;padding:8px 24px 48px}
h1{font-size:1.7em;margin:.6em 0 .2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
nav a{margin-right:1em}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}
th,td{padding:3px 8px;border-bottom:1px solid #e4e4e4;text-align:left;white-space:nowrap;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f4f4f4;position:sticky;top:0}
tbody tr:nth-child(even){background:#fafafa}
.scroll{overflow-x:auto;max-height:640px;overflow-y:auto;border:1px solid #e4e4e4}
.note{color:#555;font-size:13px;max-width:1100px}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#444;font-size:14px;max-width:1100px}
.warn{background:#fff4e5;border-left:4px solid #e69f00;padding:6px 12px}
pre{background:#f6f6f6;padding:10px;overflow-x:auto;font-size:13px}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:2px 16px}dl.facts dt{font-weight:600}dl.facts dd{margin:0}
@page{size:A4 landscape;margin:8mm}
@media print{
main{max-width:none;padding:0}nav{display:none}
.scroll{overflow:visible;max-height:none;border:none}
table{width:100%;table-layout:auto;font-size:7pt;margin:.3em 0}
th,td{white-space:normal;overflow-wrap:anywhere;padding:1px 3px}
th{position:static}thead{display:table-header-group}tr{break-inside:avoid}
figure{break-inside:avoid}h2{break-after:avoid}
}
";

fn table_html(t: &Table, out: &mut String) {
    let (shown, constants) = t.shown_columns();
    let _ = writeln!(
        out,
        "<section id=\"table-{}\" class=\"table\">",
        escape(&t.name)
    );
    let _ = writeln!(out, "<h3>{}</h3>", escape(&t.title));
    let _ = writeln!(
        out,
        "<p>Files: {}</p>",
        ["md", "csv", "parquet", "tex"]
            .map(|e| format!("<a href=\"tables/{0}.{e}\">{0}.{e}</a>", escape(&t.name)))
            .join(" · ")
    );
    out.push_str("<div class=\"scroll\"><table><thead><tr>");
    for &i in &shown {
        let _ = write!(out, "<th>{}</th>", escape(&t.columns[i].header));
    }
    out.push_str("</tr></thead><tbody>\n");
    for row in &t.rows {
        out.push_str("<tr>");
        for &i in &shown {
            let kind = t.columns[i].kind;
            let class = if matches!(kind, Kind::Text) {
                ""
            } else {
                " class=\"num\""
            };
            let _ = write!(out, "<td{class}>{}</td>", escape(&row[i].display(kind)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div>");
    let mut note = t.note.clone();
    if !constants.is_empty() {
        note += &format!(" {constants}.");
    }
    let _ = writeln!(out, "<p class=\"note\">{}</p></section>", escape(&note));
}

fn facts(merged: &Merged, info: &PageInfo, out: &mut String) {
    let recs = &merged.records;
    let uniq = |f: &dyn Fn(&crate::Record) -> String| -> String {
        let mut v: Vec<String> = recs.iter().map(f).collect();
        v.sort();
        v.dedup();
        v.join(", ")
    };
    let mut datasets: Vec<&str> = recs.iter().map(|r| r.dataset.as_str()).collect();
    datasets.sort();
    datasets.dedup();
    let datasets: Vec<String> = datasets
        .iter()
        .map(|d| {
            let rs: Vec<&crate::Record> = recs.iter().filter(|r| r.dataset == *d).collect();
            let mut samples: Vec<&str> = rs.iter().map(|r| r.sample_id.as_str()).collect();
            samples.sort();
            samples.dedup();
            format!(
                "{d} ({} samples, fingerprint {})",
                samples.len(),
                sample_fingerprint(rs.into_iter())
            )
        })
        .collect();
    let mut rows: Vec<(&str, String)> = vec![
        ("experiment", uniq(&|r| r.experiment.clone())),
        ("model", uniq(&|r| r.model.clone())),
        ("datasets", datasets.join("; ")),
        ("device", uniq(&|r| r.device.clone())),
        ("kvbench (runs)", uniq(&|r| r.kvbench_version.clone())),
        ("kvbench (report)", info.generator.clone()),
        (
            "records",
            format!(
                "{} from {} file(s), {} duplicate key(s) left out",
                recs.len(),
                merged.sources.len(),
                merged.duplicates.len()
            ),
        ),
        ("baseline", info.baseline.clone()),
        (
            "intervals",
            format!(
                "95% percentile bootstrap, {} resamples, seed {}",
                info.resamples, info.seed
            ),
        ),
    ];
    for (s, label, _) in source_groups(&merged.sources) {
        if let Some(m) = &s.manifest {
            let commit = m
                .get("git_commit")
                .and_then(|v| v.as_str())
                .unwrap_or("unknown");
            let files: Vec<String> = m
                .get("model_files")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .map(|f| {
                            let name = f.get("file").and_then(|v| v.as_str()).unwrap_or("?");
                            let sha = f.get("sha256").and_then(|v| v.as_str()).unwrap_or("?");
                            format!("{name} sha256 {}", &sha[..sha.len().min(16)])
                        })
                        .collect()
                })
                .unwrap_or_default();
            rows.push((
                "run",
                format!(
                    "{label}: git commit {commit}; model files: {}",
                    files.join(", ")
                ),
            ));
        }
    }
    out.push_str("<dl class=\"facts\">\n");
    for (k, v) in rows {
        let _ = writeln!(out, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(&v));
    }
    out.push_str("</dl>\n");
}

/// Sources with the same `experiment.yaml` and `run.json` (the shards of one run) as one entry:
/// the first source, a label naming its files, and their records together, so a run of 10,000
/// shards is one configuration, not 10,000.
fn source_groups(sources: &[crate::merge::Source]) -> Vec<(&crate::merge::Source, String, usize)> {
    let mut groups: Vec<(&crate::merge::Source, Vec<&crate::merge::Source>)> = Vec::new();
    for s in sources {
        let same = |g: &&crate::merge::Source| {
            g.experiment_yaml == s.experiment_yaml
                && g.manifest == s.manifest
                && g.results.parent() == s.results.parent()
        };
        match groups.iter_mut().find(|(first, _)| same(first)) {
            Some((_, members)) => members.push(s),
            None => groups.push((s, vec![s])),
        }
    }
    groups
        .into_iter()
        .map(|(first, members)| {
            let records = members.iter().map(|m| m.records).sum();
            let label = match members.len() {
                1 => first.results.display().to_string(),
                n => format!(
                    "{} and {} more file(s) beside it",
                    first.results.display(),
                    n - 1
                ),
            };
            (first, label, records)
        })
        .collect()
}

/// The whole page. `plots` are read from disk to be embedded.
pub fn render(
    merged: &Merged,
    tables: &[Table],
    plots: &[PlotFile],
    skipped: &[(String, String)],
    info: &PageInfo,
) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body><main>\n",
        escape(&info.title)
    );
    let _ = writeln!(out, "<h1>{}</h1>", escape(&info.title));
    out.push_str("<nav><a href=\"#run\">Run</a><a href=\"#plots\">Plots</a><a href=\"#tables\">Tables</a><a href=\"#configuration\">Configuration</a></nav>\n");
    out.push_str("<h2 id=\"run\">Run</h2>\n");
    facts(merged, info, &mut out);
    if !merged.duplicates.is_empty() {
        let identical = merged.duplicates.iter().filter(|d| d.identical).count();
        let _ = writeln!(
            out,
            "<p class=\"warn\">{} record key(s) appeared more than once ({identical} identical copies, {} differing re-runs); each key is counted once, from the first file given.</p>",
            merged.duplicates.len(),
            merged.duplicates.len() - identical
        );
        out.push_str("<details><summary>duplicate keys</summary><ul>\n");
        for d in merged.duplicates.iter().take(200) {
            let _ = writeln!(
                out,
                "<li><code>{}</code>: kept from {}, dropped from {}{}</li>",
                escape(&d.key),
                escape(&d.kept.display().to_string()),
                escape(&d.dropped.display().to_string()),
                if d.identical {
                    " (identical)"
                } else {
                    " (differs)"
                }
            );
        }
        out.push_str("</ul></details>\n");
    }

    out.push_str("<h2 id=\"plots\">Plots</h2>\n");
    for p in plots {
        let png = std::fs::read(&p.png).unwrap_or_default();
        let _ = writeln!(
            out,
            "<figure id=\"plot-{name}\"><img src=\"data:image/png;base64,{data}\" alt=\"{title}\" width=\"{w}\" height=\"{h}\" data-file=\"plots/{name}.png\"><figcaption><b>{title}.</b> {caption} Files: <a href=\"plots/{name}.png\">{name}.png</a> · <a href=\"plots/{name}.svg\">{name}.svg</a></figcaption></figure>",
            name = escape(&p.name),
            data = base64(&png),
            title = escape(&p.title),
            caption = escape(&p.caption),
            w = p.width,
            h = p.height,
        );
    }
    for (name, why) in skipped {
        let _ = writeln!(
            out,
            "<p class=\"note\">Not drawn: {}: {}.</p>",
            escape(name),
            escape(why)
        );
    }

    out.push_str("<h2 id=\"tables\">Tables</h2>\n");
    for t in tables {
        table_html(t, &mut out);
    }

    out.push_str("<h2 id=\"configuration\">Configuration</h2>\n");
    for (s, label, records) in source_groups(&merged.sources) {
        let _ = writeln!(out, "<h3>{}</h3>", escape(&label));
        let _ = writeln!(out, "<p class=\"note\">{records} record(s).</p>");
        match &s.experiment_yaml {
            Some(y) => {
                let _ = writeln!(out, "<pre>{}</pre>", escape(y));
            }
            None => out.push_str("<p class=\"note\">No experiment.yaml beside this file.</p>\n"),
        }
        if let Some(m) = &s.manifest {
            let _ = writeln!(
                out,
                "<details><summary>run.json</summary><pre>{}</pre></details>",
                escape(&serde_json::to_string_pretty(m).unwrap_or_default())
            );
        }
    }
    out.push_str("</main></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_tables_wrap_when_printed_instead_of_scrolling_out_of_the_page() {
        let print = &STYLE[STYLE.find("@media print").expect("a print style")..];
        // The screen's scroll box would cut columns off a printed page: printing lifts it, lets
        // cells wrap and shrinks the type.
        for rule in [
            "overflow:visible",
            "max-height:none",
            "white-space:normal",
            "width:100%",
        ] {
            assert!(print.contains(rule), "print CSS lacks {rule}");
        }
        assert!(STYLE.contains("size:A4 landscape"));
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }
}

//! The listings: `kvbench methods`, `kvbench datasets`, `kvbench models` and the files
//! `kvbench fetch MODEL` resolved.

use std::fmt::Write;

use anyhow::Result;
use kvbench::fetch::ModelFiles;

/// `kvbench methods [--json]`: every method with its parameters, then the presets.
pub fn methods(json: bool) -> Result<String> {
    if json {
        return Ok(serde_json::to_string_pretty(&*kvbench_methods::METHODS)? + "\n");
    }
    let mut out = String::new();
    for m in kvbench_methods::METHODS.iter() {
        let params: Vec<String> = m
            .params
            .iter()
            .map(|p| format!("{}={}", p.name, p.default))
            .collect();
        let _ = writeln!(
            out,
            "{:<16} {:<10} {}  [{}] {}",
            m.name,
            m.family,
            m.summary,
            params.join(", "),
            m.paper
        );
    }
    out += "\npresets (`preset: NAME` on a method entry or for the whole experiment):\n";
    for p in kvbench::presets::PRESETS {
        let covered: Vec<&str> = (p.methods)().iter().map(|(m, _)| *m).collect();
        let _ = writeln!(
            out,
            "{:<20} {} [{}]\n{:<20} source: {}",
            p.name,
            p.about,
            covered.join(", "),
            "",
            p.source
        );
    }
    out += "\none method in full: kvbench methods NAME\n";
    Ok(out)
}

/// `kvbench datasets [--json]`.
pub fn datasets(json: bool) -> Result<String> {
    if json {
        return Ok(serde_json::to_string_pretty(kvbench_datasets::DATASETS)? + "\n");
    }
    let mut out = String::new();
    for d in kvbench_datasets::DATASETS {
        let _ = writeln!(out, "{:<12} {:<10?} {}", d.name, d.source, d.summary);
    }
    out += "\none dataset with its options and inputs: kvbench datasets NAME\n";
    Ok(out)
}

/// `kvbench fetch MODEL`: the files, one per line, labelled.
pub fn files(files: &ModelFiles) -> String {
    match files {
        ModelFiles::Synthetic { shape, tokenizer } => format!(
            "synthetic: {shape} (random weights, built on the device)\n{}",
            self::files(tokenizer)
                .lines()
                .map(|l| format!("tokenizer from {l}\n"))
                .collect::<String>()
        ),
        ModelFiles::Gguf { path } => format!("gguf: {}\n", path.display()),
        ModelFiles::HfCheckpoint {
            config,
            weights,
            tokenizer,
            tokenizer_config,
            generation_config,
        } => {
            let mut out = format!("config: {}\n", config.display());
            for w in weights {
                out += &format!("weights: {}\n", w.display());
            }
            out += &format!("tokenizer: {}\n", tokenizer.display());
            for (label, p) in [
                ("tokenizer_config", tokenizer_config),
                ("generation_config", generation_config),
            ] {
                if let Some(p) = p {
                    out += &format!("{label}: {}\n", p.display());
                }
            }
            out
        }
    }
}

/// `kvbench models`: aliases with size and first source, then the families.
pub fn models(json: bool) -> Result<String> {
    let aliases = kvbench::fetch::aliases();
    let families = kvbench::model::supported_families();
    if json {
        let v = serde_json::json!({
            "aliases": aliases.iter().map(|a| serde_json::json!({
                "name": a.name,
                "file": a.file_name,
                "bytes": a.size,
                "sha256": a.sha256,
                "description": a.description,
                "sources": a.sources.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "families": families.iter().map(|(types, what)| serde_json::json!({
                "model_type": types,
                "supports": what,
            })).collect::<Vec<_>>(),
            "synthetic": kvbench::model::synthetic::shapes().iter().map(|(name, copies)| serde_json::json!({
                "name": format!("{}{name}", kvbench::model::synthetic::PREFIX),
                "copies": copies,
            })).collect::<Vec<_>>(),
        });
        return Ok(serde_json::to_string_pretty(&v)? + "\n");
    }
    let mut out = String::from("registry aliases (kvbench fetch NAME, or `model: NAME`):\n");
    for a in aliases {
        out += &format!(
            "  {:<28} {:>8.1} MB  {}\n",
            a.name,
            a.size as f64 / 1e6,
            a.description
        );
    }
    out += "\nmodel families (config.json model_type / GGUF general.architecture):\n";
    for (types, what) in &families {
        out += &format!("  {types:<28} {what}\n");
    }
    out += "\nany other checkpoint: `hf:ORG/REPO[@REV]` or a local path of one of these families\n";
    out +=
        "\nsynthetic models (random weights of a real shape, `kvbench bench --model NAME` only):\n";
    for (name, copies) in kvbench::model::synthetic::shapes() {
        let name = format!("{}{name}", kvbench::model::synthetic::PREFIX);
        out += &format!("  {name:<28} {copies}\n");
    }
    Ok(out)
}

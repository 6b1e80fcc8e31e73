//! `kvbench methods NAME` and `kvbench datasets NAME`: one entry with every parameter, its
//! default and help, and how to write it in an experiment.

use anyhow::{bail, Result};
use kvbench_datasets::options;
use kvbench_methods::{method_names, MethodConfig, METHODS};

/// One registered method, every parameter with its default, the YAML to use it and the presets
/// that configure it.
pub fn method(name: &str) -> Result<String> {
    let Some(m) = METHODS.iter().find(|m| m.name == name) else {
        bail!(
            "unknown method `{name}`; registered methods: {}",
            method_names().join(", ")
        );
    };
    let mut out = format!("{} ({})\n  {}\n", m.name, m.family, m.summary);
    if !m.paper.is_empty() {
        out += &format!("  paper: {}\n", m.paper);
    }
    let budget = MethodConfig::registered_defaults()
        .into_iter()
        .find(|c| c.build().name() == name)
        .map(|c| c.build().uses_budget());
    out += match budget {
        Some(true) => "  budget: yes, it runs once per entry of `budgets:`\n",
        Some(false) => "  budget: no, it runs once (budgets do not apply)\n",
        None => "",
    };
    out += "\nparameters:\n";
    if m.params.is_empty() {
        out += "  (none)\n";
    }
    let width = m.params.iter().map(|p| p.name.len()).max().unwrap_or(0);
    for p in &m.params {
        out += &format!(
            "  {:<width$}  {} ({})\n  {:<width$}  {}\n",
            p.name,
            p.kind,
            default_label(&p.default),
            "",
            p.help
        );
    }
    out += "\nin an experiment:\n  methods:\n";
    out += &format!("    - {name}                # its defaults (shorthand)\n");
    out += &format!("    - method: {name}\n");
    for p in &m.params {
        if p.default == "(required)" {
            out += &format!("      {}: ...            # required ({})\n", p.name, p.kind);
        } else {
            out += &format!("      {}: {}\n", p.name, p.default);
        }
    }
    out += &format!(
        "  composed with another: `- [{name}, kivi]` (applied in order, recorded `{name}+kivi`)\n"
    );
    out += &format!("  from the command line: `kvbench run EXP.yaml --methods full,{name}`\n");
    let presets: Vec<String> = kvbench::presets::PRESETS
        .iter()
        .filter_map(|p| {
            (p.methods)()
                .into_iter()
                .find(|(m, _)| *m == name)
                .map(|(_, cfg)| format!("  {:<20} {cfg}", p.name))
        })
        .collect();
    if !presets.is_empty() {
        out += "\npresets (`- {method: NAME, preset: P}` or a top-level `preset: P`):\n";
        out += &presets.join("\n");
        out += "\n";
    }
    Ok(out)
}

/// One registered dataset: tasks, options with defaults, inputs and an example entry.
pub fn dataset(name: &str) -> Result<String> {
    let Some(d) = kvbench_datasets::registry::describe(name) else {
        bail!(
            "unknown dataset `{name}`; registered datasets: {}",
            kvbench_datasets::dataset_names().join(", ")
        );
    };
    let mut out = format!("{} ({:?})\n  {}\n", d.name, d.source, d.summary);
    if let Some(h) = options::help(name) {
        out += &format!("\ninputs:\n  {}\n", h.inputs);
        out += "\noptions:\n";
        let width = h.options.iter().map(|o| o.name.len()).max().unwrap_or(0);
        for o in h.options {
            out += &format!(
                "  {:<width$}  {} ({})\n  {:<width$}  {}\n",
                o.name,
                o.kind,
                default_label(o.default),
                "",
                o.help
            );
        }
        out += "\nin an experiment:\n  datasets:\n";
        for l in h.example.lines() {
            out += &format!("    {l}\n");
        }
    }
    if d.tasks.is_empty() {
        out += &format!(
            "\ntasks: from the data (default metric {:?}, max_new_tokens {})\n",
            d.metric, d.max_new_tokens
        );
    } else {
        out += "\ntasks (metric, max_new_tokens):\n";
        for t in d.tasks {
            out += &format!("  {:<30} {:?}, {}\n", t.name, t.metric, t.max_new_tokens);
        }
    }
    Ok(out)
}

/// `default 32`, or `required`.
fn default_label(default: &str) -> String {
    if default == "(required)" {
        "required".into()
    } else {
        format!("default {default}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_and_dataset_has_an_entry() {
        for m in METHODS.iter() {
            let text = method(m.name).unwrap();
            for p in &m.params {
                assert!(text.contains(p.name), "{}: {}\n{text}", m.name, p.name);
            }
        }
        for d in kvbench_datasets::DATASETS {
            dataset(d.name).unwrap();
        }
        let err = method("snapkvv").unwrap_err().to_string();
        assert!(err.contains("snapkv, ") || err.contains("snapkv"), "{err}");
        let err = dataset("nia").unwrap_err().to_string();
        assert!(err.contains("niah"), "{err}");
    }
}

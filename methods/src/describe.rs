//! How a method describes itself for `kvbench methods` and `--json`: each method's file implements
//! [`Describe`] next to its config struct (family, summary, paper, one [`Param`] per config field);
//! the registry assembles the [`MethodDescription`]s, filling each parameter's default from the
//! config's `Default` (serialized with serde_json), so defaults are written once, in the code.

use serde::Serialize;

/// A method's own description, written in its file (`impl Describe for SnapKv`).
pub trait Describe {
    const DESCRIPTION: Description;
}

/// What a method's file writes about itself; its name is the one it is registered under.
#[derive(Clone, Copy, Debug)]
pub struct Description {
    /// The family (`scorer`, `allocator`, `merging`, `quantization`, ...).
    pub family: &'static str,
    pub summary: &'static str,
    /// The paper implemented (empty for baselines and utilities).
    pub paper: &'static str,
    /// One entry per field of the config struct, in the order `kvbench methods` shows them.
    pub params: &'static [Param],
}

/// One field of a method's config struct.
#[derive(Clone, Copy, Debug)]
pub struct Param {
    pub name: &'static str,
    /// The YAML type (`integer`, `number`, `boolean`, `scorer`, `max|avg`, ...).
    pub kind: &'static str,
    pub help: &'static str,
    /// No default: the experiment must give it (`per_layer`'s `ratios`).
    pub required: bool,
}

impl Param {
    pub const fn new(name: &'static str, kind: &'static str, help: &'static str) -> Self {
        Param {
            name,
            kind,
            help,
            required: false,
        }
    }

    pub const fn required(name: &'static str, kind: &'static str, help: &'static str) -> Self {
        Param {
            name,
            kind,
            help,
            required: true,
        }
    }
}

/// One parameter of a registered method, for `kvbench methods --json`.
#[derive(Clone, Debug, Serialize)]
pub struct ParamDescription {
    pub name: &'static str,
    pub kind: &'static str,
    /// Generated from the config's `Default` (`(required)` for a required field).
    pub default: String,
    pub help: String,
}

/// A registered method, for `kvbench methods`.
#[derive(Clone, Debug, Serialize)]
pub struct MethodDescription {
    pub name: &'static str,
    pub family: &'static str,
    pub summary: &'static str,
    pub paper: &'static str,
    pub params: Vec<ParamDescription>,
}

/// The full description of the method registered as `name`, whose default configuration
/// serializes to `defaults`; `scorers` completes the help of `scorer` parameters.
pub(crate) fn assemble(
    name: &'static str,
    d: &Description,
    defaults: &serde_json::Value,
    scorers: &[&str],
) -> MethodDescription {
    let params = d
        .params
        .iter()
        .map(|p| ParamDescription {
            name: p.name,
            kind: p.kind,
            default: if p.required {
                "(required)".to_string()
            } else {
                render(defaults.get(p.name).unwrap_or(&serde_json::Value::Null))
            },
            help: if p.kind == "scorer" {
                format!(
                    "{}: {{method: NAME, ...}} with any of {}",
                    p.help,
                    scorers.join(", ")
                )
            } else {
                p.help.to_string()
            },
        })
        .collect();
    MethodDescription {
        name,
        family: d.family,
        summary: d.summary,
        paper: d.paper,
        params,
    }
}

/// A default as `kvbench methods` shows it: strings bare, everything else as compact JSON.
fn render(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

//! How a method describes itself for `kvbench methods` and `--json`: each method's file implements
//! [`Describe`] next to its config struct (family, summary, paper, one [`Param`] per config field);
//! the registry assembles the [`MethodDescription`]s, filling each parameter's default from the
//! config's `Default` (serialized with serde_json), so defaults are written once, in the code.

use serde::Serialize;

/// A method's own description, written in its file (`impl Describe for SnapKv`).
pub trait Describe {
    const DESCRIPTION: Description;

    /// What `tests/conformance.rs` checks for this method: the default suits a method that keeps
    /// `budget.kept(len)` entries per layer and head and runs on the test's tiny cache with its
    /// defaults; a method that allocates otherwise, or needs other parameters, overrides it.
    fn conformance() -> Conformance {
        Conformance::default()
    }
}

/// How many entries a method keeps at prefill, as `tests/conformance.rs` checks it (the test's
/// cache: 3 layers, 2 KV heads, 64 entries).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Expect {
    /// Every layer and head keeps `budget.kept(len)`.
    #[default]
    Uniform,
    /// Nothing is evicted at prefill.
    Unchanged,
    /// Per head index, the layers add up to `layers x budget.kept(len)`; heads of a layer agree.
    PerLayerTotal,
    /// Per layer, the heads add up to `kv_heads x budget.kept(len)`, each at least `floor x kept`.
    PerHeadTotal { floor: f64 },
    /// Layer `l` keeps `floor(len (1 - ratios[l]))` per head, whatever the budget.
    Ratios(Vec<f64>),
    /// A storage method (cross-layer, cross-head, channels, low rank): no budget, every entry
    /// stays readable at its position, in fewer bytes than dense.
    Storage,
}

/// A method's conformance expectations, declared in its own file (`Describe::conformance`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Conformance {
    pub expect: Expect,
    /// Parameters (a JSON object; `Null` for none) set over the defaults in the test's run of the
    /// registered method, for defaults that do not fit its tiny cache (`kivi`'s `group`).
    pub params: serde_json::Value,
    /// Further configurations to run through the test, each a JSON method spec
    /// (`{"method": "chunk", "chunk_size": 5}`), to exercise other code paths.
    pub extra_specs: Vec<serde_json::Value>,
}

impl Conformance {
    /// The default (uniform, default parameters, no extra specs) with `expect`.
    pub fn expect(expect: Expect) -> Self {
        Conformance {
            expect,
            ..Conformance::default()
        }
    }

    /// Run the registered method with `params` (a JSON object) over its defaults.
    pub fn with_params(mut self, params: serde_json::Value) -> Self {
        self.params = params;
        self
    }

    /// Also run each of `specs` (JSON method specs).
    pub fn with_specs(mut self, specs: impl IntoIterator<Item = serde_json::Value>) -> Self {
        self.extra_specs.extend(specs);
        self
    }
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
    /// What the conformance test checks (`Describe::conformance`); not shown to users.
    #[serde(skip)]
    pub conformance: Conformance,
}

/// The full description of the method registered as `name`, whose default configuration
/// serializes to `defaults`; `scorers` completes the help of `scorer` parameters.
pub(crate) fn assemble(
    name: &'static str,
    d: &Description,
    conformance: Conformance,
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
        conformance,
    }
}

/// A default as `kvbench methods` shows it: strings bare, everything else as compact JSON.
fn render(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

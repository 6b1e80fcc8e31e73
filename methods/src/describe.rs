//! How a method describes itself for `kvbench methods` and `--json`: each method's file implements
//! [`Describe`] next to its config struct (family, summary, paper, one [`Param`] per config field);
//! the registry assembles the [`MethodDescription`]s, filling each parameter's default from the
//! config's `Default` (serialized with serde_json), so defaults are written once, in the code.

use serde::Serialize;

/// A method's own description, written in its file (`impl Describe for SnapKv`).
pub trait Describe {
    const DESCRIPTION: Description;

    /// What `tests/conformance/` checks for this method: the default suits a method that keeps
    /// `budget.kept(len)` entries per layer and head, keeps their rows bit for bit, evicts nothing
    /// while decoding and runs on the test's tiny cache with its defaults; a method that does
    /// otherwise, or needs other parameters, overrides it.
    fn conformance() -> Conformance {
        Conformance::default()
    }
}

/// How many entries a method keeps at prefill, as `tests/conformance/` checks it (the test's
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

/// How the stored rows of the kept entries read back, as `tests/conformance/` compares them
/// with the originals.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Rows {
    /// Keys and values are the original rows, bit for bit, in exactly the bytes dense rows need.
    #[default]
    Verbatim,
    /// Keys verbatim; values rewritten (evicted values merged into the kept ones: `cam`).
    ValuesRewritten,
    /// Keys and values rewritten (entries merged together: `kvmerger`).
    Rewritten,
    /// Rounded (quantization) to the bit width of the parameter named `bits`: every row within
    /// half a quantization step of the original, in fewer bytes than dense.
    Quantized { bits: &'static str },
}

impl Rows {
    /// Keys are compared with the originals (bit for bit, or within the rounding).
    pub fn keys_compared(&self) -> bool {
        !matches!(self, Rows::Rewritten)
    }
    /// Values are compared with the originals (bit for bit, or within the rounding).
    pub fn values_compared(&self) -> bool {
        matches!(self, Rows::Verbatim | Rows::Quantized { .. })
    }
}

/// How many entries the cache holds after the test's decode steps (4 generated tokens after the
/// prefill, each appended to every layer and KV head before the decode hook runs).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum AfterDecode {
    /// Nothing is evicted while generating: the prefill's entries plus one per token, layer and
    /// head.
    #[default]
    Appends,
    /// The cache stays at its size after the prefill (`h2o`'s decode variant).
    Held,
    /// Every layer and head holds exactly this many entries (`decoding`'s `target_size`).
    PerHead(usize),
}

/// A further configuration run through the test, with the expectations it changes.
#[derive(Clone, Debug, PartialEq)]
pub struct ExtraSpec {
    /// A JSON method spec (`{"method": "chunk", "chunk_size": 5}`).
    pub spec: serde_json::Value,
    /// Replaces the method's `after_decode` for this configuration.
    pub after_decode: Option<AfterDecode>,
}

/// A method's conformance expectations, declared in its own file (`Describe::conformance`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Conformance {
    pub expect: Expect,
    /// How the kept rows read back.
    pub rows: Rows,
    /// How many entries decoding leaves.
    pub after_decode: AfterDecode,
    /// Parameters (a JSON object; `Null` for none) set over the defaults in the test's run of the
    /// registered method, for defaults that do not fit its tiny cache (`kivi`'s `group`).
    pub params: serde_json::Value,
    /// Further configurations to run through the test, to exercise other code paths; each is
    /// checked against the method's expectations, `after_decode` replaced where it says so.
    pub extra_specs: Vec<ExtraSpec>,
}

impl Conformance {
    /// The default (uniform, rows verbatim, decoding appends, default parameters, no extra specs)
    /// with `expect`.
    pub fn expect(expect: Expect) -> Self {
        Conformance {
            expect,
            ..Conformance::default()
        }
    }

    /// The kept rows read back as `rows` says.
    pub fn with_rows(mut self, rows: Rows) -> Self {
        self.rows = rows;
        self
    }

    /// Decoding leaves the entries `after_decode` says.
    pub fn with_after_decode(mut self, after_decode: AfterDecode) -> Self {
        self.after_decode = after_decode;
        self
    }

    /// Run the registered method with `params` (a JSON object) over its defaults.
    pub fn with_params(mut self, params: serde_json::Value) -> Self {
        self.params = params;
        self
    }

    /// Also run each of `specs` (JSON method specs), under the method's expectations.
    pub fn with_specs(mut self, specs: impl IntoIterator<Item = serde_json::Value>) -> Self {
        self.extra_specs
            .extend(specs.into_iter().map(|spec| ExtraSpec {
                spec,
                after_decode: None,
            }));
        self
    }

    /// Also run `spec`, expecting `after_decode` of it instead of the method's.
    pub fn with_spec_after_decode(
        mut self,
        spec: serde_json::Value,
        after_decode: AfterDecode,
    ) -> Self {
        self.extra_specs.push(ExtraSpec {
            spec,
            after_decode: Some(after_decode),
        });
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

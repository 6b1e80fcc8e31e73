//! Experiment files in two steps: the raw YAML as written, then a validated plan (the grid of
//! dataset x method x budget) with errors that name the file, line, field and valid choices.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kvbench_datasets::{ChatTemplateMode, DatasetConfig};
use kvbench_methods::{method_names, Budget, MethodSpec, ParamError};
use serde::{Deserialize, Serialize};

use crate::fetch::ModelSpec;
use crate::overrides::Overrides;

/// An experiment exactly as written in YAML.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExperiment {
    /// Name recorded in every result line.
    pub experiment: String,
    /// Registry alias, `hf:ORG/REPO[@REV]`, a local path, or `synthetic:SHAPE` (random weights
    /// of a real shape: timings and memory at scale, scores meaningless).
    pub model: String,
    /// With a synthetic model only: the model whose tokenizer and chat template to use (any
    /// model spec; its vocabulary must fit the synthetic model's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// `auto`, `cpu`, `cuda` or `cuda:N`; the command line overrides it.
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub seed: u64,
    /// Default preset of every method entry that names none (`kvpress`, `kvpress_leaderboard`,
    /// `kvcache_factory`; see `presets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    pub datasets: Vec<DatasetConfig>,
    /// Each entry is one method map or a list of them, applied in order (`[A, B]`, recorded `a+b`).
    pub methods: Vec<MethodSpec>,
    /// Budgets for every method that takes one; `full` runs once without.
    #[serde(default)]
    pub budgets: Vec<Budget>,
    /// Also (or only) compress after the question is appended: `[false]` (default), `[true]`,
    /// or `[false, true]` for both as a separate axis.
    #[serde(default = "default_query_aware")]
    pub query_aware: Vec<bool>,
    /// Queries per attention chunk during prefill (bounds the score buffer).
    #[serde(default = "default_chunk")]
    pub attention_chunk: usize,
    /// Reuse stored context caches and measure the way to the first token (`crate::reuse`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::reuse::deserialize_option"
    )]
    pub reuse: Option<crate::reuse::ReuseConfig>,
    /// Decode all method runs of a sample's split in lockstep as one batch (default); `false`
    /// decodes them one after another, for debugging (`--set batch_decoding=false`). Records are
    /// the same either way (timings and peak memory aside).
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub batch_decoding: bool,
}

fn default_true() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}

fn default_query_aware() -> Vec<bool> {
    vec![false]
}
fn default_chunk() -> usize {
    512
}

/// One method x budget x query-awareness cell of the grid.
#[derive(Clone, Debug)]
pub struct MethodRun {
    pub config: MethodSpec,
    pub budget: Option<Budget>,
    pub query_aware: bool,
    /// With `reuse:`, how this cell reaches its first token (`None` without reuse).
    pub access: Option<crate::reuse::Access>,
}

/// A synthetic model takes its tokenizer from the experiment's `tokenizer:` field, which only
/// a synthetic model may have.
fn attach_tokenizer(
    model: &mut ModelSpec,
    tokenizer: Option<&str>,
    text: &str,
    path: &Path,
) -> Result<()> {
    let line = |key| at(path, line_of(text, key));
    match (model, tokenizer) {
        (
            ModelSpec::Synthetic {
                tokenizer: slot, ..
            },
            Some(t),
        ) => {
            let spec: ModelSpec = t
                .parse()
                .map_err(|e| anyhow::anyhow!("{}: field `tokenizer`: {e}", line("tokenizer:")))?;
            if matches!(spec, ModelSpec::Synthetic { .. }) {
                bail!(
                    "{}: field `tokenizer`: `{t}` has no tokenizer of its own; name a real model",
                    line("tokenizer:")
                );
            }
            *slot = Some(Box::new(spec));
        }
        (ModelSpec::Synthetic { .. }, None) => bail!(
            "{}: field `model`: a synthetic model has random weights and no tokenizer; add \
             `tokenizer: MODEL` naming the model whose tokenizer and chat template to use (e.g. \
             `tokenizer: smollm2-135m-instruct-q4_1`)",
            line("model:")
        ),
        (_, Some(_)) => bail!(
            "{}: field `tokenizer` is only for a synthetic model (`model: synthetic:SHAPE`); a \
             real model brings its own tokenizer: remove the field",
            line("tokenizer:")
        ),
        (_, None) => {}
    }
    Ok(())
}

/// A validated experiment.
#[derive(Clone, Debug)]
pub struct Plan {
    pub source: PathBuf,
    pub raw: RawExperiment,
    pub model: ModelSpec,
    pub runs: Vec<MethodRun>,
    /// What the user should know but is not an error (a parameter overriding a preset's; the
    /// degenerate settings [`crate::checks`] finds start with `warning: `).
    pub notes: Vec<String>,
    /// The command-line overrides applied to the file (`--methods ...`), if any: errors found
    /// later then name no line of the file (it no longer says what runs) but the overrides.
    pub overridden_by: Option<String>,
}

/// 1-based line of the first occurrence of `needle` in `text`, to point errors at the YAML.
pub(crate) fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

/// 1-based line of each entry of the top-level `methods:` list (block style, `  - ...` lines at
/// the list's indentation), in order; empty when the list is written in flow style.
fn method_entry_lines(text: &str) -> Vec<usize> {
    let mut lines = text.lines().enumerate();
    if !lines.any(|(_, l)| l.starts_with("methods:")) {
        return Vec::new();
    }
    let mut indent = None;
    let mut out = Vec::new();
    for (i, l) in lines {
        let body = l.split('#').next().unwrap_or("");
        if body.trim().is_empty() {
            continue;
        }
        let ind = body.len() - body.trim_start().len();
        if ind == 0 && !body.starts_with('-') {
            break; // the next top-level key
        }
        if body.trim_start().starts_with('-') && *indent.get_or_insert(ind) == ind {
            out.push(i + 1);
        }
    }
    out
}

/// Line of the `index`-th entry of `methods:`, else of `methods:` itself.
pub(crate) fn entry_line(text: &str, index: usize) -> Option<usize> {
    method_entry_lines(text)
        .get(index)
        .copied()
        .or_else(|| line_of(text, "methods:"))
}

/// `FILE:LINE: method `NAME`, field `FIELD`: what is wrong and the allowed values`, for the
/// `index`-th entry of `methods:` (its part `part` when it is a composition).
fn method_param_error(
    path: &Path,
    text: &str,
    index: usize,
    spec: &MethodSpec,
    part: usize,
    e: &ParamError,
) -> anyhow::Error {
    let line = entry_line(text, index);
    let within = match spec {
        MethodSpec::Composed(parts) if parts.len() > 1 => {
            format!(" (part {} of the composition)", part + 1)
        }
        _ => String::new(),
    };
    anyhow::anyhow!(
        "{}: methods entry {}{within}: method `{}`, field `{}` {}",
        at(path, line),
        index + 1,
        e.method,
        e.field,
        e.message
    )
}

/// An experiment's name names its run directory (`runs/NAME`), so it is a plain name:
/// `[A-Za-z0-9._-]+`, not `.` or `..`.
pub fn check_experiment_name(name: &str) -> Result<(), String> {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && name != "."
        && name != "..";
    if plain {
        Ok(())
    } else {
        Err(format!(
            "field `experiment`: {name:?} is not a plain name; it names the run directory \
             (runs/NAME), so use only letters, digits, `.`, `_` and `-` (not `.` or `..`)"
        ))
    }
}

pub(crate) fn at(path: &Path, line: Option<usize>) -> String {
    match line {
        Some(l) => format!("{}:{l}", path.display()),
        None => path.display().to_string(),
    }
}

impl Plan {
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with(path, &Overrides::default())
    }

    /// [`load`](Self::load) with command-line overrides applied to the YAML tree first.
    pub fn load_with(path: &Path, overrides: &Overrides) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading experiment {}", path.display()))?;
        let mut plan = Self::parse_with(&text, path, overrides)?;
        crate::checks::files(&mut plan.raw, &plan.model, &text, path)?;
        Ok(plan)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        Self::parse_with(text, path, &Overrides::default())
    }

    /// Parse and validate `text` after the shorthand (`methods: [full, snapkv]`) is expanded
    /// and `overrides` are applied to its tree. With overrides, errors name the file and field
    /// but no line (the lines no longer say what is run) and end with the overrides.
    pub fn parse_with(text: &str, path: &Path, overrides: &Overrides) -> Result<Self> {
        let yaml_error = |e: serde_yaml_ng::Error| {
            let line = e.location().map(|l| l.line());
            let mut msg = format!("{}: {e}", at(path, line));
            if e.to_string().contains("unknown variant") && e.to_string().contains("method") {
                msg += &format!("\nregistered methods: {}", method_names().join(", "));
            }
            anyhow::anyhow!(msg)
        };
        let mut value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(yaml_error)?;
        let shorthand = crate::overrides::expand_shorthand(&mut value);
        overrides
            .apply(&mut value)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        // Line lookups only where the file still says what runs.
        let lines = if overrides.is_empty() { text } else { "" };
        let with_overrides = |e: anyhow::Error| {
            if overrides.is_empty() {
                e
            } else {
                anyhow::anyhow!(
                    "{e:#}\n(the experiment as changed by {})",
                    overrides.describe()
                )
            }
        };
        let (raw, notes) = if crate::presets::used_in(&value) || shorthand || !overrides.is_empty()
        {
            // Presets resolved on the YAML tree: later errors lose their exact line, so the
            // method entries' lines are named where they matter.
            let notes = crate::presets::resolve(&mut value)
                .map_err(|(i, e)| anyhow::anyhow!("{}: {e}", at(path, entry_line(lines, i))))
                .map_err(with_overrides)?;
            let raw = serde_yaml_ng::from_value(value)
                .map_err(|e| {
                    // The line of the unknown name or field the message quotes, if any.
                    let quoted = e.to_string().split('`').nth(1).map(str::to_string);
                    let line = quoted.and_then(|q| line_of(lines, &q));
                    let mut msg = format!("{}: {e}", at(path, line));
                    if e.to_string().contains("unknown variant") && e.to_string().contains("method")
                    {
                        msg += &format!("\nregistered methods: {}", method_names().join(", "));
                    }
                    anyhow::anyhow!(msg)
                })
                .map_err(with_overrides)?;
            (raw, notes)
        } else {
            (
                serde_yaml_ng::from_str(text).map_err(yaml_error)?,
                Vec::new(),
            )
        };
        let mut plan = Self::validate(raw, lines, path).map_err(with_overrides)?;
        plan.notes.splice(0..0, notes);
        plan.overridden_by = (!overrides.is_empty()).then(|| overrides.describe());
        Ok(plan)
    }

    fn validate(raw: RawExperiment, text: &str, path: &Path) -> Result<Self> {
        check_experiment_name(&raw.experiment)
            .map_err(|e| anyhow::anyhow!("{}: {e}", at(path, line_of(text, "experiment:"))))?;
        let mut model: ModelSpec = raw.model.parse().map_err(|e| {
            anyhow::anyhow!("{}: field `model`: {e}", at(path, line_of(text, "model:")))
        })?;
        attach_tokenizer(&mut model, raw.tokenizer.as_deref(), text, path)?;
        if raw.datasets.is_empty() {
            bail!(
                "{}: field `datasets` is empty; list at least one dataset",
                at(path, line_of(text, "datasets:"))
            );
        }
        if raw.methods.is_empty() {
            bail!(
                "{}: field `methods` is empty; registered methods: {}",
                at(path, line_of(text, "methods:")),
                method_names().join(", ")
            );
        }
        for b in &raw.budgets {
            match *b {
                Budget::CompressionRatio(r) if !(0.0..1.0).contains(&r) || r.is_nan() => bail!(
                    "{}: field `budgets`: compression_ratio {r} is outside [0, 1); it is the fraction of context entries removed",
                    at(path, line_of(text, "compression_ratio"))
                ),
                Budget::Tokens(0) => bail!(
                    "{}: field `budgets`: tokens must be at least 1",
                    at(path, line_of(text, "tokens:"))
                ),
                _ => {}
            }
        }
        if raw.attention_chunk == 0 {
            bail!(
                "{}: field `attention_chunk` must be at least 1",
                at(path, line_of(text, "attention_chunk"))
            );
        }
        // Every method's parameters, before any model or dataset work.
        for (i, m) in raw.methods.iter().enumerate() {
            m.validate()
                .map_err(|(part, e)| method_param_error(path, text, i, m, part, &e))?;
        }
        crate::checks::before_grid(&raw, text, path)?;
        let mut runs = Vec::new();
        for m in &raw.methods {
            let uses_budget = m.build().uses_budget();
            if uses_budget && raw.budgets.is_empty() {
                bail!(
                    "{}: method `{}` needs a budget; add e.g. `budgets: [{{compression_ratio: 0.5}}]`",
                    at(path, line_of(text, "methods:")),
                    m.build().name()
                );
            }
            for &qa in &raw.query_aware {
                if uses_budget {
                    for b in &raw.budgets {
                        runs.push(MethodRun {
                            config: m.clone(),
                            budget: Some(*b),
                            query_aware: qa,
                            access: None,
                        });
                    }
                } else if !runs.iter().any(|r: &MethodRun| r.config == *m) {
                    runs.push(MethodRun {
                        config: m.clone(),
                        budget: None,
                        query_aware: false,
                        access: None,
                    });
                }
            }
        }
        crate::reuse::check(&raw, text, path)?;
        if let Some(reuse) = &raw.reuse {
            // The access axis: every cell once per way to the first token.
            runs = runs
                .into_iter()
                .flat_map(|r| {
                    reuse.accesses().into_iter().map(move |a| MethodRun {
                        access: Some(a),
                        ..r.clone()
                    })
                })
                .collect();
        }
        let mut warnings = crate::checks::grid(&raw, &runs, text, path)?;
        if matches!(model, ModelSpec::Synthetic { .. }) {
            warnings.push(format!(
                "`{}` has random weights: its scores and predictions mean nothing; time to \
                 first token, throughput, KV bytes and device memory are real",
                raw.model
            ));
        }
        Ok(Self {
            source: path.to_path_buf(),
            raw,
            model,
            runs,
            notes: warnings,
            overridden_by: None,
        })
    }
}

impl Plan {
    /// The methods' parameters against the loaded model's shape (e.g. `quant`'s `group` must
    /// divide `head_dim`, `per_layer` gives one ratio per layer): an error naming the file, the
    /// line of the method's entry and the field. Call right after loading, before the first sample.
    pub fn check_model_shape(
        &self,
        n_layers: usize,
        n_kv_heads: usize,
        head_dim: usize,
    ) -> Result<()> {
        let text = self.source_lines();
        for (i, m) in self.raw.methods.iter().enumerate() {
            m.check_model_shape(n_layers, n_kv_heads, head_dim)
                .map_err(|(part, e)| {
                    self.with_overrides(method_param_error(&self.source, &text, i, m, part, &e))
                        .context(format!(
                        "the model has {n_layers} layers that methods compress (its full-attention layers), {n_kv_heads} KV heads of dimension {head_dim}"
                    ))
                })?;
        }
        Ok(())
    }

    /// The experiment file's text for line lookups; empty when overrides changed what runs (the
    /// file's lines would point at the wrong entries).
    fn source_lines(&self) -> String {
        match self.overridden_by {
            Some(_) => String::new(),
            None => std::fs::read_to_string(&self.source).unwrap_or_default(),
        }
    }

    fn with_overrides(&self, e: anyhow::Error) -> anyhow::Error {
        match &self.overridden_by {
            Some(o) => anyhow::anyhow!("{e:#}\n(the experiment as changed by {o})"),
            None => e,
        }
    }

    /// `chat_template: true` on a dataset needs a model with a chat template: an error naming
    /// the file, line and dataset otherwise. Call before any dataset work.
    pub fn check_chat_templates(&self, model_has_template: bool) -> Result<()> {
        if model_has_template {
            return Ok(());
        }
        let text = self.source_lines();
        for d in &self.raw.datasets {
            if d.chat_template() == ChatTemplateMode::Always {
                let line = text
                    .lines()
                    .position(|l| {
                        let l = l.split('#').next().unwrap_or("");
                        l.contains("chat_template") && l.contains("true")
                    })
                    .map(|i| i + 1);
                return Err(self.with_overrides(anyhow::anyhow!(
                    "{}: dataset `{}`, field `chat_template: true`: model `{}` has no chat \
                     template (neither in its GGUF metadata nor in tokenizer_config.json or \
                     chat_template.jinja); use `chat_template: auto` or `false`",
                    at(&self.source, line),
                    d.name(),
                    self.raw.model
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "experiment_tests.rs"]
mod tests;

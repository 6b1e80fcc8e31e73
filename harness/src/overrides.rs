//! Changes to an experiment's YAML tree before it is deserialized and validated, so that errors
//! still name the field: the shorthand `methods: [full, snapkv]` (a bare name is the method with
//! its default parameters) and the command-line overrides `--methods snapkv,h2o`,
//! `--datasets niah`, `--budgets 0.5,tokens:256` and `--set key=value` (a dotted path into the
//! YAML: `--set seed=3`, `--set datasets.0.lengths=[1000]`), as kvpress and lm-eval users expect.

use serde_yaml_ng::{Mapping, Value};

/// Command-line changes to an experiment, shared by `kvbench run`, `validate` and `show-prompt`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Overrides {
    /// Replace the experiment's methods by these (comma-separated names; an entry of the YAML
    /// with that method, or composition `a+b`, keeps its parameters, others get their
    /// defaults), e.g. `--methods full,snapkv,h2o`.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub methods: Option<Vec<String>>,
    /// Replace the experiment's datasets by these (comma-separated names; an entry of the YAML
    /// with that name keeps its options, others get their defaults), e.g. `--datasets niah`.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub datasets: Option<Vec<String>>,
    /// Replace the experiment's budgets: compression ratios (`0.5`, `ratio:0.5`) and token
    /// budgets (`tokens:256`), comma-separated, e.g. `--budgets 0.5,0.75,tokens:256`.
    #[arg(long, value_delimiter = ',', value_name = "BUDGETS")]
    pub budgets: Option<Vec<String>>,
    /// Set one field of the experiment: a dotted path into the YAML and a YAML value, e.g.
    /// `--set seed=3`, `--set datasets.0.lengths=[1000,2000]`, `--set methods.1.window=32`
    /// (repeatable; applied after --methods, --datasets and --budgets).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        self.methods.is_none()
            && self.datasets.is_none()
            && self.budgets.is_none()
            && self.set.is_empty()
    }

    /// The overrides as written on the command line, for messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let list = |flag: &str, v: &Option<Vec<String>>| {
            v.as_ref().map(|v| format!("{flag} {}", v.join(",")))
        };
        parts.extend(list("--methods", &self.methods));
        parts.extend(list("--datasets", &self.datasets));
        parts.extend(list("--budgets", &self.budgets));
        parts.extend(self.set.iter().map(|s| format!("--set {s}")));
        parts.join(" ")
    }

    /// Apply every override to the experiment's tree, in order: methods, datasets, budgets, then
    /// each `--set`. Errors name the flag and what is wrong.
    pub fn apply(&self, experiment: &mut Value) -> Result<(), String> {
        let Value::Mapping(top) = experiment else {
            return Err("the experiment is not a YAML map".into());
        };
        if let Some(names) = &self.methods {
            let old = top
                .get("methods")
                .and_then(Value::as_sequence)
                .cloned()
                .unwrap_or_default();
            let mut entries = Vec::new();
            for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
                let kept = old
                    .iter()
                    .find(|e| entry_method_name(e).as_deref() == Some(name));
                entries.push(match kept {
                    Some(e) => e.clone(),
                    None if name.contains('+') => Value::Sequence(
                        name.split('+')
                            .map(|p| Value::String(p.trim().into()))
                            .collect(),
                    ),
                    None => Value::String(name.into()),
                });
            }
            top.insert("methods".into(), Value::Sequence(entries));
            expand_shorthand(experiment);
        }
        let Value::Mapping(top) = experiment else {
            unreachable!("checked above")
        };
        if let Some(names) = &self.datasets {
            let old = top
                .get("datasets")
                .and_then(Value::as_sequence)
                .cloned()
                .unwrap_or_default();
            let mut entries = Vec::new();
            for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
                let kept: Vec<Value> = old
                    .iter()
                    .filter(|e| e.get("name").and_then(Value::as_str) == Some(name))
                    .cloned()
                    .collect();
                if kept.is_empty() {
                    let mut m = Mapping::new();
                    m.insert("name".into(), name.into());
                    entries.push(Value::Mapping(m));
                } else {
                    entries.extend(kept);
                }
            }
            top.insert("datasets".into(), Value::Sequence(entries));
        }
        if let Some(budgets) = &self.budgets {
            let parsed = budgets
                .iter()
                .map(|b| parse_budget(b))
                .collect::<Result<Vec<_>, _>>()?;
            top.insert("budgets".into(), Value::Sequence(parsed));
        }
        for kv in &self.set {
            set(experiment, kv)?;
        }
        Ok(())
    }
}

/// The method name an entry runs (`snapkv`, `snapkv+kivi` for a composition), as `--methods`
/// matches it.
fn entry_method_name(entry: &Value) -> Option<String> {
    match entry {
        Value::String(s) => Some(s.clone()),
        Value::Mapping(m) => m.get("method").and_then(Value::as_str).map(str::to_string),
        Value::Sequence(parts) => parts
            .iter()
            .map(entry_method_name)
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join("+")),
        _ => None,
    }
}

/// `0.5`, `ratio:0.5`, `compression_ratio:0.5` or `tokens:256` as a YAML budget map.
fn parse_budget(text: &str) -> Result<Value, String> {
    let text = text.trim();
    let (kind, number) = match text.split_once(':') {
        Some((k, n)) => (k.trim(), n.trim()),
        None => ("ratio", text),
    };
    let mut m = Mapping::new();
    match kind {
        "ratio" | "compression_ratio" | "r" => {
            let r: f64 = number.parse().map_err(|_| {
                format!("--budgets: `{text}` is not a compression ratio (a number in [0, 1)) nor `tokens:N`")
            })?;
            if r >= 1.0 && r.fract() == 0.0 && kind == "ratio" && !text.contains(':') {
                return Err(format!(
                    "--budgets: `{text}` is not a compression ratio (the fraction of context entries removed, in [0, 1)); for a token budget write `tokens:{text}`"
                ));
            }
            m.insert("compression_ratio".into(), r.into());
        }
        "tokens" | "t" => {
            let n: u64 = number.parse().map_err(|_| {
                format!("--budgets: `{text}`: tokens must be a whole number of entries kept per layer and head")
            })?;
            m.insert("tokens".into(), n.into());
        }
        other => {
            return Err(format!(
                "--budgets: unknown budget kind `{other}` in `{text}`; write a ratio (`0.5`) or `tokens:256`"
            ))
        }
    }
    Ok(Value::Mapping(m))
}

/// `--set a.b.0.c=VALUE`: VALUE is read as YAML (`3`, `true`, `[1000, 2000]`, `{tokens: 64}`, or
/// a plain string). Missing map keys are created; list indices must exist (or be the list's
/// length, which appends).
fn set(experiment: &mut Value, assignment: &str) -> Result<(), String> {
    let (path, raw) = assignment
        .split_once('=')
        .ok_or_else(|| format!("--set `{assignment}`: write KEY=VALUE, e.g. `--set seed=3`"))?;
    let path = path.trim();
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(format!(
            "--set `{assignment}`: `{path}` is not a dotted path like `datasets.0.lengths`"
        ));
    }
    let value: Value = serde_yaml_ng::from_str(raw)
        .map_err(|e| format!("--set `{assignment}`: the value is not YAML: {e}"))?;
    let mut node = experiment;
    let mut walked = Vec::new();
    for key in path.split('.') {
        let here = if walked.is_empty() {
            "the experiment".to_string()
        } else {
            format!("`{}`", walked.join("."))
        };
        node = match node {
            Value::Mapping(m) => {
                if !m.contains_key(key) {
                    m.insert(key.into(), Value::Null);
                }
                m.get_mut(key).expect("inserted")
            }
            Value::Sequence(s) => {
                let len = s.len();
                let i: usize = key.parse().map_err(|_| {
                    format!("--set `{assignment}`: {here} is a list; `{key}` is not an index (0 to {})", len.saturating_sub(1))
                })?;
                if i == len {
                    s.push(Value::Null);
                }
                s.get_mut(i).ok_or_else(|| {
                    format!("--set `{assignment}`: {here} has {len} entries; index {i} is out of range")
                })?
            }
            Value::Null => {
                *node = Value::Mapping(Mapping::new());
                let Value::Mapping(m) = node else { unreachable!() };
                m.insert(key.into(), Value::Null);
                m.get_mut(key).expect("inserted")
            }
            _ => {
                return Err(format!(
                    "--set `{assignment}`: {here} is a single value, not a map or list, so it has no `{key}`"
                ))
            }
        };
        walked.push(key);
    }
    *node = value;
    Ok(())
}

/// `methods: [full, snapkv]`: each bare name (an entry, or a part of a composition) becomes
/// `{method: NAME}`. Returns whether anything changed.
pub fn expand_shorthand(experiment: &mut Value) -> bool {
    let Some(entries) = experiment
        .get_mut("methods")
        .and_then(Value::as_sequence_mut)
    else {
        return false;
    };
    let mut changed = false;
    let expand = |v: &mut Value, changed: &mut bool| {
        if let Value::String(name) = v {
            let mut m = Mapping::new();
            m.insert("method".into(), Value::String(name.trim().to_string()));
            *v = Value::Mapping(m);
            *changed = true;
        }
    };
    for e in entries.iter_mut() {
        match e {
            Value::Sequence(parts) => parts.iter_mut().for_each(|p| expand(p, &mut changed)),
            other => expand(other, &mut changed),
        }
    }
    changed
}

#[cfg(test)]
mod tests;

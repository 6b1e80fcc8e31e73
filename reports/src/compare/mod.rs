//! Our numbers beside published ones (`kvbench report --compare published.csv`).
//!
//! Every published row ([`published`] has the file's columns) gets one row of the comparison
//! table: our score on the same cell, the difference (ours minus theirs, on the 0-100 scale), and
//! a status, `matched` or the first thing that kept it from matching (`not run: ...`, or
//! `ambiguous: ...` where several of our configurations fit), so no published row is dropped.
//!
//! A row matches our configuration when the model (compared without `hf:`, a revision, an
//! organisation prefix or letter case), dataset, task, method (name and any parameters the row
//! gives), budget label and query awareness (where the row states it) are the same. A
//! published `average` is the mean over our task means of the row's `tasks`, or our benchmark
//! average when the row lists none.

pub mod published;
pub mod runs;

use std::collections::BTreeSet;

pub use published::{parse_published, read_published, Published};

use crate::aggregate::{Aggregate, Config, Configs, Metric};
use crate::bootstrap::{cell_seed, macro_average, BootstrapConfig, Estimate};
use crate::tables::{Column, Kind, Table, Value};
use crate::Record;

/// A model name reduced for matching: no `hf:`, no `@revision` or `:file`, no organisation,
/// lower case.
pub fn model_key(m: &str) -> String {
    let m = m.strip_prefix("hf:").unwrap_or(m);
    let m = m.split(['@', ':']).next().unwrap_or(m);
    m.rsplit('/').next().unwrap_or(m).trim().to_lowercase()
}

/// A published method: `kivi` or `kivi(bits=4)`, or `adakv(scorer.method=snapkv)`.
#[derive(Debug, PartialEq)]
pub struct MethodSpec {
    pub name: String,
    pub params: Vec<(String, String)>,
}

impl MethodSpec {
    pub fn parse(s: &str) -> MethodSpec {
        let s = s.trim();
        match s.split_once('(') {
            Some((name, rest)) if rest.ends_with(')') => MethodSpec {
                name: name.trim().to_string(),
                params: rest[..rest.len() - 1]
                    .split(',')
                    .filter_map(|kv| {
                        let (k, v) = kv.split_once('=')?;
                        Some((k.trim().to_string(), v.trim().to_string()))
                    })
                    .collect(),
            },
            _ => MethodSpec {
                name: s.to_string(),
                params: Vec::new(),
            },
        }
    }

    /// Whether `config` ran this method with these parameters (a JSON string matches its
    /// unquoted text, a number its value).
    pub fn matches(&self, config: &Config) -> bool {
        if config.base_method != self.name {
            return false;
        }
        let params: serde_json::Value = serde_json::from_str(&config.params).unwrap_or_default();
        self.params.iter().all(|(k, want)| {
            let v = k.split('.').try_fold(&params, |v, part| v.get(part));
            match v {
                Some(serde_json::Value::String(s)) => s == want,
                Some(serde_json::Value::Number(n)) => n
                    .as_f64()
                    .zip(want.parse::<f64>().ok())
                    .is_some_and(|(a, b)| a == b),
                Some(other) => {
                    *other == serde_json::from_str::<serde_json::Value>(want).unwrap_or_default()
                }
                None => false,
            }
        })
    }
}

fn list<'a>(xs: impl IntoIterator<Item = &'a str>) -> String {
    let set: BTreeSet<&str> = xs.into_iter().collect();
    set.into_iter().collect::<Vec<_>>().join(", ")
}

/// Our configuration for a published row, or why there is none.
fn find_config<'c>(p: &Published, agg: &'c Aggregate) -> Result<&'c Config, String> {
    let model = model_key(&p.model);
    let by_model: Vec<&Config> = agg
        .configs
        .iter()
        .filter(|c| model_key(&c.model) == model)
        .collect();
    if by_model.is_empty() {
        return Err(format!(
            "not run: model {} (this run: {})",
            p.model,
            list(agg.configs.iter().map(|c| c.model.as_str()))
        ));
    }
    let tasks_run: BTreeSet<&str> = agg
        .cells
        .iter()
        .filter(|c| c.dataset == p.dataset && model_key(&c.config.model) == model)
        .map(|c| c.task.as_str())
        .collect();
    if tasks_run.is_empty() {
        return Err(format!("not run: dataset {}", p.dataset));
    }
    if p.task == "average" {
        let missing: Vec<&str> = p
            .tasks
            .iter()
            .map(String::as_str)
            .filter(|t| !tasks_run.contains(t))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "not run: task(s) {} of the average",
                missing.join(", ")
            ));
        }
    } else if !tasks_run.contains(p.task.as_str()) {
        return Err(format!("not run: task {}", p.task));
    }
    let spec = MethodSpec::parse(&p.method);
    let by_method: Vec<&Config> = by_model
        .into_iter()
        .filter(|c| c.method == p.method || spec.matches(c))
        .collect();
    if by_method.is_empty() {
        return Err(format!("not run: method {}", p.method));
    }
    let by_budget: Vec<&Config> = by_method
        .iter()
        .copied()
        .filter(|c| c.budget.label == p.budget)
        .collect();
    if by_budget.is_empty() {
        return Err(format!(
            "not run: budget {} (ran: {})",
            p.budget,
            list(by_method.iter().map(|c| c.budget.label.as_str()))
        ));
    }
    // Query awareness: as the row says (a configuration without a budget compresses nothing, so
    // either side matches it); the query-agnostic run first where it says nothing.
    let mut fits: Vec<&Config> = by_budget
        .iter()
        .copied()
        .filter(|c| {
            p.query_aware
                .is_none_or(|q| c.query_aware == q || c.budget.is_none())
        })
        .collect();
    if fits.is_empty() {
        let q = if p.query_aware == Some(true) {
            "query-aware"
        } else {
            "query-agnostic"
        };
        return Err(format!("not run: {q}"));
    }
    fits.sort_by_key(|c| c.query_aware);
    let first_qa = fits[0].query_aware;
    fits.retain(|c| c.query_aware == first_qa);
    // An exact label wins over parameters that several settings share.
    if let Some(exact) = fits.iter().find(|c| c.method == p.method) {
        return Ok(exact);
    }
    match fits.as_slice() {
        [one] => Ok(one),
        many => Err(format!(
            "ambiguous: {} match {}",
            list(many.iter().map(|c| c.method.as_str())),
            p.method
        )),
    }
}

/// Our score (0-1) for `p` on `config`, or why there is none.
fn our_score(
    p: &Published,
    config: &Config,
    records: &[Record],
    agg: &Aggregate,
    cfg: BootstrapConfig,
) -> Result<Estimate, String> {
    let none = || format!("not run: {} with {}", p.task, config.label());
    if p.task != "average" {
        return agg
            .cells
            .iter()
            .find(|c| c.dataset == p.dataset && c.task == p.task && &c.config == config)
            .and_then(|c| c.stats.get(&Metric::Score).copied())
            .ok_or_else(none);
    }
    if p.tasks.is_empty() {
        return agg
            .benchmarks
            .iter()
            .find(|b| b.dataset == p.dataset && &b.config == config)
            .and_then(|b| b.stats.get(&Metric::Score).copied())
            .ok_or_else(none);
    }
    // The mean over the listed tasks of our task means, resampling within tasks.
    let configs = Configs::new(records);
    let mut rs: Vec<&Record> = records
        .iter()
        .filter(|r| r.dataset == p.dataset && p.tasks.contains(&r.task))
        .filter(|r| &configs.of(r) == config)
        .collect();
    rs.sort_by(|a, b| (&a.sample_id, a.turn, &a.key).cmp(&(&b.sample_id, b.turn, &b.key)));
    let strata: Vec<Vec<f64>> = p
        .tasks
        .iter()
        .map(|t| {
            rs.iter()
                .filter(|r| &r.task == t)
                .map(|r| r.score)
                .collect()
        })
        .collect();
    let missing: Vec<&str> = p
        .tasks
        .iter()
        .zip(&strata)
        .filter(|(_, s)| s.is_empty())
        .map(|(t, _)| t.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "not run: task(s) {} with {}",
            missing.join(", "),
            config.label()
        ));
    }
    let refs: Vec<&[f64]> = strata.iter().map(Vec::as_slice).collect();
    let id = format!(
        "compare|{}|{}|{}|{}",
        p.dataset,
        p.tasks.join(" "),
        config.method,
        config.budget.label
    );
    macro_average(&refs, cfg, cell_seed(cfg.seed, &id)).ok_or_else(none)
}

fn text_column(key: &str, elide: bool) -> Column {
    Column {
        key: key.into(),
        header: key.replace('_', "-"),
        kind: Kind::Text,
        elide_if_constant: elide,
    }
}

/// The comparison table: every published row, ours beside it where it matched.
pub fn compare_table(
    published: &[Published],
    records: &[Record],
    agg: &Aggregate,
    cfg: BootstrapConfig,
) -> Table {
    let mut columns = vec![
        text_column("source", false),
        text_column("provenance", true),
        text_column("model", true),
        text_column("dataset", false),
        text_column("task", false),
        text_column("method", false),
        text_column("budget", false),
    ];
    columns.extend([
        Column::new("published", "published (0-100)", Kind::Num { decimals: 2 }),
        Column::new("kvbench", "kvbench (0-100)", Kind::Est { decimals: 2 }),
        Column::new(
            "difference",
            "kvbench - published",
            Kind::Num { decimals: 2 },
        ),
        text_column("status", false),
    ]);
    let mut matched = 0;
    let rows: Vec<Vec<Value>> = published
        .iter()
        .map(|p| {
            let (est, status) = match find_config(p, agg) {
                Ok(config) => match our_score(p, config, records, agg, cfg) {
                    Ok(e) => {
                        matched += 1;
                        (
                            Some(Estimate {
                                mean: e.mean * 100.0,
                                lo: e.lo * 100.0,
                                hi: e.hi * 100.0,
                                n: e.n,
                            }),
                            format!("matched {}", config.label()),
                        )
                    }
                    Err(why) => (None, why),
                },
                Err(why) => (None, why),
            };
            let task = if p.task == "average" && !p.tasks.is_empty() {
                format!("average of {}", p.tasks.len())
            } else {
                p.task.clone()
            };
            vec![
                Value::Text(p.source.clone()),
                Value::Text(p.provenance.clone()),
                Value::Text(p.model.clone()),
                Value::Text(p.dataset.clone()),
                Value::Text(task),
                Value::Text(p.method.clone()),
                Value::Text(p.budget.clone()),
                Value::Num(Some(p.score)),
                Value::Est(est),
                Value::Num(est.map(|e| e.mean - p.score)),
                Value::Text(status),
            ]
        })
        .collect();
    Table {
        name: "compare".into(),
        title: "kvbench beside published numbers".into(),
        note: format!(
            "{matched} of {} published rows matched a configuration of this run; the others say why not. \
             Published scores as printed (0-100; provenance: checked against the original, or a third-party \
             transcription); ours scaled to 0-100 with 95% bootstrap intervals. Numbers are comparable only where \
             the model, data, prompt and decoding match the source's.",
            published.len()
        ),
        columns,
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_keys_ignore_prefixes_and_case() {
        assert_eq!(
            model_key("hf:mistralai/Mistral-7B-Instruct-v0.2@main"),
            "mistral-7b-instruct-v0.2"
        );
        assert_eq!(
            model_key("mistralai/Mistral-7B-Instruct-v0.2"),
            "mistral-7b-instruct-v0.2"
        );
        assert_eq!(
            model_key("smollm2-135m-instruct-q4_1"),
            "smollm2-135m-instruct-q4_1"
        );
    }

    #[test]
    fn method_specs_with_parameters() {
        let spec = MethodSpec::parse("adakv(scorer.method=expected_attention, floor=0.2)");
        assert_eq!(spec.name, "adakv");
        assert_eq!(spec.params.len(), 2);
        assert_eq!(MethodSpec::parse("snapkv").params, []);
    }

    #[test]
    fn method_specs_match_nested_strings_and_numbers() {
        let record = |method: &str, params: serde_json::Value| -> Record {
            serde_json::from_value(serde_json::json!({
                "experiment": "e", "model": "m", "dataset": "d", "task": "t", "sample_id": "s",
                "turn": 0, "method": method, "method_params": params, "budget": null,
                "budget_label": "-", "query_aware": false, "target_ratio": 0.0,
                "achieved_ratio": 0.0, "prediction": "p", "answers": ["a"], "metric": "m",
                "score": 1.0, "agreement_with_full": 1.0, "kl_first_token": 0.0, "kv_bytes": 1,
                "kv_bytes_full": 1, "peak_device_bytes": null, "prefill_ms": 1.0,
                "compress_ms": 0.0, "question_ms": 1.0, "ttft_ms": 2.0,
                "decode_ms_per_token": 0.0, "context_tokens": 5, "question_tokens": 2,
                "new_tokens": 1, "device": "cpu", "seed": 0, "kvbench_version": "0", "key": "k"
            }))
            .unwrap()
        };
        let rs = [
            record(
                "adakv",
                serde_json::json!({"floor": 0.2, "scorer": {"method": "expected_attention"}}),
            ),
            record("kivi", serde_json::json!({"bits": 4, "group": 32})),
        ];
        let configs = Configs::new(&rs);
        let (adakv, kivi) = (configs.of(&rs[0]), configs.of(&rs[1]));
        let m = |spec: &str, c: &Config| MethodSpec::parse(spec).matches(c);
        assert!(m(
            "adakv(scorer.method=expected_attention, floor=0.20)",
            &adakv
        ));
        assert!(!m("adakv(scorer.method=snapkv)", &adakv));
        assert!(!m("adakv(scorer.window=32)", &adakv));
        assert!(m("kivi(bits=4)", &kivi) && m("kivi", &kivi));
        assert!(!m("kivi(bits=2)", &kivi) && !m("adakv", &kivi));
    }
}

//! Presets: the anchors' own method configurations by name, so that an experiment reproduces
//! kvpress's or KVCache-Factory's settings without copying parameters.
//!
//! A method entry takes `preset: NAME` (`- {method: snapkv, preset: kvpress}`); a top-level
//! `preset: NAME` applies to every entry that names none. The preset replaces the method's
//! defaults; parameters written in the entry win over the preset's, and each such override is
//! reported as a note. A preset may turn a method into the composition its anchor actually runs
//! (kvpress's leaderboard `expected_attention` is AdaKV around ExpectedAttention with epsilon
//! 1e-2); such an entry takes no explicit parameters (write the full method instead).
//!
//! KVCache-Factory stores the cache per query head (`repeat_kv` before compression, its
//! docs/gqa_cache_layout.md), so on GQA models it keeps `q_per_kv` times the entries kvbench keeps
//! per KV head at the same budget: under `kvcache_factory` its `snapkv`, `pyramidkv`, `adakv` and
//! `streaming_llm` run as `query_heads` (allocator `uniform`, `pyramidkv` with its
//! `kvcache_factory` schedule, or `adakv`) around the scorer, with the real bytes of that layout.
//! Records name them `query_heads` with those parameters (`published.csv` joins on them).

use serde_json::{json, Map, Value};

/// One named preset: where its numbers come from and the configuration of each method it covers.
pub struct Preset {
    pub name: &'static str,
    /// The file(s) and commit the parameters were read from.
    pub source: &'static str,
    pub about: &'static str,
    /// `(method as written in the experiment, its configuration under this preset)`.
    pub methods: fn() -> Vec<(&'static str, Value)>,
}

/// kvpress's SnapKVPress defaults (window_size 64, kernel_size 5, avg pooling).
fn kvpress_snapkv() -> Value {
    json!({"method": "snapkv", "window": 64, "kernel": 5, "pooling": "avg"})
}

/// KVCache-Factory's run_longbench.py settings for its SnapKV-style clusters.
fn factory_snapkv() -> Value {
    json!({"method": "snapkv", "window": 8, "kernel": 7, "pooling": "max"})
}

fn kvpress_methods() -> Vec<(&'static str, Value)> {
    vec![
        ("snapkv", kvpress_snapkv()),
        (
            "pyramidkv",
            json!({"method": "pyramidkv", "beta": 20.0, "schedule": "kvpress",
                   "scorer": kvpress_snapkv()}),
        ),
        (
            "streaming_llm",
            json!({"method": "streaming_llm", "sinks": 4}),
        ),
        (
            "expected_attention",
            json!({"method": "expected_attention", "future_positions": 512, "sinks": 4,
                   "use_covariance": true, "use_vnorm": true, "epsilon": 0.0}),
        ),
        (
            "lagkv",
            json!({"method": "lagkv", "sink": 4, "lag_size": 128}),
        ),
        (
            "adakv",
            json!({"method": "adakv", "floor": 0.2, "scorer": kvpress_snapkv()}),
        ),
        (
            "chunk",
            json!({"method": "chunk", "chunk_size": 20, "scorer": kvpress_snapkv()}),
        ),
        ("think", json!({"method": "think", "window": 32})),
        (
            "decoding",
            json!({"method": "decoding", "interval": 512, "target_size": 2048, "buffer": 256,
                   "scorer": {"method": "knorm"}}),
        ),
        ("knorm", json!({"method": "knorm"})),
        ("tova", json!({"method": "tova"})),
        ("keydiff", json!({"method": "keydiff"})),
        ("random", json!({"method": "random"})),
    ]
}

/// kvpress's leaderboard registry: the press classes' defaults, except the entries its
/// `PRESS_REGISTRY` builds differently.
fn kvpress_leaderboard_methods() -> Vec<(&'static str, Value)> {
    let mut m = kvpress_methods();
    let ea = m
        .iter_mut()
        .find(|(name, _)| *name == "expected_attention")
        .expect("kvpress covers expected_attention");
    let mut scorer = ea.1.clone();
    scorer["epsilon"] = json!(0.01);
    ea.1 = json!({"method": "adakv", "floor": 0.2, "scorer": scorer});
    m
}

/// KVCache-Factory stores the cache per query head (`repeat_kv` before compression): its methods
/// run as `query_heads` around the scorer, with the cluster's budget rule as the allocator.
fn per_query_head(scorer: Value, allocator: Value) -> Value {
    json!({"method": "query_heads", "scorer": scorer, "allocator": allocator})
}

fn kvcache_factory_methods() -> Vec<(&'static str, Value)> {
    let uniform = || json!({"method": "uniform"});
    vec![
        ("snapkv", per_query_head(factory_snapkv(), uniform())),
        (
            "pyramidkv",
            per_query_head(
                factory_snapkv(),
                json!({"method": "pyramidkv", "beta": 20.0, "schedule": "kvcache_factory"}),
            ),
        ),
        (
            "adakv",
            per_query_head(factory_snapkv(), json!({"method": "adakv", "floor": 0.2})),
        ),
        (
            "streaming_llm",
            per_query_head(json!({"method": "streaming_llm", "sinks": 4}), uniform()),
        ),
        ("think", json!({"method": "think", "window": 8})),
    ]
}

/// Every preset, in the order `kvbench methods` lists them.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "kvpress",
        source:
            "NVIDIA/kvpress kvpress/presses/*_press.py @ 8bb29b9c3078452a86d692f29123fa6c793e2b05",
        about: "each press class's own defaults",
        methods: kvpress_methods,
    },
    Preset {
        name: "kvpress_leaderboard",
        source: "NVIDIA/kvpress evaluation/evaluate_registry.py (PRESS_REGISTRY) and \
                 evaluation/leaderboard.sh @ 8bb29b9c3078452a86d692f29123fa6c793e2b05",
        about: "the presses as the leaderboard runs them: expected_attention is \
                AdaKV(ExpectedAttention(epsilon=1e-2)), adakv is adakv_snapkv; RULER 4k at \
                ratios 0.25/0.5/0.75/0.875, query-agnostic except snapkv/adakv_snapkv/chunkkv's \
                query-aware loop",
        methods: kvpress_leaderboard_methods,
    },
    Preset {
        name: "kvcache_factory",
        source: "Zefan-Cai/KVCache-Factory run_longbench.py (window_sizes 8, kernel_sizes 7, \
                 maxpool; streamingllm window = capacity - 4) and pyramidkv/pyramidkv_utils.py \
                 (beta 20) @ c97f9d706d63d1b56e980f8b81b2a924c21162b3",
        about: "KVCache-Factory's LongBench script settings in its per-query-head cache layout: \
                snapkv, pyramidkv (kvcache_factory schedule), adakv (floor 0.2) and streaming_llm \
                run as `query_heads` with the matching allocator",
        methods: kvcache_factory_methods,
    },
];

pub fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.name).collect()
}

/// What applying a preset to one method entry gave.
#[derive(Debug, PartialEq)]
pub struct Applied {
    /// The entry with the preset's configuration and the explicit parameters merged.
    pub entry: Value,
    /// One line per explicit parameter that overrode the preset's value.
    pub notes: Vec<String>,
}

/// Apply `preset` to one method entry (`{"method": NAME, ...explicit parameters}`, without its
/// `preset` key). Errors name the valid presets, or the methods the preset covers.
pub fn apply(preset: &str, entry: &Map<String, Value>) -> Result<Applied, String> {
    let p = PRESETS.iter().find(|p| p.name == preset).ok_or_else(|| {
        format!(
            "unknown preset `{preset}`; presets: {}",
            preset_names().join(", ")
        )
    })?;
    let method = entry
        .get("method")
        .and_then(Value::as_str)
        .ok_or("a method entry with a preset needs `method: NAME`")?;
    let table = (p.methods)();
    let Some((_, config)) = table.iter().find(|(name, _)| *name == method) else {
        let covered: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
        return Err(format!(
            "preset `{preset}` has no configuration for method `{method}`; it covers: {}",
            covered.join(", ")
        ));
    };
    let mut merged = config
        .as_object()
        .expect("a preset config is a map")
        .clone();
    let explicit: Vec<(&String, &Value)> = entry.iter().filter(|(k, _)| *k != "method").collect();
    if merged["method"] != method && !explicit.is_empty() {
        return Err(format!(
            "preset `{preset}` runs method `{method}` as {}; explicit parameters cannot be merged \
             into it: write that configuration as the entry instead of using the preset",
            Value::Object(merged)
        ));
    }
    let mut notes = Vec::new();
    for (k, v) in explicit {
        match merged.get(k) {
            Some(old) if old != v => notes.push(format!(
                "method `{method}`: `{k}: {v}` written in the entry wins over preset `{preset}`'s `{k}: {old}`"
            )),
            _ => {}
        }
        merged.insert(k.clone(), v.clone());
    }
    Ok(Applied {
        entry: Value::Object(merged),
        notes,
    })
}

/// Does the experiment use a preset (top-level or in a method entry)?
pub fn used_in(experiment: &serde_yaml_ng::Value) -> bool {
    let has = |v: &serde_yaml_ng::Value| v.get("preset").is_some();
    has(experiment)
        || method_entries(experiment).any(|e| match e {
            serde_yaml_ng::Value::Sequence(parts) => parts.iter().any(has),
            other => has(other),
        })
}

fn method_entries(
    experiment: &serde_yaml_ng::Value,
) -> impl Iterator<Item = &serde_yaml_ng::Value> {
    experiment
        .get("methods")
        .and_then(|m| m.as_sequence())
        .into_iter()
        .flatten()
}

/// Apply the presets of an experiment's YAML tree in place: each method map (or part of a
/// composition) with its own `preset:` or, failing that, the top-level one. Under the top-level
/// preset, methods it does not cover keep their defaults (noted); `full` is left alone. Returns
/// the notes, or the index of the failing `methods:` entry and the error.
pub fn resolve(experiment: &mut serde_yaml_ng::Value) -> Result<Vec<String>, (usize, String)> {
    let default = match experiment.get("preset") {
        None => None,
        Some(v) => Some(
            v.as_str()
                .ok_or((0, "field `preset` must be a preset name".to_string()))?
                .to_string(),
        ),
    };
    if let Some(d) = &default {
        if !preset_names().contains(&d.as_str()) {
            return Err((
                0,
                format!(
                    "unknown preset `{d}`; presets: {}",
                    preset_names().join(", ")
                ),
            ));
        }
    }
    let mut notes = Vec::new();
    let Some(entries) = experiment
        .get_mut("methods")
        .and_then(|m| m.as_sequence_mut())
    else {
        return Ok(notes);
    };
    for (i, e) in entries.iter_mut().enumerate() {
        let parts: Vec<&mut serde_yaml_ng::Value> = match e {
            serde_yaml_ng::Value::Sequence(parts) => parts.iter_mut().collect(),
            other => vec![other],
        };
        for part in parts {
            resolve_entry(part, default.as_deref(), &mut notes).map_err(|m| (i, m))?;
        }
    }
    Ok(notes)
}

fn resolve_entry(
    part: &mut serde_yaml_ng::Value,
    default: Option<&str>,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    let json: Value = serde_json::to_value(&*part).map_err(|e| e.to_string())?;
    let Some(mut map) = json.as_object().cloned() else {
        return Ok(()); // not a method map: the parser reports it
    };
    let own = match map.remove("preset") {
        None => None,
        Some(Value::String(p)) => Some(p),
        Some(other) => return Err(format!("`preset: {other}` must be a preset name")),
    };
    let method = map.get("method").and_then(Value::as_str).unwrap_or("");
    let applied = match (own, default) {
        (Some(p), _) => apply(&p, &map)?,
        (None, Some(_)) if method == "full" => return Ok(()),
        (None, Some(d)) => match apply(d, &map) {
            Ok(a) => a,
            Err(_) if method_is_uncovered(d, method) => {
                notes.push(format!(
                    "preset `{d}` has no configuration for method `{method}`: its own defaults are used"
                ));
                return Ok(());
            }
            Err(e) => return Err(e),
        },
        (None, None) => return Ok(()),
    };
    notes.extend(applied.notes);
    *part = serde_yaml_ng::to_value(&applied.entry).map_err(|e| e.to_string())?;
    Ok(())
}

fn method_is_uncovered(preset: &str, method: &str) -> bool {
    PRESETS
        .iter()
        .find(|p| p.name == preset)
        .is_some_and(|p| !(p.methods)().iter().any(|(m, _)| *m == method))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvbench_methods::MethodConfig;

    fn entry(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn every_preset_configuration_is_a_valid_method() {
        for p in PRESETS {
            for (name, config) in (p.methods)() {
                let c: MethodConfig = serde_json::from_value(config.clone())
                    .unwrap_or_else(|e| panic!("{} {name}: {e}", p.name));
                c.validate()
                    .unwrap_or_else(|e| panic!("{} {name}: {e}", p.name));
            }
        }
    }

    #[test]
    fn kvpress_snapkv_is_window_64_kernel_5_avg() {
        let a = apply("kvpress", &entry(json!({"method": "snapkv"}))).unwrap();
        assert_eq!(
            a.entry,
            json!({"method": "snapkv", "window": 64, "kernel": 5, "pooling": "avg"})
        );
        assert!(a.notes.is_empty());
    }

    #[test]
    fn leaderboard_expected_attention_is_adakv_wrapped_with_epsilon() {
        let a = apply(
            "kvpress_leaderboard",
            &entry(json!({"method": "expected_attention"})),
        )
        .unwrap();
        assert_eq!(a.entry["method"], "adakv");
        assert_eq!(a.entry["scorer"]["method"], "expected_attention");
        assert_eq!(a.entry["scorer"]["epsilon"], 0.01);
        // The plain kvpress preset keeps the press default.
        let plain = apply("kvpress", &entry(json!({"method": "expected_attention"}))).unwrap();
        assert_eq!(plain.entry["epsilon"], 0.0);
    }

    #[test]
    fn explicit_parameters_win_and_say_so() {
        let a = apply(
            "kvpress",
            &entry(json!({"method": "snapkv", "window": 32, "kernel": 5})),
        )
        .unwrap();
        assert_eq!(a.entry["window"], 32);
        assert_eq!(a.entry["pooling"], "avg");
        // kernel 5 equals the preset's: no note; window differs: one note naming both values.
        assert_eq!(a.notes.len(), 1, "{:?}", a.notes);
        assert!(a.notes[0].contains("`window: 32`") && a.notes[0].contains("`window: 64`"));
    }

    #[test]
    fn kvcache_factory_selects_per_query_head() {
        let a = apply("kvcache_factory", &entry(json!({"method": "snapkv"}))).unwrap();
        let snap = json!({"method": "snapkv", "window": 8, "kernel": 7, "pooling": "max"});
        assert_eq!(
            a.entry,
            json!({"method": "query_heads", "scorer": snap, "allocator": {"method": "uniform"}})
        );
        let a = apply("kvcache_factory", &entry(json!({"method": "pyramidkv"}))).unwrap();
        assert_eq!(
            a.entry,
            json!({"method": "query_heads", "scorer": snap, "allocator":
                   {"method": "pyramidkv", "beta": 20.0, "schedule": "kvcache_factory"}})
        );
        let a = apply("kvcache_factory", &entry(json!({"method": "adakv"}))).unwrap();
        assert_eq!(
            a.entry,
            json!({"method": "query_heads", "scorer": snap, "allocator":
                   {"method": "adakv", "floor": 0.2}})
        );
        // Parameters of the method it stood for cannot be merged into `query_heads`.
        let e = apply(
            "kvcache_factory",
            &entry(json!({"method": "pyramidkv", "schedule": "kvpress"})),
        )
        .unwrap_err();
        assert!(e.contains("query_heads"), "{e}");
    }

    #[test]
    fn bad_presets_and_uncovered_methods_list_the_choices() {
        let e = apply("kvpres", &entry(json!({"method": "snapkv"}))).unwrap_err();
        assert!(
            e.contains("kvpress, kvpress_leaderboard, kvcache_factory"),
            "{e}"
        );
        let e = apply("kvcache_factory", &entry(json!({"method": "kivi"}))).unwrap_err();
        assert!(e.contains("no configuration for method `kivi`") && e.contains("snapkv"));
        let e = apply(
            "kvpress_leaderboard",
            &entry(json!({"method": "expected_attention", "epsilon": 0.1})),
        )
        .unwrap_err();
        assert!(e.contains("adakv"), "{e}");
    }

    const EXPERIMENT: &str = "experiment: t\nmodel: smollm2-135m-instruct-q4_1\npreset: kvpress_leaderboard\ndatasets:\n  - name: niah\n    lengths: [64]\nmethods:\n  - method: full\n  - method: snapkv\n    kernel: 7\n  - method: kivi\n  - [{method: knorm}, {method: adakv, preset: kvcache_factory}]\nbudgets:\n  - compression_ratio: 0.5\n";

    #[test]
    fn an_experiment_preset_applies_to_every_entry_without_its_own() {
        let plan =
            crate::experiment::Plan::parse(EXPERIMENT, std::path::Path::new("x.yaml")).unwrap();
        let methods: Vec<Value> = plan
            .raw
            .methods
            .iter()
            .map(|m| serde_json::to_value(m).unwrap())
            .collect();
        assert_eq!(methods[0], json!({"method": "full"}));
        assert_eq!(
            methods[1],
            json!({"method": "snapkv", "window": 64, "kernel": 7, "pooling": "avg"})
        );
        assert_eq!(methods[2]["bits"], 2, "kivi keeps its defaults");
        assert_eq!(
            methods[3][1]["scorer"]["window"], 8,
            "an entry's own preset wins"
        );
        assert_eq!(plan.raw.preset.as_deref(), Some("kvpress_leaderboard"));
        // The 64-token needle is shorter than kivi's residual: a warning beside the notes.
        let (warnings, notes): (Vec<&String>, Vec<&String>) =
            plan.notes.iter().partition(|n| n.starts_with("warning: "));
        assert_eq!(notes.len(), 2, "{:?}", plan.notes);
        assert!(notes[0].contains("`kernel: 7`") && notes[0].contains("`kernel: 5`"));
        assert!(notes[1].contains("kivi"));
        assert!(
            warnings.iter().all(|w| w.contains("residual")),
            "{warnings:?}"
        );
    }

    #[test]
    fn an_unknown_preset_in_an_entry_names_its_line() {
        let bad = EXPERIMENT.replace("preset: kvcache_factory", "preset: factory");
        let err = crate::experiment::Plan::parse(&bad, std::path::Path::new("x.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("x.yaml:12: unknown preset `factory`"),
            "{err}"
        );
        assert!(err.contains("kvcache_factory"), "{err}");
    }
}

//! Method labels for tables and plots: a method run with one set of parameters is its name, one
//! run with several is named by the parameters that vary.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::Record;

/// Names each (method, parameters) pair: the bare method name when the method ran with one set of
/// parameters, else the name with the parameters that vary (`streaming_llm(sinks=8)`).
pub fn method_labels(records: &[Record]) -> HashMap<(String, String), String> {
    let params: Vec<String> = records
        .iter()
        .map(|r| r.method_params.to_string())
        .collect();
    method_labels_of(
        records
            .iter()
            .map(|r| r.method.as_str())
            .zip(params.iter().map(String::as_str)),
    )
}

/// [`method_labels`] from (method, parameters as JSON text) pairs, as a results frame holds them.
pub fn method_labels_of<'a>(
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
) -> HashMap<(String, String), String> {
    let mut params: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (method, p) in pairs {
        params.entry(method).or_default().insert(p.to_string());
    }
    let mut out = HashMap::new();
    for (method, sets) in params {
        for p in &sets {
            let label = if sets.len() == 1 {
                method.to_string()
            } else {
                let parsed: serde_json::Value = serde_json::from_str(p).unwrap_or_default();
                let varying: Vec<String> = parsed
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .filter(|(k, v)| {
                                sets.iter().any(|q| {
                                    serde_json::from_str::<serde_json::Value>(q)
                                        .ok()
                                        .and_then(|q| q.get(k.as_str()).cloned())
                                        .as_ref()
                                        != Some(v)
                                })
                            })
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect()
                    })
                    .unwrap_or_default();
                format!("{method}({})", varying.join(","))
            };
            out.insert((method.to_string(), p.clone()), label);
        }
    }
    out
}

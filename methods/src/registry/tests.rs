//! The registry's guards: documented defaults are the config defaults, every method builds and
//! validates from them, bad values and unknown names are reported with the valid ones.

use super::*;
use crate::allocation::{adakv::AdaKv, pyramidkv::PyramidKv};

#[test]
fn every_described_method_builds_from_its_defaults_and_back() {
    for d in METHODS.iter() {
        let mut json = serde_json::json!({ "method": d.name });
        if d.name == "per_layer" {
            json["ratios"] = serde_json::json!([0.5]);
        }
        let c: MethodConfig =
            serde_json::from_value(json).unwrap_or_else(|e| panic!("{}: {e}", d.name));
        assert_eq!(c.build().name(), d.name);
        // Every parameter of the description is a field of the config, and vice versa.
        let params = c.build().params();
        let fields: Vec<&str> = params
            .as_object()
            .map(|o| o.keys().map(|k| k.as_str()).collect())
            .unwrap_or_default();
        let described: Vec<&str> = d.params.iter().map(|p| p.name).collect();
        let mut f = fields.clone();
        f.sort();
        let mut g = described.clone();
        g.sort();
        assert_eq!(f, g, "{}: params vs description", d.name);
    }
    let mut names = method_names();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), METHODS.len(), "a method name registered twice");
}

/// The documented parameters are exactly the config's fields, their documented defaults are
/// the config's `Default`, and a YAML entry naming only the method gives that same config
/// (the serde defaults agree with `Default`).
#[test]
fn documented_defaults_are_the_config_defaults() {
    let configs = MethodConfig::registered_defaults();
    assert_eq!(configs.len(), METHODS.len());
    for (c, d) in configs.iter().zip(METHODS.iter()) {
        let v = serde_json::to_value(c).unwrap();
        assert_eq!(v["method"], d.name);
        let mut fields: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        fields.retain(|k| *k != "method");
        fields.sort();
        let mut documented: Vec<&str> = d.params.iter().map(|p| p.name).collect();
        documented.sort();
        assert_eq!(
            fields, documented,
            "{}: documented params vs config fields",
            d.name
        );
        // Rebuild the config from the documented defaults alone.
        let mut from_docs = serde_json::json!({ "method": d.name });
        for p in &d.params {
            from_docs[p.name] = if p.default == "(required)" {
                serde_json::json!([0.5]) // the one required field: per_layer's ratios
            } else {
                serde_json::from_str(&p.default)
                    .unwrap_or_else(|_| serde_json::Value::String(p.default.clone()))
            };
        }
        let parsed: MethodConfig = serde_json::from_value(from_docs.clone())
            .unwrap_or_else(|e| panic!("{}: documented defaults do not parse: {e}", d.name));
        let without_required = |mut v: serde_json::Value| {
            for p in d.params.iter().filter(|p| p.default == "(required)") {
                v.as_object_mut().unwrap().remove(p.name);
            }
            v
        };
        assert_eq!(
            without_required(serde_json::to_value(&parsed).unwrap()),
            without_required(v.clone()),
            "{}: documented defaults vs Default",
            d.name
        );
        // Omitted fields take the same defaults as `Default`.
        let mut minimal = serde_json::json!({ "method": d.name });
        for p in d.params.iter().filter(|p| p.default == "(required)") {
            minimal[p.name] = from_docs[p.name].clone();
        }
        let parsed: MethodConfig = serde_json::from_value(minimal).unwrap();
        assert_eq!(
            without_required(serde_json::to_value(&parsed).unwrap()),
            without_required(v.clone()),
            "{}: serde defaults vs Default",
            d.name
        );
    }
}

#[test]
fn every_registered_method_validates_with_its_defaults() {
    for d in METHODS.iter() {
        let mut json = serde_json::json!({ "method": d.name });
        if d.name == "per_layer" {
            json["ratios"] = serde_json::json!([0.5]);
        }
        let c: MethodConfig = serde_json::from_value(json).unwrap();
        c.validate()
            .unwrap_or_else(|e| panic!("{}: defaults rejected: {e}", d.name));
    }
}

/// Each bad value is rejected when the plan is built, naming the method and the field, and
/// the message gives the allowed values.
#[test]
fn bad_parameter_values_are_rejected_naming_method_and_field() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // (config, method, field, part of the allowed values)
        (r#"{"method":"kivi","bits":3}"#, "kivi", "bits", "2 or 4"),
        (
            r#"{"method":"kivi","group":0}"#,
            "kivi",
            "group",
            "at least 1",
        ),
        (
            r#"{"method":"kivi","residual":100}"#,
            "kivi",
            "residual",
            "multiple of group",
        ),
        (
            r#"{"method":"quant","bits":5}"#,
            "quant",
            "bits",
            "2, 4 or 8",
        ),
        (
            r#"{"method":"quant","group":0}"#,
            "quant",
            "group",
            "at least 1",
        ),
        (
            r#"{"method":"h2o","recent_fraction":-0.1}"#,
            "h2o",
            "recent_fraction",
            "[0, 1]",
        ),
        (
            r#"{"method":"h2o","recent_fraction":1.5}"#,
            "h2o",
            "recent_fraction",
            "[0, 1]",
        ),
        (
            r#"{"method":"adakv","floor":1.5}"#,
            "adakv",
            "floor",
            "[0, 1]",
        ),
        (
            r#"{"method":"think","key_channel_ratio":1.0}"#,
            "think",
            "key_channel_ratio",
            "[0, 1)",
        ),
        (
            r#"{"method":"think","key_channel_ratio":-0.5}"#,
            "think",
            "key_channel_ratio",
            "[0, 1)",
        ),
        (
            r#"{"method":"kvsharer","fraction":1.2}"#,
            "kvsharer",
            "fraction",
            "[0, 1)",
        ),
        (
            r#"{"method":"minicache","t":-1}"#,
            "minicache",
            "t",
            "[0, 1]",
        ),
        (
            r#"{"method":"minicache","gamma":2}"#,
            "minicache",
            "gamma",
            "[0, 1]",
        ),
        (
            r#"{"method":"snapkv","window":0}"#,
            "snapkv",
            "window",
            "at least 1",
        ),
        (
            r#"{"method":"snapkv","kernel":4}"#,
            "snapkv",
            "kernel",
            "odd",
        ),
        (
            r#"{"method":"think","window":0}"#,
            "think",
            "window",
            "at least 1",
        ),
        (
            r#"{"method":"lagkv","lag_size":0}"#,
            "lagkv",
            "lag_size",
            "at least 1",
        ),
        (
            r#"{"method":"kv_head_merge","group_size":0}"#,
            "kv_head_merge",
            "group_size",
            "at least 1",
        ),
        (
            r#"{"method":"lowrank","rank":4,"energy":0.5}"#,
            "lowrank",
            "rank",
            "not both",
        ),
        (
            r#"{"method":"lowrank","rank":0}"#,
            "lowrank",
            "rank",
            "at least 1",
        ),
        (
            r#"{"method":"lowrank","energy":1.5}"#,
            "lowrank",
            "energy",
            "(0, 1]",
        ),
        (
            r#"{"method":"pyramidkv","beta":0.5}"#,
            "pyramidkv",
            "beta",
            ">= 1",
        ),
        (
            r#"{"method":"kvmerger","threshold":".nan"}"#,
            "kvmerger",
            "threshold",
            "[-1, 1]",
        ),
        (
            r#"{"method":"adakv","scorer":{"method":"snapkv","window":0}}"#,
            "adakv",
            "scorer.window (snapkv)",
            "at least 1",
        ),
        (
            r#"{"method":"pyramidkv","scorer":{"method":"h2o","recent_fraction":2}}"#,
            "pyramidkv",
            "scorer.recent_fraction (h2o)",
            "[0, 1]",
        ),
        (
            r#"{"method":"cam","scorer":{"method":"lagkv","lag_size":0}}"#,
            "cam",
            "scorer.lag_size (lagkv)",
            "at least 1",
        ),
        (
            r#"{"method":"per_layer","ratios":[0.5],"scorer":{"method":"snapkv","kernel":2}}"#,
            "per_layer",
            "scorer.kernel (snapkv)",
            "odd",
        ),
    ];
    for &(json, method, field, allowed) in cases {
        let c: MethodConfig = if json.contains(".nan") {
            MethodConfig::Kvmerger(crate::merging::kvmerger::KvMerger {
                threshold: f64::NAN,
                ..Default::default()
            })
        } else {
            serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
        };
        let e = c.validate().expect_err(json);
        assert_eq!((e.method, e.field.as_str()), (method, field), "{json}: {e}");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("{method}: {field} ")) && msg.contains(allowed),
            "{json}: {msg}"
        );
        // The run-time error of the method is the same error.
        assert!(c.build().validate().is_err());
    }
    // per_layer ratios out of range are rejected when parsed (with the YAML line) and by
    // validation for configurations built in code.
    let p = MethodConfig::PerLayer(crate::allocation::per_layer::PerLayer {
        ratios: vec![0.5, 1.5],
        scorer: ScorerConfig::default(),
    });
    let e = p.validate().unwrap_err();
    assert_eq!(e.field, "ratios[1]", "{e}");
    assert!(e.to_string().contains("[0, 1)"), "{e}");
    // A composition reports its bad part.
    let spec: MethodSpec =
        serde_json::from_str(r#"[{"method":"snapkv"},{"method":"kivi","bits":3}]"#).unwrap();
    let (part, e) = spec.validate().unwrap_err();
    assert_eq!((part, e.method, e.field.as_str()), (1, "kivi", "bits"));
}

#[test]
fn shape_dependent_values_are_checked_against_the_model() {
    let check = |json: &str, shape: (usize, usize, usize)| {
        let c: MethodConfig = serde_json::from_str(json).unwrap();
        c.validate().unwrap();
        c.check_model_shape(shape.0, shape.1, shape.2)
    };
    let e = check(r#"{"method":"quant","group":64}"#, (4, 2, 32)).unwrap_err();
    assert_eq!((e.method, e.field.as_str()), ("quant", "group"));
    assert!(e.to_string().contains("must divide head_dim (32)"), "{e}");
    check(r#"{"method":"quant","group":64}"#, (4, 2, 128)).unwrap();
    let e = check(r#"{"method":"kivi"}"#, (4, 2, 16)).unwrap_err();
    assert_eq!(e.field, "group");
    let e = check(r#"{"method":"lowrank","rank":65}"#, (4, 2, 64)).unwrap_err();
    assert_eq!(e.field, "rank");
    let e = check(r#"{"method":"per_layer","ratios":[0.5,0.5]}"#, (4, 2, 64)).unwrap_err();
    assert_eq!(e.field, "ratios");
    check(r#"{"method":"per_layer","ratios":[0.5,0.5]}"#, (2, 2, 64)).unwrap();
    let e = check(r#"{"method":"minicache","start_layer":4}"#, (4, 2, 64)).unwrap_err();
    assert_eq!(e.field, "start_layer");
    let e = check(r#"{"method":"kvsharer","layers_shared":4}"#, (4, 2, 64)).unwrap_err();
    assert_eq!((e.method, e.field.as_str()), ("kvsharer", "layers_shared"));
    for d in METHODS.iter() {
        let mut json = serde_json::json!({ "method": d.name });
        if d.name == "per_layer" {
            json["ratios"] = serde_json::json!(vec![0.5; 16]);
        }
        let c: MethodConfig = serde_json::from_value(json).unwrap();
        c.check_model_shape(16, 8, 128)
            .unwrap_or_else(|e| panic!("{}: defaults rejected on a 16-layer model: {e}", d.name));
    }
}

#[test]
fn unknown_method_lists_valid_names() {
    let err = serde_json::from_str::<MethodConfig>(r#"{"method":"nope"}"#).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("streaming_llm") && msg.contains("full"),
        "{msg}"
    );
}

#[test]
fn spec_is_one_method_or_a_list() {
    let one: MethodSpec = serde_json::from_str(r#"{"method":"snapkv","window":8}"#).unwrap();
    assert!(matches!(
        one,
        MethodSpec::One(MethodConfig::Snapkv(SnapKv { window: 8, .. }))
    ));
    let two: MethodSpec =
        serde_json::from_str(r#"[{"method":"snapkv"},{"method":"knorm"}]"#).unwrap();
    assert_eq!(two.build().name(), "snapkv+knorm");
    // Serialized as written, so a single method's record key is unchanged.
    assert_eq!(serde_json::to_value(&one).unwrap()["method"], "snapkv");
    assert!(serde_json::to_value(&two).unwrap().is_array());
    // Errors inside either form still name the registered methods and the bad field.
    let err = serde_json::from_str::<MethodSpec>(r#"[{"method":"snapkv"},{"method":"nope"}]"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope") && err.contains("adakv"), "{err}");
    let err = serde_json::from_str::<MethodSpec>(r#"{"method":"snapkv","windw":3}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("windw"), "{err}");
    assert!(serde_json::from_str::<MethodSpec>("[]").is_err());
}

#[test]
fn nested_scorers_default_and_parse() {
    let p: MethodConfig =
        serde_json::from_str(r#"{"method":"adakv","scorer":{"method":"knorm"}}"#).unwrap();
    assert!(matches!(
        p,
        MethodConfig::Adakv(AdaKv {
            scorer: ScorerConfig::Knorm(_),
            ..
        })
    ));
    let p: MethodConfig = serde_json::from_str(r#"{"method":"pyramidkv"}"#).unwrap();
    assert!(matches!(
        p,
        MethodConfig::Pyramidkv(PyramidKv {
            scorer: ScorerConfig::Snapkv(_),
            ..
        })
    ));
    assert!(serde_json::from_str::<MethodConfig>(
        r#"{"method":"adakv","scorer":{"method":"adakv"}}"#
    )
    .is_err());
}

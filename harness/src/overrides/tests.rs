use std::path::Path;

use kvbench_methods::Budget;

use super::*;
use crate::experiment::Plan;

const YAML: &str = "experiment: t
model: smollm2-135m-instruct-q4_1
datasets:
  - name: niah
    lengths: [64]
    depths: [0.5]
methods:
  - method: full
  - method: snapkv
    window: 8
budgets:
  - compression_ratio: 0.5
";

fn parse(yaml: &str, o: &Overrides) -> anyhow::Result<Plan> {
    Plan::parse_with(yaml, Path::new("x.yaml"), o)
}

fn names(plan: &Plan) -> Vec<String> {
    plan.raw
        .methods
        .iter()
        .map(|m| m.build().name().to_string())
        .collect()
}

#[test]
fn bare_method_names_are_methods_with_defaults() {
    let yaml = YAML.replace(
        "  - method: full\n  - method: snapkv\n    window: 8\n",
        "  - full\n  - snapkv\n  - [snapkv, {method: kivi, bits: 4}]\n",
    );
    let plan = parse(&yaml, &Overrides::default()).unwrap();
    assert_eq!(names(&plan), ["full", "snapkv", "snapkv+kivi"]);
    let flow = YAML.replace(
        "  - method: full\n  - method: snapkv\n    window: 8\n",
        "  [full, streaming_llm]\n",
    );
    let flow = flow.replace("methods:\n  [", "methods: [");
    assert_eq!(
        names(&parse(&flow, &Overrides::default()).unwrap()),
        ["full", "streaming_llm"]
    );
    // An unknown bare name lists the registered methods and names its line.
    let bad = YAML.replace("  - method: full\n", "  - fulll\n");
    let err = format!("{:#}", parse(&bad, &Overrides::default()).unwrap_err());
    assert!(
        err.contains("fulll") && err.contains("snapkv") && err.contains("x.yaml:8"),
        "{err}"
    );
}

#[test]
fn methods_flag_keeps_yaml_parameters_and_adds_defaults() {
    let o = Overrides {
        methods: Some(vec!["snapkv".into(), "h2o".into(), "snapkv+kivi".into()]),
        ..Default::default()
    };
    let plan = parse(YAML, &o).unwrap();
    assert_eq!(names(&plan), ["snapkv", "h2o", "snapkv+kivi"]);
    let snapkv = serde_json::to_value(&plan.raw.methods[0]).unwrap();
    assert_eq!(snapkv["window"], 8, "the YAML's parameters are kept");
    let o = Overrides {
        methods: Some(vec!["snapkvv".into()]),
        ..Default::default()
    };
    let err = format!("{:#}", parse(YAML, &o).unwrap_err());
    assert!(
        err.contains("snapkvv") && err.contains("--methods snapkvv"),
        "{err}"
    );
}

#[test]
fn datasets_and_budgets_flags_replace_the_lists() {
    let two = YAML.replace(
        "methods:",
        "  - name: ruler\n    lengths: [128]\n    tasks: [vt]\nmethods:",
    );
    let o = Overrides {
        datasets: Some(vec!["ruler".into()]),
        budgets: Some(vec![
            "0.25".into(),
            "ratio:0.75".into(),
            "tokens:256".into(),
        ]),
        ..Default::default()
    };
    let plan = parse(&two, &o).unwrap();
    assert_eq!(plan.raw.datasets.len(), 1);
    assert_eq!(plan.raw.datasets[0].name(), "ruler");
    assert_eq!(
        plan.raw.budgets,
        [
            Budget::CompressionRatio(0.25),
            Budget::CompressionRatio(0.75),
            Budget::Tokens(256)
        ]
    );
    // full once + snapkv at three budgets
    assert_eq!(plan.runs.len(), 4);
    for (bad, want) in [
        ("256", "tokens:256"),
        ("tokens:x", "whole number"),
        ("pct:5", "unknown budget kind"),
    ] {
        let o = Overrides {
            budgets: Some(vec![bad.into()]),
            ..Default::default()
        };
        let err = format!("{:#}", parse(YAML, &o).unwrap_err());
        assert!(err.contains(want), "{bad}: {err}");
    }
    // A ratio out of range still fails in validation, naming the field.
    let o = Overrides {
        budgets: Some(vec!["1.5".into()]),
        ..Default::default()
    };
    let err = format!("{:#}", parse(YAML, &o).unwrap_err());
    assert!(
        err.contains("field `budgets`") && err.contains("--budgets 1.5"),
        "{err}"
    );
}

#[test]
fn set_writes_dotted_paths_and_errors_name_the_field() {
    let o = Overrides {
        set: vec![
            "seed=3".into(),
            "datasets.0.lengths=[1000, 2000]".into(),
            "methods.1.window=32".into(),
            "experiment=other".into(),
        ],
        ..Default::default()
    };
    let plan = parse(YAML, &o).unwrap();
    assert_eq!(plan.raw.seed, 3);
    assert_eq!(plan.raw.experiment, "other");
    let d = serde_json::to_value(&plan.raw.datasets[0]).unwrap();
    assert_eq!(d["lengths"], serde_json::json!([1000, 2000]));
    assert_eq!(
        serde_json::to_value(&plan.raw.methods[1]).unwrap()["window"],
        32
    );
    for (bad, want) in [
        ("seed", "KEY=VALUE"),
        ("datasets.5.lengths=[1]", "has 1 entries"),
        ("datasets.x=1", "not an index"),
        ("experiment.x=1", "single value"),
        ("sede=1", "sede"),
        ("methods.1.windoww=3", "windoww"),
        ("methods.1.window=0", "`window`"),
    ] {
        let o = Overrides {
            set: vec![bad.into()],
            ..Default::default()
        };
        let err = format!("{:#}", parse(YAML, &o).unwrap_err());
        assert!(err.contains(want), "{bad}: {err}");
    }
}

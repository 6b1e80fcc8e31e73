//! Tests of experiment parsing, validation and the grid (`experiment.rs`).

use super::*;

const GOOD: &str = "experiment: t\nmodel: smollm2-135m-instruct-q4_1\ndatasets:\n  - name: niah\n    lengths: [64]\n    depths: [0.5]\nmethods:\n  - method: full\n  - method: streaming_llm\nbudgets:\n  - compression_ratio: 0.5\n  - tokens: 32\n";

#[test]
fn grid_expands_budgets_but_not_full() {
    let plan = Plan::parse(GOOD, Path::new("x.yaml")).unwrap();
    assert_eq!(plan.runs.len(), 3);
    assert!(plan.runs[0].budget.is_none());
    assert_eq!(plan.runs[2].budget, Some(Budget::Tokens(32)));
}

#[test]
fn unknown_method_names_line_and_registered_methods() {
    let bad = GOOD.replace("method: streaming_llm", "method: snapkvv");
    let err = Plan::parse(&bad, Path::new("x.yaml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("x.yaml:9"), "{err}");
    assert!(
        err.contains("snapkvv") && err.contains("streaming_llm") && err.contains("full"),
        "{err}"
    );
}

#[test]
fn a_list_of_methods_is_one_composed_run_per_budget() {
    let yaml = GOOD.replace(
        "  - method: streaming_llm\n",
        "  - [{method: snapkv, window: 8}, {method: knorm}]\n",
    );
    let plan = Plan::parse(&yaml, Path::new("x.yaml")).unwrap();
    assert_eq!(plan.runs.len(), 3);
    assert_eq!(plan.runs[1].config.build().name(), "snapkv+knorm");
    let bad = GOOD.replace(
        "  - method: streaming_llm\n",
        "  - [{method: snapkv}, {method: knrom}]\n",
    );
    let err = Plan::parse(&bad, Path::new("x.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("x.yaml:9") && err.contains("knrom") && err.contains("adakv"),
        "{err}"
    );
}

#[test]
fn bad_method_parameters_name_file_line_method_field_and_allowed_values() {
    let bad = GOOD.replace(
        "  - method: streaming_llm\n",
        "  - method: streaming_llm\n  # a comment\n  - method: kivi\n    bits: 3\n",
    );
    let err = Plan::parse(&bad, Path::new("x.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("x.yaml:11")
            && err.contains("`kivi`")
            && err.contains("`bits`")
            && err.contains("2 or 4"),
        "{err}"
    );
    let bad = GOOD.replace(
        "  - method: streaming_llm\n",
        "  - [{method: snapkv}, {method: quant, group: 0}]\n",
    );
    let err = Plan::parse(&bad, Path::new("x.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("x.yaml:9")
            && err.contains("part 2")
            && err.contains("`quant`")
            && err.contains("`group`"),
        "{err}"
    );
    // Flow-style lists point at `methods:`.
    let bad = GOOD.replace(
        "methods:\n  - method: full\n  - method: streaming_llm\n",
        "methods: [{method: full}, {method: snapkv, window: 0}]\n",
    );
    let err = Plan::parse(&bad, Path::new("x.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("x.yaml:7") && err.contains("`window`"),
        "{err}"
    );
}

#[test]
fn model_shape_is_checked_with_the_entry_line() {
    let yaml = GOOD.replace(
        "  - method: streaming_llm\n",
        "  - method: streaming_llm\n  - method: quant\n    group: 64\n",
    );
    let dir = std::env::temp_dir().join(format!("kvbench-shape-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("q.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let plan = Plan::load(&path).unwrap();
    plan.check_model_shape(30, 3, 64).unwrap();
    let err = format!("{:#}", plan.check_model_shape(30, 3, 32).unwrap_err());
    assert!(
        err.contains("q.yaml:10")
            && err.contains("`quant`")
            && err.contains("`group`")
            && err.contains("head_dim (32)"),
        "{err}"
    );
    // Under `--methods` the file's lines no longer say what runs: the error names the
    // overrides instead of the line of whatever entry sits at that index in the file.
    let overrides = crate::overrides::Overrides {
        methods: Some(vec!["quant".into(), "full".into()]),
        ..Default::default()
    };
    let plan = Plan::load_with(&path, &overrides).unwrap();
    let err = format!("{:#}", plan.check_model_shape(30, 3, 32).unwrap_err());
    assert!(
        err.contains("q.yaml: methods entry 1")
            && err.contains("as changed by --methods quant,full"),
        "{err}"
    );
}

#[test]
fn ratio_out_of_range_is_rejected_with_line() {
    let bad = GOOD.replace("compression_ratio: 0.5", "compression_ratio: 1.0");
    let err = Plan::parse(&bad, Path::new("x.yaml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("x.yaml:11") && err.contains("[0, 1)"), "{err}");
}

#[test]
fn unknown_dataset_and_field_are_named() {
    let bad = GOOD.replace("name: niah", "name: longbenchh");
    let err = Plan::parse(&bad, Path::new("x.yaml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("longbenchh") && err.contains("niah"), "{err}");
    let bad = GOOD
        .replace("seed", "sede")
        .replace("experiment: t\n", "experiment: t\nsede: 1\n");
    let err = Plan::parse(&bad, Path::new("x.yaml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("sede") && err.contains("x.yaml:2"), "{err}");
}

#[test]
fn chat_template_option_is_read_and_checked_against_the_model() {
    let yaml = GOOD.replace(
        "    depths: [0.5]\n",
        "    depths: [0.5]\n    chat_template: true\n",
    );
    let dir = std::env::temp_dir().join(format!("kvbench-exp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ct.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let plan = Plan::load(&path).unwrap();
    assert_eq!(
        plan.raw.datasets[0].chat_template(),
        ChatTemplateMode::Always
    );
    plan.check_chat_templates(true).unwrap();
    let err = plan.check_chat_templates(false).unwrap_err().to_string();
    assert!(
        err.contains("ct.yaml:7") && err.contains("chat_template: true") && err.contains("niah"),
        "{err}"
    );
    let plan = Plan::parse(GOOD, Path::new("x.yaml")).unwrap();
    assert_eq!(plan.raw.datasets[0].chat_template(), ChatTemplateMode::Auto);
    plan.check_chat_templates(false).unwrap();
    let bad = GOOD.replace(
        "    depths: [0.5]\n",
        "    depths: [0.5]\n    chat_template: sometimes\n",
    );
    let err = Plan::parse(&bad, Path::new("x.yaml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("auto, true or false"), "{err}");
}

#[test]
fn bad_model_spec_is_named() {
    let bad = GOOD.replace("smollm2-135m-instruct-q4_1", "hf:nope");
    let err = Plan::parse(&bad, Path::new("x.yaml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("model"), "{err}");
}

#[test]
fn a_synthetic_model_needs_a_tokenizer_and_only_it_may_have_one() {
    let synthetic = GOOD.replace(
        "smollm2-135m-instruct-q4_1",
        "synthetic:llama3-8b\ntokenizer: smollm2-135m-instruct-q4_1",
    );
    let plan = Plan::parse(&synthetic, Path::new("x.yaml")).unwrap();
    match &plan.model {
        ModelSpec::Synthetic { shape, tokenizer } => {
            assert_eq!(shape, "llama3-8b");
            assert_eq!(
                tokenizer.as_deref().map(|t| t.to_string()).as_deref(),
                Some("smollm2-135m-instruct-q4_1")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(plan.notes.iter().any(|n| n.contains("random weights")));
    let err = |yaml: &str| {
        Plan::parse(yaml, Path::new("x.yaml"))
            .unwrap_err()
            .to_string()
    };
    let without = GOOD.replace("smollm2-135m-instruct-q4_1", "synthetic:llama3-8b");
    let e = err(&without);
    assert!(
        e.contains("x.yaml:2") && e.contains("tokenizer: MODEL"),
        "{e}"
    );
    let real_with = GOOD.replace(
        "model: smollm2-135m-instruct-q4_1",
        "model: smollm2-135m-instruct-q4_1\ntokenizer: smollm2-135m-instruct-q4_1",
    );
    let e = err(&real_with);
    assert!(
        e.contains("x.yaml:3") && e.contains("only for a synthetic model"),
        "{e}"
    );
    let unknown = synthetic.replace("llama3-8b", "llama3-9b");
    let e = err(&unknown);
    assert!(e.contains("synthetic:qwen3-8b"), "{e}");
}

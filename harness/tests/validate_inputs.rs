//! Issue 17 items 5 and 6: everything `run` would later reject is caught by `kvbench validate`
//! (and `run`, before the model is loaded), naming the file and line; degenerate settings are
//! warnings; names are not paths.

use std::path::{Path, PathBuf};
use std::process::Command;

use kvbench::experiment::Plan;

const GOOD: &str = "experiment: t
model: smollm2-135m-instruct-q4_1
datasets:
  - name: niah
    lengths: [64]
    depths: [0.5]
methods:
  - method: full
  - method: streaming_llm
budgets:
  - compression_ratio: 0.5
";

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kvbench-vi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `Plan::load` of `yaml` written to `d/exp.yaml`: the error text, or the plan.
fn load(d: &Path, yaml: &str) -> Result<Plan, String> {
    let path = d.join("exp.yaml");
    std::fs::write(&path, yaml).unwrap();
    Plan::load(&path).map_err(|e| format!("{e:#}"))
}

fn err(d: &Path, yaml: &str) -> String {
    match load(d, yaml) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(e) => e,
    }
}

#[test]
fn experiment_names_are_not_paths() {
    let d = dir("names");
    for bad in ["../../etc/evil", "a/b", ".", "..", "x y", "\"\""] {
        let e = err(
            &d,
            &GOOD.replace("experiment: t", &format!("experiment: {bad}")),
        );
        assert!(
            e.contains("exp.yaml:1") && e.contains("`experiment`"),
            "{bad}: {e}"
        );
        assert!(e.contains("letters, digits"), "{bad}: {e}");
    }
    for good in ["t", "run-1.v2_x", "..a"] {
        load(
            &d,
            &GOOD.replace("experiment: t", &format!("experiment: {good}")),
        )
        .unwrap();
    }
}

#[test]
fn duplicate_grid_cells_empty_axes_and_device_are_errors_with_lines() {
    let d = dir("grid");
    let e = err(
        &d,
        &GOOD.replace(
            "  - compression_ratio: 0.5\n",
            "  - compression_ratio: 0.5\n  - compression_ratio: 0.5\n",
        ),
    );
    assert!(e.contains("exp.yaml:10") && e.contains("twice"), "{e}");
    let e = err(
        &d,
        &GOOD.replace(
            "  - method: streaming_llm\n",
            "  - method: streaming_llm\n  - method: streaming_llm\n",
        ),
    );
    assert!(
        e.contains("exp.yaml:10") && e.contains("entry 3") && e.contains("repeats"),
        "{e}"
    );
    let e = err(&d, &format!("{GOOD}query_aware: []\n"));
    assert!(
        e.contains("exp.yaml:12") && e.contains("`query_aware` is empty"),
        "{e}"
    );
    let e = err(&d, &GOOD.replace("model:", "device: gpu0\nmodel:"));
    assert!(
        e.contains("exp.yaml:2") && e.contains("gpu0") && e.contains("cuda:N"),
        "{e}"
    );
    load(&d, &GOOD.replace("model:", "device: cuda:1\nmodel:")).unwrap();
    // Dataset options: niah depths outside 0..=1.
    let e = err(&d, &GOOD.replace("depths: [0.5]", "depths: [1.5]"));
    assert!(e.contains("exp.yaml:4") && e.contains("1.5"), "{e}");
}

#[test]
fn method_parameters_the_issue_lists_are_refused_at_validation() {
    let d = dir("params");
    for (entry, field) in [
        ("{method: kivi, bits: 3}", "bits"),
        ("{method: kivi, group: 0}", "group"),
        ("{method: quant, bits: 3}", "bits"),
        ("{method: quant, group: 0}", "group"),
        ("{method: lowrank, rank: 0}", "rank"),
        (
            "{method: think, key_channel_ratio: 1.5}",
            "key_channel_ratio",
        ),
        ("{method: kvsharer, fraction: 1.5}", "fraction"),
        ("{method: h2o, recent_fraction: 2.0}", "recent_fraction"),
        ("{method: snapkv, window: 0}", "window"),
        // A gap found for issue 17: 0 averaged positions gave NaN scores at run time.
        (
            "{method: expected_attention, future_positions: 0}",
            "future_positions",
        ),
    ] {
        let e = err(
            &d,
            &GOOD.replace(
                "  - method: streaming_llm\n",
                &format!("  - method: streaming_llm\n  - {entry}\n"),
            ),
        );
        assert!(
            e.contains("exp.yaml:10") && e.contains(&format!("`{field}`")),
            "{entry}: {e}"
        );
    }
}

#[test]
fn data_files_resolve_against_the_experiment_and_must_exist() {
    let d = dir("data");
    std::fs::create_dir_all(d.join("data")).unwrap();
    std::fs::write(d.join("data/hay.txt"), "Some text. More text.\n").unwrap();
    let with = |p: &str| {
        GOOD.replace(
            "    depths: [0.5]\n",
            &format!("    depths: [0.5]\n    haystack: {{file: {{path: {p}}}}}\n"),
        )
    };
    // Relative to the YAML file, not to the working directory (the test's is harness/).
    let plan = load(&d, &with("data/hay.txt")).unwrap();
    let kvbench_datasets::DatasetConfig::Niah(c) = &plan.raw.datasets[0] else {
        panic!()
    };
    let kvbench_datasets::Haystack::File { path } = &c.haystack else {
        panic!()
    };
    assert!(
        path.is_absolute() && path.ends_with("data/hay.txt"),
        "{path:?}"
    );
    let e = err(&d, &with("data/missing.txt"));
    assert!(
        e.contains("exp.yaml:4") && e.contains("data/missing.txt") && e.contains("does not exist"),
        "{e}"
    );
    let jsonl = "experiment: t\nmodel: smollm2-135m-instruct-q4_1\ndatasets:\n  - name: jsonl\n    path: nope.jsonl\nmethods:\n  - method: full\n";
    let e = err(&d, jsonl);
    assert!(e.contains("exp.yaml:4") && e.contains("nope.jsonl"), "{e}");
}

#[test]
fn a_local_model_must_be_a_readable_gguf_or_checkpoint() {
    let d = dir("model");
    std::fs::write(d.join("fake.gguf"), b"not a gguf at all").unwrap();
    let e = err(
        &d,
        &GOOD.replace("smollm2-135m-instruct-q4_1", "./fake.gguf"),
    );
    // The model path is resolved like any spec (working directory); give it absolute.
    assert!(e.contains("model"), "{e}");
    let fake = d.join("fake.gguf");
    let e = err(
        &d,
        &GOOD.replace("smollm2-135m-instruct-q4_1", fake.to_str().unwrap()),
    );
    assert!(
        e.contains("exp.yaml:2") && e.contains("not a GGUF file"),
        "{e}"
    );
    let ck = d.join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    std::fs::write(ck.join("config.json"), b"{}").unwrap();
    std::fs::write(ck.join("tokenizer.json"), b"{}").unwrap();
    std::fs::write(
        ck.join("model.safetensors"),
        b"\xff\xff\xff\xff\xff\xff\xff\xffjunk",
    )
    .unwrap();
    let e = err(
        &d,
        &GOOD.replace("smollm2-135m-instruct-q4_1", ck.to_str().unwrap()),
    );
    assert!(e.contains("not a safetensors file"), "{e}");
    let missing = d.join("missing.gguf");
    let e = err(
        &d,
        &GOOD.replace("smollm2-135m-instruct-q4_1", missing.to_str().unwrap()),
    );
    assert!(
        e.contains("exp.yaml:2") && e.contains("missing.gguf"),
        "{e}"
    );
}

#[test]
fn degenerate_settings_are_warnings() {
    let d = dir("warn");
    let yaml = GOOD
        .replace(
            "  - compression_ratio: 0.5\n",
            "  - compression_ratio: 0.5\n  - tokens: 64\n",
        )
        .replace(
            "  - method: streaming_llm\n",
            "  - method: streaming_llm\n  - method: kivi\n    residual: 128\n",
        )
        .replace("depths: [0.5]", "depths: [0.5]\n    samples_per_cell: 5000");
    let plan = load(&d, &yaml).unwrap();
    let warnings: Vec<&String> = plan
        .notes
        .iter()
        .filter(|n| n.starts_with("warning: "))
        .collect();
    let all = format!("{warnings:#?}");
    assert!(
        all.contains("tokens: 64") && all.contains("nothing is evicted"),
        "{all}"
    );
    assert!(
        all.contains("`kivi`") && all.contains("residual 128"),
        "{all}"
    );
    // The large grid comes with a time: generations x the smallest model's measured rate.
    let large = warnings
        .iter()
        .find(|w| w.contains("the grid is large"))
        .unwrap_or_else(|| panic!("no large-grid warning: {all}"));
    let generations: usize = large
        .split(" = ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{large}"));
    assert!(generations >= 20_000, "{large}");
    let at =
        |s: f64| kvbench::run::duration(std::time::Duration::from_secs_f64(generations as f64 * s));
    let want = format!("about {} on one GPU or {} on a CPU", at(0.33), at(3.3));
    assert!(large.contains(&want), "{want} missing: {large}");
    // And `kvbench validate` prints them, succeeding.
    let o = Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .args(["validate", d.join("exp.yaml").to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: ") && stderr.contains("nothing is evicted"),
        "{stderr}"
    );
}

/// `--fresh` twice within a second: both earlier results files are kept, under unique names.
#[test]
fn fresh_backups_never_overwrite_each_other() {
    let d = dir("fresh");
    let results = d.join("results.jsonl");
    let mut backups = std::collections::HashSet::new();
    for i in 0..3 {
        std::fs::write(&results, format!("{i}\n")).unwrap();
        let b = kvbench_reports::unique_backup(&results);
        std::fs::rename(&results, &b).unwrap();
        backups.insert(b);
    }
    let kept: Vec<String> = backups
        .iter()
        .map(|b| std::fs::read_to_string(b).unwrap())
        .collect();
    assert_eq!(kept.len(), 3, "{kept:?}");
}

/// `per_layer`'s ratio count against the model's layers is checked by `kvbench validate` when the
/// model is on disk (the cached SmolLM2: 30 layers), from its header, before any weights load.
#[test]
fn per_layer_ratio_count_is_checked_at_validation_against_a_cached_model() {
    kvbench::testing::smollm2_gguf();
    let d = dir("per-layer");
    let yaml = GOOD.replace(
        "  - method: streaming_llm\n",
        "  - method: streaming_llm\n  - method: per_layer\n    ratios: [0.2, 0.5, 0.8]\n",
    );
    let path = d.join("exp.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .args(["validate", path.to_str().unwrap()])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "accepted:\n{stderr}");
    assert!(
        stderr.contains("exp.yaml:10") && stderr.contains("ratios") && stderr.contains("30 layers"),
        "{stderr}"
    );
    // With one ratio per layer it validates.
    let ratios = vec!["0.5"; 30].join(", ");
    std::fs::write(&path, yaml.replace("0.2, 0.5, 0.8", &ratios)).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .args(["validate", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Issue 19 item 5: no floating default for hub data. LongBench's parquet export without
/// `revision:` is an error naming the line and what to write; a branch written as the revision
/// or a RULER input without one is a warning naming the line.
#[test]
fn floating_hub_revisions_are_an_error_or_a_warning() {
    let d = dir("floating");
    let parquet = GOOD.replace(
        "  - name: niah\n    lengths: [64]\n    depths: [0.5]\n",
        "  - name: longbench\n    tasks: [hotpotqa]\n    source: parquet\n",
    );
    let e = err(&d, &parquet);
    assert!(
        e.contains("exp.yaml:6: dataset `longbench`, field `revision`: `source: parquet` needs `revision:`")
            && e.contains("revision: COMMIT"),
        "{e}"
    );
    let branch = parquet.replace(
        "source: parquet\n",
        "source: parquet\n    revision: refs/convert/parquet\n",
    );
    let plan = load(&d, &branch).unwrap();
    let w: Vec<&String> = plan
        .notes
        .iter()
        .filter(|n| n.contains("a branch or tag"))
        .collect();
    assert_eq!(w.len(), 1, "{:?}", plan.notes);
    assert!(
        w[0].starts_with("warning: ") && w[0].contains("exp.yaml:4: dataset `longbench`"),
        "{w:?}"
    );
    let ruler = GOOD.replace(
        "  - name: niah\n    lengths: [64]\n    depths: [0.5]\n",
        "  - name: ruler\n    tasks: [niah_single_1]\n    lengths: [256]\n    essays: {repo: me/inputs, file: PaulGrahamEssays.json}\n",
    );
    let plan = load(&d, &ruler).unwrap();
    assert!(
        plan.notes.iter().any(|n| n.starts_with("warning: ")
            && n.contains("exp.yaml:4: dataset `ruler`: field `essays`")
            && n.contains("revision: COMMIT")),
        "{:?}",
        plan.notes
    );
    std::fs::remove_dir_all(&d).unwrap();
}

use super::*;
use crate::testutil::temp_file;
use crate::{longbench, ruler, scbench, WhitespaceTokens};

fn names(d: &str) -> Vec<&'static str> {
    describe(d).unwrap().tasks.iter().map(|t| t.name).collect()
}

#[test]
fn every_dataset_and_task_is_described() {
    assert_eq!(
        dataset_names(),
        [
            "niah",
            "jsonl",
            "longbench",
            "longbench_v2",
            "scbench",
            "ruler"
        ]
    );
    let lb = names("longbench");
    assert_eq!(lb.len(), 34);
    assert_eq!(lb[..21], *longbench::TASKS);
    assert_eq!(lb[21..], *longbench::TASKS_E);
    for t in describe("longbench").unwrap().tasks {
        assert_eq!(Some(t.metric), longbench::metric(t.name), "{}", t.name);
        assert_eq!(
            Some(t.max_new_tokens),
            longbench::prompts::max_new_tokens(t.name),
            "{}",
            t.name
        );
    }
    assert_eq!(names("scbench"), scbench::TASKS);
    for t in describe("scbench").unwrap().tasks {
        assert_eq!(
            t.max_new_tokens,
            scbench::max_new_tokens(t.name, None),
            "{}",
            t.name
        );
        if !t.name.ends_with("_with_needles") && !t.name.ends_with("_and_kv") {
            assert_eq!(Some(t.metric), scbench::metric(t.name), "{}", t.name);
        }
    }
    assert_eq!(names("ruler"), ruler::TASKS);
    assert_eq!(names("longbench_v2"), ["longbench_v2"]);
    let json = serde_json::to_value(DATASETS).unwrap();
    assert_eq!(json[2]["tasks"][0]["metric"], "qa_f1");
    assert_eq!(json[2]["source"], "downloaded");
}

#[test]
fn unknown_dataset_lists_valid_names() {
    let err = serde_json::from_str::<DatasetConfig>(r#"{"name": "rulers"}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "unknown variant `rulers`, expected one of `niah`, `jsonl`, `longbench`, `longbench_v2`, `scbench`, `ruler`"
        ),
        "{err}"
    );
    let err = serde_json::from_str::<DatasetConfig>(r#"{"lengths": [1]}"#)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("missing field `name`"), "{err}");
}

#[test]
fn configs_round_trip_and_refuse_unknown_fields() {
    for text in [
        r#"{"name": "niah", "lengths": [128, 256], "depths": [0.5], "seed": 3}"#,
        r#"{"name": "jsonl", "path": "d.jsonl", "fields": {"answers_field": "outputs"}, "limit": 10}"#,
        r#"{"name": "longbench", "tasks": ["hotpotqa", "trec_e"], "source": {"path": "lb"}, "max_length": 3500}"#,
        r#"{"name": "longbench_v2", "source": "hub", "max_length": 120000}"#,
        r#"{"name": "scbench", "tasks": ["scbench_kv"], "mode": "multi_request", "max_turns": 2}"#,
        r#"{"name": "ruler", "tasks": ["vt"], "lengths": [1024], "essays": {"repo": "o/r", "file": "e.json"}}"#,
    ] {
        let c: DatasetConfig = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let back: DatasetConfig =
            serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let mut bad: serde_json::Value = serde_json::from_str(text).unwrap();
        bad["typo_field"] = 1.into();
        let err = serde_json::from_value::<DatasetConfig>(bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("unknown field `typo_field`"),
            "{text}: {err}"
        );
    }
}

#[test]
fn floating_revisions_are_named_never_silent() {
    let floating = |json: &str| {
        serde_json::from_str::<DatasetConfig>(json)
            .unwrap()
            .floating_revisions()
    };
    // the pinned defaults float nowhere
    for name in ["longbench", "longbench_v2", "scbench"] {
        assert!(
            floating(&format!(r#"{{"name": "{name}"}}"#)).is_empty(),
            "{name}"
        );
    }
    assert!(floating(r#"{"name": "scbench", "source": "parquet"}"#).is_empty());
    // a branch written as the revision
    let f = floating(r#"{"name": "longbench", "revision": "main"}"#);
    assert_eq!(f.len(), 1);
    assert!(f[0].contains("THUDM/LongBench at `main`") && f[0].contains("revision: COMMIT"));
    let f = floating(
        r#"{"name": "longbench", "source": "parquet", "revision": "refs/convert/parquet"}"#,
    );
    assert!(f[0].contains("`refs/convert/parquet`"), "{f:?}");
    // a RULER hub input without `revision:` reads `main`; with a commit it is pinned
    let f = floating(
        r#"{"name": "ruler", "lengths": [4096], "tasks": ["qa_1"],
            "squad": {"repo": "me/inputs", "file": "dev-v2.0.json"}}"#,
    );
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(
        f[0].starts_with("field `squad`: reads dev-v2.0.json of me/inputs at `main`")
            && f[0].contains("squad: {repo: me/inputs, file: dev-v2.0.json, revision: COMMIT}"),
        "{f:?}"
    );
    let pinned = format!(
        r#"{{"name": "ruler", "lengths": [4096], "tasks": ["qa_1"],
            "squad": {{"repo": "me/inputs", "file": "dev-v2.0.json", "revision": "{}"}}}}"#,
        longbench::DEFAULT_REVISION
    );
    assert!(floating(&pinned).is_empty());
    // local files have no revision
    assert!(floating(r#"{"name": "longbench", "source": {"path": "d"}}"#).is_empty());
}

#[test]
fn hub_datasets_name_their_pinned_revision() {
    let c: DatasetConfig = serde_json::from_str(r#"{"name": "longbench"}"#).unwrap();
    assert_eq!(c.revision(), Some(longbench::DEFAULT_REVISION));
    let c: DatasetConfig = serde_json::from_str(r#"{"name": "longbench_v2"}"#).unwrap();
    assert_eq!(c.revision(), Some(crate::longbench_v2::DEFAULT_REVISION));
    let c: DatasetConfig = serde_json::from_str(r#"{"name": "scbench"}"#).unwrap();
    assert_eq!(c.revision(), Some(scbench::DEFAULT_REVISION));
    let c: DatasetConfig =
        serde_json::from_str(r#"{"name": "scbench", "source": "parquet"}"#).unwrap();
    assert_eq!(c.revision(), Some(scbench::PARQUET_DEFAULT_REVISION));
    let c: DatasetConfig =
        serde_json::from_str(r#"{"name": "scbench", "revision": "main"}"#).unwrap();
    assert_eq!(c.revision(), Some("main"));
    // every pin is a full commit sha
    for sha in [
        longbench::DEFAULT_REVISION,
        crate::longbench_v2::DEFAULT_REVISION,
        scbench::DEFAULT_REVISION,
        scbench::PARQUET_DEFAULT_REVISION,
    ] {
        assert!(
            sha.len() == 40 && sha.chars().all(|c| c.is_ascii_hexdigit()),
            "{sha}"
        );
    }
}

#[test]
fn build_through_the_registry() {
    let path = temp_file(
        "reg.jsonl",
        "{\"context\": \"c\", \"question\": \"q\", \"answers\": \"a\"}\n{\"context\": 1}\n",
    );
    let c = DatasetConfig::Jsonl(JsonlConfig::new(&path));
    let err = c.build(&WhitespaceTokens).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{} line 2: field `context` is a number; expected a string",
            path.display()
        )
    );
    let loaded = c.build_lenient(&WhitespaceTokens).unwrap();
    assert_eq!((loaded.samples.len(), loaded.errors.len()), (1, 1));
    // the file read is recorded with its sha256; local data has no revision
    assert_eq!(loaded.files, [DataFile::local(&path).unwrap()]);
    assert_eq!(
        loaded.files[0].bytes,
        std::fs::metadata(&path).unwrap().len()
    );
    assert_eq!(c.revision(), None);
    let niah = DatasetConfig::Niah(serde_json::from_str(r#"{"lengths": [2]}"#).unwrap());
    assert!(niah
        .build(&WhitespaceTokens)
        .unwrap_err()
        .to_string()
        .contains("shorter than the needle"));
    // a generated dataset's samples carry the described metric and decode length
    let niah = DatasetConfig::Niah(serde_json::from_str(r#"{"lengths": [64]}"#).unwrap());
    assert!(niah
        .build_lenient(&WhitespaceTokens)
        .unwrap()
        .files
        .is_empty());
    let d = describe("niah").unwrap();
    for s in niah.build(&WhitespaceTokens).unwrap() {
        assert_eq!(
            (s.metric, s.max_new_tokens),
            (d.tasks[0].metric, d.tasks[0].max_new_tokens)
        );
    }
}

use super::*;
use crate::testutil::{shared_data, temp_file};
use crate::WhitespaceTokens;

/// The tasks with records in `../shared/data/longbench` (see its SOURCE.md).
const SHARED: &[&str] = &[
    "2wikimqa",
    "gov_report",
    "hotpotqa",
    "lcc",
    "multi_news",
    "multifieldqa_en",
    "musique",
    "passage_retrieval_en",
    "qasper",
    "qmsum",
    "repobench-p",
    "trec",
    "triviaqa",
];

fn shared() -> LongBenchConfig {
    LongBenchConfig::local(shared_data().join("longbench"), SHARED)
}

#[test]
fn real_records_load_with_official_prompts() {
    let loaded = shared()
        .load(&WhitespaceTokens, &LoadOptions::from_env())
        .unwrap();
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    // 18 records: lcc, multi_news, trec, qasper, 2wikimqa have 2 each
    assert_eq!(loaded.samples.len(), 18);
    for s in &loaded.samples {
        let task = s.task.as_str();
        assert_eq!(s.metric, metric(task).unwrap(), "{task}");
        assert_eq!(s.max_new_tokens, prompts::max_new_tokens(task).unwrap());
        assert_eq!(s.chat_template, !NO_CHAT_TEMPLATE.contains(&task), "{task}");
        assert_eq!(s.turns.len(), 1);
        assert!(!s.turns[0].answers.is_empty(), "{}", s.id);
        // the prompt is the template with the record's fields, cut at the question
        let template = prompts::template(task).unwrap();
        let prefix = &template[..template.find("{context}").unwrap()];
        assert!(s.context.starts_with(prefix), "{task}");
        assert!(s.meta.contains_key("length"), "{task}");
    }
    let trec = loaded.samples.iter().find(|s| s.task == "trec").unwrap();
    assert_eq!(trec.meta["first_line"], true);
    assert!(trec.meta["all_classes"].as_array().unwrap().len() > 10);
    let hotpot = loaded
        .samples
        .iter()
        .find(|s| s.task == "hotpotqa")
        .unwrap();
    assert!(hotpot.turns[0].question.starts_with("Question: "));
    assert!(hotpot.turns[0].question.ends_with("\nAnswer:"));
    // the gold answer scores 1 with its own metric
    for s in &loaded.samples {
        let gold = &s.turns[0].answers[0];
        let score = s.score(0, gold);
        match s.metric {
            // rouge's f is 2 / (2 + 1e-8) for identical texts
            Metric::RougeL => assert!(score > 0.999_999, "{}: {score}", s.id),
            _ => assert_eq!(score, 1.0, "{}: {gold:?}", s.id),
        }
    }
}

#[test]
fn middle_truncation_in_tokens() {
    let mut c = shared();
    c.tasks = vec!["gov_report".into()];
    c.max_length = Some(200);
    let s = &c
        .load(&WhitespaceTokens, &LoadOptions::from_env())
        .unwrap()
        .samples[0];
    let words = WhitespaceTokens.count_tokens(&format!("{}{}", s.context, s.turns[0].question));
    assert!(words <= 200 && words >= 195, "{words}");
    assert!(s
        .context
        .starts_with("You are given a report by a government agency."));
    assert_eq!(
        s.turns[0].question,
        "\n\nNow, write a one-page summary of the report.\n\nSummary:"
    );
}

#[test]
fn bad_records_name_file_line_and_field() {
    let lines = [
        r#"{"input": "q", "context": "c", "answers": ["a"], "length": 10, "all_classes": null, "_id": "ok"}"#,
        r#"{"input": "q", "context": "c", "length": 10}"#,
        r#"{"input": "q", "context": 7, "answers": ["a"]}"#,
        r#"{"input": "q", "context": "c", "answers": [1]}"#,
        r#"not json"#,
        r#"{"input": "q", "context": "c", "answers": ["b"], "length": 9000, "_id": "ok2"}"#,
        r#"{"input": "q", "context": "  \n", "answers": ["a"]}"#,
    ];
    let path = temp_file("hotpotqa_e.jsonl", &lines.join("\n"));
    let c = LongBenchConfig::local(&path, &["hotpotqa_e"]);
    let loaded = c.load(&WhitespaceTokens, &LoadOptions::from_env()).unwrap();
    let ids: Vec<&str> = loaded.samples.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["ok", "ok2"]);
    assert_eq!(loaded.samples[0].meta["length_bucket"], "0-4k");
    assert_eq!(loaded.samples[1].meta["length_bucket"], "8k+");
    let errors: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
    let p = path.display();
    assert_eq!(
        errors,
        [
            format!("{p} line 2: field `answers` is missing; expected a list of strings"),
            format!("{p} line 3: field `context` is a number; expected a string"),
            format!("{p} line 4: field `answers[0]` is a number; expected a string"),
            format!("{p} line 5: not valid JSON (expected ident at column 2); expected one JSON object per line"),
            format!("{p} line 7: field `context` is an empty string; expected non-empty text"),
        ]
    );
}

#[test]
fn unknown_tasks_and_missing_files() {
    let c = LongBenchConfig::local("/nonexistent", &["hotpot"]);
    let e = c
        .load(&WhitespaceTokens, &LoadOptions::from_env())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("longbench: unknown task `hotpot`; expected one of narrativeqa"),
        "{e}"
    );
    let c = LongBenchConfig::local("/nonexistent", &["hotpotqa"]);
    let e = c
        .load(&WhitespaceTokens, &LoadOptions::from_env())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("/nonexistent/hotpotqa.jsonl: "), "{e}");
}

#[test]
fn bucket_scores_as_eval_e() {
    // 0-4k: (1 + 0) / 2 = 50.0; 4-8k: 1/3 -> 33.33; 8k+: empty -> NaN
    let b = bucket_scores([
        (100, 1.0),
        (3999, 0.0),
        (4000, 1.0),
        (7999, 0.0),
        (5000, 0.0),
    ]);
    assert_eq!(b["0-4k"], 50.0);
    assert_eq!(b["4-8k"], 33.33);
    assert!(b["8k+"].is_nan());
}

#[test]
fn config_serde() {
    let c: LongBenchConfig = serde_json::from_str(
        r#"{"tasks": ["trec_e"], "source": {"path": "d"}, "max_length": 3500}"#,
    )
    .unwrap();
    assert_eq!(c.source, DataSource::Path("d".into()));
    assert_eq!((c.max_length, c.effective_revision()), (Some(3500), None));
    // the parquet export has no default revision: an error that says what to write
    let c: LongBenchConfig = serde_json::from_str(r#"{"source": "parquet"}"#).unwrap();
    assert_eq!((c.tasks.len(), &c.source), (21, &DataSource::Parquet));
    assert_eq!(c.effective_revision(), None);
    let e = c.check_pinned().unwrap_err();
    assert!(
        e.contains("needs `revision:`") && e.contains("revision: COMMIT"),
        "{e}"
    );
    let e = c
        .load(&crate::WhitespaceTokens, &LoadOptions::from_env())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("longbench: `source: parquet` needs `revision:`"),
        "{e}"
    );
    let c: LongBenchConfig =
        serde_json::from_str(r#"{"source": "parquet", "revision": "refs/convert/parquet"}"#)
            .unwrap();
    assert_eq!(c.effective_revision(), Some("refs/convert/parquet"));
    assert!(c.check_pinned().is_ok());
    // the hub's files are pinned to a commit unless `revision:` says otherwise
    let c: LongBenchConfig = serde_json::from_str(r#"{}"#).unwrap();
    assert_eq!(c.effective_revision(), Some(DEFAULT_REVISION));
    assert_eq!(DEFAULT_REVISION.len(), 40);
    let c: LongBenchConfig = serde_json::from_str(r#"{"revision": "main"}"#).unwrap();
    assert_eq!(c.effective_revision(), Some("main"));
    let e = serde_json::from_str::<LongBenchConfig>(r#"{"task": []}"#)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("unknown field `task`"), "{e}");
}

#[cfg(feature = "parquet")]
#[test]
fn parquet_export_loads_like_jsonl() {
    // the hub's refs/convert/parquet layout for one task, read from a local file
    let path = temp_file("hotpotqa-0000.parquet", "");
    crate::records::write_test_parquet(&path, &[("Who?", "Passage.", &["Ann", "Anna"], "id1")]);
    let loaded = LongBenchConfig::local(&path, &["hotpotqa"])
        .load(&WhitespaceTokens, &LoadOptions::from_env())
        .unwrap();
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let s = &loaded.samples[0];
    assert_eq!(s.id, "id1");
    assert_eq!(s.turns[0].answers, ["Ann", "Anna"]);
    assert_eq!(s.turns[0].question, "Question: Who?\nAnswer:");
    // the generic loader reads parquet rows too, with its field mapping
    let mut c = crate::JsonlConfig::new(&path);
    c.fields.question_field = "input".into();
    c.fields.id_field = "_id".into();
    let samples = c.load().unwrap();
    assert_eq!(
        (samples[0].id.as_str(), samples[0].turns[0].answers.len()),
        ("id1", 2)
    );
}

use super::*;
use crate::testutil::temp_file;

fn messages(loaded: &Loaded) -> Vec<String> {
    loaded.errors.iter().map(|e| e.to_string()).collect()
}

#[test]
fn good_file() {
    let text = concat!(
        r#"{"context": "Alice met Bob.", "question": "Who met Bob?", "answers": "Alice"}"#,
        "\r\n\n",
        r#"{"context": "C", "question": "Q", "answers": ["x", "y"], "id": 17, "task": "t", "metric": "string_match_part", "max_new_tokens": 5, "length": 3}"#,
        "\n",
    );
    let path = temp_file("good.jsonl", &format!("\u{feff}{text}"));
    let samples = JsonlConfig::new(&path).load().unwrap();
    assert_eq!(samples.len(), 2);
    let a = &samples[0];
    assert_eq!(a.id, "good-1");
    assert_eq!(a.context, "Alice met Bob.");
    assert_eq!(
        a.turns,
        [Turn::new(
            "\n\nQuestion: Who met Bob?\nAnswer:",
            vec!["Alice".into()]
        )]
    );
    assert_eq!(
        (a.task.as_str(), a.metric, a.max_new_tokens),
        ("good", Metric::QaF1, 32)
    );
    assert!(a.meta.is_empty());
    let b = &samples[1];
    assert_eq!(b.id, "17");
    assert_eq!(b.turns[0].answers, ["x", "y"]);
    assert_eq!(
        (b.task.as_str(), b.metric, b.max_new_tokens),
        ("t", Metric::StringMatchPart, 5)
    );
    assert_eq!(
        serde_json::Value::Object(b.meta.clone()),
        serde_json::json!({"length": 3})
    );
}

#[test]
fn field_mapping_templates_and_limit() {
    let text = r#"{"input": "ctx", "q": "why?", "outputs": ["because"], "_id": "a1"}
{"input": "ctx2", "q": "how?", "outputs": ["so"], "_id": "a2"}
"#;
    let config: JsonlConfig = serde_json::from_value(serde_json::json!({
        "path": "data/lb.jsonl",
        "fields": {"context_field": "input", "question_field": "q", "answers_field": "outputs", "id_field": "_id"},
        "limit": 1,
        "task": "hotpotqa",
        "metric": "substring_exact_match",
        "max_new_tokens": 16,
        "context_template": "Read this.\n\n{context}",
        "question_template": "\nQ: {question}\nA:",
    }))
    .unwrap();
    let loaded = config.parse_lenient(text.as_bytes()).unwrap();
    assert!(loaded.errors.is_empty());
    assert_eq!(loaded.samples.len(), 1);
    let s = &loaded.samples[0];
    assert_eq!((s.id.as_str(), s.task.as_str()), ("a1", "hotpotqa"));
    assert_eq!(s.context, "Read this.\n\nctx");
    assert_eq!(s.turns[0].question, "\nQ: why?\nA:");
    assert_eq!(
        (s.metric, s.max_new_tokens),
        (Metric::SubstringExactMatch, 16)
    );
    // defaults of a partial field map
    let f: FieldMap = serde_json::from_str(r#"{"answers_field": "outputs"}"#).unwrap();
    assert_eq!(
        (f.context_field.as_str(), f.answers_field.as_str()),
        ("context", "outputs")
    );
    let err = serde_json::from_str::<FieldMap>(r#"{"answer_field": "x"}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("unknown field `answer_field`, expected one of `context_field`"),
        "{err}"
    );
}

#[test]
fn answer_prefix_field_follows_the_question() {
    let text = concat!(
        r#"{"context": "C", "question": "Who?", "answers": "A", "answer_prefix": "Answer: It was"}"#,
        "\n",
        r#"{"context": "C", "question": "Who?", "answers": "A", "answer_prefix": ""}"#,
        "\n",
        r#"{"context": "C", "question": "Who?", "answers": "A", "answer_prefix": 1}"#,
    );
    let mut config = JsonlConfig::new("kv.jsonl");
    config.question_template = "\n\nQuestion: {question}\n".into();
    let loaded = config.parse_lenient(text.as_bytes()).unwrap();
    let t = &loaded.samples[0].turns[0];
    assert_eq!(t.question, "\n\nQuestion: Who?\n");
    assert_eq!(t.answer_prefix.as_deref(), Some("Answer: It was"));
    assert!(
        loaded.samples[0].meta.is_empty(),
        "the field is used, not kept in meta"
    );
    let plain = crate::turn_prompt(&loaded.samples[0], 0).unwrap();
    assert_eq!(plain.question, "\n\nQuestion: Who?\nAnswer: It was");
    assert_eq!(loaded.samples[1].turns[0].answer_prefix, None);
    assert_eq!(
        messages(&loaded),
        ["kv.jsonl line 3: field `answer_prefix` is a number; expected a string"]
    );
}

#[test]
fn bad_lines_have_exact_messages() {
    let lines = [
        r#"{"context": "c", "question": "q", "answers": "a"}"#,
        r#"{"context": "c", "question": "q"}"#,
        r#"{"context": "c", "question": "q", "answers": 3}"#,
        r#"{"context": "c", "question": "q", "answers": ["a", 2]}"#,
        r#"{"context": "c", "question": "q", "answers": []}"#,
        r#"{"question": "q", "answers": "a"}"#,
        r#"{"context": ["c"], "question": "q", "answers": "a"}"#,
        r#"{"context": "c", "question": "q", "answers": "a""#,
        r#"[1, 2]"#,
        r#"{"context": "c", "question": "q", "answers": "a", "metric": "rouge"}"#,
        r#"{"context": "c", "question": "q", "answers": "a", "max_new_tokens": 0}"#,
        r#"{"context": "c", "question": "q", "answers": "a", "id": "x"}"#,
        r#"{"context": "c", "question": "q", "answers": "a", "id": "x"}"#,
        r#"{"context": "c", "question": "q", "answers": "", "id": true}"#,
    ];
    let mut bytes = lines.join("\n").into_bytes();
    bytes.extend_from_slice(b"\n{\"context\": \"\xff\"}\n");
    let config = JsonlConfig::new("data.jsonl");
    let loaded = config.parse_lenient(&bytes).unwrap();
    assert_eq!(
        loaded
            .samples
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>(),
        ["data-1", "x"]
    );
    assert_eq!(
        messages(&loaded),
        [
            "data.jsonl line 2: field `answers` is missing; expected a string or a list of strings",
            "data.jsonl line 3: field `answers` is a number; expected a non-empty string or a non-empty list of strings",
            "data.jsonl line 4: field `answers[1]` is a number; expected a non-empty string",
            "data.jsonl line 5: field `answers` is an empty list; expected a non-empty string or a non-empty list of strings",
            "data.jsonl line 6: field `context` is missing; expected a string",
            "data.jsonl line 7: field `context` is a list; expected a string",
            "data.jsonl line 8: not valid JSON (EOF while parsing an object at column 48); expected one JSON object per line",
            "data.jsonl line 9: expected a JSON object, found a list",
            format!(
                "data.jsonl line 10: field `metric` is `rouge`; expected one of {}",
                crate::metrics::metric_names()
            )
            .as_str(),
            "data.jsonl line 11: field `max_new_tokens` is a number; expected a positive integer",
            "data.jsonl line 13: id `x` repeats line 12; expected unique ids",
            "data.jsonl line 14: field `answers` is an empty string; expected a non-empty string or a non-empty list of strings",
            "data.jsonl line 15: not valid UTF-8; expected UTF-8 text",
        ]
    );
    assert_eq!(loaded.errors[0].line, 2);
}

#[test]
fn strict_load_stops_at_the_first_error() {
    let path = temp_file("data.jsonl", "{\"context\": \"c\", \"question\": \"q\", \"answers\": \"a\"}\n\n{\"context\": \"c\", \"question\": \"q\"}\n[]\n");
    let err = JsonlConfig::new(&path).load().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} line 3: field `answers` is missing; expected a string or a list of strings",
            path.display()
        )
    );
    assert!(matches!(err, JsonlError::Line(LineError { line: 3, .. })));
    let loaded = JsonlConfig::new(&path).load_lenient().unwrap();
    assert_eq!((loaded.samples.len(), loaded.errors.len()), (1, 2));
}

#[test]
fn file_and_config_errors() {
    let missing = std::env::temp_dir().join("kvbench-no-such-file.jsonl");
    let err = JsonlConfig::new(&missing).load().unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}: ", missing.display())),
        "{err}"
    );
    let empty = temp_file("empty.jsonl", "\n  \n");
    let err = JsonlConfig::new(&empty).load().unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}: no samples; expected one JSON object per line",
            empty.display()
        )
    );
    let mut c = JsonlConfig::new("d.jsonl");
    c.question_template = "Q:".into();
    assert_eq!(
        c.parse_lenient(b"").unwrap_err().to_string(),
        "jsonl d.jsonl: `question_template` \"Q:\" does not contain `{question}`"
    );
    let mut c = JsonlConfig::new("d.jsonl");
    c.fields.question_field = "context".into();
    assert_eq!(
        c.parse_lenient(b"").unwrap_err().to_string(),
        "jsonl d.jsonl: `fields` maps two fields to `context`; expected distinct names"
    );
}

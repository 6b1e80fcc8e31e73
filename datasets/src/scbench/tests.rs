use serde_json::json;

use super::*;
use crate::testutil::temp_file;
use crate::WhitespaceTokens;

fn load(task: &str, records: &[Value], mode: ScbenchMode) -> Loaded {
    let text: Vec<String> = records.iter().map(|r| r.to_string()).collect();
    let path = temp_file(&format!("{task}-{mode:?}.jsonl"), &text.join("\n"));
    ScbenchConfig::local(&path, &[task], mode)
        .load(&WhitespaceTokens, &LoadOptions::from_env())
        .unwrap()
}

fn kv_record() -> Value {
    json!({"id": 3, "context": "{\"k1\": \"v1\", \"k2\": \"v2\"}", "multi_turns": [
        {"input": "Key: \"k1\"\nThe value associated with the specified key is: ", "answer": "v1"},
        {"input": "Key: \"k2\"\nThe value associated with the specified key is: ", "answer": "v2"}
    ]})
}

#[test]
fn multi_turn_follow_ups_carry_the_gold_answer() {
    let loaded = load("scbench_kv", &[kv_record()], ScbenchMode::MultiTurn);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let s = &loaded.samples[0];
    assert_eq!(s.id, "3");
    assert_eq!(s.mode, TurnMode::MultiTurn);
    assert_eq!(
        s.context,
        "Extract the value corresponding to the specified key in the JSON object below.\n\n{\"k1\": \"v1\", \"k2\": \"v2\"}"
    );
    assert_eq!(
        s.turns[0].question,
        "\n\nKey: \"k1\"\nThe value associated with the specified key is: "
    );
    // "{pre_ans}\n\n{input}" with the gold answer of turn 0
    assert_eq!(
        s.turns[1].question,
        "v1\n\nKey: \"k2\"\nThe value associated with the specified key is: "
    );
    assert_eq!(s.turns[1].previous_answer.as_deref(), Some("v1"));
    assert_eq!((s.metric, s.max_new_tokens), (Metric::Substring, 150));
    assert_eq!(s.score(1, "The value is v2."), 1.0);
    assert_eq!(s.score(1, "The value is V2."), 0.0);
}

#[test]
fn multi_request_appends_each_query_alone() {
    let loaded = load("scbench_kv", &[kv_record()], ScbenchMode::MultiRequest);
    let s = &loaded.samples[0];
    assert_eq!(s.mode, TurnMode::Independent);
    assert!(s.context.ends_with("\"k2\": \"v2\"}"));
    // no separator: test_scdq concatenates the ids
    assert_eq!(
        s.turns[1].question,
        "Key: \"k2\"\nThe value associated with the specified key is: "
    );
    assert_eq!(s.turns[1].previous_answer, None);
}

#[test]
fn choice_eng_labels_and_prompts() {
    let r = json!({"context": "Book.", "multi_turns": [
        {"input": "Who?", "answer": "Bob", "options": ["Ann", "Bob", "Cy", "Di"]},
        {"input": "Where?", "answer": "Rome", "options": ["Rome", "Oslo", "Lima", "Nice"]}
    ]});
    let s = &load("scbench_choice_eng", &[r.clone()], ScbenchMode::MultiTurn).samples[0];
    assert_eq!(s.turns[0].answers, ["Bob", "B"]);
    assert_eq!(
        s.turns[0].question,
        "\n\nQuestion: Who?\nA. Ann\nB. Bob\nC. Cy\nD. Di\n\nThe the correct answer is"
    );
    assert_eq!(
        s.turns[1].question,
        "Bob\n\nQuestion: Where?\nA. Rome\nB. Oslo\nC. Lima\nD. Nice\n\nThe letter of the correct answer is"
    );
    assert_eq!(s.score(0, " B"), 1.0);
    assert_eq!(s.score(1, "A. Rome"), 1.0);
    // an answer outside the options is a bad record
    let bad = json!({"context": "Book.", "multi_turns": [{"input": "Q", "answer": "Zed", "options": ["a", "b", "c", "d"]}]});
    let l = load("scbench_choice_eng", &[bad], ScbenchMode::MultiTurn);
    assert!(
        l.errors[0]
            .to_string()
            .contains("field `answer` is \"Zed\", not among the first four options"),
        "{}",
        l.errors[0]
    );
}

#[test]
fn mixed_tasks_score_and_decode_per_turn() {
    let r = json!({"context": "Paper text. The pass key is 123.", "multi_turns": [
        {"input": "Summarize.", "answer": "a summary", "task": "scbench_summary"},
        {"input": "What is the pass key?", "answer": "123", "task": "scbench_passkey"}
    ]});
    let s = &load(
        "scbench_summary_with_needles",
        &[r],
        ScbenchMode::MultiRequest,
    )
    .samples[0];
    assert_eq!(
        (s.turn_metric(0), s.turn_max_new_tokens(0)),
        (Metric::RougeLsum, 800)
    );
    assert_eq!(
        (s.turn_metric(1), s.turn_max_new_tokens(1)),
        (Metric::FirstInt, 15)
    );
    assert_eq!(s.score(1, "It is 123."), 1.0);
    assert_eq!(s.score(0, "A summary"), 1.0);
}

#[test]
fn mf_prefix_and_list_answers() {
    let r = json!({"context": "[1, 5, 3]", "multi_turns": [
        {"input": "The largest number in the list is", "answer": 5},
        {"input": "The smallest number in the list is", "answer": 1}
    ]});
    let s = &load("scbench_mf", &[r.clone()], ScbenchMode::MultiTurn).samples[0];
    assert_eq!(
        s.context,
        "What is the largest number in the list?\n\n[1, 5, 3]"
    );
    assert_eq!(
        s.turns[1].question,
        "5\n\nWhat is the smallest number in the list?\n\nThe smallest number in the list is"
    );
    assert_eq!(s.score(0, "5."), 1.0);
    // multi-request: the context's prefix is the first turn's raw input
    let s = &load("scbench_mf", &[r], ScbenchMode::MultiRequest).samples[0];
    assert_eq!(s.context, "The largest number in the list is\n\n[1, 5, 3]");
    assert_eq!(
        s.turns[0].question,
        "What is the largest number in the list?\n\nThe largest number in the list is"
    );
    // a list answer is quoted as Python's str() in the next follow-up
    let vt = json!({"context": "VAR A = 1", "multi_turns": [
        {"input": "q1", "answer": ["A", "B"]}, {"input": "q2", "answer": ["C"]}
    ]});
    let s = &load("scbench_vt", &[vt], ScbenchMode::MultiTurn).samples[0];
    assert_eq!(s.turns[1].question, "['A', 'B']\n\nq2");
    // round(1/2, 2)
    assert_eq!(s.score(0, "A only"), 0.5);
}

#[test]
fn string_labels_of_iterating_scorers_iterate_characters() {
    // many_shot's label is used as given; a string is iterated character by character in Python
    let r = json!({"context": "ctx", "multi_turns": [{"input": "q", "answer": "xyz"}]});
    let s = &load("scbench_many_shot", &[r], ScbenchMode::MultiRequest).samples[0];
    assert_eq!(s.turns[0].meta["iterate_characters"], true);
    assert_eq!(s.score(0, "Z"), 1.0);
    // qa_eng wraps its label in a list: whole-string match
    let r = json!({"context": "ctx", "multi_turns": [{"input": "q", "answer": "xyz"}]});
    let s = &load("scbench_qa_eng", &[r], ScbenchMode::MultiRequest).samples[0];
    assert_eq!(s.score(0, "Z"), 0.0);
    assert_eq!(s.score(0, "it is XYZ"), 1.0);
}

#[test]
fn repoqa_needles_are_shared_by_repo() {
    let f = "def add(a, b):\n    return a + b";
    let g = "def sub(a, b):\n    return a - b";
    let r1 = json!({"repo": "r", "lang": "python", "context": "code", "multi_turns": [{"input": "adds", "answer": f, "name": "add"}]});
    let r2 = json!({"repo": "r", "lang": "python", "context": "code", "multi_turns": [{"input": "subs", "answer": g, "name": "sub"}]});
    let l = load("scbench_repoqa", &[r1, r2], ScbenchMode::MultiTurn);
    assert_eq!(l.samples[0].meta["needles"].as_array().unwrap().len(), 2);
    assert_eq!(l.samples[0].score(0, &format!("```python\n{f}\n```")), 1.0);
    // the other function of the repo is closer: wrong
    assert_eq!(l.samples[0].score(0, &format!("```python\n{g}\n```")), 0.0);
}

#[test]
fn bad_records_and_truncation() {
    let recs = [
        json!({"context": "c"}),
        json!({"context": "c", "multi_turns": [{"input": 1, "answer": "a"}]}),
        json!({"context": "c", "multi_turns": [{"input": "q"}]}),
    ];
    let l = load("scbench_kv", &recs, ScbenchMode::MultiTurn);
    let e: Vec<String> = l.errors.iter().map(|e| e.to_string()).collect();
    assert!(e[0].ends_with("line 1: field `multi_turns` is missing; expected a non-empty list of {input, answer} objects"), "{}", e[0]);
    assert!(
        e[1].ends_with("line 2: field `multi_turns[0].input` is a number; expected a string"),
        "{}",
        e[1]
    );
    assert!(
        e[2].ends_with(
            "line 3: field `multi_turns[0].answer` is missing; expected a string, number or list"
        ),
        "{}",
        e[2]
    );
    let long = json!({"context": "w ".repeat(100), "multi_turns": [{"input": "q", "answer": "a"}]});
    let path = temp_file("scbench_vt-trunc.jsonl", &long.to_string());
    let mut c = ScbenchConfig::local(&path, &["scbench_vt"], ScbenchMode::MultiTurn);
    c.max_length = Some(20);
    let s = &c
        .load(&WhitespaceTokens, &LoadOptions::from_env())
        .unwrap()
        .samples[0];
    let n = WhitespaceTokens.count_tokens(&format!("{}{}", s.context, s.turns[0].question));
    assert!(n <= 20 && n >= 18, "{n}");
    assert_eq!(s.turns[0].question, "\n\nq");
}

/// `testdata/scbench_mf.jsonl`: records in the hub's shape (`context` a list of integers,
/// integer answers), as `data/scbench_mf.jsonl` has them.
#[test]
fn mf_hub_records_render_the_number_list_as_python_does() {
    let path = temp_file(
        "scbench_mf.jsonl",
        include_str!("testdata/scbench_mf.jsonl"),
    );
    let loaded = ScbenchConfig::local(&path, &["scbench_mf"], ScbenchMode::MultiTurn)
        .load(&WhitespaceTokens, &LoadOptions::from_env())
        .unwrap();
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    assert_eq!(loaded.samples.len(), 2);
    let s = &loaded.samples[0];
    assert_eq!(s.id, "0");
    // `str.format(context=[...])` writes Python's str() of the list
    assert_eq!(
        s.context,
        "What is the largest number of the list?\n\n[12, 3, 7, 41, 0, 41, 5]"
    );
    assert_eq!(
        s.turns[1].question,
        "41\n\nWhat is the smallest number of the list?\n\n\
         What is the smallest number in the list? The smallest number of the list is: "
    );
    assert_eq!(s.turns[0].answers, ["41"]);
    assert_eq!(s.score(1, "0"), 1.0);
    // multi-request: the first turn's raw input, then the list
    let r = ScbenchConfig::local(&path, &["scbench_mf"], ScbenchMode::MultiRequest)
        .load(&WhitespaceTokens, &LoadOptions::from_env())
        .unwrap();
    assert_eq!(
        r.samples[1].context,
        "What is the median of the list? The median of the list is: \n\n[2, 9, 4]"
    );
    // the file read is recorded with its sha256
    assert_eq!(r.files.len(), 1);
    assert_eq!(
        r.files[0].sha256,
        crate::datafile::sha256_hex(include_bytes!("testdata/scbench_mf.jsonl"))
    );
    // a list of something else than numbers is an error of that record
    let bad = json!({"context": ["a"], "multi_turns": [{"input": "The x is", "answer": 1}]});
    let e = load("scbench_mf", &[bad], ScbenchMode::MultiTurn).errors;
    assert!(
        e[0].to_string()
            .contains("field `context[]` is a string; expected a number"),
        "{e:?}"
    );
    // other tasks still want a string
    let kv = json!({"context": [1], "multi_turns": [{"input": "k", "answer": "v"}]});
    let e = load("scbench_kv", &[kv], ScbenchMode::MultiTurn).errors;
    assert!(
        e[0].to_string()
            .contains("field `context` is a list; expected a string"),
        "{e:?}"
    );
}

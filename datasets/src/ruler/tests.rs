use super::*;
use crate::testutil::shared_data;
use crate::{turn_prompt, WhitespaceTokens};

fn config(tasks: &[&str], lengths: &[usize], samples: usize) -> RulerConfig {
    let data = shared_data();
    RulerConfig {
        chat_template: Default::default(),
        tasks: tasks.iter().map(|t| t.to_string()).collect(),
        lengths: lengths.to_vec(),
        samples,
        seed: 7,
        essays: Some(InputFile::Path(data.join("ruler/PaulGrahamEssays.json"))),
        words: Some(InputFile::Path(data.join("words"))),
        squad: Some(InputFile::Path(data.join("squad/dev-v2.0.json"))),
        hotpotqa: None,
    }
}

fn generate(c: &RulerConfig) -> Vec<Sample> {
    c.generate(&WhitespaceTokens, &LoadOptions::from_env())
        .unwrap()
}

/// The plain-text question of a sample's only turn: question, then answer prefix.
fn plain(s: &Sample) -> String {
    turn_prompt(s, 0).unwrap().question
}

/// RULER's own prompt (`prepare.py` with the base template: `task_template + answer_prefix`,
/// formatted) from its `constants.py` strings, for comparison with the sample's plain text.
fn ruler_prompt(template: &str, prefix: &str, values: &[(&str, &str)]) -> String {
    crate::scbench::prompts::fill(&format!("{template}{prefix}"), values)
}

#[test]
fn every_task_fits_its_length_and_answers_are_in_the_context() {
    let tasks: Vec<&str> = TASKS.iter().copied().filter(|t| *t != "qa_2").collect();
    let samples = generate(&config(&tasks, &[1024, 2048], 2));
    assert_eq!(samples.len(), tasks.len() * 2 * 2);
    for s in &samples {
        let length = s.meta["length"].as_u64().unwrap() as usize;
        let tokens = WhitespaceTokens.count_tokens(&format!("{}{}", s.context, plain(s)));
        assert_eq!(
            s.meta["tokens"].as_u64().unwrap() as usize,
            tokens + s.max_new_tokens
        );
        assert!(tokens + s.max_new_tokens <= length, "{}: {tokens}", s.id);
        // the search fills the length: within a few haystack units of it
        assert!(
            tokens + s.max_new_tokens > length * 7 / 10,
            "{}: only {tokens} of {length}",
            s.id
        );
        for a in &s.turns[0].answers {
            if s.task != "fwe" {
                assert!(
                    s.context.contains(a.as_str()),
                    "{}: answer {a} not in the context",
                    s.id
                );
            }
        }
        assert_eq!(s.meta["ruler"], true);
        // every task has RULER's answer prefix, which starts with a space
        let prefix = s.turns[0].answer_prefix.as_deref().unwrap_or_default();
        assert!(
            prefix.starts_with(" ") && prefix.len() > 1,
            "{}: {prefix:?}",
            s.id
        );
        assert!(!s.turns[0].question.contains(prefix.trim()), "{}", s.id);
    }
}

#[test]
fn deterministic_from_the_seed() {
    let c = config(&["niah_single_1", "niah_multikey_3", "vt"], &[700], 2);
    let a = serde_json::to_string(&generate(&c)).unwrap();
    assert_eq!(a, serde_json::to_string(&generate(&c)).unwrap());
    let mut other = c.clone();
    other.seed = 8;
    assert_ne!(a, serde_json::to_string(&generate(&other)).unwrap());
}

#[test]
fn niah_templates_and_answer_prefixes() {
    let s = &generate(&config(&["niah_single_1"], &[600], 1))[0];
    // one query and one value: RULER's singular rewrite
    assert!(s.context.starts_with("A special magic number is hidden within the following text. Make sure to memorize it. I will quiz you about the number afterwards.\nThe grass is green."));
    let q = &s.turns[0].question;
    let key = q
        .strip_prefix("What is the special magic number for ")
        .and_then(|k| k.strip_suffix(" mentioned in the provided text?"))
        .unwrap_or_else(|| panic!("{q}"));
    assert_eq!(
        s.turns[0].answer_prefix.as_deref(),
        Some(
            format!(" The special magic number for {key} mentioned in the provided text is")
                .as_str()
        )
    );
    // plain text: RULER's singular rewrite of `template + answer_prefix`, from the question line
    let mut whole = format!("{}{}", niah::TEMPLATE, niah::ANSWER_PREFIX);
    for (from, to) in [
        ("Some", "A"),
        ("are all", "is"),
        ("are", "is"),
        ("answers", "answer"),
    ] {
        whole = whole.replace(from, to);
    }
    let whole = crate::scbench::prompts::fill(
        &whole,
        &[
            ("type_needle_v", "number"),
            ("context", "\u{0}"),
            ("query", key),
        ],
    );
    assert_eq!(plain(s), whole.split("\u{0}\n").nth(1).unwrap());
    let value = &s.turns[0].answers[0];
    assert_eq!(value.len(), 7);
    assert!(s.context.contains(&format!("is: {value}.")));
    // the needle is "One of the special magic numbers for {key} is: {value}." (plural kept)
    assert!(s.context.contains("One of the special magic numbers for "));
    assert_eq!(s.score(0, &format!(" {value}.")), 1.0);
    // multi-value: plural template, 4 answers
    let s = &generate(&config(&["niah_multivalue"], &[1500], 1))[0];
    assert!(s
        .context
        .starts_with("Some special magic numbers are hidden"));
    assert!(s.turns[0]
        .question
        .ends_with(" mentioned in the provided text?"));
    assert!(plain(s).contains("mentioned in the provided text? The special magic numbers for "));
    assert!(s.turns[0]
        .answer_prefix
        .as_deref()
        .unwrap()
        .ends_with(" mentioned in the provided text are"));
    assert_eq!(s.turns[0].answers.len(), 4);
    // multi-query: "k1, k2, k3, and k4"
    let s = &generate(&config(&["niah_multiquery"], &[1500], 1))[0];
    assert_eq!(plain(s).matches(", and ").count(), 2);
    assert_eq!(s.turns[0].answers.len(), 4);
    // uuids: 8-4-4-4-12, version 4
    let s = &generate(&config(&["niah_single_3"], &[1500], 1))[0];
    let u = &s.turns[0].answers[0];
    assert_eq!(
        u.split('-').map(str::len).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12]
    );
    assert_eq!(&u[14..15], "4");
}

#[test]
fn vt_cwe_fwe_prompts() {
    let s = &generate(&config(&["vt"], &[1024], 1))[0];
    // the one-shot example comes first, then the task
    assert!(s
        .context
        .starts_with("Memorize and track the chain(s) of variable assignment"));
    assert_eq!(s.context.matches("Memorize and track").count(), 2);
    assert_eq!(s.turns[0].answers.len(), 5);
    let q = &s.turns[0].question;
    let value = q
        .strip_prefix("Question: Find all variables that are assigned the value ")
        .and_then(|v| v.strip_suffix(" in the text above."))
        .unwrap_or_else(|| panic!("{q}"));
    let values = [("context", ""), ("query", value), ("num_v", "5")];
    let whole = ruler_prompt(synthetic::VT_TEMPLATE, synthetic::VT_ANSWER_PREFIX, &values);
    assert!(whole.ends_with(&plain(s)), "{}", plain(s));
    assert_eq!(
        s.turns[0].answer_prefix.as_deref(),
        Some(format!(" Answer: According to the chain(s) of variable assignment in the text above, 5 variables are assigned the value {value}, they are: ").as_str())
    );
    let first = &s.turns[0].answers[0];
    assert!(s.context.contains(&format!("VAR {first} = ")));
    let s = &generate(&config(&["cwe"], &[2048], 1))[0];
    assert_eq!(s.turns[0].answers.len(), 10);
    assert!(s.context.starts_with("Below is a numbered list of words."));
    assert!(s
        .context
        .contains(" Answer: The top 10 words that appear most often in the list are: 1. "));
    assert_eq!(
        s.turns[0].question,
        "\nQuestion: What are the 10 most common words in the above list?"
    );
    assert_eq!(
        s.turns[0].answer_prefix.as_deref(),
        Some(" Answer: The top 10 words that appear most often in the list are:")
    );
    assert_eq!(plain(s), "\nQuestion: What are the 10 most common words in the above list? Answer: The top 10 words that appear most often in the list are:");
    let s = &generate(&config(&["fwe"], &[2048], 1))[0];
    assert_eq!(plain(s), "\nQuestion: Do not provide any explanation. Please ignore the dots '....'. What are the three most frequently appeared words in the above coded text? Answer: According to the coded text above, the three most frequently appeared words are:");
    assert_eq!(
        s.turns[0].answer_prefix.as_deref(),
        Some(synthetic::FWE_ANSWER_PREFIX)
    );
    assert_eq!(s.turns[0].answers.len(), 3);
    for a in &s.turns[0].answers {
        assert!(s.context.matches(a.as_str()).count() > 5, "{a}");
    }
}

#[test]
fn qa_uses_the_gold_document() {
    let s = &generate(&config(&["qa_1"], &[1024], 2));
    assert_eq!(
        s[0].turns[0].question,
        "Question: In what country is Normandy located?"
    );
    assert_eq!(s[0].turns[0].answer_prefix.as_deref(), Some(" Answer:"));
    assert_eq!(
        plain(&s[0]),
        "Question: In what country is Normandy located? Answer:"
    );
    assert!(s[0].context.contains("Document 1:\n"));
    assert!(s[0].context.contains("Normandy"));
    assert_eq!(s[0].metric, Metric::StringMatchPart);
    assert_ne!(s[0].turns[0].question, s[1].turns[0].question);
}

#[test]
fn missing_inputs_and_bad_tasks() {
    let mut c = config(&["niah_single_2"], &[512], 1);
    c.essays = None;
    let e = c
        .generate(&WhitespaceTokens, &LoadOptions::from_env())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("ruler task niah_single_2 needs `essays`"),
        "{e}"
    );
    let c = config(&["qa_2"], &[512], 1);
    let e = c
        .generate(&WhitespaceTokens, &LoadOptions::from_env())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("ruler task qa_2 needs `hotpotqa`"), "{e}");
    let c = config(&["niah"], &[512], 1);
    let e = c
        .generate(&WhitespaceTokens, &LoadOptions::from_env())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("ruler: unknown task `niah`; expected one of niah_single_1"),
        "{e}"
    );
    // too short for anything
    let c = config(&["niah_single_1"], &[100], 1);
    assert!(matches!(
        c.generate(&WhitespaceTokens, &LoadOptions::from_env()),
        Err(RulerError::TooShort { .. })
    ));
}

#[test]
fn depth_grid_is_numpys() {
    let d = niah::depths();
    assert_eq!(d.len(), 40);
    // 100 * 1 / 39 = 2.56 -> 3; 100 * 2 / 39 = 5.13 -> 5; last 100
    assert_eq!(&d[..3], &[0, 3, 5]);
    assert_eq!(d[39], 100);
}

/// Variable tracking at a length where the size search probes haystacks smaller than the five
/// chain statements (this used to panic in the slot sampling).
#[test]
fn vt_builds_from_tiny_haystacks() {
    for length in [700, 1024] {
        let samples = generate(&config(&["vt"], &[length], 2));
        assert_eq!(samples.len(), 2);
        for s in &samples {
            let ans = &s.turns[0].answers;
            assert!(
                ans.iter().all(|a| s.context.contains(a.as_str())),
                "{length}: {ans:?}"
            );
        }
    }
}

#[test]
fn input_files_are_recorded_once_with_their_sha256() {
    let c = config(
        &["niah_single_2", "niah_multikey_2", "vt"],
        &[1024, 2048],
        1,
    );
    let loaded = c
        .generate_loaded(&WhitespaceTokens, &LoadOptions::from_env())
        .unwrap();
    assert_eq!(loaded.samples, generate(&c));
    let data = shared_data();
    let essays = data.join("ruler/PaulGrahamEssays.json");
    let names: Vec<&str> = loaded.files.iter().map(|f| f.name.as_str()).collect();
    // the three word lists (word keys) and the essays (niah_single_2's haystack), each once
    // over both lengths; vt reads nothing
    assert_eq!(names.len(), 4, "{names:?}");
    assert_eq!(names.iter().filter(|n| n.contains("words")).count(), 3);
    let e = loaded
        .files
        .iter()
        .find(|f| f.name == essays.display().to_string())
        .expect("the essays are recorded");
    assert_eq!(*e, crate::DataFile::local(&essays).unwrap());
    assert_eq!(e.revision, None);
}

use super::*;
use crate::testutil::temp_file;
use crate::{build_prompt, WhitespaceTokens};

fn config(lengths: &[usize], depths: &[f64], samples: usize, seed: u64) -> NeedleConfig {
    NeedleConfig {
        chat_template: Default::default(),
        lengths: lengths.to_vec(),
        depths: depths.to_vec(),
        samples_per_cell: samples,
        seed,
        haystack: Haystack::Generated,
    }
}

fn needle_of(s: &Sample) -> String {
    s.meta["needle"]
        .as_str()
        .expect("needle in meta")
        .to_string()
}

#[test]
fn deterministic_from_the_seed() {
    let c = config(&[300, 1000], &[0.0, 0.5, 1.0], 3, 7);
    let a = serde_json::to_string(&c.generate(&WhitespaceTokens).unwrap()).unwrap();
    let b = serde_json::to_string(&c.generate(&WhitespaceTokens).unwrap()).unwrap();
    assert_eq!(a, b);
    let other = serde_json::to_string(
        &config(&[300, 1000], &[0.0, 0.5, 1.0], 3, 8)
            .generate(&WhitespaceTokens)
            .unwrap(),
    )
    .unwrap();
    assert_ne!(a, other);
}

#[test]
fn grid_order_ids_and_meta() {
    let samples = config(&[200, 400], &[0.0, 0.125, 1.0], 2, 0)
        .generate(&WhitespaceTokens)
        .unwrap();
    let ids: Vec<&str> = samples.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "niah-L200-D0.00-0",
            "niah-L200-D0.00-1",
            "niah-L200-D0.125-0",
            "niah-L200-D0.125-1",
            "niah-L200-D1.00-0",
            "niah-L200-D1.00-1",
            "niah-L400-D0.00-0",
            "niah-L400-D0.00-1",
            "niah-L400-D0.125-0",
            "niah-L400-D0.125-1",
            "niah-L400-D1.00-0",
            "niah-L400-D1.00-1",
        ]
    );
    let s = &samples[2];
    assert_eq!(s.meta["length"], 200);
    assert_eq!(s.meta["depth"], 0.125);
    assert_eq!(
        s.meta["context_tokens"],
        WhitespaceTokens.count_tokens(&s.context)
    );
    assert_eq!(
        (s.task.as_str(), s.metric, s.max_new_tokens),
        ("niah", Metric::StringMatchAll, 8)
    );
    // sample i has the same needle in every cell
    for s in &samples {
        let i = if s.id.ends_with("-0") { 0 } else { 1 };
        assert_eq!(needle_of(s), needle_of(&samples[i]));
    }
    assert_ne!(needle_of(&samples[0]), needle_of(&samples[1]));
}

#[test]
fn context_fills_the_target_without_exceeding_it() {
    let lengths = [50, 128, 1000, 4096, 10_000];
    let samples = config(&lengths, &[0.0, 0.3, 0.5, 1.0], 2, 3)
        .generate(&WhitespaceTokens)
        .unwrap();
    for s in &samples {
        let length = s.meta["length"].as_u64().unwrap() as usize;
        let tokens = WhitespaceTokens.count_tokens(&s.context);
        assert_eq!(s.meta["context_tokens"], tokens);
        // the next sentence (at most 30 words) would have overflowed
        assert!(
            tokens <= length && length - tokens < 30,
            "{}: {tokens} tokens for {length}",
            s.id
        );
    }
}

#[test]
fn search_counts_few_times() {
    let calls = std::cell::Cell::new(0usize);
    let counter = |t: &str| {
        calls.set(calls.get() + 1);
        t.split_whitespace().count()
    };
    let s = config(&[32_768], &[0.5], 1, 0).generate(&counter).unwrap();
    let tokens = s[0].meta["context_tokens"].as_u64().unwrap();
    assert!(tokens <= 32_768 && tokens > 32_768 - 30, "{tokens}");
    assert!(
        calls.get() <= 24,
        "{} token counts for one sample",
        calls.get()
    );
}

#[test]
fn fits_with_a_different_counter() {
    // characters as tokens: a counter with a very different scale from words
    let chars = |t: &str| t.chars().count();
    let samples = config(&[500, 3000], &[0.5], 1, 1).generate(&chars).unwrap();
    for s in &samples {
        let length = s.meta["length"].as_u64().unwrap() as usize;
        let tokens = s.context.chars().count();
        assert!(
            tokens <= length && length - tokens <= 160,
            "{}: {tokens} chars for {length}",
            s.id
        );
    }
}

#[test]
fn needle_once_at_the_right_depth() {
    let depths = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0];
    let samples = config(&[2000], &depths, 3, 11)
        .generate(&WhitespaceTokens)
        .unwrap();
    for s in &samples {
        let needle = needle_of(s);
        let (name, city) = (&needle[..needle.find(' ').unwrap()], &s.turns[0].answers[0]);
        assert_eq!(s.context.matches(&needle).count(), 1, "{}", s.id);
        assert_eq!(
            s.context.matches(name).count(),
            1,
            "{}: name {name} repeated",
            s.id
        );
        assert_eq!(
            s.context.matches(city.as_str()).count(),
            1,
            "{}: city {city} repeated",
            s.id
        );
        let depth = s.meta["depth"].as_f64().unwrap();
        let at = s.context.find(&needle).unwrap() as f64;
        let haystack_len = (s.context.len() - needle.len() - 1) as f64;
        assert!(
            (at / haystack_len - depth).abs() < 0.02,
            "{}: needle at {}",
            s.id,
            at / haystack_len
        );
        assert!((s.meta["needle_depth"].as_f64().unwrap() - depth).abs() < 0.02);
        // at a sentence boundary
        assert!(
            at == 0.0 || s.context[..at as usize].ends_with(". "),
            "{}",
            s.id
        );
    }
    assert!(samples[0].context.starts_with(&needle_of(&samples[0])));
    assert!(samples
        .last()
        .unwrap()
        .context
        .ends_with(&needle_of(samples.last().unwrap())));
}

#[test]
fn plain_prompt_is_question_then_answer_prefix() {
    for s in config(&[300], &[0.5], 5, 2)
        .generate(&WhitespaceTokens)
        .unwrap()
    {
        let needle = needle_of(&s);
        let name = &needle[..needle.find(' ').unwrap()];
        let city = needle.trim_end_matches('.').rsplit(' ').next().unwrap();
        assert_eq!(s.turns.len(), 1);
        assert_eq!(
            s.turns[0].question,
            format!("\n\nQuestion: Where does {name} live?\n")
        );
        assert_eq!(
            s.turns[0].answer_prefix.as_deref(),
            Some(format!("Answer: {name} lives in").as_str())
        );
        assert_eq!(s.turns[0].answers, [city]);
        // The plain prompt is the documented completion prompt, byte for byte.
        let p = build_prompt(&s, &s.turns[0]);
        assert_eq!(p.context, s.context);
        assert_eq!(
            p.question,
            format!("\n\nQuestion: Where does {name} live?\nAnswer: {name} lives in")
        );
        // the expected completion scores 1
        assert_eq!(
            s.metric.score(&format!(" {city}."), &s.turns[0].answers),
            1.0
        );
    }
}

#[test]
fn haystack_file_avoids_names_it_mentions() {
    // Every name but Zara and every city but Porto appear in the file: all needles use those two.
    let mut text = String::from("Some people keep lists.\n\n");
    for n in vocab::NAMES.iter().filter(|&&n| n != "Zara") {
        text.push_str(&format!("{n} wrote an essay. "));
    }
    for c in vocab::CITIES.iter().filter(|&&c| c != "Porto") {
        text.push_str(&format!("It was about {c}. "));
    }
    let json = serde_json::json!({ "text": text }).to_string();
    let path = temp_file("pg.json", &json);
    let mut c = config(&[300, 2500], &[0.5], 4, 5);
    c.haystack = Haystack::File { path };
    let samples = c.generate(&WhitespaceTokens).unwrap();
    for s in &samples {
        assert_eq!(needle_of(s), "Zara lives in Porto.");
        assert_eq!(s.context.matches("Zara").count(), 1);
        assert!(WhitespaceTokens.count_tokens(&s.context) <= 2500);
    }
    // a short file is repeated to reach the length
    let tokens = samples.last().unwrap().meta["context_tokens"]
        .as_u64()
        .unwrap();
    assert!(tokens > 2450, "{tokens}");
    // plain text works too
    let path = temp_file("essay.txt", &text);
    c.haystack = Haystack::File { path };
    assert_eq!(
        needle_of(&c.generate(&WhitespaceTokens).unwrap()[0]),
        "Zara lives in Porto."
    );
}

#[test]
fn haystack_file_errors_name_the_file() {
    let path = temp_file("bad.json", r#"{"content": "x"}"#);
    let mut c = config(&[100], &[0.5], 1, 0);
    c.haystack = Haystack::File { path: path.clone() };
    let err = c.generate(&WhitespaceTokens).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "niah haystack {}: expected a JSON object with a string field `text`, or a list of such objects or strings",
            path.display()
        )
    );
    c.haystack = Haystack::File {
        path: path.with_file_name("missing.txt"),
    };
    let err = c.generate(&WhitespaceTokens).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "niah haystack {}: ",
            path.with_file_name("missing.txt").display()
        )),
        "{err}"
    );
    c.haystack = Haystack::File {
        path: temp_file("blank.txt", " \n\n "),
    };
    assert!(matches!(
        c.generate(&WhitespaceTokens),
        Err(NeedleError::Empty { .. })
    ));
}

#[test]
fn invalid_grids_are_refused() {
    let err = |c: NeedleConfig| c.generate(&WhitespaceTokens).unwrap_err().to_string();
    assert_eq!(
        err(config(&[], &[0.5], 1, 0)),
        "niah: `lengths` is empty; expected at least one target length in tokens"
    );
    assert_eq!(
        err(config(&[10], &[1.5], 1, 0)),
        "niah: depth 1.5 in `depths` is outside 0..=1"
    );
    assert_eq!(
        err(config(&[10], &[0.5, 0.50], 1, 0)),
        "niah: depth 0.50 appears twice in `depths`"
    );
    assert_eq!(
        err(config(&[10, 10], &[0.5], 1, 0)),
        "niah: length 10 appears twice in `lengths`"
    );
    assert_eq!(
        err(config(&[10], &[0.5], 0, 0)),
        "niah: `samples_per_cell` is 0; expected at least 1"
    );
    assert_eq!(
        err(config(&[3], &[0.5], 1, 0)),
        "niah: target length 3 is shorter than the needle alone (4 tokens); \
         expected lengths of at least 4"
    );
    // exactly the needle fits
    let s = config(&[4], &[0.5], 1, 0)
        .generate(&WhitespaceTokens)
        .unwrap();
    assert_eq!(s[0].context, needle_of(&s[0]));
}

#[test]
fn config_serde() {
    let c: NeedleConfig = serde_json::from_str(r#"{"lengths": [1024]}"#).unwrap();
    assert_eq!(
        c,
        NeedleConfig {
            chat_template: Default::default(),
            lengths: vec![1024],
            depths: default_depths(),
            samples_per_cell: 1,
            seed: 0,
            haystack: Haystack::Generated
        }
    );
    let c: NeedleConfig =
        serde_json::from_str(r#"{"lengths": [8], "haystack": {"file": {"path": "pg.json"}}}"#)
            .unwrap();
    assert_eq!(
        c.haystack,
        Haystack::File {
            path: "pg.json".into()
        }
    );
    let c: NeedleConfig =
        serde_json::from_str(r#"{"lengths": [8], "haystack": "generated"}"#).unwrap();
    assert_eq!(c.haystack, Haystack::Generated);
    let err = serde_json::from_str::<NeedleConfig>(r#"{"lengths": [8], "depht": [0.5]}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("unknown field `depht`, expected one of `lengths`, `depths`"),
        "{err}"
    );
    let err = serde_json::from_str::<NeedleConfig>(
        r#"{"lengths": [8], "haystack": {"file": {"path": "x", "p": 1}}}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("unknown field `p`"), "{err}");
}

#[test]
fn sentence_splitting() {
    let text = "Dr. Smith went home. He said \"hi.\" Then e.g. apples were sold!\nWhy? because.\n\nNew para\nwithout stop\n\n  Last one J. R. wrote.";
    assert_eq!(
        split_sentences(text),
        [
            "Dr. Smith went home.",
            "He said \"hi.\"",
            "Then e.g. apples were sold!",
            "Why? because.",
            "New para without stop",
            "Last one J. R. wrote.",
        ]
    );
}

#[test]
fn depth_labels() {
    assert_eq!(depth_label(0.5), "0.50");
    assert_eq!(depth_label(0.0), "0.00");
    assert_eq!(depth_label(1.0), "1.00");
    assert_eq!(depth_label(0.125), "0.125");
}

//! Every case of `../shared/data/reference/chat/chat_templates.json` (real chat templates of 13
//! instruct models, rendered by transformers 5.24.0 / jinja2 3.1.6): [`ChatTemplate`] must render
//! the same string byte for byte, and raise where transformers raised.

use kvbench::chat_template::ChatTemplate;
use kvbench::testing::shared_data;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[derive(Deserialize)]
struct Fixture {
    templates: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    template: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    messages: Vec<Value>,
    add_generation_prompt: bool,
    #[serde(default)]
    extra: Map<String, Value>,
    rendered: Option<String>,
    error: Option<String>,
}

fn fixture() -> Fixture {
    let path = shared_data().join("reference/chat/chat_templates.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// A readable account of where two renderings part: the common prefix length, then both sides
/// from the line the difference is on, escaped so whitespace shows.
fn diff(expected: &str, got: &str) -> String {
    let at = expected
        .char_indices()
        .zip(got.chars())
        .find(|((_, a), b)| a != b)
        .map(|((i, _), _)| i)
        .unwrap_or(expected.len().min(got.len()));
    let line_start = expected[..at].rfind('\n').map_or(0, |i| i + 1);
    let show = |s: &str| {
        let tail: String = s
            .get(line_start..)
            .unwrap_or("")
            .chars()
            .take(160)
            .collect();
        format!("{tail:?}")
    };
    format!(
        "lengths: expected {} bytes, got {} bytes; first difference at byte {at} (line {})\n  expected: {}\n  got:      {}",
        expected.len(),
        got.len(),
        expected[..at].matches('\n').count() + 1,
        show(expected),
        show(got)
    )
}

#[test]
fn every_fixture_case_renders_as_transformers() {
    let fixture = fixture();
    let (mut rendered, mut errors, mut failures) = (0, 0, Vec::new());
    for (model, entry) in &fixture.templates {
        let template = ChatTemplate::new(
            entry.template.clone(),
            entry.bos_token.clone(),
            entry.eos_token.clone(),
        );
        for case in &entry.cases {
            let out =
                template.render_values(&case.messages, case.add_generation_prompt, &case.extra);
            match (&case.rendered, &case.error, out) {
                (Some(want), None, Ok(got)) => {
                    if &got == want {
                        rendered += 1;
                    } else {
                        failures.push(format!("{model} / {}: {}", case.name, diff(want, &got)));
                    }
                }
                (Some(_), None, Err(e)) => {
                    failures.push(format!("{model} / {}: unexpected error: {e}", case.name))
                }
                (None, Some(want), Err(e)) => {
                    // The message of the template's own raise_exception must come through.
                    if e.to_string().contains(want.as_str()) {
                        errors += 1;
                    } else {
                        failures.push(format!(
                            "{model} / {}: error `{e}` does not carry `{want}`",
                            case.name
                        ));
                    }
                }
                (None, Some(want), Ok(got)) => failures.push(format!(
                    "{model} / {}: transformers raised `{want}`, we rendered {got:?}",
                    case.name
                )),
                _ => failures.push(format!("{model} / {}: malformed case", case.name)),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        rendered + errors + failures.len(),
        failures.join("\n\n")
    );
    assert_eq!(
        (rendered, errors),
        (88, 2),
        "the fixture holds 88 renderings and 2 errors"
    );
}

//! One entry of a record's `multi_turns`, as read: its input, gold answer, options and, in the
//! mixed tasks, its own task; and the reference answers SCBench's `get_ground_truth` builds.

use serde_json::Value;

use crate::records::{invalid, LineProblem};

/// One `multi_turns` entry.
pub(super) struct RawTurn {
    pub input: String,
    pub answer: Value,
    pub options: Vec<String>,
    pub task: Option<String>,
    pub name: Option<String>,
}

impl RawTurn {
    pub fn parse(v: Value, i: usize) -> Result<Self, LineProblem> {
        let field = |k: &str| format!("multi_turns[{i}].{k}");
        let Value::Object(mut t) = v else {
            return Err(invalid(
                &format!("multi_turns[{i}]"),
                &v,
                "an {input, answer} object",
            ));
        };
        let input = match t.remove("input") {
            Some(Value::String(s)) => s,
            None => {
                return Err(LineProblem::Missing {
                    field: field("input"),
                    expected: "a string",
                })
            }
            Some(v) => return Err(invalid(&field("input"), &v, "a string")),
        };
        let answer = match t.remove("answer") {
            None | Some(Value::Null) => {
                return Err(LineProblem::Missing {
                    field: field("answer"),
                    expected: "a string, number or list",
                })
            }
            Some(v @ (Value::Object(_) | Value::Bool(_))) => {
                return Err(invalid(&field("answer"), &v, "a string, number or list"))
            }
            Some(v) => v,
        };
        let options = match t.remove("options") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .into_iter()
                .map(|o| match o {
                    Value::String(s) => Ok(s),
                    o => Err(invalid(&field("options"), &o, "a list of strings")),
                })
                .collect::<Result<_, _>>()?,
            Some(v) => return Err(invalid(&field("options"), &v, "a list of strings")),
        };
        let text = |v: Option<Value>| v.and_then(|v| v.as_str().map(str::to_string));
        Ok(RawTurn {
            input,
            answer,
            options,
            task: text(t.remove("task")),
            name: text(t.remove("name")),
        })
    }

    /// The reference answers as `get_ground_truth` builds them, as strings.
    pub fn answers(&self, task: &str) -> Result<(Vec<String>, bool), LineProblem> {
        let as_text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        if task == "scbench_choice_eng" {
            let answer = as_text(&self.answer);
            let Some(i) = self
                .options
                .iter()
                .position(|o| *o == answer)
                .filter(|&i| i < 4)
            else {
                return Err(LineProblem::Invalid {
                    field: "answer".into(),
                    found: format!("{answer:?}, not among the first four options"),
                    expected: "one of the turn's options",
                });
            };
            return Ok((vec![answer, "ABCD"[i..=i].to_string()], false));
        }
        Ok(match &self.answer {
            Value::Array(a) => (a.iter().map(as_text).collect(), false),
            // qa_eng's label is wrapped in a list; other scorers that iterate their label
            // iterate the characters of a string (Python), which `iterate_characters` replays
            v @ Value::String(_) => {
                let iterates =
                    matches!(task, "scbench_many_shot" | "scbench_qa_chn" | "scbench_vt");
                (vec![as_text(v)], iterates)
            }
            v => (vec![as_text(v)], false),
        })
    }

    pub fn choice_values(&self) -> Vec<(&'static str, &str)> {
        let opt = |i: usize| self.options.get(i).map_or("", String::as_str);
        vec![
            ("question", self.input.as_str()),
            ("OPTION_A", opt(0)),
            ("OPTION_B", opt(1)),
            ("OPTION_C", opt(2)),
            ("OPTION_D", opt(3)),
        ]
    }
}

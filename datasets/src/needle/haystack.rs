//! The needle's filler text from a file: reading it (JSON with `text`, JSONL of such objects, or
//! plain text), splitting it into sentences, and the words it uses (which the needles avoid).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Haystack, NeedleError};

/// The haystack text, ready to draw sentences from.
pub(super) enum HaystackSource {
    Generated,
    File {
        path: PathBuf,
        sentences: Vec<String>,
        /// Lowercased words of the file, to keep needles distinct from the text.
        words: HashSet<String>,
    },
}

impl HaystackSource {
    pub(super) fn load(haystack: &Haystack) -> Result<Self, NeedleError> {
        match haystack {
            Haystack::Generated => Ok(HaystackSource::Generated),
            Haystack::File { path } => {
                let text = read_haystack(path)?;
                let sentences = split_sentences(&text);
                if sentences.is_empty() {
                    return Err(NeedleError::Empty { path: path.clone() });
                }
                Ok(HaystackSource::File {
                    path: path.clone(),
                    sentences,
                    words: lowercase_words(&text),
                })
            }
        }
    }
}

fn lowercase_words(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Reads a haystack file: JSON with `text`, JSONL of such objects, or plain text.
pub(crate) fn read_haystack(path: &Path) -> Result<String, NeedleError> {
    let raw = fs::read_to_string(path).map_err(|source| NeedleError::Read {
        path: path.into(),
        source,
    })?;
    let raw = raw.strip_prefix('\u{feff}').unwrap_or(&raw);
    let format_err = |message: String| NeedleError::Format {
        path: path.into(),
        message,
    };
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("json") => {
            let value: Value = serde_json::from_str(raw).map_err(|e| {
                format_err(format!("not valid JSON ({e}); expected {{\"text\": ...}}"))
            })?;
            json_text(&value).ok_or_else(|| {
                format_err(
                    "expected a JSON object with a string field `text`, or a list of such objects or strings"
                        .into(),
                )
            })
        }
        Some("jsonl") => {
            let mut parts = Vec::new();
            for (i, line) in raw.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let value: Value = serde_json::from_str(line)
                    .map_err(|e| format_err(format!("line {}: not valid JSON ({e})", i + 1)))?;
                let text = json_text(&value).ok_or_else(|| {
                    format_err(format!(
                        "line {}: expected a JSON object with a string field `text`",
                        i + 1
                    ))
                })?;
                parts.push(text);
            }
            Ok(parts.join("\n\n"))
        }
        _ => Ok(raw.to_string()),
    }
}

fn json_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("text").and_then(Value::as_str).map(str::to_string),
        Value::Array(items) => {
            let parts: Option<Vec<String>> = items
                .iter()
                .map(|v| match v {
                    Value::Array(_) => None,
                    v => json_text(v),
                })
                .collect();
            parts.map(|p| p.join("\n\n"))
        }
        _ => None,
    }
}

/// Splits prose into sentences with whitespace collapsed.
///
/// A sentence ends at a blank line, or after a word ending in `.`, `!` or `?` (possibly followed by
/// closing quotes or brackets) when the next word does not start in lowercase and the word is not
/// a common abbreviation or an initial. Good enough to put a needle between two sentences.
pub(crate) fn split_sentences(text: &str) -> Vec<String> {
    const ABBREVIATIONS: &[&str] = &[
        "mr", "mrs", "ms", "dr", "st", "prof", "vs", "e.g", "i.e", "jr", "sr", "no",
    ];
    // (word, a paragraph ends after it)
    let mut words: Vec<(&str, bool)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if let Some(last) = words.last_mut() {
                last.1 = true;
            }
            continue;
        }
        words.extend(line.split_whitespace().map(|w| (w, false)));
    }
    let mut sentences = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for (i, &(word, paragraph_end)) in words.iter().enumerate() {
        current.push(word);
        let next_lower = words
            .get(i + 1)
            .and_then(|(w, _)| w.chars().find(|c| c.is_alphanumeric()))
            .is_some_and(char::is_lowercase);
        let core = word.trim_end_matches(['"', '\'', ')', ']', '\u{201d}', '\u{2019}']);
        let ends = core.ends_with(['.', '!', '?']);
        let stem = core.trim_end_matches(['.', '!', '?']).to_lowercase();
        let abbreviation = core.ends_with('.')
            && (ABBREVIATIONS.contains(&stem.as_str())
                || (stem.chars().count() == 1 && stem.chars().all(char::is_alphabetic)));
        if paragraph_end || i + 1 == words.len() || (ends && !next_lower && !abbreviation) {
            sentences.push(current.join(" "));
            current.clear();
        }
    }
    sentences
}

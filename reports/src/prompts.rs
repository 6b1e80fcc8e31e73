//! The exact prompts of a run: `prompts.jsonl` beside each results file (`prompts.shard-0-of-4.jsonl`
//! beside `results.shard-0-of-4.jsonl`), one line per sample turn the run prefilled (not per
//! record: every method and budget of a turn shares its prompt), so `kvbench show` can print what
//! the model was fed without results.jsonl carrying the text of every context many times over.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One turn's prompt as the model got it: the rendered context after truncation (prefilled, then
/// compressed) and the question (appended after compression).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptLine {
    pub dataset: String,
    pub sample_id: String,
    pub turn: usize,
    /// Whether the model's chat template rendered the turn.
    pub templated: bool,
    pub context_tokens: usize,
    pub question_tokens: usize,
    pub truncated_tokens: usize,
    /// The context text: the template's rendering, or, where tokens were cut, the decoded kept
    /// tokens (what was prefilled).
    pub context: String,
    pub question: String,
}

/// The prompts file that belongs to a results file; None for a file not named `results*.jsonl`.
pub fn prompts_path(results: &Path) -> Option<PathBuf> {
    let name = results.file_name()?.to_str()?;
    let rest = name.strip_prefix("results")?;
    Some(results.with_file_name(format!("prompts{rest}")))
}

/// The prompts of `sample_id` (every turn, each once: the last line written for it, as a resumed
/// run may write a turn again) from the prompts files beside `results`, in turn order. Lines that
/// do not parse (a killed run's last line) are passed over: prompts are for reading, not counting.
pub fn find(results: &[PathBuf], dataset: &str, sample_id: &str) -> Vec<PromptLine> {
    use std::io::BufRead;
    let mut found: Vec<PromptLine> = Vec::new();
    let needle = serde_json::to_string(sample_id).unwrap_or_default();
    for path in results.iter().filter_map(|r| prompts_path(r)) {
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
            // Parse only lines that mention the id: prompts files of long contexts are large.
            if !line.contains(&needle) {
                continue;
            }
            let Ok(p) = serde_json::from_str::<PromptLine>(&line) else {
                continue;
            };
            if p.sample_id == sample_id && p.dataset == dataset {
                found.retain(|q| q.turn != p.turn);
                found.push(p);
            }
        }
    }
    found.sort_by_key(|p| p.turn);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_files_have_their_own_prompts_file() {
        let p = |s: &str| prompts_path(Path::new(s)).map(|p| p.display().to_string());
        assert_eq!(p("out/results.jsonl").as_deref(), Some("out/prompts.jsonl"));
        assert_eq!(
            p("out/results.shard-0-of-4.jsonl").as_deref(),
            Some("out/prompts.shard-0-of-4.jsonl")
        );
        assert_eq!(p("out/mine.jsonl"), None);
    }

    #[test]
    fn the_last_line_of_a_turn_wins_and_broken_lines_are_passed_over() {
        let dir = std::env::temp_dir().join(format!("kvbench-prompts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let line = |turn: usize, context: &str| PromptLine {
            dataset: "niah".into(),
            sample_id: "s\"1".into(),
            turn,
            templated: true,
            context_tokens: 3,
            question_tokens: 2,
            truncated_tokens: 0,
            context: context.into(),
            question: "q?".into(),
        };
        let text = [
            serde_json::to_string(&line(1, "second turn")).unwrap(),
            serde_json::to_string(&line(0, "old")).unwrap(),
            serde_json::to_string(&line(0, "new")).unwrap(),
            "{\"dataset\": \"niah\", \"sample_id\": \"s\\\"1\", \"tur".into(),
        ]
        .join("\n");
        std::fs::write(dir.join("prompts.jsonl"), text).unwrap();
        let got = find(&[dir.join("results.jsonl")], "niah", "s\"1");
        let contexts: Vec<&str> = got.iter().map(|p| p.context.as_str()).collect();
        assert_eq!(contexts, ["new", "second turn"]);
        assert!(find(&[dir.join("results.jsonl")], "other", "s\"1").is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

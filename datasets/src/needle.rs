//! Needle in a haystack: one fact ("Anna lives in Paris.") hidden at a chosen depth in filler text
//! of a chosen length in tokens, then asked about. The quickstart task.
//!
//! Completion-style on purpose: small instruct models such as SmolLM2-135M-Instruct answer
//! retrieval questions when the prompt ends in an answer prefix (90-100% with
//! `"...\nAnswer: Anna lives in"`) and almost never when asked chat-style. The turn is therefore
//! the question `"\n\nQuestion: Where does Anna live?\n"` with the answer prefix
//! `"Answer: Anna lives in"` ([`Turn::answer_prefix`]), scored with [`Metric::StringMatchAll`]
//! against `["Paris"]`. In plain text the two follow each other
//! (`"...live?\nAnswer: Anna lives in"`); with a chat template the prefix starts the assistant's
//! message, as kvpress's needle-in-a-haystack puts its `answer_prefix` after the generation
//! prompt, and the newline that ends the line in plain text stays at the end of the question.
//!
//! Grid: every `length x depth` cell gets `samples_per_cell` samples. Sample `i` of every cell draws
//! its needle and its generated haystack from the same seeded stream, so across the grid the cells
//! differ only in length and depth: a heatmap compares like with like.
//!
//! Sizing: the haystack is a prefix of a sentence stream; a search over the number of sentences
//! finds the longest context (haystack and needle) whose token count, by the harness's
//! [`TokenCounter`], does not exceed the target. The needle goes in at the sentence boundary closest
//! to `depth` of the haystack's length (in bytes).

pub mod matrix;
mod vocab;

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::prompt::ChatTemplateMode;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Metric, Sample, TokenCounter, Turn};

/// Task name of every needle sample.
pub const TASK: &str = "niah";
/// Greedy decode length: a city name and a full stop, with room to spare.
pub const MAX_NEW_TOKENS: usize = 8;

/// The `niah` dataset as written in an experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeedleConfig {
    /// Target context lengths in tokens of the model under test; each context is as long as
    /// possible without exceeding its target.
    pub lengths: Vec<usize>,
    /// Needle positions as fractions of the haystack, `0.0` (start) to `1.0` (end).
    #[serde(default = "default_depths")]
    pub depths: Vec<f64>,
    #[serde(default = "default_samples_per_cell")]
    pub samples_per_cell: usize,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub haystack: Haystack,
    /// Whether prompts go through the model's chat template: `auto` (where the benchmark's
    /// official code applies one), `true` or `false`. Applied by the harness.
    #[serde(default, skip_serializing_if = "ChatTemplateMode::is_auto")]
    pub chat_template: ChatTemplateMode,
}

fn default_depths() -> Vec<f64> {
    vec![0.0, 0.25, 0.5, 0.75, 1.0]
}

fn default_samples_per_cell() -> usize {
    1
}

/// Where the filler text comes from.
///
/// YAML: `haystack: generated` or `haystack: {file: {path: essays.json}}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Haystack {
    /// Plain English sentences assembled from embedded word lists, drawn from the seed; they never
    /// name a person or a city.
    #[default]
    Generated,
    /// Text from a file, repeated if it is too short: `.json` holds `{"text": ...}` (RULER's
    /// Paul Graham essays) or a list of such objects or strings, `.jsonl` one such object per line,
    /// anything else is plain UTF-8 text. Needle names and cities that occur in it are not used.
    File { path: PathBuf },
}

/// Why a needle dataset could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NeedleError {
    #[error("niah: `lengths` is empty; expected at least one target length in tokens")]
    NoLengths,
    #[error("niah: length 0 in `lengths`; expected target lengths of at least 1 token")]
    ZeroLength,
    #[error("niah: length {0} appears twice in `lengths`")]
    DuplicateLength(usize),
    #[error("niah: `depths` is empty; expected at least one depth between 0 and 1")]
    NoDepths,
    #[error("niah: depth {0} in `depths` is outside 0..=1")]
    DepthOutOfRange(f64),
    #[error("niah: depth {0} appears twice in `depths`")]
    DuplicateDepth(String),
    #[error("niah: `samples_per_cell` is 0; expected at least 1")]
    NoSamples,
    #[error(
        "niah: target length {length} is shorter than the needle alone \
         ({needle_tokens} tokens); expected lengths of at least {needle_tokens}"
    )]
    TooShort { length: usize, needle_tokens: usize },
    #[error("niah haystack {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("niah haystack {}: {message}", path.display())]
    Format { path: PathBuf, message: String },
    #[error("niah haystack {}: no text to fill the context with", path.display())]
    Empty { path: PathBuf },
    #[error("niah haystack {}: it mentions every candidate needle {what}; expected text that leaves some unused", path.display())]
    NoDistinctNeedle { path: PathBuf, what: &'static str },
}

impl NeedleConfig {
    /// Checks the grid: non-empty lengths and depths, no duplicates, depths within 0..=1.
    pub fn validate(&self) -> Result<(), NeedleError> {
        if self.lengths.is_empty() {
            return Err(NeedleError::NoLengths);
        }
        let mut seen = HashSet::new();
        for &l in &self.lengths {
            if l == 0 {
                return Err(NeedleError::ZeroLength);
            }
            if !seen.insert(l) {
                return Err(NeedleError::DuplicateLength(l));
            }
        }
        if self.depths.is_empty() {
            return Err(NeedleError::NoDepths);
        }
        let mut seen = HashSet::new();
        for &d in &self.depths {
            if !(0.0..=1.0).contains(&d) {
                return Err(NeedleError::DepthOutOfRange(d));
            }
            let label = depth_label(d);
            if !seen.insert(label.clone()) {
                return Err(NeedleError::DuplicateDepth(label));
            }
        }
        if self.samples_per_cell == 0 {
            return Err(NeedleError::NoSamples);
        }
        Ok(())
    }

    /// Every sample of the grid, ordered by length, then depth, then index. Same config and token
    /// counter, byte-identical samples.
    ///
    /// Ids are `niah-L{length}-D{depth:.2}-{index}` (more depth digits only where two decimals
    /// would not be exact); `meta` holds `length`, `depth`, `context_tokens`, `needle_depth` (where
    /// the needle landed, as a fraction of the haystack's bytes) and `needle`.
    pub fn generate(&self, counter: &dyn TokenCounter) -> Result<Vec<Sample>, NeedleError> {
        self.validate()?;
        let source = HaystackSource::load(&self.haystack)?;
        let mut streams: Vec<Stream> = (0..self.samples_per_cell)
            .map(|i| Stream::new(self.seed, i as u64, &source))
            .collect::<Result<_, _>>()?;
        let mut samples =
            Vec::with_capacity(self.lengths.len() * self.depths.len() * streams.len());
        for &length in &self.lengths {
            for &depth in &self.depths {
                for (i, stream) in streams.iter_mut().enumerate() {
                    samples.push(stream.sample(length, depth, i, counter)?);
                }
            }
        }
        Ok(samples)
    }
}

/// `0.5` -> `"0.50"`; `0.125` -> `"0.125"`: two decimals unless they would round.
fn depth_label(depth: f64) -> String {
    let two = format!("{depth:.2}");
    if two.parse::<f64>() == Ok(depth) {
        two
    } else {
        format!("{depth}")
    }
}

/// The haystack text, ready to draw sentences from.
enum HaystackSource {
    Generated,
    File {
        path: PathBuf,
        sentences: Vec<String>,
        /// Lowercased words of the file, to keep needles distinct from the text.
        words: HashSet<String>,
    },
}

impl HaystackSource {
    fn load(haystack: &Haystack) -> Result<Self, NeedleError> {
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

/// Sample `i`'s needle and haystack sentences, shared by every cell of the grid.
struct Stream<'a> {
    source: &'a HaystackSource,
    rng: ChaCha8Rng,
    name: &'static str,
    city: &'static str,
    sentences: Vec<String>,
}

impl<'a> Stream<'a> {
    fn new(seed: u64, index: u64, source: &'a HaystackSource) -> Result<Self, NeedleError> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(index);
        let (names, cities): (Vec<&'static str>, Vec<&'static str>) = match source {
            HaystackSource::Generated => (vocab::NAMES.to_vec(), vocab::CITIES.to_vec()),
            HaystackSource::File { path, words, .. } => {
                let unused = |list: &[&'static str], what| {
                    let kept: Vec<_> = list
                        .iter()
                        .copied()
                        .filter(|w| !words.contains(&w.to_lowercase()))
                        .collect();
                    if kept.is_empty() {
                        Err(NeedleError::NoDistinctNeedle {
                            path: path.clone(),
                            what,
                        })
                    } else {
                        Ok(kept)
                    }
                };
                (
                    unused(vocab::NAMES, "name")?,
                    unused(vocab::CITIES, "city")?,
                )
            }
        };
        let name = names[rng.gen_range(0..names.len())];
        let city = cities[rng.gen_range(0..cities.len())];
        Ok(Stream {
            source,
            rng,
            name,
            city,
            sentences: Vec::new(),
        })
    }

    /// Makes at least `n` haystack sentences available.
    fn ensure(&mut self, n: usize) {
        while self.sentences.len() < n {
            let next = match self.source {
                HaystackSource::Generated => vocab::sentence(&mut self.rng),
                HaystackSource::File { sentences, .. } => {
                    sentences[self.sentences.len() % sentences.len()].clone()
                }
            };
            self.sentences.push(next);
        }
    }

    fn needle(&self) -> String {
        format!("{} lives in {}.", self.name, self.city)
    }

    /// The context with the first `n` sentences, its token count and the needle's actual depth.
    fn context(&mut self, n: usize, depth: f64, counter: &dyn TokenCounter) -> Fit {
        self.ensure(n);
        let haystack = &self.sentences[..n];
        // Start of sentence b in the haystack joined by spaces; the end for b == n.
        let mut starts = Vec::with_capacity(n + 1);
        let mut pos = 0usize;
        for s in haystack {
            starts.push(pos);
            pos += s.len() + 1;
        }
        let total = pos.saturating_sub(1);
        starts.push(total);
        let target = depth * total as f64;
        let mut boundary = 0;
        for (b, &start) in starts.iter().enumerate() {
            if (start as f64 - target).abs() < (starts[boundary] as f64 - target).abs() {
                boundary = b;
            }
        }
        let needle = self.needle();
        let parts: Vec<&str> = haystack[..boundary]
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(needle.as_str()))
            .chain(haystack[boundary..].iter().map(String::as_str))
            .collect();
        let context = parts.join(" ");
        let tokens = counter.count_tokens(&context);
        let needle_depth = if total == 0 {
            0.0
        } else {
            starts[boundary] as f64 / total as f64
        };
        Fit {
            context,
            tokens,
            needle_depth,
        }
    }

    /// The longest context of at most `length` tokens: estimate the sentence count from a probe,
    /// gallop from the estimate until the answer is bracketed, then bisect. Only measured counts
    /// are trusted, so the result never exceeds `length`, even for a counter that is not monotone.
    fn fit(
        &mut self,
        length: usize,
        depth: f64,
        counter: &dyn TokenCounter,
    ) -> Result<Fit, NeedleError> {
        const PROBE: usize = 16;
        let empty = self.context(0, depth, counter);
        if empty.tokens > length {
            return Err(NeedleError::TooShort {
                length,
                needle_tokens: empty.tokens,
            });
        }
        // Every sentence adds at least one token with any real tokenizer; the cap stops a counter
        // that never grows from drawing sentences forever.
        let cap = length;
        // `lo` fits (its context is `best`); `hi`, once known, does not.
        let (mut lo, mut best, mut hi) = (0usize, empty, None::<usize>);

        let n = PROBE.min(cap);
        let probe = self.context(n, depth, counter);
        if probe.tokens > length {
            hi = Some(n);
        } else {
            let per_sentence =
                probe.tokens.saturating_sub(best.tokens).max(1) as f64 / n.max(1) as f64;
            let more = ((length - probe.tokens) as f64 / per_sentence) as usize;
            (lo, best) = (n, probe);
            if lo < cap {
                let guess = (lo + more).clamp(lo + 1, cap);
                let mut step = (guess / 64).max(1);
                let fit = self.context(guess, depth, counter);
                if fit.tokens <= length {
                    (lo, best) = (guess, fit);
                    while lo < cap {
                        let n = (lo + step).min(cap);
                        let fit = self.context(n, depth, counter);
                        if fit.tokens > length {
                            hi = Some(n);
                            break;
                        }
                        (lo, best) = (n, fit);
                        step *= 2;
                    }
                } else {
                    hi = Some(guess);
                    while let Some(n) = hi.and_then(|h| h.checked_sub(step)).filter(|&n| n > lo) {
                        let fit = self.context(n, depth, counter);
                        if fit.tokens <= length {
                            (lo, best) = (n, fit);
                            break;
                        }
                        hi = Some(n);
                        step *= 2;
                    }
                }
            }
        }

        if let Some(mut hi) = hi {
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                let fit = self.context(mid, depth, counter);
                if fit.tokens <= length {
                    (lo, best) = (mid, fit);
                } else {
                    hi = mid;
                }
            }
        }
        Ok(best)
    }

    fn sample(
        &mut self,
        length: usize,
        depth: f64,
        index: usize,
        counter: &dyn TokenCounter,
    ) -> Result<Sample, NeedleError> {
        let fit = self.fit(length, depth, counter)?;
        let mut meta = Map::new();
        meta.insert("length".into(), length.into());
        meta.insert("depth".into(), depth.into());
        meta.insert("context_tokens".into(), fit.tokens.into());
        meta.insert("needle_depth".into(), fit.needle_depth.into());
        meta.insert("needle".into(), self.needle().into());
        let turn = Turn::new(
            format!("\n\nQuestion: Where does {} live?\n", self.name),
            vec![self.city.to_string()],
        )
        .with_answer_prefix(format!("Answer: {} lives in", self.name));
        let id = format!("{TASK}-L{length}-D{}-{index}", depth_label(depth));
        let mut sample = Sample::single(
            id,
            fit.context,
            turn,
            TASK,
            Metric::StringMatchAll,
            MAX_NEW_TOKENS,
        );
        sample.meta = meta;
        Ok(sample)
    }
}

struct Fit {
    context: String,
    tokens: usize,
    needle_depth: f64,
}

#[cfg(test)]
mod tests {
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
}

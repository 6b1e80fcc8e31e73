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

mod haystack;
pub mod matrix;
mod vocab;

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;

use crate::prompt::ChatTemplateMode;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::Map;

use crate::{Metric, Sample, TokenCounter, Turn};

use haystack::HaystackSource;
pub(crate) use haystack::{read_haystack, split_sentences};

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
mod tests;

//! RULER's aggregation and tracing tasks: variable tracking (`variable_tracking.py`), common words
//! (`common_words_extraction.py`) and frequent coded words (`freq_words_extraction.py`).

use std::collections::BTreeSet;
use std::rc::Rc;

use rand::seq::{index, SliceRandom};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::niah::NOISE;
use super::{seeded, split_prompt, Built, Generator, Inputs, Parts, RulerError, WordLists};
use crate::{Metric, TokenCounter};

pub const VT_TEMPLATE: &str = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\nQuestion: Find all variables that are assigned the value {query} in the text above.";
pub const VT_ANSWER_PREFIX: &str = " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are assigned the value {query}, they are: ";
pub const CWE_TEMPLATE: &str = "Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones that appear most often.\n{context}\nQuestion: What are the 10 most common words in the above list?";
pub const CWE_ANSWER_PREFIX: &str =
    " Answer: The top 10 words that appear most often in the list are:";
pub const FWE_TEMPLATE: &str = "Read the following coded text and track the frequency of each coded word. Find the three most frequently appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore the dots '....'. What are the three most frequently appeared words in the above coded text?";
pub const FWE_ANSWER_PREFIX: &str =
    " Answer: According to the coded text above, the three most frequently appeared words are:";

const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";

fn letters(rng: &mut ChaCha8Rng, alphabet: &[u8], k: usize) -> String {
    (0..k)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

/// `vt`: one chain of 4 hops (`VAR X = 12345`, `VAR Y = VAR X `, ...) in the noise haystack,
/// with RULER's one-shot example (a 3-letter, value-12345 chain in a 500-token prompt, its names
/// and value re-drawn for every sample) before the task.
pub struct VariableTracking {
    /// The example prompt with its answer, followed by a newline.
    icl: String,
    icl_names: Vec<String>,
}

const HOPS: usize = 4;
const CHAINS: usize = 1;

impl VariableTracking {
    pub(crate) fn new(
        _length: usize,
        counter: &dyn TokenCounter,
        seed: u64,
    ) -> Result<Self, RulerError> {
        // sys_vartrack_w_noise_random(max_seq_length=500, incremental=5, tokens_to_generate=0):
        // the largest example with at most 500 tokens
        let build = |n: usize| -> (String, Vec<String>) {
            let mut rng = seeded(seed, "vt-icl", 500, 0);
            let (context, names, _) = chains_in_noise(n, 3, true, &mut rng);
            let prompt = fill_vt(&context, "12345");
            let text = format!(
                "{}{}{} {}\n",
                prompt.context,
                prompt.question,
                prompt.answer_prefix,
                names.join(" ")
            );
            (text, names)
        };
        let (mut lo, mut hi, mut best) = (5usize, 400usize, None);
        while lo <= hi {
            let mid = (lo + hi) / 2;
            let (text, _) = build(mid);
            if counter.count_tokens(text.trim_end()) <= 500 {
                best = Some(mid);
                lo = mid + 1;
            } else {
                hi = mid - 1;
            }
        }
        let (icl, icl_names) = build(best.unwrap_or(5));
        Ok(VariableTracking { icl, icl_names })
    }

    /// `randomize_icl`: each answer name replaced by fresh letters of its length, 12345 by a
    /// fresh value.
    fn randomized_icl(&self, rng: &mut ChaCha8Rng) -> String {
        let mut icl = self.icl.clone();
        for name in &self.icl_names {
            let new = letters(rng, UPPER, name.len());
            icl = icl.replace(name.as_str(), &new);
        }
        icl.replace("12345", &rng.gen_range(10000..99999).to_string())
    }
}

/// The chain(s) among `n` noise sentences: `(context, names of the first chain, value)`.
fn chains_in_noise(
    n: usize,
    k: usize,
    icl: bool,
    rng: &mut ChaCha8Rng,
) -> (String, Vec<String>, String) {
    let mut names: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    while names.len() < (HOPS + 1) * CHAINS {
        let v = letters(rng, UPPER, k);
        if seen.insert(v.clone()) {
            names.push(v);
        }
    }
    let mut sentences = vec![NOISE.to_string(); n];
    let mut value = String::new();
    for (c, vars) in names.chunks(HOPS + 1).enumerate() {
        let v = if icl {
            "12345".to_string()
        } else {
            rng.gen_range(10000..99999).to_string()
        };
        if c == 0 {
            value = v.clone();
        }
        let mut chain = vec![format!("VAR {} = {v}", vars[0])];
        for j in 0..HOPS {
            chain.push(format!("VAR {} = VAR {} ", vars[j + 1], vars[j]));
        }
        // Tiny haystacks (the size search starts small) have fewer slots than statements.
        let slots = sentences.len().max(chain.len());
        let mut at = index::sample(rng, slots, chain.len()).into_vec();
        at.sort_unstable();
        for (j, (pos, stmt)) in at.into_iter().zip(chain).enumerate() {
            let i = (pos + j).min(sentences.len());
            sentences.insert(i, stmt);
        }
    }
    let context = sentences.join("\n").replace(". \n", ".\n");
    (context, names[..HOPS + 1].to_vec(), value)
}

fn fill_vt(context: &str, value: &str) -> Parts {
    let num_v = (HOPS + 1).to_string();
    split_prompt(
        VT_TEMPLATE,
        VT_ANSWER_PREFIX,
        &[("context", context), ("query", value), ("num_v", &num_v)],
    )
}

impl Generator for VariableTracking {
    fn task(&self) -> &str {
        "vt"
    }
    fn metric(&self) -> Metric {
        Metric::StringMatchAll
    }
    fn tokens_to_generate(&self) -> usize {
        30
    }
    fn incremental(&self, length: usize) -> usize {
        if length < 4096 {
            5
        } else {
            10
        }
    }
    fn build(&self, size: usize, rng: &mut ChaCha8Rng) -> Result<Built, RulerError> {
        let (context, names, value) = chains_in_noise(size.max(1), 5, false, rng);
        let parts = fill_vt(&context, &value);
        // the example goes before the task template, followed by a newline
        let icl = self.randomized_icl(rng);
        Ok(Built {
            context: format!("{icl}\n{}", parts.context),
            question: parts.question,
            answer_prefix: parts.answer_prefix,
            answers: names,
        })
    }
}

/// `cwe`: 10 common words repeated among rarer ones, in a numbered list, after one solved
/// example (RULER's `num_fewshot=1`). Below 4096 tokens: example of 20 words (3 / 1 repeats), task
/// repeats 6 / 1; else example of 40 words (10 / 3), task repeats 30 / 3.
pub struct CommonWords {
    words: Rc<Vec<String>>,
    small: bool,
}

impl CommonWords {
    pub(crate) fn new(length: usize, inputs: &Inputs) -> Result<Self, RulerError> {
        let lists: Rc<WordLists> = inputs.words("cwe")?;
        // sorted(set(nouns + adjs + verbs))
        let set: BTreeSet<&String> = lists
            .nouns
            .iter()
            .chain(&lists.adjectives)
            .chain(&lists.verbs)
            .collect();
        let words = Rc::new(set.into_iter().cloned().collect());
        Ok(CommonWords {
            words,
            small: length < 4096,
        })
    }

    fn example(
        &self,
        num: usize,
        common: usize,
        uncommon: usize,
        rng: &mut ChaCha8Rng,
    ) -> (String, Vec<String>) {
        let num = num.min(self.words.len());
        let picked: Vec<&String> = index::sample(rng, self.words.len(), num)
            .iter()
            .map(|i| &self.words[i])
            .collect();
        let (top, rest) = picked.split_at(10.min(picked.len()));
        let mut list: Vec<&String> = Vec::new();
        for _ in 0..common {
            list.extend(top.iter().copied());
        }
        for _ in 0..uncommon {
            list.extend(rest.iter().copied());
        }
        list.shuffle(rng);
        (numbered(&list), top.iter().map(|w| w.to_string()).collect())
    }
}

/// "1. w1 2. w2 ...".
fn numbered<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .enumerate()
        .map(|(i, w)| format!("{}. {}", i + 1, w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Generator for CommonWords {
    fn task(&self) -> &str {
        "cwe"
    }
    fn metric(&self) -> Metric {
        Metric::StringMatchAll
    }
    fn tokens_to_generate(&self) -> usize {
        120
    }
    fn incremental(&self, _length: usize) -> usize {
        10
    }
    fn build(&self, size: usize, rng: &mut ChaCha8Rng) -> Result<Built, RulerError> {
        // the solved example is part of the context: template, answer prefix and answer
        let template = format!("{CWE_TEMPLATE}{CWE_ANSWER_PREFIX}");
        let ((ex, ex_answer), (r1, r2)) = if self.small {
            (self.example(20, 3, 1, rng), (6, 1))
        } else {
            (self.example(40, 10, 3, rng), (30, 3))
        };
        let shot = format!(
            "{} {}",
            crate::scbench::prompts::fill(&template, &[("context", &ex), ("query", "")]),
            numbered(&ex_answer)
        );
        let (context, answers) = self.example(size.max(11), r1, r2, rng);
        let parts = split_prompt(
            CWE_TEMPLATE,
            CWE_ANSWER_PREFIX,
            &[("context", &context), ("query", "")],
        );
        Ok(Built {
            context: format!("{shot}\n{}", parts.context),
            question: parts.question,
            answer_prefix: parts.answer_prefix,
            answers,
        })
    }
}

/// `fwe`: coded 6-letter words with zeta(2)-distributed counts (`floor(n * k^-2 / zeta(2))` for
/// rank k); the most frequent is the noise `...`, the answer the next three.
pub struct FrequentWords {
    vocab_size: usize,
}

impl FrequentWords {
    pub(crate) fn new(length: usize) -> Self {
        // vocab_size = (max_seq_length - tokens_to_generate) // 50
        FrequentWords {
            vocab_size: (length.saturating_sub(50) / 50).max(4),
        }
    }
}

impl Generator for FrequentWords {
    fn task(&self) -> &str {
        "fwe"
    }
    fn metric(&self) -> Metric {
        Metric::StringMatchAll
    }
    fn tokens_to_generate(&self) -> usize {
        50
    }
    fn incremental(&self, length: usize) -> usize {
        (length.saturating_sub(50) / 32).max(1)
    }
    fn build(&self, size: usize, rng: &mut ChaCha8Rng) -> Result<Built, RulerError> {
        let mut vocab = BTreeSet::new();
        while vocab.len() < self.vocab_size {
            vocab.insert(letters(rng, LOWER, 6));
        }
        let mut vocab: Vec<String> = vocab.into_iter().collect();
        vocab.shuffle(rng);
        vocab[0] = "...".into();
        let zeta2 = std::f64::consts::PI * std::f64::consts::PI / 6.0;
        let mut words: Vec<&str> = Vec::new();
        for (k, w) in vocab.iter().enumerate() {
            let count = (size as f64 * ((k + 1) as f64).powi(-2) / zeta2) as usize;
            words.extend(std::iter::repeat(w.as_str()).take(count));
        }
        words.shuffle(rng);
        let parts = split_prompt(
            FWE_TEMPLATE,
            FWE_ANSWER_PREFIX,
            &[("context", &words.join(" ")), ("query", "")],
        );
        Ok(Built {
            context: parts.context,
            question: parts.question,
            answer_prefix: parts.answer_prefix,
            answers: vocab[1..4].to_vec(),
        })
    }
}

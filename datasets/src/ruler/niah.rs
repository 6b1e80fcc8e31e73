//! RULER's needle-in-a-haystack family (`scripts/data/synthetic/niah.py`, `synthetic.yaml`).

use std::rc::Rc;

use rand::seq::{index, SliceRandom};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{split_prompt, Built, Generator, Inputs, RulerError, WordLists};
use crate::Metric;

/// RULER's niah template and answer prefix (`constants.py`).
pub const TEMPLATE: &str = "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. I will quiz you about the {type_needle_v} afterwards.\n{context}\nWhat are all the special magic {type_needle_v} for {query} mentioned in the provided text?";
pub const ANSWER_PREFIX: &str =
    " The special magic {type_needle_v} for {query} mentioned in the provided text are";
const NEEDLE: &str = "One of the special magic {type_needle_v} for {key} is: {value}.";
/// The noise haystack's sentence.
pub const NOISE: &str =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Haystack {
    Noise,
    Essay,
    Needle,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Words,
    Numbers,
    Uuids,
}

/// One niah task's arguments (`synthetic.yaml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Args {
    pub haystack: Haystack,
    pub key: Kind,
    pub value: Kind,
    pub num_k: usize,
    pub num_v: usize,
    pub num_q: usize,
}

/// `synthetic.yaml`'s arguments of a niah task.
pub fn args(task: &str) -> Option<Args> {
    use Haystack::*;
    use Kind::*;
    let a = |haystack, key, value, num_k, num_v, num_q| Args {
        haystack,
        key,
        value,
        num_k,
        num_v,
        num_q,
    };
    Some(match task {
        "niah_single_1" => a(Noise, Words, Numbers, 1, 1, 1),
        "niah_single_2" => a(Essay, Words, Numbers, 1, 1, 1),
        "niah_single_3" => a(Essay, Words, Uuids, 1, 1, 1),
        "niah_multikey_1" => a(Essay, Words, Numbers, 4, 1, 1),
        "niah_multikey_2" => a(Needle, Words, Numbers, 1, 1, 1),
        "niah_multikey_3" => a(Needle, Uuids, Uuids, 1, 1, 1),
        "niah_multivalue" => a(Essay, Words, Numbers, 1, 4, 1),
        "niah_multiquery" => a(Essay, Words, Numbers, 1, 1, 4),
        _ => return None,
    })
}

pub struct Niah {
    task: String,
    args: Args,
    words: Option<Rc<WordLists>>,
    essay: Option<Rc<Vec<String>>>,
}

impl Niah {
    pub(crate) fn new(task: &str, inputs: &Inputs) -> Result<Self, RulerError> {
        let args = args(task).ok_or_else(|| RulerError::UnknownTask(task.into()))?;
        let words = if args.key == Kind::Words || args.value == Kind::Words {
            Some(inputs.words(task)?)
        } else {
            None
        };
        let essay = if args.haystack == Haystack::Essay {
            Some(inputs.essay_words(task)?)
        } else {
            None
        };
        Ok(Niah {
            task: task.into(),
            args,
            words,
            essay,
        })
    }

    fn random(&self, kind: Kind, rng: &mut ChaCha8Rng) -> String {
        match kind {
            // random.randint(10**6, 10**7 - 1)
            Kind::Numbers => rng.gen_range(1_000_000u32..=9_999_999).to_string(),
            // random.choice of "{adj}-{noun}" over every pair: a uniform adjective and noun
            Kind::Words => {
                let w = self
                    .words
                    .as_ref()
                    .expect("word lists loaded for word needles");
                let adj = &w.adjectives[rng.gen_range(0..w.adjectives.len())];
                let noun = &w.nouns[rng.gen_range(0..w.nouns.len())];
                format!("{adj}-{noun}")
            }
            Kind::Uuids => uuid4(rng),
        }
    }
}

/// `str(uuid.UUID(int=random.getrandbits(128), version=4))`.
pub fn uuid4(rng: &mut ChaCha8Rng) -> String {
    let mut b: [u8; 16] = rng.gen();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// `np.round(np.linspace(0, 100, num=40)).astype(int)`.
pub fn depths() -> Vec<usize> {
    (0..40)
        .map(|i| (100.0 * i as f64 / 39.0).round_ties_even() as usize)
        .collect()
}

/// Puts `needles` between the sentences of `haystack` words as RULER's essay branch does:
/// sentence-split the first `size` words (repeated if needed), pick one depth per needle from
/// [`depths`] without replacement, insert at `int(len(sentences) * depth / 100)`, join by spaces.
pub(crate) fn insert_in_essay(
    words: &[String],
    size: usize,
    needles: &[String],
    rng: &mut ChaCha8Rng,
) -> String {
    let text: Vec<&str> = words
        .iter()
        .cycle()
        .take(size)
        .map(String::as_str)
        .collect();
    let sents = crate::needle::split_sentences(text.join(" ").trim());
    let d = depths();
    let picked = index::sample(rng, d.len(), needles.len().min(d.len()));
    let mut positions: Vec<usize> = picked.iter().map(|i| sents.len() * d[i] / 100).collect();
    positions.sort_unstable();
    let mut bounds = vec![0];
    bounds.extend(positions);
    bounds.push(sents.len());
    let mut parts: Vec<String> = Vec::new();
    for i in 1..bounds.len() {
        parts.push(sents[bounds[i - 1]..bounds[i]].join(" "));
        if let Some(n) = needles.get(i - 1) {
            parts.push(n.clone());
        }
    }
    parts.join(" ")
}

/// Inserts `needles` among `sentences` at distinct random indexes (descending, as RULER's
/// `sentences.insert`), joined by newlines.
fn insert_in_lines(mut sentences: Vec<String>, needles: &[String], rng: &mut ChaCha8Rng) -> String {
    let n = sentences.len();
    let mut at: Vec<usize> = index::sample(rng, n, needles.len().min(n)).into_vec();
    at.sort_unstable_by(|a, b| b.cmp(a));
    for (i, needle) in at.into_iter().zip(needles) {
        sentences.insert(i, needle.clone());
    }
    sentences.join("\n")
}

impl Generator for Niah {
    fn task(&self) -> &str {
        &self.task
    }

    fn metric(&self) -> Metric {
        Metric::StringMatchAll
    }

    fn tokens_to_generate(&self) -> usize {
        128
    }

    fn incremental(&self, length: usize) -> usize {
        match self.args.haystack {
            Haystack::Essay => 500,
            _ if length < 4096 => 5,
            _ => 25,
        }
    }

    fn build(&self, size: usize, rng: &mut ChaCha8Rng) -> Result<Built, RulerError> {
        let a = self.args;
        let type_v = match a.value {
            Kind::Numbers => "numbers",
            Kind::Words => "words",
            Kind::Uuids => "uuids",
        };
        let num_k = a.num_k.max(a.num_q);
        let (mut keys, mut values, mut needles) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..num_k {
            let key = self.random(a.key, rng);
            let mut vs = Vec::new();
            for _ in 0..a.num_v {
                let v = self.random(a.value, rng);
                needles.push(
                    NEEDLE
                        .replace("{type_needle_v}", type_v)
                        .replace("{key}", &key)
                        .replace("{value}", &v),
                );
                vs.push(v);
            }
            keys.push(key);
            values.push(vs);
        }
        needles.shuffle(rng);
        let size = size.max(1);
        let context = match a.haystack {
            Haystack::Essay => insert_in_essay(
                self.essay.as_deref().expect("essay loaded"),
                size,
                &needles,
                rng,
            ),
            Haystack::Noise => insert_in_lines(vec![NOISE.to_string(); size], &needles, rng),
            Haystack::Needle => {
                let distractors = (0..size)
                    .map(|_| {
                        let (k, v) = (self.random(a.key, rng), self.random(a.value, rng));
                        NEEDLE
                            .replace("{type_needle_v}", type_v)
                            .replace("{key}", &k)
                            .replace("{value}", &v)
                    })
                    .collect();
                insert_in_lines(distractors, &needles, rng)
            }
        };
        let asked = index::sample(rng, num_k, a.num_q);
        let queries: Vec<&str> = asked.iter().map(|i| keys[i].as_str()).collect();
        let answers: Vec<String> = asked.iter().flat_map(|i| values[i].clone()).collect();
        let query = match queries.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{}, and {last}", rest.join(", ")),
            _ => queries[0].to_string(),
        };
        let (mut template, mut prefix) = (TEMPLATE.to_string(), ANSWER_PREFIX.to_string());
        let mut type_v = type_v.to_string();
        if a.num_q * a.num_v == 1 {
            // RULER rewrites `template + answer_prefix`; no pattern spans the two
            for (from, to) in [
                ("Some", "A"),
                ("are all", "is"),
                ("are", "is"),
                ("answers", "answer"),
            ] {
                template = template.replace(from, to);
                prefix = prefix.replace(from, to);
            }
            type_v.pop();
        }
        let parts = split_prompt(
            &template,
            &prefix,
            &[
                ("type_needle_v", &type_v),
                ("context", &context),
                ("query", &query),
            ],
        );
        Ok(Built {
            context: parts.context,
            question: parts.question,
            answer_prefix: parts.answer_prefix,
            answers,
        })
    }
}

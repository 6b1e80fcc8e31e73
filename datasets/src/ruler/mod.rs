//! RULER (NVIDIA/RULER, <https://arxiv.org/abs/2404.06654>): the 13 synthetic tasks of its
//! `synthetic.yaml`, generated for the model under test at each target length.
//!
//! - `niah_single_1..3`, `niah_multikey_1..3`, `niah_multivalue`, `niah_multiquery` ([`niah`]):
//!   noise / essay / needle haystacks, word / number / uuid keys and values;
//! - `vt` (variable tracking, with RULER's one-shot example), `cwe` (common words, with its
//!   one-shot example), `fwe` (frequent coded words, zeta-distributed) ([`synthetic`]);
//! - `qa_1` (SQuAD v2 dev) and `qa_2` (HotpotQA dev distractor) ([`qa`]).
//!
//! Prompts are RULER's task templates and answer prefixes (`constants.py`): the text up to the
//! question line is compressed, the question appended; the answer prefix is the turn's
//! [`Turn::answer_prefix`], which RULER (`prepare.py`: `model_template.format(task_template) +
//! answer_prefix`) writes after the chat template's generation prompt and, with the base template,
//! right after the question (it starts with a space).
//! Sizing as `prepare.py`: a binary search over the haystack size (sentences, words, documents)
//! for the largest prompt whose tokens plus the tokens to generate fit the target length (its
//! upper bound doubled while it still fits), then per sample the size shrinks by RULER's
//! increment (a tenth of the size if that is smaller) until it fits. Every draw comes from a
//! ChaCha8 stream seeded by `(seed, task, length, sample)`: the same config gives the same samples
//! (not RULER's own samples, which depend on Python's RNG and nltk's sentence splitter).
//!
//! Inputs are files, not code: `essays` (RULER's `PaulGrahamEssays.json`), `words` (a directory
//! with wonderwords' `nounlist.txt`, `adjectivelist.txt`, `verblist.txt`), `squad`
//! (`dev-v2.0.json`) and `hotpotqa` (`hotpot_dev_distractor_v1.json`), each a local path or a
//! file of a hub dataset repository. Only the tasks that need an input ask for it.

pub mod niah;
pub mod qa;
pub mod synthetic;

use std::path::{Path, PathBuf};

use crate::prompt::ChatTemplateMode;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::hub::{self, HubError};
use crate::source::LoadOptions;
use crate::{DataFile, Loaded, Metric, Sample, TokenCounter, Turn};

/// The 13 tasks of RULER's `synthetic.yaml`.
pub const TASKS: &[&str] = &[
    "niah_single_1",
    "niah_single_2",
    "niah_single_3",
    "niah_multikey_1",
    "niah_multikey_2",
    "niah_multikey_3",
    "niah_multivalue",
    "niah_multiquery",
    "vt",
    "cwe",
    "fwe",
    "qa_1",
    "qa_2",
];

/// A file given by path or as a file of a hub dataset repository.
///
/// YAML: `essays: ../data/PaulGrahamEssays.json` or
/// `essays: {repo: ORG/NAME, file: PaulGrahamEssays.json, revision: COMMIT}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum InputFile {
    Path(PathBuf),
    Hub {
        repo: String,
        file: String,
        /// Default [`INPUT_DEFAULT_REVISION_UNPINNED`]: give a commit to pin the file.
        #[serde(default = "default_input_revision")]
        revision: String,
    },
}

/// The revision of a hub [`InputFile`] without `revision:`: UNPINNED. RULER names no hub
/// repository for its inputs (its scripts download them from their original sites), so there is
/// no commit to pin for a repository the experiment picks; `run.json` records the commit the
/// branch resolved to and each file's sha256. A `revision:` with a commit pins it.
pub const INPUT_DEFAULT_REVISION_UNPINNED: &str = "main";

fn default_input_revision() -> String {
    INPUT_DEFAULT_REVISION_UNPINNED.into()
}

impl InputFile {
    /// The local path, downloading a hub file into the cache; `name` is joined to a directory
    /// given by path, or to the hub `file` as a directory.
    fn resolve(&self, name: Option<&str>, opts: &LoadOptions) -> Result<PathBuf, HubError> {
        match self {
            InputFile::Path(p) => Ok(name.map_or_else(|| p.clone(), |n| p.join(n))),
            InputFile::Hub {
                repo,
                file,
                revision,
            } => hub::dataset_file(repo, revision, &self.hub_name(file, name), &opts.hub),
        }
    }

    fn hub_name(&self, file: &str, name: Option<&str>) -> String {
        match name {
            Some(n) => format!("{}/{n}", file.trim_end_matches('/')),
            None => file.to_string(),
        }
    }

    /// The data file at `path`, where `resolve(name)` put it.
    fn data_file(&self, name: Option<&str>, path: &Path) -> std::io::Result<DataFile> {
        match self {
            InputFile::Path(_) => DataFile::local(path),
            InputFile::Hub {
                repo,
                file,
                revision,
            } => DataFile::hub(repo, revision, &self.hub_name(file, name), path),
        }
    }
}

/// The `ruler` dataset as written in an experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulerConfig {
    /// Default: all 13 tasks.
    #[serde(default = "default_tasks")]
    pub tasks: Vec<String>,
    /// Target lengths in tokens of the model: prompt plus tokens to generate (RULER's
    /// `max_seq_length`).
    pub lengths: Vec<usize>,
    /// Samples per task and length.
    #[serde(default = "default_samples")]
    pub samples: usize,
    #[serde(default)]
    pub seed: u64,
    /// RULER's `PaulGrahamEssays.json` (`{"text": ...}`), for the essay haystacks.
    #[serde(default)]
    pub essays: Option<InputFile>,
    /// A directory with wonderwords' `nounlist.txt`, `adjectivelist.txt` and `verblist.txt`, for
    /// word keys and the cwe vocabulary.
    #[serde(default)]
    pub words: Option<InputFile>,
    /// SQuAD v2 `dev-v2.0.json`, for qa_1.
    #[serde(default)]
    pub squad: Option<InputFile>,
    /// HotpotQA `hotpot_dev_distractor_v1.json`, for qa_2.
    #[serde(default)]
    pub hotpotqa: Option<InputFile>,
    /// Whether prompts go through the model's chat template: `auto` (where the benchmark's
    /// official code applies one), `true` or `false`. Applied by the harness.
    #[serde(default, skip_serializing_if = "ChatTemplateMode::is_auto")]
    pub chat_template: ChatTemplateMode,
}

fn default_tasks() -> Vec<String> {
    TASKS.iter().map(|t| t.to_string()).collect()
}

impl RulerConfig {
    /// `(option, repo, file, revision)` of every hub input read at a branch or tag rather than a
    /// commit (by default `main`): the harness warns about each before a run.
    pub fn floating_inputs(&self) -> Vec<(&'static str, &str, &str, &str)> {
        [
            ("essays", &self.essays),
            ("words", &self.words),
            ("squad", &self.squad),
            ("hotpotqa", &self.hotpotqa),
        ]
        .into_iter()
        .filter_map(|(option, input)| match input {
            Some(InputFile::Hub {
                repo,
                file,
                revision,
            }) if !crate::source::is_commit(revision) => {
                Some((option, repo.as_str(), file.as_str(), revision.as_str()))
            }
            _ => None,
        })
        .collect()
    }
}

fn default_samples() -> usize {
    1
}

/// Why RULER samples could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum RulerError {
    #[error("ruler: unknown task `{0}`; expected one of {tasks}", tasks = TASKS.join(", "))]
    UnknownTask(String),
    #[error("ruler: `{0}` is empty")]
    Empty(&'static str),
    #[error("ruler task {task} needs `{input}`: {what}")]
    MissingInput {
        task: String,
        input: &'static str,
        what: &'static str,
    },
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error("ruler input {}: {message}", path.display())]
    Input { path: PathBuf, message: String },
    #[error("ruler task {task}: even the smallest prompt ({tokens} tokens with the {generate} to generate) exceeds the target length {length}")]
    TooShort {
        task: String,
        length: usize,
        tokens: usize,
        generate: usize,
    },
}

/// One generated prompt: the compressed part, the appended question, the answer prefix and the
/// references.
#[derive(Clone, Debug, PartialEq)]
pub struct Built {
    pub context: String,
    pub question: String,
    /// RULER's answer prefix, formatted; it starts with a space.
    pub answer_prefix: String,
    pub answers: Vec<String>,
}

/// A task that builds a prompt from a haystack size and a random stream.
pub(crate) trait Generator {
    fn task(&self) -> &str;
    fn metric(&self) -> Metric;
    fn tokens_to_generate(&self) -> usize;
    /// RULER's step for the size search and the per-sample fallback.
    fn incremental(&self, length: usize) -> usize;
    fn build(&self, size: usize, rng: &mut ChaCha8Rng) -> Result<Built, RulerError>;
    /// Sample `index` is about to be built (qa tasks ask question `index`).
    fn question_index(&self, _index: usize) {}
}

impl RulerConfig {
    pub fn generate(
        &self,
        counter: &dyn TokenCounter,
        opts: &LoadOptions,
    ) -> Result<Vec<Sample>, RulerError> {
        Ok(self.generate_loaded(counter, opts)?.samples)
    }

    /// As [`generate`](Self::generate), with the input files read.
    pub fn generate_loaded(
        &self,
        counter: &dyn TokenCounter,
        opts: &LoadOptions,
    ) -> Result<Loaded, RulerError> {
        if self.tasks.is_empty() {
            return Err(RulerError::Empty("tasks"));
        }
        if self.lengths.is_empty() {
            return Err(RulerError::Empty("lengths"));
        }
        if let Some(t) = self.tasks.iter().find(|t| !TASKS.contains(&t.as_str())) {
            return Err(RulerError::UnknownTask(t.clone()));
        }
        let inputs = Inputs::new(self, opts);
        let mut out = Vec::new();
        for task in &self.tasks {
            for &length in &self.lengths {
                let generator = make(task, length, &inputs, counter, self.seed)?;
                out.extend(self.samples_of(generator.as_ref(), length, counter)?);
            }
        }
        Ok(Loaded {
            samples: out,
            errors: Vec::new(),
            files: inputs.files.into_inner(),
        })
    }

    fn samples_of(
        &self,
        g: &dyn Generator,
        length: usize,
        counter: &dyn TokenCounter,
    ) -> Result<Vec<Sample>, RulerError> {
        let task = g.task().to_string();
        let rng_for = |index: usize| seeded(self.seed, &task, length, index);
        let size = search_size(g, length, counter, &rng_for)?;
        let step = g.incremental(length).max(1);
        let mut samples = Vec::new();
        for index in 0..self.samples {
            let mut n = size;
            g.question_index(index);
            let (built, tokens) = loop {
                let built = g.build(n, &mut rng_for(index))?;
                let tokens = prompt_tokens(counter, &built) + g.tokens_to_generate();
                if tokens <= length {
                    break (built, tokens);
                }
                if n <= 1 {
                    return Err(RulerError::TooShort {
                        task,
                        length,
                        tokens,
                        generate: g.tokens_to_generate(),
                    });
                }
                // RULER steps down by its increment (and loops forever once the size is below
                // it); a tenth of the size at most keeps small prompts close to the target
                n = n.saturating_sub(step.min((n / 10).max(1))).max(1);
            };
            let mut s = Sample::single(
                format!("{task}-L{length}-{index}"),
                built.context,
                Turn::new(built.question, built.answers).with_answer_prefix(built.answer_prefix),
                task.as_str(),
                g.metric(),
                g.tokens_to_generate(),
            );
            s.meta.insert("length".into(), length.into());
            s.meta.insert("tokens".into(), tokens.into());
            s.meta.insert("haystack_size".into(), n.into());
            s.meta.insert("ruler".into(), true.into());
            samples.push(s);
        }
        Ok(samples)
    }
}

fn prompt_tokens(counter: &dyn TokenCounter, b: &Built) -> usize {
    counter.count_tokens(&format!("{}{}{}", b.context, b.question, b.answer_prefix))
}

/// `prepare.py`'s search: estimate the tokens per unit from a prompt of `incremental` units,
/// then binary-search `[incremental, max(3 x estimate, 2 x incremental)]` for the largest size
/// whose prompt (drawn as sample 0) plus the tokens to generate fits; `incremental` if none does.
fn search_size(
    g: &dyn Generator,
    length: usize,
    counter: &dyn TokenCounter,
    rng_for: &dyn Fn(usize) -> ChaCha8Rng,
) -> Result<usize, RulerError> {
    let inc = g.incremental(length).max(1);
    g.question_index(0);
    let probe = prompt_tokens(counter, &g.build(inc, &mut rng_for(0))?).max(1);
    let per_unit = probe as f64 / inc as f64;
    let estimate = ((length as f64 / per_unit) * 3.0) as usize;
    let fits = |n: usize| -> Result<bool, RulerError> {
        Ok(
            prompt_tokens(counter, &g.build(n, &mut rng_for(0))?) + g.tokens_to_generate()
                <= length,
        )
    };
    let (mut lo, mut hi) = (inc, estimate.max(inc * 2));
    // RULER's bound is an estimate; where a fixed overhead (a one-shot example) skews it low,
    // grow it until it no longer fits
    let mut best = None;
    while fits(hi)? && hi < usize::MAX / 4 {
        best = Some(hi);
        lo = hi + 1;
        hi *= 2;
    }
    while lo <= hi {
        let mid = (lo + hi) / 2;
        if fits(mid)? {
            best = Some(mid);
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    Ok(best.unwrap_or(inc))
}

/// The random stream of one sample: ChaCha8 keyed by the seed, the task, the length and the index.
pub(crate) fn seeded(seed: u64, task: &str, length: usize, index: usize) -> ChaCha8Rng {
    // FNV-1a of the task name keeps streams of different tasks apart
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in task.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&h.to_le_bytes());
    key[16..24].copy_from_slice(&(length as u64).to_le_bytes());
    key[24..].copy_from_slice(&(index as u64).to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

/// The inputs of a config, read on first use.
pub(crate) struct Inputs<'a> {
    config: &'a RulerConfig,
    opts: &'a LoadOptions,
    essay: std::cell::OnceCell<std::rc::Rc<Vec<String>>>,
    words: std::cell::OnceCell<std::rc::Rc<WordLists>>,
    /// Every input file resolved so far.
    files: std::cell::RefCell<Vec<DataFile>>,
}

/// wonderwords' lists.
pub(crate) struct WordLists {
    pub nouns: Vec<String>,
    pub adjectives: Vec<String>,
    pub verbs: Vec<String>,
}

impl<'a> Inputs<'a> {
    fn new(config: &'a RulerConfig, opts: &'a LoadOptions) -> Self {
        Inputs {
            config,
            opts,
            essay: Default::default(),
            words: Default::default(),
            files: Default::default(),
        }
    }

    /// `file.resolve(name)`, recorded with its sha256.
    fn resolve(&self, file: &InputFile, name: Option<&str>) -> Result<PathBuf, RulerError> {
        let path = file.resolve(name, self.opts)?;
        if path.is_file() {
            let f = file.data_file(name, &path).map_err(|e| RulerError::Input {
                path: path.clone(),
                message: e.to_string(),
            })?;
            crate::datafile::record(&mut self.files.borrow_mut(), f);
        }
        Ok(path)
    }

    fn missing(task: &str, input: &'static str, what: &'static str) -> RulerError {
        RulerError::MissingInput {
            task: task.to_string(),
            input,
            what,
        }
    }

    /// The essay text as RULER splits it: `re.sub(r"\s+", " ", text).split(" ")`.
    pub(crate) fn essay_words(&self, task: &str) -> Result<std::rc::Rc<Vec<String>>, RulerError> {
        if let Some(e) = self.essay.get() {
            return Ok(e.clone());
        }
        let file = self.config.essays.as_ref().ok_or_else(|| {
            Self::missing(
                task,
                "essays",
                "RULER's PaulGrahamEssays.json ({\"text\": ...}), a path or {repo, file}",
            )
        })?;
        let path = self.resolve(file, None)?;
        let text = crate::needle::read_haystack(&path).map_err(|e| RulerError::Input {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let collapsed = crate::metrics::split_python(&text)
            .collect::<Vec<_>>()
            .join(" ");
        let words: Vec<String> = collapsed.split(' ').map(str::to_string).collect();
        if collapsed.is_empty() {
            return Err(RulerError::Input {
                path,
                message: "no text".into(),
            });
        }
        let words = std::rc::Rc::new(words);
        let _ = self.essay.set(words.clone());
        Ok(words)
    }

    pub(crate) fn words(&self, task: &str) -> Result<std::rc::Rc<WordLists>, RulerError> {
        if let Some(w) = self.words.get() {
            return Ok(w.clone());
        }
        let dir = self.config.words.as_ref().ok_or_else(|| {
            Self::missing(
                task,
                "words",
                "a directory with wonderwords' nounlist.txt, adjectivelist.txt and verblist.txt",
            )
        })?;
        let read = |name: &str| -> Result<Vec<String>, RulerError> {
            let path = self.resolve(dir, Some(name))?;
            let text = std::fs::read_to_string(&path).map_err(|e| RulerError::Input {
                path: path.clone(),
                message: e.to_string(),
            })?;
            let words: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .map(str::to_string)
                .collect();
            if words.is_empty() {
                return Err(RulerError::Input {
                    path,
                    message: "no words".into(),
                });
            }
            Ok(words)
        };
        let lists = std::rc::Rc::new(WordLists {
            nouns: read("nounlist.txt")?,
            adjectives: read("adjectivelist.txt")?,
            verbs: read("verblist.txt")?,
        });
        let _ = self.words.set(lists.clone());
        Ok(lists)
    }

    pub(crate) fn file(&self, task: &str, which: &'static str) -> Result<PathBuf, RulerError> {
        let (file, what) = match which {
            "squad" => (&self.config.squad, "SQuAD v2 dev-v2.0.json"),
            _ => (
                &self.config.hotpotqa,
                "HotpotQA hotpot_dev_distractor_v1.json",
            ),
        };
        let file = file
            .as_ref()
            .ok_or_else(|| Self::missing(task, which, what))?;
        self.resolve(file, None)
    }
}

fn make(
    task: &str,
    length: usize,
    inputs: &Inputs,
    counter: &dyn TokenCounter,
    seed: u64,
) -> Result<Box<dyn Generator>, RulerError> {
    Ok(match task {
        t if t.starts_with("niah") => Box::new(niah::Niah::new(t, inputs)?),
        "vt" => Box::new(synthetic::VariableTracking::new(length, counter, seed)?),
        "cwe" => Box::new(synthetic::CommonWords::new(length, inputs)?),
        "fwe" => Box::new(synthetic::FrequentWords::new(length)),
        "qa_1" => Box::new(qa::Qa::squad(&inputs.file(task, "squad")?)?),
        _ => Box::new(qa::Qa::hotpotqa(&inputs.file(task, "hotpotqa")?)?),
    })
}

/// The three parts of a formatted RULER prompt: the compressed part, the appended question and the
/// answer prefix.
pub(crate) struct Parts {
    pub context: String,
    pub question: String,
    pub answer_prefix: String,
}

/// Formats a RULER task template and its answer prefix with `values` and splits the template at
/// the start of the line holding `{query}`, never before the end of `{context}`; after
/// `{context}` if the template has no `{query}`.
pub(crate) fn split_prompt(template: &str, answer_prefix: &str, values: &[(&str, &str)]) -> Parts {
    let ctx_end = template
        .find("{context}")
        .map_or(0, |a| a + "{context}".len());
    let at = match template.find("{query}") {
        Some(q) => template[..q].rfind('\n').map_or(0, |n| n + 1).max(ctx_end),
        None => ctx_end,
    };
    let fill = |t: &str| crate::scbench::prompts::fill(t, values);
    Parts {
        context: fill(&template[..at]),
        question: fill(&template[at..]),
        answer_prefix: fill(answer_prefix),
    }
}

#[cfg(test)]
mod tests;

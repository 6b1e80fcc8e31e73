//! Prompt and prefill stages: one turn of a sample becomes context and question tokens (chat
//! template, truncation), cut where the runs compress ([`Split`]), and the part before the cut is
//! prefilled once with full attention, recording what the methods need. Every method run of that
//! split forks this cache.
//!
//! Sharing the prefill is exact for methods that compress after prefill (kvpress semantics): each
//! layer's compression happens after its attention, and the hidden states passed on are those of
//! full attention, so compressing all layers afterwards gives the same cache.

use anyhow::Result;
use candle_core::{Device, Tensor};
use kvbench_datasets::ChatTemplateMode;
use kvbench_methods::{KvCache, ObservationNeeds, Observations};

use crate::chat_template::ChatTemplate;
use crate::device::timed;
use crate::loader::LoadedModel;
use crate::model::{ForwardOptions, Logits};
use crate::prompt::{tokenize, turn_text};
use crate::truncation::TruncationPolicy;

use super::TurnRef;

/// How one dataset's samples become tokens: the model's template (if any), the dataset's
/// `chat_template:` option, and the truncation policy.
pub(super) struct Prompting {
    pub template: Option<ChatTemplate>,
    pub mode: ChatTemplateMode,
    pub truncation: TruncationPolicy,
}

/// The model on its device, with the run's attention chunking: every forward of the run goes
/// through here.
pub(super) struct Engine<'a> {
    pub loaded: &'a LoadedModel,
    pub device: &'a Device,
    chunk: usize,
}

/// What one timed forward returns.
pub(super) struct Forward {
    pub logits: Option<Tensor>,
    pub observations: Observations,
    pub ms: f64,
}

impl<'a> Engine<'a> {
    pub fn new(loaded: &'a LoadedModel, device: &'a Device, chunk: usize) -> Self {
        Self {
            loaded,
            device,
            chunk,
        }
    }

    /// Append `ids` to `cache`, timed with device synchronisation.
    pub fn forward(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        logits: Logits,
        observe: ObservationNeeds,
    ) -> Result<Forward> {
        let opts = ForwardOptions {
            logits,
            observe,
            attention_chunk: self.chunk,
        };
        let (out, ms) = timed(self.device, || self.loaded.model.forward(ids, cache, &opts))?;
        Ok(Forward {
            logits: out.logits,
            observations: out.observations,
            ms,
        })
    }

    /// Queries per attention chunk of every forward of the run.
    pub fn attention_chunk(&self) -> usize {
        self.chunk
    }

    /// One throw-away forward so the first sample's timings do not include one-off
    /// initialisation.
    pub fn warm_up(&self, needs: ObservationNeeds) -> Result<()> {
        let mut warm = self.loaded.model.new_cache();
        self.forward(&[0u32; 8], &mut warm, Logits::Last, needs)?;
        Ok(())
    }

    /// Prefill the turn up to `split`'s cut with full attention, recording `needs`.
    pub fn prefill(
        &self,
        prompt: &TurnPrompt,
        split: Split,
        needs: ObservationNeeds,
    ) -> Result<Prefilled> {
        let (prefix, tail) = prompt.split(split);
        let mut cache = self.loaded.model.new_cache();
        crate::memory::reset_peak(self.device);
        let f = self.forward(&prefix, &mut cache, Logits::None, needs)?;
        Ok(Prefilled {
            split,
            tokens: prefix.len(),
            tail,
            // A request's peak is the larger of the shared prefill's and its own
            // compress+decode's.
            peak_bytes: crate::memory::peak_bytes(self.device),
            kv_bytes: cache.bytes(),
            entries: cache.entries(),
            cache,
            observations: f.observations,
            prefill_ms: f.ms,
        })
    }
}

/// Where a method run cuts the turn: what is prefilled and compressed, and what is forwarded on
/// the compressed cache to give the first answer token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Split {
    /// Compress the context; forward the question on the compressed cache (kvpress's default:
    /// the method never sees the question).
    QueryAgnostic,
    /// Compress context + question minus its last token, observed as one prefill (every query of
    /// it in H2O's accumulated attention, SnapKV's window = its last queries, ...); forward only
    /// the question's last token on the compressed cache, so the first answer token already sees
    /// the compression (kvpress's query-aware protocol). A query-aware run is therefore exactly
    /// a query-agnostic run whose context is context + question[..n-1] and whose question is
    /// question[n-1].
    QueryAware,
}

impl Split {
    pub fn of(query_aware: bool) -> Self {
        if query_aware {
            Split::QueryAware
        } else {
            Split::QueryAgnostic
        }
    }
}

/// A turn that cannot be run for a reason of its own data (empty context or question, a
/// question longer than the model's positions): skipped with a warning naming the sample, and
/// the run goes on.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct SkipSample(pub String);

/// One turn as tokens.
pub(super) struct TurnPrompt {
    pub context_ids: Vec<u32>,
    pub question_ids: Vec<u32>,
    /// Context tokens removed to fit the window or the dataset's `max_length`.
    pub truncated_tokens: usize,
    pub max_new_tokens: usize,
}

impl TurnPrompt {
    /// Render the turn (with the model's template where the dataset's mode says so; multi-turn
    /// samples carry the gold history before the turn), split and tokenize it, and truncate the
    /// context.
    pub fn new(engine: &Engine, prompting: &Prompting, turn: &TurnRef) -> Result<Self> {
        let (sample, index) = (turn.sample, turn.index);
        let asked = sample.turn_max_new_tokens(index);
        let template = prompting
            .template
            .as_ref()
            .filter(|_| prompting.mode.applies(sample, true));
        let text = turn_text(sample, index, template)?;
        let (mut context_ids, question_ids) = tokenize(&engine.loaded.tokenizer, &text)?;
        // Data problems are the sample's, never the run's: the caller skips it with a warning.
        if context_ids.is_empty() || question_ids.is_empty() {
            return Err(SkipSample("empty context or question after tokenization".into()).into());
        }
        let policy = &prompting.truncation;
        let max_new_tokens = policy.cap_new_tokens(asked, question_ids.len());
        if max_new_tokens == 0 {
            return Err(SkipSample(format!(
                "the question alone is {} tokens, beyond the model's {} positions",
                question_ids.len(),
                policy.window()
            ))
            .into());
        }
        if max_new_tokens < asked {
            eprintln!(
                "warning: sample `{}` (dataset `{}`, turn {index}): max_new_tokens {asked} capped \
                 to {max_new_tokens} by the model's {} positions",
                sample.id,
                turn.dataset,
                policy.window()
            );
        }
        let before = context_ids.len();
        let truncated_tokens = policy
            .apply(&mut context_ids, question_ids.len(), max_new_tokens)
            .map_err(|e| SkipSample(e.to_string()))?;
        if truncated_tokens > 0 && matches!(policy, TruncationPolicy::MaxLength { .. }) {
            eprintln!(
                "warning: sample `{}` (dataset `{}`, turn {index}): {before} context tokens do not \
                 fit the model's {} positions; middle-truncated by {truncated_tokens}",
                sample.id,
                turn.dataset,
                policy.window()
            );
        }
        Ok(Self {
            context_ids,
            question_ids,
            truncated_tokens,
            max_new_tokens,
        })
    }

    /// The tokens prefilled (and compressed) under `split`, and the tokens forwarded after
    /// compression (never empty: the question is).
    pub fn split(&self, split: Split) -> (Vec<u32>, Vec<u32>) {
        let cut = match split {
            Split::QueryAgnostic => 0,
            Split::QueryAware => self.question_ids.len() - 1,
        };
        let (asked, tail) = self.question_ids.split_at(cut);
        ([self.context_ids.as_slice(), asked].concat(), tail.to_vec())
    }
}

/// The turn's cache up to a split's cut after the shared prefill, and what was measured on the
/// way.
pub(super) struct Prefilled {
    pub split: Split,
    /// Tokens prefilled: what the methods compress.
    pub tokens: usize,
    /// Tokens forwarded on each compressed cache before decoding.
    pub tail: Vec<u32>,
    pub cache: KvCache,
    pub observations: Observations,
    pub prefill_ms: f64,
    /// Device memory high-water mark of the prefill (None on CPU).
    pub peak_bytes: Option<u64>,
    /// Bytes and entries of the uncompressed prefilled cache.
    pub kv_bytes: usize,
    pub entries: usize,
}

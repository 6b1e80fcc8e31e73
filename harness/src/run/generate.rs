//! Fork, compress and decode stages: one method run on one turn forks the shared prefilled cache,
//! compresses it, forwards the rest of the prompt (the split's tail) and decodes greedily,
//! calling the method's decode hook after every token.
//!
//! Query-agnostic and query-aware runs take this same path; they differ only in where the turn
//! was cut before the prefill (`prefill::Split`): the question is the tail, or only its last
//! token is.
//!
//! Every method hook runs through `on_compressible_layers`, so methods skip sliding-window layers.

use anyhow::{Context, Result};
use candle_core::Tensor;
use kvbench_methods::sliding::on_compressible_layers;
use kvbench_methods::Session;
use kvbench_methods::{Budget, KvCache, Method, ObservationNeeds, Observations};

use crate::device::timed;
use crate::model::{argmax, Logits};

use super::prefill::{Engine, Forward, Prefilled};

/// One method run on one turn: what to compress with, how much, and when.
pub(super) struct Request<'a> {
    pub method: &'a dyn Method,
    pub budget: Budget,
    pub max_new_tokens: usize,
}

impl Request<'static> {
    /// The full-cache reference: no compression, query-agnostic.
    pub fn reference(max_new_tokens: usize) -> Self {
        Request {
            method: &kvbench_methods::full::Full,
            budget: Budget::CompressionRatio(0.0),
            max_new_tokens,
        }
    }
}

/// What one method run produced on one turn.
pub(super) struct Generation {
    pub tokens: Vec<u32>,
    /// Log-probabilities of the first generated token, f64.
    pub first_logprobs: Vec<f64>,
    pub compress_ms: f64,
    /// The forward of the tail (the question, or its last token) on the compressed cache.
    pub question_ms: f64,
    pub decode_ms_per_token: f64,
    /// The cache as stored right after compression.
    pub stored: StoredCache,
    /// Device memory high-water mark from the fork to the last token (None on CPU).
    pub peak_bytes: Option<u64>,
}

/// Size and form of a compressed cache, measured from its tensors.
pub(super) struct StoredCache {
    pub kv_bytes: usize,
    pub kept_entries: usize,
    pub kv_storage: serde_json::Value,
}

impl StoredCache {
    fn measure(cache: &KvCache) -> Self {
        Self {
            kv_bytes: cache.bytes(),
            kept_entries: cache.entries(),
            kv_storage: cache.storage_report(),
        }
    }
}

/// Fork the prefilled cache, compress, forward the tail and decode greedily, alone.
pub(super) fn generate(
    engine: &Engine,
    prefilled: &Prefilled,
    request: &Request,
) -> Result<Generation> {
    let (cache, session, compress_ms) = fork_and_compress(engine, prefilled, request)?;
    generate_on(
        engine,
        cache,
        session,
        &prefilled.tail,
        request,
        compress_ms,
    )
}

/// Forward `tail` on a request's cache (compressed here, or loaded from the KV store) and decode
/// greedily, alone. The device-memory peak runs from the caller's reset
/// ([`fork_and_compress`], or the reuse path's).
pub(super) fn generate_on<'a>(
    engine: &Engine,
    cache: KvCache,
    session: Box<dyn Session + 'a>,
    tail: &[u32],
    request: &'a Request<'a>,
    compress_ms: f64,
) -> Result<Generation> {
    let mut started = start_on(engine, cache, session, tail, request, compress_ms)?;
    while !started.finished(engine) {
        let (next, needs) = (started.next(), started.decode_needs());
        let Forward {
            logits,
            observations,
            ms,
        } = engine.forward(&[next], &mut started.cache, Logits::Last, needs)?;
        started.after_step(engine, &observations, &logits.context("decode logits")?, ms)?;
    }
    engine.device.synchronize()?;
    Ok(started.finish(engine, crate::memory::peak_bytes(engine.device)))
}

/// The request's cache: the prefilled cache forked and compressed (timed), with the session
/// that compressed it. Starts the request's device-memory peak.
pub(super) fn fork_and_compress<'m>(
    engine: &Engine,
    prefilled: &Prefilled,
    request: &Request<'m>,
) -> Result<(KvCache, Box<dyn Session + 'm>, f64)> {
    crate::memory::reset_peak(engine.device);
    fork_compressed(engine, prefilled, request)
}

/// [`fork_and_compress`] without starting a peak (a batch keeps its own).
fn fork_compressed<'m>(
    engine: &Engine,
    prefilled: &Prefilled,
    request: &Request<'m>,
) -> Result<(KvCache, Box<dyn Session + 'm>, f64)> {
    let mut cache = prefilled.cache.fork();
    // This request's method state: lives from the compression to the last decoded token.
    let mut session = request.method.session();
    let compress_ms = compress(
        engine,
        &mut cache,
        &prefilled.observations,
        session.as_mut(),
        request,
    )?;
    Ok((cache, session, compress_ms))
}

/// A request forked, compressed and asked its question: its first token is known and it decodes
/// one token per step until an end token or `max_new_tokens`.
pub(super) struct Started<'a> {
    request: &'a Request<'a>,
    pub cache: KvCache,
    /// This request's method state: lives from the compression to the last decoded token.
    session: Box<dyn Session + 'a>,
    compress_ms: f64,
    question_ms: f64,
    stored: StoredCache,
    first_logprobs: Vec<f64>,
    /// Greedy tokens so far, the first one included (and an end token, when one came).
    tokens: Vec<u32>,
    /// Summed time of the decode steps and this request's hooks.
    decode_ms: f64,
}

/// Fork the prefilled cache, compress it and forward the tail (the question, or its last token):
/// the request is ready to decode.
pub(super) fn start<'a>(
    engine: &Engine,
    prefilled: &Prefilled,
    request: &'a Request<'a>,
) -> Result<Started<'a>> {
    let (cache, session, compress_ms) = fork_compressed(engine, prefilled, request)?;
    start_on(
        engine,
        cache,
        session,
        &prefilled.tail,
        request,
        compress_ms,
    )
}

/// Forward `tail` on a request's cache: the request is ready to decode.
fn start_on<'a>(
    engine: &Engine,
    mut cache: KvCache,
    session: Box<dyn Session + 'a>,
    tail: &[u32],
    request: &'a Request<'a>,
    compress_ms: f64,
) -> Result<Started<'a>> {
    let stored = StoredCache::measure(&cache);
    let asked = engine.forward(tail, &mut cache, Logits::Last, ObservationNeeds::default())?;
    let first_logits = asked.logits.context("question logits")?;
    Ok(Started {
        request,
        cache,
        session,
        compress_ms,
        question_ms: asked.ms,
        stored,
        first_logprobs: log_softmax(&first_logits)?,
        tokens: vec![argmax(&first_logits)?],
        decode_ms: 0.0,
    })
}

impl Started<'_> {
    /// The token the next step appends.
    pub fn next(&self) -> u32 {
        *self.tokens.last().expect("the first token")
    }

    /// What each decode forward must record for this request's decode hook (issue 4: the new
    /// token's query for H2O's decode variant and `decoding`).
    pub fn decode_needs(&self) -> ObservationNeeds {
        self.request.method.decode_needs()
    }

    /// Done: an end token came, or `max_new_tokens` are generated.
    pub fn finished(&self, engine: &Engine) -> bool {
        self.tokens.len() >= self.request.max_new_tokens
            || engine.loaded.tokenizer.eos_ids().contains(&self.next())
    }

    /// After a decode forward of [`next`](Self::next) took `step_ms`: the session's decode
    /// hook with what the forward observed, timed, then the greedy token of `logits` (`[vocab]`
    /// or `[1, vocab]`).
    pub fn after_step(
        &mut self,
        engine: &Engine,
        observations: &Observations,
        logits: &Tensor,
        step_ms: f64,
    ) -> Result<()> {
        let step = self.tokens.len();
        let (session, budget) = (&mut self.session, &self.request.budget);
        let ((), hook_ms) = timed(engine.device, || {
            Ok(on_compressible_layers(
                &mut self.cache,
                observations,
                |c, o| session.on_decode(c, step, o, budget),
            )?)
        })?;
        self.decode_ms += step_ms + hook_ms;
        self.tokens.push(argmax(logits)?);
        Ok(())
    }

    /// The generation, end token dropped; `peak_bytes` is the device high-water mark the caller
    /// measured over this request's work.
    pub fn finish(mut self, engine: &Engine, peak_bytes: Option<u64>) -> Generation {
        if engine.loaded.tokenizer.eos_ids().contains(&self.next()) {
            self.tokens.pop();
        }
        let steps = self.tokens.len().saturating_sub(1).max(1);
        Generation {
            tokens: self.tokens,
            first_logprobs: self.first_logprobs,
            compress_ms: self.compress_ms,
            question_ms: self.question_ms,
            decode_ms_per_token: if self.decode_ms > 0.0 {
                self.decode_ms / steps as f64
            } else {
                0.0
            },
            stored: self.stored,
            peak_bytes,
        }
    }
}

/// The session's prefill hook on the compressible layers, timed.
fn compress(
    engine: &Engine,
    cache: &mut KvCache,
    observations: &Observations,
    session: &mut dyn Session,
    request: &Request,
) -> Result<f64> {
    let ((), ms) = timed(engine.device, || {
        Ok(on_compressible_layers(cache, observations, |c, o| {
            session.on_prefill(c, o, &request.budget)
        })?)
    })?;
    Ok(ms)
}

/// Log-probabilities (f64) of a logits tensor of any shape, flattened.
fn log_softmax(logits: &Tensor) -> Result<Vec<f64>> {
    let v: Vec<f32> = logits.flatten_all()?.to_vec1()?;
    let max = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + v.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
    Ok(v.iter().map(|&x| x as f64 - lse).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_normalises() {
        let t = Tensor::new(&[[1.0f32, 2.0, 3.0]], &candle_core::Device::Cpu).unwrap();
        let lp = log_softmax(&t).unwrap();
        let total: f64 = lp.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-12);
        // Differences of log-probabilities are differences of logits.
        assert!((lp[2] - lp[0] - 2.0).abs() < 1e-12);
    }
}

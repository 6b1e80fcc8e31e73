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

/// Fork the prefilled cache, compress, forward the tail and decode greedily.
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

/// The request's cache: the prefilled cache forked and compressed (timed), with the session
/// that compressed it. Starts the request's device-memory peak.
pub(super) fn fork_and_compress<'m>(
    engine: &Engine,
    prefilled: &Prefilled,
    request: &Request<'m>,
) -> Result<(KvCache, Box<dyn Session + 'm>, f64)> {
    crate::memory::reset_peak(engine.device);
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

/// Forward `tail` on a request's cache (compressed here, or loaded from the KV store) and decode
/// greedily.
pub(super) fn generate_on(
    engine: &Engine,
    mut cache: KvCache,
    mut session: Box<dyn Session + '_>,
    tail: &[u32],
    request: &Request,
    compress_ms: f64,
) -> Result<Generation> {
    let stored = StoredCache::measure(&cache);
    let asked = engine.forward(tail, &mut cache, Logits::Last, ObservationNeeds::default())?;
    let first_logits = asked.logits.context("question logits")?;
    let decoded = decode(engine, &mut cache, &first_logits, session.as_mut(), request)?;
    engine.device.synchronize()?;
    let peak_bytes = crate::memory::peak_bytes(engine.device);
    let steps = decoded.tokens.len().saturating_sub(1).max(1);
    Ok(Generation {
        tokens: decoded.tokens,
        first_logprobs: log_softmax(&first_logits)?,
        compress_ms,
        question_ms: asked.ms,
        decode_ms_per_token: if decoded.ms > 0.0 {
            decoded.ms / steps as f64
        } else {
            0.0
        },
        stored,
        peak_bytes,
    })
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

/// Greedy tokens (end token dropped) and the summed time of the decode forwards and hooks.
struct Decoded {
    tokens: Vec<u32>,
    ms: f64,
}

/// Decode greedily from the question's logits until an end token or `max_new_tokens`, calling
/// the session's decode hook after every forward.
fn decode(
    engine: &Engine,
    cache: &mut KvCache,
    first_logits: &Tensor,
    session: &mut dyn Session,
    request: &Request,
) -> Result<Decoded> {
    let eos = engine.loaded.tokenizer.eos_ids();
    let method = request.method;
    let mut next = argmax(first_logits)?;
    let mut tokens = vec![next];
    let mut ms = 0.0;
    // Decode hooks (issue 4): each decode forward records what the method's decode hook needs
    // (the new token's query for H2O's decode variant and `decoding`).
    let decode_needs = method.decode_needs();
    while tokens.len() < request.max_new_tokens && !eos.contains(&next) {
        let Forward {
            logits,
            observations,
            ms: step_ms,
        } = engine.forward(&[next], cache, Logits::Last, decode_needs)?;
        let step = tokens.len();
        let ((), hook_ms) = timed(engine.device, || {
            Ok(on_compressible_layers(cache, &observations, |c, o| {
                session.on_decode(c, step, o, &request.budget)
            })?)
        })?;
        ms += step_ms + hook_ms;
        next = argmax(&logits.context("decode logits")?)?;
        tokens.push(next);
    }
    if tokens.last().is_some_and(|t| eos.contains(t)) {
        tokens.pop();
    }
    Ok(Decoded { tokens, ms })
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

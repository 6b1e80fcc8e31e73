//! Batched decoding in `kvbench bench`: the step time of several sequences decoding together
//! (the dense layers once for the batch, attention per sequence), and one sample's configurations
//! answered through the batched path as `kvbench run` does.

use anyhow::Result;
use candle_core::{Tensor, D};
use kvbench_methods::sliding::on_compressible_layers;
use kvbench_methods::{Budget, KvCache, Method, ObservationNeeds};
use serde::Serialize;

use crate::device::timed;
use crate::memory;
use crate::model::Logits;

use super::{median, Bench};

/// Decode steps of `sequences` full caches of `context_tokens` each, batched.
#[derive(Clone, Debug, Serialize)]
pub struct BatchedDecodeTiming {
    pub sequences: usize,
    pub context_tokens: usize,
    /// Median time of one batched step (one new token for every sequence).
    pub median_step_ms: f64,
    pub min_step_ms: f64,
    pub steps: usize,
    /// New tokens per second over all sequences, from the median step.
    pub tokens_per_s: f64,
    pub peak_device_bytes: Option<u64>,
    /// KV bytes of all sequences' caches together at the end.
    pub kv_bytes: usize,
}

/// The next token of every row of `[B, vocab]` logits.
fn greedy(logits: &Tensor) -> Result<Vec<u32>> {
    Ok(logits.argmax(D::Minus1)?.to_vec1()?)
}

impl Bench<'_> {
    /// `sequences` forks of one prefilled context decode together; the median batched step.
    pub(super) fn batched_decode(
        &mut self,
        sequences: usize,
        context: usize,
    ) -> Result<BatchedDecodeTiming> {
        let ids = self.tokens(context);
        let mut prefilled = self.model.new_cache();
        self.fwd(
            &ids,
            &mut prefilled,
            Logits::None,
            ObservationNeeds::default(),
        )?;
        let mut caches: Vec<KvCache> = (0..sequences).map(|_| prefilled.fork()).collect();
        drop(prefilled);
        let mut next = self.tokens(sequences);
        let needs = vec![ObservationNeeds::default(); sequences];
        let mut times = Vec::new();
        memory::reset_peak(self.device);
        for step in 0..self.opts.decode_steps + 2 {
            let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
            let (out, ms) = timed(self.device, || {
                self.model
                    .decode_batch(&next, &mut refs, &needs, self.opts.attention_chunk)
            })?;
            next = greedy(&out.logits)?;
            if step >= 2 {
                times.push(ms); // the first two steps warm up this shape
            }
        }
        let med = median(times.clone());
        Ok(BatchedDecodeTiming {
            sequences,
            context_tokens: context,
            median_step_ms: med,
            min_step_ms: times.iter().cloned().fold(f64::INFINITY, f64::min),
            steps: times.len(),
            tokens_per_s: sequences as f64 * 1e3 / med,
            peak_device_bytes: memory::peak_bytes(self.device),
            kv_bytes: caches.iter().map(KvCache::bytes).sum(),
        })
    }

    /// One sample with `methods` through the batched path: shared prefill, every method
    /// compresses its fork and forwards the 16-token question, then all decode to 8 new tokens
    /// in lockstep. The median over repeats of the whole.
    pub(super) fn sample_batched(&mut self, methods: &[(Box<dyn Method>, Budget)]) -> Result<f64> {
        let ctx = self.tokens(self.opts.sample_length);
        let question = self.tokens(16);
        let needs = methods
            .iter()
            .fold(ObservationNeeds::default(), |a, (m, _)| a.union(m.needs()));
        let mut times = Vec::new();
        for rep in 0..self.opts.repeats + 1 {
            let ((), ms) = timed(self.device, || {
                let mut cache = self.model.new_cache();
                let (_, obs) = self.fwd(&ctx, &mut cache, Logits::None, needs)?;
                let mut caches = Vec::with_capacity(methods.len());
                let mut sessions = Vec::with_capacity(methods.len());
                let mut next = Vec::with_capacity(methods.len());
                for (m, budget) in methods {
                    let mut c = cache.fork();
                    let mut session = m.session();
                    on_compressible_layers(&mut c, &obs, |c, o| session.on_prefill(c, o, budget))?;
                    let (l, _) =
                        self.fwd(&question, &mut c, Logits::Last, ObservationNeeds::default())?;
                    next.push(greedy(&l.expect("last logits"))?[0]);
                    caches.push(c);
                    sessions.push(session);
                }
                let needs: Vec<ObservationNeeds> =
                    methods.iter().map(|(m, _)| m.decode_needs()).collect();
                for step in 1..8 {
                    let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
                    let out = self.model.decode_batch(
                        &next,
                        &mut refs,
                        &needs,
                        self.opts.attention_chunk,
                    )?;
                    for (i, ((session, c), (_, budget))) in sessions
                        .iter_mut()
                        .zip(caches.iter_mut())
                        .zip(methods)
                        .enumerate()
                    {
                        on_compressible_layers(c, &out.observations[i], |c, o| {
                            session.on_decode(c, step, o, budget)
                        })?;
                    }
                    next = greedy(&out.logits)?;
                }
                Ok(())
            })?;
            if rep > 0 {
                times.push(ms);
            }
        }
        Ok(median(times))
    }
}

//! Batched decoding across configurations: every method run of one prefilled split is forked,
//! compressed and asked its question on its own, then all of them decode in lockstep, one batched
//! step per token ([`crate::model::Decoder::decode_batch`]: dense layers once for the batch,
//! attention per sequence over its own compressed cache). A run that reaches an end token or its
//! `max_new_tokens` drops out of the batch; the others go on.
//!
//! Each run keeps its own session and gets its decode hook after every step with what its own
//! row of the step observed, exactly as when decoding alone, so records keep their content.
//!
//! Timings, per record: compression and question forward are the run's own. A batched step's
//! whole time is attributed to every run in the step (the latency each sequence saw for that
//! token, not a share of it), plus the run's own decode hook. Peak device memory is measured over
//! the whole batch (every run's cache alive together), so each run of a batch records the batch's
//! peak.

use anyhow::Result;
use kvbench_methods::{KvCache, ObservationNeeds};

use crate::device::timed;

use super::failure::is_oom;
use super::generate::{generate, start, Generation, Request, Started};
use super::prefill::{Engine, Prefilled};

/// Every request on `prefilled`, in order: batched when `batched` and more than one, else one
/// after another. A request that runs out of device memory gets its error in its slot; any other
/// error ends the split. A batch that runs out of memory while decoding is run again unbatched.
pub(super) fn generate_all(
    engine: &Engine,
    prefilled: &Prefilled,
    requests: &[Request],
    batched: bool,
) -> Result<Vec<Result<Generation>>> {
    if !batched || requests.len() < 2 {
        return one_by_one(engine, prefilled, requests);
    }
    crate::memory::reset_peak(engine.device);
    let mut started = Vec::with_capacity(requests.len());
    let mut failed = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        match start(engine, prefilled, request) {
            Ok(s) => started.push((i, s)),
            Err(e) if is_oom(&e) => failed.push((i, e)),
            Err(e) => return Err(e),
        }
    }
    let mut running: Vec<&mut Started> = started.iter_mut().map(|(_, s)| s).collect();
    match decode_lockstep(engine, &mut running) {
        Ok(()) => {}
        Err(e) if is_oom(&e) => {
            eprintln!(
                "warning: batched decoding of {} runs: {e:#}; decoding them one by one",
                requests.len()
            );
            drop(started);
            return one_by_one(engine, prefilled, requests);
        }
        Err(e) => return Err(e),
    }
    engine.device.synchronize()?;
    let peak = crate::memory::peak_bytes(engine.device);
    let mut out: Vec<Option<Result<Generation>>> = (0..requests.len()).map(|_| None).collect();
    for (i, s) in started {
        out[i] = Some(Ok(s.finish(engine, peak)));
    }
    for (i, e) in failed {
        out[i] = Some(Err(e));
    }
    Ok(out
        .into_iter()
        .map(|g| g.expect("every request has an outcome"))
        .collect())
}

/// One throw-away batched step of two sequences, so the first sample's batched timings do not
/// include one-off initialisation (the kernels of a several-row batch).
pub(super) fn warm_up(engine: &Engine) -> Result<()> {
    let model = &engine.loaded.model;
    let (mut a, mut b) = (model.new_cache(), model.new_cache());
    let needs = [ObservationNeeds::default(); 2];
    model.decode_batch(
        &[0, 0],
        &mut [&mut a, &mut b],
        &needs,
        engine.attention_chunk(),
    )?;
    Ok(())
}

/// Each request alone ([`generate`]), out-of-memory errors kept per request.
fn one_by_one(
    engine: &Engine,
    prefilled: &Prefilled,
    requests: &[Request],
) -> Result<Vec<Result<Generation>>> {
    let mut out = Vec::with_capacity(requests.len());
    for request in requests {
        match generate(engine, prefilled, request) {
            Err(e) if !is_oom(&e) => return Err(e),
            g => out.push(g),
        }
    }
    Ok(out)
}

/// Decode every unfinished run one token per batched step until all are finished.
fn decode_lockstep(engine: &Engine, runs: &mut [&mut Started]) -> Result<()> {
    loop {
        let mut active: Vec<&mut Started> = runs
            .iter_mut()
            .filter(|s| !s.finished(engine))
            .map(|s| &mut **s)
            .collect();
        if active.is_empty() {
            return Ok(());
        }
        let tokens: Vec<u32> = active.iter().map(|s| s.next()).collect();
        let needs: Vec<ObservationNeeds> = active.iter().map(|s| s.decode_needs()).collect();
        let (out, step_ms) = {
            let mut caches: Vec<&mut KvCache> = active.iter_mut().map(|s| &mut s.cache).collect();
            timed(engine.device, || {
                engine.loaded.model.decode_batch(
                    &tokens,
                    &mut caches,
                    &needs,
                    engine.attention_chunk(),
                )
            })?
        };
        for (row, s) in active.iter_mut().enumerate() {
            s.after_step(
                engine,
                &out.observations[row],
                &out.logits.get(row)?,
                step_ms,
            )?;
        }
    }
}

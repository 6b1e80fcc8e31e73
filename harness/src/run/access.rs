//! The reuse stage (`reuse:` in the experiment): how one method run on one turn reaches its
//! context cache when contexts are stored (`crate::reuse`, `crate::kv_store`), then the same
//! question forward and decode as every run (`generate::generate_on`).
//!
//! - `compute`: fork the shared prefill and compress, as without reuse (timed as prefill +
//!   compression); the first request of a context also stores the result, untimed.
//! - `load`: read the stored cache at the run's bandwidth cap and rebuild it on the device.
//! - `cake`: compute from the front while loading from the back (`cake`).
//!
//! Loaded and Cake-built caches start a fresh method session (the prefill's session state is
//! not stored): decode hooks begin from the stored cache.

use anyhow::Result;
use kvbench_methods::Method;

use crate::device::timed;
use crate::kv_store::{KvStore, StoreKey};
use crate::reuse::{Access, ReuseConfig, TtftMode};

use super::cake;
use super::generate::{fork_and_compress, generate_on, Generation};
use super::plan::PlannedRun;
use super::prefill::{Engine, Prefilled, TurnPrompt};

/// How a request reached its cache, for its record.
pub(super) struct ReuseFacts {
    pub mode: TtftMode,
    pub bytes_read: u64,
    pub bandwidth_gbps: Option<f64>,
    /// Time to the cache by load or Cake; `None` when computed.
    pub cache_ms: Option<f64>,
    pub split_tokens: Option<usize>,
}

/// The store's key of a run's cache on a turn: the prefilled tokens and the method, budget and
/// split that compressed them.
fn key(prompt: &TurnPrompt, prefilled: &Prefilled, planned: &PlannedRun) -> StoreKey {
    let run = planned.run;
    let method = serde_json::json!({
        "method": run.config,
        "budget": run.budget,
        "query_aware": run.query_aware,
    });
    StoreKey {
        context: prompt.split(prefilled.split).0,
        method: method.to_string(),
    }
}

/// Generate `planned` on the turn through its access path, storing the cache on a first request.
pub(super) fn generate_reused(
    engine: &Engine,
    store: &mut KvStore,
    config: &ReuseConfig,
    prompt: &TurnPrompt,
    prefilled: &Prefilled,
    planned: &PlannedRun,
    access: Access,
) -> Result<(Generation, ReuseFacts)> {
    let key = key(prompt, prefilled, planned);
    let request = planned.request(prompt.max_new_tokens);
    let mut stored = store.header(&key)?.is_some();
    if !stored && config.prime && access.ttft_mode != TtftMode::Compute {
        // Store first, untimed, so that this request is measured in its own mode.
        let (cache, _, _) = fork_and_compress(engine, prefilled, &request)?;
        store.save(&key, &cache)?;
        stored = true;
    }
    if !stored || access.ttft_mode == TtftMode::Compute {
        let (cache, session, compress_ms) = fork_and_compress(engine, prefilled, &request)?;
        if !stored {
            store.save(&key, &cache)?;
        }
        let g = generate_on(
            engine,
            cache,
            session,
            &prefilled.tail,
            &request,
            compress_ms,
        )?;
        let facts = ReuseFacts {
            mode: TtftMode::Compute,
            bytes_read: 0,
            bandwidth_gbps: None,
            cache_ms: None,
            split_tokens: None,
        };
        return Ok((g, facts));
    }
    let gbps = access.bandwidth_gbps;
    crate::memory::reset_peak(engine.device);
    let (cache, bytes_read, split, ms) = match access.ttft_mode {
        TtftMode::Load => {
            let (loaded, ms) = timed(engine.device, || {
                store
                    .load(&key, engine.device, gbps)?
                    .ok_or_else(|| anyhow::anyhow!("the stored cache vanished"))
            })?;
            (loaded.cache, loaded.bytes_read, None, ms)
        }
        TtftMode::Cake => {
            let (built, ms) = timed(engine.device, || {
                cake::build(engine, store, &key, &key.context, config.chunk_tokens, gbps)
            })?;
            (built.cache, built.bytes_read, Some(built.split), ms)
        }
        TtftMode::Compute => unreachable!("computed above"),
    };
    let method: &dyn Method = planned.method.as_ref();
    let g = generate_on(
        engine,
        cache,
        method.session(),
        &prefilled.tail,
        &request,
        0.0,
    )?;
    let facts = ReuseFacts {
        mode: access.ttft_mode,
        bytes_read,
        bandwidth_gbps: gbps,
        cache_ms: Some(ms),
        split_tokens: split,
    };
    Ok((g, facts))
}

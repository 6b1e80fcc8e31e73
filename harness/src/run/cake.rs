//! Cake (Jin et al., "Compute Or Load KV Cache? Why Not Both?", arXiv 2410.03065): a stored
//! context's cache is rebuilt by computing chunks from the front while a loader thread reads
//! chunks from the back, until they meet; the question follows.
//!
//! What overlaps: the loader runs on its own OS thread, concurrently with the compute on the
//! calling thread; it reads position-range chunks of the stored files (positioned reads of host
//! memory or disk, paced by `bandwidth_gbps`) into host tensors. What does not: the loaded
//! chunks move to the device at the meeting point, on the calling thread, one copy per head and
//! chunk, inside the measured time: candle 0.11 runs kernels and copies on the device's one CUDA
//! stream from pageable memory (a second cudarc stream with pinned buffers would be the way; see
//! docs/reuse.md).
//!
//! Chunks are aligned to multiples of `chunk_tokens` from position 0 for both sides, so they
//! meet on a chunk boundary (`split`, recorded as `cake_split_tokens`). Compute never starts a
//! chunk the loader already holds; a chunk the loader is reading when compute gets there is
//! abandoned (its reads stop at once). Loaded entries at positions below the split are dropped.
//!
//! The computed front is full-precision and uncompressed; the loaded back is the stored cache's
//! own entries (all of them for a full cache, the kept ones for an evicted cache). Storage that
//! cannot be cut by position (quantized, low rank, merged, ...) is refused by the range reader.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use kvbench_methods::cache::repeat_heads;
use kvbench_methods::{HeadGroup, KvCache, ObservationNeeds, Storage};

use crate::kv_store::ranges::{Chunk, RangeReader};
use crate::kv_store::source::Pacer;
use crate::kv_store::{KvStore, StoreKey};
use crate::model::Logits;

use super::prefill::Engine;

/// A stored cache Cake cannot cut by position (quantized, low rank, merged, shared layers): the
/// request is recorded as failed with this reason and the run goes on.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct Refused(pub String);

/// A cache Cake built, and where its two halves met.
pub(super) struct CakeBuilt {
    pub cache: KvCache,
    pub bytes_read: u64,
    /// Context tokens computed from the front; the rest came from the store.
    pub split: usize,
}

/// Rebuild `key`'s stored cache of `context` by computing and loading at once.
pub(super) fn build(
    engine: &Engine,
    store: &KvStore,
    key: &StoreKey,
    context: &[u32],
    chunk: usize,
    gbps: Option<f64>,
) -> Result<CakeBuilt> {
    let header = store
        .header(key)?
        .context("cake: the context is not in the store")?;
    let n = header.next_position;
    if n != context.len() {
        bail!(
            "cake: the stored cache covers {n} tokens, the context has {}",
            context.len()
        );
    }
    crate::kv_store::ranges::check_splittable(&header).map_err(Refused)?;
    let sources = store.sources(key, &header)?;
    let computed_end = AtomicUsize::new(0);
    let loaded_from = AtomicUsize::new(n);
    let stop = Arc::new(AtomicBool::new(false));
    let mut cache = engine.loaded.model.new_cache();
    let (computed, loaded) = std::thread::scope(|s| {
        let loader = s.spawn(|| -> Result<(Vec<Chunk>, u64)> {
            let mut pacer = Pacer::new(gbps).cancelled_by(stop.clone());
            let mut chunks = Vec::new();
            let reader = match RangeReader::open(&header, sources, &mut pacer) {
                Ok(r) => r,
                Err(_) if pacer.cancelled() => return Ok((chunks, pacer.bytes_read())),
                Err(e) => return Err(e),
            };
            let mut end = n;
            while end > computed_end.load(Ordering::Acquire) && !pacer.cancelled() {
                let start = (end - 1) / chunk * chunk;
                match reader.read_chunk(start, end, &mut pacer) {
                    Ok(c) => chunks.push(c),
                    Err(_) if pacer.cancelled() => break,
                    Err(e) => return Err(e),
                }
                loaded_from.store(start, Ordering::Release);
                end = start;
            }
            Ok((chunks, pacer.bytes_read()))
        });
        let computed = (|| -> Result<usize> {
            let mut done = 0;
            loop {
                let limit = loaded_from.load(Ordering::Acquire);
                if done >= limit {
                    return Ok(done);
                }
                let end = (done + chunk).min(limit);
                engine.forward(
                    &context[done..end],
                    &mut cache,
                    Logits::None,
                    ObservationNeeds::default(),
                )?;
                done = end;
                computed_end.store(done, Ordering::Release);
            }
        })();
        stop.store(true, Ordering::Release);
        let loaded = loader
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("cake: the loader thread panicked")));
        (computed, loaded)
    });
    let split = computed?;
    let (chunks, bytes_read) = loaded?;
    meet(&mut cache, chunks, split, n)?;
    Ok(CakeBuilt {
        cache,
        bytes_read,
        split,
    })
}

/// Append the loaded entries at positions `split..n` to the computed front of every layer
/// (moving them to the device), and continue from position `n`. The loaded pieces are joined on
/// the host first, so each layer costs one device copy for keys and one for values when its
/// heads are uniform (one per head when they are ragged), not one per chunk and head.
pub(super) fn meet(
    cache: &mut KvCache,
    mut chunks: Vec<Chunk>,
    split: usize,
    n: usize,
) -> Result<()> {
    chunks.sort_by_key(|c| c.start);
    let covered = chunks.first().map_or(n, |c| c.start);
    if covered > split {
        bail!("cake: compute stopped at {split} but the loader holds only {covered}..{n}");
    }
    let device = cache.device().clone();
    for l in 0..cache.n_layers() {
        let stored_heads = chunks.first().map_or(0, |c| c.heads[l].len());
        let front = cache.layer(l);
        let (front_kv, front_pos) = if front.groups().is_empty() {
            (None, Vec::new())
        } else {
            let (k, v) = front.dense()?;
            let factor = stored_heads / k.dim(0)?.max(1);
            let (k, v) = if factor > 1 {
                (repeat_heads(&k, factor)?, repeat_heads(&v, factor)?)
            } else {
                (k, v)
            };
            (Some((k, v)), front.positions())
        };
        let heads = stored_heads.max(front_pos.len());
        // The loaded back of every head, joined on the host: ([m, d], [m, d], positions).
        let mut back = Vec::with_capacity(heads);
        for h in 0..stored_heads {
            let (mut ks, mut vs, mut pos) = (Vec::new(), Vec::new(), Vec::new());
            for c in &chunks {
                let piece = &c.heads[l][h];
                let skip = piece.positions.partition_point(|&p| (p as usize) < split);
                let m = piece.positions.len() - skip;
                if m > 0 {
                    ks.push(piece.k.narrow(0, skip, m)?);
                    vs.push(piece.v.narrow(0, skip, m)?);
                    pos.extend_from_slice(&piece.positions[skip..]);
                }
            }
            let joined = if ks.is_empty() {
                None
            } else {
                Some((Tensor::cat(&ks, 0)?, Tensor::cat(&vs, 0)?))
            };
            back.push((joined, pos));
        }
        let front_len = |h: usize| {
            front_pos
                .get(h * front_pos.len() / heads.max(1))
                .map_or(0, Vec::len)
        };
        let uniform = back.iter().all(|(_, p)| p.len() == back[0].1.len())
            && (0..heads).all(|h| front_len(h) == front_len(0));
        let groups = if uniform {
            vec![uniform_group(front_kv, &front_pos, back, heads, &device)?]
        } else {
            ragged_groups(front_kv, &front_pos, back, heads, &device)?
        };
        cache.layer_mut(l).set_groups(groups)?;
    }
    cache.advance(n - split);
    for l in 0..cache.n_layers() {
        cache.trim_to_window(l)?;
    }
    Ok(())
}

type Back = Vec<(Option<(Tensor, Tensor)>, Vec<u32>)>;

/// Heads of equal lengths: the back stacked on the host, one copy each for keys and values.
fn uniform_group(
    front: Option<(Tensor, Tensor)>,
    front_pos: &[Vec<u32>],
    back: Back,
    heads: usize,
    device: &candle_core::Device,
) -> Result<HeadGroup> {
    let mut positions: Vec<Vec<u32>> = (0..heads)
        .map(|h| {
            front_pos
                .get(h * front_pos.len() / heads.max(1))
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    let mut ks = Vec::new();
    let mut vs = Vec::new();
    if let Some((k, v)) = front.filter(|_| !positions[0].is_empty()) {
        ks.push(k);
        vs.push(v);
    }
    if back.first().is_some_and(|(j, _)| j.is_some()) {
        let (bk, bv): (Vec<Tensor>, Vec<Tensor>) = back
            .iter()
            .map(|(j, _)| j.clone().expect("uniform lengths"))
            .unzip();
        ks.push(Tensor::stack(&bk, 0)?.to_device(device)?);
        vs.push(Tensor::stack(&bv, 0)?.to_device(device)?);
        for (p, (_, bp)) in positions.iter_mut().zip(&back) {
            p.extend_from_slice(bp);
        }
    }
    if ks.is_empty() {
        bail!("cake: a layer has no entries");
    }
    Ok(HeadGroup {
        first_head: 0,
        storage: Storage::dense(Tensor::cat(&ks, 1)?, Tensor::cat(&vs, 1)?),
        positions,
    })
}

/// Ragged heads (an evicted cache): one group per head, as `LayerKv::retain` stores them.
fn ragged_groups(
    front: Option<(Tensor, Tensor)>,
    front_pos: &[Vec<u32>],
    back: Back,
    heads: usize,
    device: &candle_core::Device,
) -> Result<Vec<HeadGroup>> {
    let mut back = back.into_iter();
    (0..heads)
        .map(|h| {
            let mut ks = Vec::new();
            let mut vs = Vec::new();
            let mut pos = front_pos
                .get(h * front_pos.len() / heads.max(1))
                .cloned()
                .unwrap_or_default();
            if let (Some((k, v)), false) = (&front, pos.is_empty()) {
                ks.push(k.get(h)?);
                vs.push(v.get(h)?);
            }
            if let Some((Some((k, v)), bp)) = back.next() {
                ks.push(k.to_device(device)?);
                vs.push(v.to_device(device)?);
                pos.extend(bp);
            }
            if ks.is_empty() {
                bail!("cake: head {h} has no entries");
            }
            Ok(HeadGroup {
                first_head: h,
                storage: Storage::dense(
                    Tensor::cat(&ks, 0)?.unsqueeze(0)?,
                    Tensor::cat(&vs, 0)?.unsqueeze(0)?,
                ),
                positions: vec![pos],
            })
        })
        .collect()
}

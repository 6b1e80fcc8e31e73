//! Cake (Jin et al., "Compute Or Load KV Cache? Why Not Both?", arXiv 2410.03065): a stored
//! context's cache is rebuilt by computing chunks from the front while a loader thread reads
//! chunks from the back, until they meet; the question follows.
//!
//! What overlaps: the loader runs on its own OS thread, concurrently with the compute on the
//! calling thread; it reads position-range chunks of the stored files (positioned reads of host
//! memory or disk, paced by `bandwidth_gbps`) straight into a staging buffer and copies each
//! chunk to the device in one copy. On CUDA the buffer is pinned and the copy runs on the
//! loader's own stream ([`crate::kv_store::upload`]), so it overlaps the compute stream's
//! kernels; where the two meet, the loaded pieces are already on the device and are joined there.
//!
//! Chunks are aligned to multiples of `chunk_tokens` from position 0 for both sides, so they
//! meet on a chunk boundary (`split`, recorded as `cake_split_tokens`). Compute never starts a
//! chunk the loader already holds; a chunk the loader is reading when compute gets there is
//! abandoned (its reads stop at once). Loaded entries at positions below the split are dropped.
//!
//! The loaded back is the stored cache's own entries (all of them for a full cache, the kept ones
//! for an evicted cache). The computed front is computed whole (later front chunks attend to all
//! of it, as the original prefill did) and then cut to the entries the stored cache kept below
//! the split, so an evicted cache is rebuilt entry for entry: the keys and values of a kept
//! position depend only on the tokens up to it. A quantized cache (KIVI, quant) is rebuilt the
//! same way in its stored form: the front is quantized with the stored scheme (chunks are cut on
//! quantization groups) and joined to the loaded rows of codes, scales and residual
//! (`kvbench_methods::storage::quantized_join`). Storage that cannot be cut by position (low
//! rank, merged, quantized entries of an evicted cache, ...) is refused by the range reader.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use kvbench_methods::cache::repeat_heads;
use kvbench_methods::storage::{QuantLayout, QuantRows, Quantized};
use kvbench_methods::{HeadGroup, KvCache, ObservationNeeds, Storage, Stored};

use crate::kv_store::ranges::{Chunk, RangeReader, StoredLayout};
use crate::kv_store::source::Pacer;
use crate::kv_store::upload::Uploader;
use crate::kv_store::{KvStore, StoreKey};
use crate::model::Logits;

use super::prefill::Engine;

/// A stored cache Cake cannot cut by position (low rank, merged, shared layers, ...): the
/// request is recorded as failed with this reason and the run goes on.
pub(super) use crate::kv_store::ranges::NotSplittable as Refused;

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
    crate::kv_store::ranges::check_splittable(&header)?;
    crate::kv_store::ranges::check_chunk(&header, chunk)?;
    let sources = store.sources(key, &header)?;
    let computed_end = AtomicUsize::new(0);
    let loaded_from = AtomicUsize::new(n);
    let stop = Arc::new(AtomicBool::new(false));
    let mut cache = engine.loaded.model.new_cache();
    let device = cache.device().clone();
    let (computed, loaded) = std::thread::scope(|s| {
        let loader = s.spawn(|| -> Result<Loaded> {
            let mut pacer = Pacer::new(gbps).cancelled_by(stop.clone());
            let mut uploader = Uploader::new(&device)?;
            let mut chunks = Vec::new();
            let reader = match RangeReader::open(&header, sources, &mut pacer) {
                Ok(r) => r,
                Err(_) if pacer.cancelled() => return Ok((chunks, pacer.bytes_read(), None)),
                Err(e) => return Err(e),
            };
            let mut end = n;
            while end > computed_end.load(Ordering::Acquire) && !pacer.cancelled() {
                let start = (end - 1) / chunk * chunk;
                match reader.read_chunk(start, end, &mut pacer, &mut uploader) {
                    Ok(c) => chunks.push(c),
                    Err(_) if pacer.cancelled() => break,
                    Err(e) => return Err(e),
                }
                loaded_from.store(start, Ordering::Release);
                end = start;
            }
            Ok((chunks, pacer.bytes_read(), Some(reader.layout())))
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
    let (chunks, mut bytes_read, layout) = loaded?;
    let layout = match layout {
        Some(layout) => layout,
        // Compute finished before the loader opened the store (a tiny context): the kept
        // positions and storage forms are still needed, so read them now, inside the timing.
        None => {
            let mut pacer = Pacer::new(gbps);
            let reader = RangeReader::open(&header, store.sources(key, &header)?, &mut pacer)?;
            bytes_read += pacer.bytes_read();
            reader.layout()
        }
    };
    meet(&mut cache, chunks, &layout, split, n)?;
    Ok(CakeBuilt {
        cache,
        bytes_read,
        split,
    })
}

/// What the loader thread gives back: chunks, bytes read, and the stored cache's positions and
/// forms (`None` when it was stopped before it opened the store).
type Loaded = (Vec<Chunk>, u64, Option<StoredLayout>);

/// Cut the computed front of every layer to the entries the stored cache kept below `split`
/// (`stored.positions`: per layer and stored head), append the loaded entries at positions
/// `split..n` (quantized layers: re-encode the front and join it to the loaded rows), and
/// continue from position `n`.
pub(super) fn meet(
    cache: &mut KvCache,
    mut chunks: Vec<Chunk>,
    stored: &StoredLayout,
    split: usize,
    n: usize,
) -> Result<()> {
    cut_front(cache, &stored.positions, split)?;
    chunks.sort_by_key(|c| c.start);
    let covered = chunks.first().map_or(n, |c| c.start);
    if covered > split {
        bail!("cake: compute stopped at {split} but the loader holds only {covered}..{n}");
    }
    let device = cache.device().clone();
    for l in 0..cache.n_layers() {
        if let Some(Some(layouts)) = stored.quantized.get(l) {
            let group = join_quantized(cache.layer(l), &chunks, l, *layouts, split, n)?;
            cache.layer_mut(l).set_groups(vec![group])?;
            continue;
        }
        let stored_heads = chunks.first().map_or(0, |c| c.heads[l].len());
        let front = cache.layer(l);
        let front_pos = front.positions();
        let front_kv = Front::of(front, stored_heads)?;
        let heads = stored_heads.max(front_pos.len());
        // The loaded back of every head, joined: ([m, d], [m, d], positions).
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
        let groups = if let (true, Front::Dense(k, v)) = (uniform, &front_kv) {
            let front = Some((k.clone(), v.clone()));
            vec![uniform_group(front, &front_pos, back, heads, &device)?]
        } else if uniform && matches!(front_kv, Front::Empty) {
            vec![uniform_group(None, &front_pos, back, heads, &device)?]
        } else {
            ragged_groups(front_kv, &front_pos, back, heads, &device)?
        };
        cache.layer_mut(l).set_groups(groups)?;
    }
    cache.advance(n - split);
    for l in 0..cache.n_layers() {
        cache.trim_to_window(l)?;
    }
    // The loaded chunks live on the loader's stream and are freed there when they drop (at the
    // end of this function): the compute stream's joins that read them must be done by then.
    device.synchronize()?;
    drop(chunks);
    Ok(())
}

/// Keep, in each layer's computed front (positions `0..split`, every one), the positions the
/// stored cache kept below `split`. A full stored cache keeps them all: nothing to do. A stored
/// layout with more heads than the front (query-head granularity) expands the front first.
fn cut_front(cache: &mut KvCache, kept: &[Vec<Vec<u32>>], split: usize) -> Result<()> {
    for (l, heads) in kept.iter().enumerate().take(cache.n_layers()) {
        let front = cache.layer(l);
        if front.groups().is_empty() || heads.is_empty() {
            continue;
        }
        let below: Vec<Vec<u32>> = heads
            .iter()
            .map(|p| {
                p.iter()
                    .copied()
                    .take_while(|&p| (p as usize) < split)
                    .collect()
            })
            .collect();
        let front_pos = front.positions();
        let whole =
            front_pos.len() == below.len() && front_pos.iter().zip(&below).all(|(f, b)| f == b);
        if whole {
            continue;
        }
        let factor = below.len() / front_pos.len().max(1);
        if factor > 1 {
            cache.layer_mut(l).expand_heads(factor)?;
        }
        // The front holds every position `0..len` of its window in order: an entry's index
        // is its position minus the first one held.
        let first = cache.layer(l).positions()[0].first().copied().unwrap_or(0);
        let keep: Vec<Vec<u32>> = below
            .iter()
            .map(|b| {
                b.iter()
                    .filter(|&&p| p >= first)
                    .map(|&p| p - first)
                    .collect()
            })
            .collect();
        cache
            .layer_mut(l)
            .retain(&keep)
            .with_context(|| format!("cake: cutting layer {l}'s front to the stored entries"))?;
    }
    Ok(())
}

/// A quantized layer: the computed front (every position `0..split`, dense) quantized with the
/// stored schemes and joined to the loaded rows of positions `split..n`, as one head group.
fn join_quantized(
    front: &kvbench_methods::LayerKv,
    chunks: &[Chunk],
    l: usize,
    (kl, vl): (QuantLayout, QuantLayout),
    split: usize,
    n: usize,
) -> Result<HeadGroup> {
    let front_kv = if front.groups().is_empty() {
        None
    } else {
        let (k, v) = front.dense()?;
        if k.dim(0)? != kl.heads {
            bail!(
                "cake: layer {l} stores {} quantized heads, the model computes {}",
                kl.heads,
                k.dim(0)?
            );
        }
        Some((k, v))
    };
    let tail = |part: fn(&crate::kv_store::ranges::QuantPiece) -> &QuantRows,
                layout: &QuantLayout|
     -> Result<Option<QuantRows>> {
        let pieces: Vec<QuantRows> = chunks
            .iter()
            .filter_map(|c| c.quantized.get(l).and_then(Option::as_ref))
            .map(|p| part(p).clone())
            .collect();
        match QuantRows::cat(pieces)? {
            Some(rows) if split < n => Ok(Some(rows.from_entry(layout, split)?)),
            _ => Ok(None),
        }
    };
    let k_tail = tail(|p| &p.k, &kl)?;
    let v_tail = tail(|p| &p.v, &vl)?;
    let storage = Storage {
        k: Stored::Quantized(Quantized::join(
            kl,
            front_kv.as_ref().map(|f| &f.0),
            k_tail,
        )?),
        v: Stored::Quantized(Quantized::join(
            vl,
            front_kv.as_ref().map(|f| &f.1),
            v_tail,
        )?),
    };
    let all: Vec<u32> = (0..n as u32).collect();
    Ok(HeadGroup {
        first_head: 0,
        storage,
        positions: vec![all; kl.heads],
    })
}

type Back = Vec<(Option<(Tensor, Tensor)>, Vec<u32>)>;

/// A layer's computed front, in the stored layout's heads.
enum Front {
    Empty,
    /// Every head the same length: `[heads, len, d]` keys and values.
    Dense(Tensor, Tensor),
    /// Heads of different lengths (cut to an evicted cache's entries): `[len_h, d]` per head.
    PerHead(Vec<(Tensor, Tensor)>),
}

impl Front {
    fn of(front: &kvbench_methods::LayerKv, stored_heads: usize) -> Result<Self> {
        if front.groups().is_empty() {
            return Ok(Front::Empty);
        }
        let lens = front.head_lens();
        if lens.windows(2).all(|w| w[0] == w[1]) {
            let (k, v) = front.dense()?;
            let factor = stored_heads / k.dim(0)?.max(1);
            return Ok(if factor > 1 {
                Front::Dense(repeat_heads(&k, factor)?, repeat_heads(&v, factor)?)
            } else {
                Front::Dense(k, v)
            });
        }
        let mut heads = Vec::with_capacity(lens.len());
        for g in front.groups() {
            let (k, v) = g.storage.keys_values()?;
            for local in 0..g.n_heads() {
                heads.push((k.get(local)?, v.get(local)?));
            }
        }
        Ok(Front::PerHead(heads))
    }

    /// Head `h` of `heads` (the front's heads repeated to the stored layout): `[len, d]` each.
    fn head(&self, h: usize, heads: usize) -> Result<Option<(Tensor, Tensor)>> {
        Ok(match self {
            Front::Empty => None,
            Front::Dense(k, v) => Some((k.get(h)?, v.get(h)?)),
            Front::PerHead(list) => list.get(h * list.len() / heads.max(1)).cloned(),
        })
    }
}

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
    front: Front,
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
            if let (Some((k, v)), false) = (front.head(h, heads)?, pos.is_empty()) {
                ks.push(k);
                vs.push(v);
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

//! The compressible KV cache.
//!
//! Storage is real: after eviction the tensors are smaller, and `bytes()` counts exactly what the
//! attention reads. Keys are stored after RoPE, so a kept entry keeps its original position without
//! re-rotation; each entry's original position is kept beside it (host-side bookkeeping for the
//! methods and the tests, never read by attention, so not counted in `bytes()`).
//!
//! A layer's KV heads are stored in *head groups*: consecutive heads that share a length live in one
//! `[heads, len, head_dim]` tensor. A uniform cache has one group per layer; per-head budgets
//! (AdaKV) give ragged heads, stored as one group per head rather than as a mask. How a group
//! holds its entries (dense, quantized, low rank, ...) is its `Storage` (see `storage`).
//!
//! Layers can share storage: KVSharer makes a layer read another layer's cache (`share_layer`),
//! MiniCache stores one direction tensor for two layers. `KvCache::bytes` counts every distinct
//! tensor once, so shared storage is counted once.

use std::collections::HashSet;

use candle_core::{DType, Device, Tensor};

use crate::storage::tensor_bytes;
pub use crate::storage::Storage;
use crate::MethodError;

type Result<T> = std::result::Result<T, MethodError>;

/// Consecutive KV heads of one layer that share a length.
#[derive(Clone, Debug)]
pub struct HeadGroup {
    /// Index of the first KV head in this group.
    pub first_head: usize,
    pub storage: Storage,
    /// Original sequence position of every stored entry, per head: `[heads][len]`.
    pub positions: Vec<Vec<u32>>,
}

impl HeadGroup {
    pub fn n_heads(&self) -> usize {
        self.positions.len()
    }
    pub fn len(&self) -> usize {
        self.positions.first().map_or(0, |p| p.len())
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One layer's stored keys and values, as head groups covering the KV heads in order.
#[derive(Clone, Debug, Default)]
pub struct LayerKv {
    pub(crate) groups: Vec<HeadGroup>,
}

impl LayerKv {
    pub fn groups(&self) -> &[HeadGroup] {
        &self.groups
    }

    /// Entries stored per KV head.
    pub fn head_lens(&self) -> Vec<usize> {
        self.groups
            .iter()
            .flat_map(|g| std::iter::repeat_n(g.len(), g.n_heads()))
            .collect()
    }

    pub fn bytes(&self) -> usize {
        self.groups.iter().map(|g| g.storage.bytes()).sum()
    }

    /// Original positions kept per KV head.
    pub fn positions(&self) -> Vec<Vec<u32>> {
        self.groups
            .iter()
            .flat_map(|g| g.positions.iter().cloned())
            .collect()
    }

    /// Dense keys and values of every KV head, `[kv_heads, len, head_dim]`. Errors when heads are
    /// ragged: callers that handle ragged layers go through `groups()`.
    pub fn dense(&self) -> Result<(Tensor, Tensor)> {
        match self.groups.as_slice() {
            [] => Err(MethodError::Cache("layer is empty".into())),
            [g] => g.storage.keys_values(),
            _ => {
                let lens = self.head_lens();
                if lens.iter().any(|&l| l != lens[0]) {
                    return Err(MethodError::Cache(format!(
                        "layer heads are ragged (lengths {lens:?}); use groups()"
                    )));
                }
                let mut ks = Vec::new();
                let mut vs = Vec::new();
                for g in &self.groups {
                    let (k, v) = g.storage.keys_values()?;
                    ks.push(k);
                    vs.push(v);
                }
                Ok((Tensor::cat(&ks, 0)?, Tensor::cat(&vs, 0)?))
            }
        }
    }

    /// Heads stored: the model's KV heads, or its query heads once the layer was expanded to
    /// query-head granularity ([`LayerKv::expand_heads`]).
    pub fn n_heads(&self) -> usize {
        self.groups.iter().map(|g| g.n_heads()).sum()
    }

    /// Store every KV head once per query head of its group (`factor` = query heads per KV head),
    /// so that each query head can keep its own entries (KVCache-Factory's layout, which repeats
    /// the KV heads before compressing). Attention is unchanged: each query head reads an exact
    /// copy of its KV head. Later appends are repeated the same way. Dense layers only.
    pub fn expand_heads(&mut self, factor: usize) -> Result<()> {
        if factor <= 1 || self.groups.is_empty() {
            return Ok(());
        }
        let (k, v) = self.dense()?;
        let positions: Vec<Vec<u32>> = self
            .positions()
            .into_iter()
            .flat_map(|p| std::iter::repeat_n(p, factor))
            .collect();
        self.groups = vec![HeadGroup {
            first_head: 0,
            storage: Storage::dense(repeat_heads(&k, factor)?, repeat_heads(&v, factor)?),
            positions,
        }];
        Ok(())
    }

    /// Append new entries to every head. k, v: `[kv_heads, t, head_dim]`; positions: `[t]`.
    /// Compressed groups keep themselves compressed (each storage form says how). A layer stored
    /// per query head gets each KV head's entries once per query head.
    pub fn append(&mut self, k: &Tensor, v: &Tensor, positions: &[u32]) -> Result<()> {
        let stored = self.n_heads();
        let (k, v) = match k.dim(0)? {
            n if stored > n && n > 0 && stored % n == 0 => {
                (repeat_heads(k, stored / n)?, repeat_heads(v, stored / n)?)
            }
            _ => (k.clone(), v.clone()),
        };
        let (k, v) = (&k, &v);
        if self.groups.is_empty() {
            let n_heads = k.dim(0)?;
            self.groups.push(HeadGroup {
                first_head: 0,
                storage: Storage::dense(k.contiguous()?, v.contiguous()?),
                positions: vec![positions.to_vec(); n_heads],
            });
            return Ok(());
        }
        for g in &mut self.groups {
            let nk = k.narrow(0, g.first_head, g.n_heads())?;
            let nv = v.narrow(0, g.first_head, g.n_heads())?;
            g.storage.append(&nk, &nv)?;
            for p in &mut g.positions {
                p.extend_from_slice(positions);
            }
        }
        Ok(())
    }

    /// Replace every group's storage by `f(group)`: how storage-side methods re-encode a layer.
    /// `f` must keep each group's heads and entries.
    pub fn restore(&mut self, mut f: impl FnMut(&HeadGroup) -> Result<Storage>) -> Result<()> {
        for g in &mut self.groups {
            let storage = f(g)?;
            let (n, len) = (g.n_heads(), g.len());
            for s in [&storage.k, &storage.v] {
                if s.n_heads() != n || s.len() != len {
                    return Err(MethodError::Cache(format!(
                        "re-encoded group has {} heads x {} entries, expected {n} x {len}",
                        s.n_heads(),
                        s.len()
                    )));
                }
            }
            g.storage = storage;
        }
        Ok(())
    }

    /// Replace the layer by new groups (methods that merge entries and so change positions).
    pub fn set_groups(&mut self, groups: Vec<HeadGroup>) -> Result<()> {
        let mut next = 0;
        for g in &groups {
            if g.first_head != next
                || g.storage.k.n_heads() != g.n_heads()
                || g.storage.v.n_heads() != g.n_heads()
                || g.storage.k.len() != g.len()
                || g.storage.v.len() != g.len()
                || g.positions.iter().any(|p| p.len() != g.len())
            {
                return Err(MethodError::Cache(
                    "new head groups must cover the heads in order, with one position per entry"
                        .into(),
                ));
            }
            next += g.n_heads();
        }
        self.groups = groups;
        Ok(())
    }
}

/// Per-layer KV storage of one sequence, plus where the sequence stands.
#[derive(Clone, Debug)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    /// `Some(s)`: this layer stores nothing and attends to layer `s`'s entries (KVSharer).
    shared_from: Vec<Option<usize>>,
    n_kv_heads: usize,
    head_dim: usize,
    dtype: DType,
    device: Device,
    /// Position the next token gets: the original sequence length, whatever was evicted.
    next_position: usize,
    /// Per layer: `Some(w)` for a sliding-window layer, which never holds more than its last `w`
    /// entries (its queries cannot see further back).
    windows: Vec<Option<usize>>,
}

impl KvCache {
    pub fn new(
        n_layers: usize,
        n_kv_heads: usize,
        head_dim: usize,
        dtype: DType,
        device: &Device,
    ) -> Self {
        Self {
            layers: vec![LayerKv::default(); n_layers],
            shared_from: vec![None; n_layers],
            n_kv_heads,
            head_dim,
            dtype,
            device: device.clone(),
            next_position: 0,
            windows: vec![None; n_layers],
        }
    }

    /// Mark sliding-window layers (`windows[l] = Some(w)`); one entry per layer.
    pub fn with_windows(mut self, windows: Vec<Option<usize>>) -> Self {
        assert_eq!(
            windows.len(),
            self.layers.len(),
            "one window entry per layer"
        );
        self.windows = windows;
        self
    }

    /// The sliding window of `layer`, if it has one.
    pub fn window(&self, layer: usize) -> Option<usize> {
        self.windows[layer]
    }

    /// Whether any layer slides.
    pub fn has_sliding_layers(&self) -> bool {
        self.windows.iter().any(Option::is_some)
    }

    /// Drop a sliding layer's entries that fell out of its window (keep the newest `w`).
    pub fn trim_to_window(&mut self, layer: usize) -> Result<()> {
        let Some(w) = self.windows[layer] else {
            return Ok(());
        };
        if self.shared_from[layer].is_some() {
            return Ok(());
        }
        let lens = self.layers[layer].head_lens();
        if lens.iter().all(|&n| n <= w) {
            return Ok(());
        }
        // Per decode step on every sliding layer: a dense uniform layer drops its oldest entry
        // with a view (the next append copies anyway), not a gather per head.
        if let [g] = self.layers[layer].groups.as_mut_slice() {
            if g.storage.is_dense() {
                let n = g.len();
                let (k, v) = g.storage.keys_values()?;
                g.storage = Storage::dense(k.narrow(1, n - w, w)?, v.narrow(1, n - w, w)?);
                for p in &mut g.positions {
                    p.drain(..n - w);
                }
                return Ok(());
            }
        }
        let keep: Vec<Vec<u32>> = lens
            .iter()
            .map(|&n| (n.saturating_sub(w) as u32..n as u32).collect())
            .collect();
        self.layers[layer].retain(&keep)
    }

    /// Split the cache into the layers methods compress (`Some` in `take`) and the rest: returns
    /// a cache of the taken layers, in order, leaving them empty here until
    /// [`put_back`](Self::put_back). Sharing between taken layers is kept, renumbered.
    pub fn take_layers(&mut self, take: &[usize]) -> KvCache {
        let index_of = |l: usize| take.iter().position(|&t| t == l);
        let layers = take
            .iter()
            .map(|&l| std::mem::take(&mut self.layers[l]))
            .collect();
        let shared_from = take
            .iter()
            .map(|&l| self.shared_from[l].and_then(index_of))
            .collect();
        KvCache {
            layers,
            shared_from,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim,
            dtype: self.dtype,
            device: self.device.clone(),
            next_position: self.next_position,
            windows: take.iter().map(|&l| self.windows[l]).collect(),
        }
    }

    /// Return layers taken by [`take_layers`](Self::take_layers) (with the same `take`).
    pub fn put_back(&mut self, part: KvCache, take: &[usize]) {
        for (i, (layer, shared)) in part.layers.into_iter().zip(part.shared_from).enumerate() {
            self.layers[take[i]] = layer;
            self.shared_from[take[i]] = shared.map(|s| take[s]);
        }
    }

    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }
    pub fn n_kv_heads(&self) -> usize {
        self.n_kv_heads
    }
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn layer(&self, i: usize) -> &LayerKv {
        &self.layers[i]
    }
    pub fn layer_mut(&mut self, i: usize) -> &mut LayerKv {
        &mut self.layers[i]
    }
    pub fn layers(&self) -> &[LayerKv] {
        &self.layers
    }

    /// Position the next appended token takes (the original sequence length so far).
    pub fn next_position(&self) -> usize {
        self.next_position
    }

    /// Record that `n` tokens were appended to every layer (called once per forward pass).
    pub fn advance(&mut self, n: usize) {
        self.next_position += n;
    }

    /// An independent copy to compress. Tensors are immutable and shared until replaced, so this
    /// costs no device memory until a method rewrites a layer.
    pub fn fork(&self) -> Self {
        self.clone()
    }

    /// Bytes the stored keys and values occupy on the device: every distinct tensor of every
    /// layer once (storage shared between layers is counted once).
    pub fn bytes(&self) -> usize {
        let mut seen = HashSet::new();
        self.layers
            .iter()
            .flat_map(|l| l.groups.iter())
            .flat_map(|g| g.storage.tensors())
            .filter(|t| seen.insert(t.id()))
            .map(tensor_bytes)
            .sum()
    }

    /// Make `layer` store nothing and attend to `source`'s entries from now on (KVSharer).
    /// `source` must come earlier, so that during generation its new entry is appended before
    /// `layer` attends.
    pub fn share_layer(&mut self, layer: usize, source: usize) -> Result<()> {
        let n = self.layers.len();
        if source >= layer || layer >= n {
            return Err(MethodError::Cache(format!(
                "layer {layer} can only share an earlier layer's cache (got {source}, {n} layers)"
            )));
        }
        let source = self.shared_from[source].unwrap_or(source);
        self.shared_from[layer] = Some(source);
        self.layers[layer] = LayerKv::default();
        Ok(())
    }

    /// The layer whose entries `layer` attends to: itself, or the layer it shares.
    pub fn shared_source(&self, layer: usize) -> Option<usize> {
        self.shared_from[layer]
    }

    /// Append a forward pass's new entries to `layer` (nothing for a layer that shares another's).
    pub fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
        positions: &[u32],
    ) -> Result<()> {
        match self.shared_from[layer] {
            Some(_) => Ok(()),
            None => self.layers[layer].append(k, v, positions),
        }
    }

    /// The entries `layer`'s queries attend to.
    pub fn attention_layer(&self, layer: usize) -> &LayerKv {
        &self.layers[self.shared_from[layer].unwrap_or(layer)]
    }

    /// How the cache is stored, for records: entries per storage form of keys (`k`) and values
    /// (`v`), summed over layers and heads; `merged_retained`, entries MiniCache kept unmerged;
    /// `shared_layers`, layers reading another layer's cache. Null when everything is dense.
    pub fn storage_report(&self) -> serde_json::Value {
        use std::collections::BTreeMap;
        let mut k: BTreeMap<&str, usize> = BTreeMap::new();
        let mut v: BTreeMap<&str, usize> = BTreeMap::new();
        let mut retained = 0;
        for g in self.layers.iter().flat_map(|l| l.groups.iter()) {
            let entries = g.n_heads() * g.len();
            *k.entry(g.storage.k.kind()).or_default() += entries;
            *v.entry(g.storage.v.kind()).or_default() += entries;
            for s in [&g.storage.k, &g.storage.v] {
                if let crate::storage::Stored::Merged(m) = s {
                    retained += m.retained_count();
                }
            }
        }
        let shared = self.shared_from.iter().filter(|s| s.is_some()).count();
        if k.keys().chain(v.keys()).all(|&kind| kind == "dense") && shared == 0 {
            return serde_json::Value::Null;
        }
        serde_json::json!({"k": k, "v": v, "merged_retained": retained, "shared_layers": shared})
    }

    /// Entries stored, summed over layers and KV heads.
    pub fn entries(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.head_lens().iter().sum::<usize>())
            .sum()
    }

    /// Bytes a dense cache of `len` tokens needs with this cache's shape and dtype.
    pub fn dense_bytes_for(&self, len: usize) -> usize {
        2 * self.layers.len() * self.n_kv_heads * len * self.head_dim * self.dtype.size_in_bytes()
    }
}

/// `[h, t, d]` -> `[h * factor, t, d]`, each head repeated `factor` times in place
/// (`repeat_kv`).
pub fn repeat_heads(x: &Tensor, factor: usize) -> Result<Tensor> {
    let (h, t, d) = x.dims3()?;
    Ok(x.unsqueeze(1)?
        .expand((h, factor, t, d))?
        .reshape((h * factor, t, d))?
        .contiguous()?)
}

//! The stored form of one context's cache: a JSON header plus one safetensors file per layer
//! range.
//!
//! ```text
//! header.json                       format + version, model id and shape, context-token hash,
//!                                   method label, next position, per layer: sliding window,
//!                                   shared source and head groups (first head, positions tensor,
//!                                   storage description), and every file's length and CRC-32
//! layers-<a>-<b>.safetensors        the tensors of layers a..b: positions `p<l>.<g>` ([heads, len]
//!                                   u32) and the storage tensors `t<n>` the descriptions name
//! ```
//!
//! Storage tensors are written in their own dtype (packed codes stay u8, scales f16), so a load
//! reads back the exact bits. A tensor shared by several layers (MiniCache) lives in the file of
//! the first layer that holds it; loading reads every file of the context.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use kvbench_methods::storage::parts::{describe_storage, rebuild_storage, TensorNames};
use kvbench_methods::{HeadGroup, KvCache};
use serde::{Deserialize, Serialize};

/// What `header.json` says the files are.
pub const FORMAT: &str = "kvbench-kv-store";
/// Bumped whenever the layout or a storage description changes; other versions are refused.
pub const FORMAT_VERSION: u32 = 1;

/// The model a cache belongs to: a store of another model is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelShape {
    pub id: String,
    pub n_layers: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub dtype: String,
}

impl ModelShape {
    pub fn of(id: &str, cache: &KvCache) -> Self {
        Self {
            id: id.to_string(),
            n_layers: cache.n_layers(),
            n_kv_heads: cache.n_kv_heads(),
            head_dim: cache.head_dim(),
            dtype: cache.dtype().as_str().to_string(),
        }
    }
}

/// One head group as the header describes it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupHeader {
    pub first_head: usize,
    /// Name of the `[heads, len]` u32 tensor of original positions.
    pub positions: String,
    /// The storage description (`kvbench_methods::storage::parts`).
    pub storage: serde_json::Value,
}

/// One layer as the header describes it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerHeader {
    pub window: Option<usize>,
    pub shared_from: Option<usize>,
    pub groups: Vec<GroupHeader>,
}

/// One safetensors file of the context.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    pub name: String,
    /// Layers `start..end` whose positions and (first-held) storage it holds.
    pub layers: [usize; 2],
    pub bytes: u64,
    pub crc32: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub model: ModelShape,
    /// SHA-256 (hex) of the context tokens, little-endian u32s.
    pub context_hash: String,
    pub context_tokens: usize,
    /// The method and budget that produced the stored cache (`full` when uncompressed).
    pub method: String,
    /// The position the next token takes (the context length, whatever was evicted).
    pub next_position: usize,
    /// Entries per storage form (`KvCache::storage_report`), null when all dense.
    pub storage: serde_json::Value,
    pub layers: Vec<LayerHeader>,
    pub files: Vec<FileEntry>,
}

impl Header {
    /// Refuse a header of another format version or another model, with the reason.
    pub fn check_compatible(&self, model: &ModelShape, what: &str) -> Result<()> {
        if self.format != FORMAT {
            bail!("{what}: not a kvbench KV store (format `{}`)", self.format);
        }
        if self.version != FORMAT_VERSION {
            bail!(
                "{what}: written by kvbench KV store format version {}, this kvbench reads version \
                 {FORMAT_VERSION}; recompute the cache (delete the store entry)",
                self.version
            );
        }
        if &self.model != model {
            bail!(
                "{what}: written for model `{}` ({} layers, {} KV heads x {}, {}), this run's model \
                 is `{}` ({} layers, {} KV heads x {}, {})",
                self.model.id,
                self.model.n_layers,
                self.model.n_kv_heads,
                self.model.head_dim,
                self.model.dtype,
                model.id,
                model.n_layers,
                model.n_kv_heads,
                model.head_dim,
                model.dtype
            );
        }
        if self.layers.len() != model.n_layers {
            bail!(
                "{what}: header lists {} layers for a {}-layer model",
                self.layers.len(),
                model.n_layers
            );
        }
        Ok(())
    }

    /// Bytes of every file of the context.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// SHA-256 (hex) of a token sequence.
pub fn context_hash(tokens: &[u32]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for t in tokens {
        h.update(t.to_le_bytes());
    }
    hex::encode(h.finalize())
}

/// What identifies a stored cache besides its tensors.
pub struct Identity<'a> {
    pub model: &'a ModelShape,
    pub context: &'a [u32],
    pub method: &'a str,
}

/// Files of one stored context: (name, bytes).
pub type Files = Vec<(String, Vec<u8>)>;

/// `cache` as a header and its files' bytes, `layers_per_file` layers a file (all in one when
/// `None`). Tensors are copied to the host.
pub fn encode(
    cache: &KvCache,
    id: &Identity,
    layers_per_file: Option<usize>,
) -> Result<(Header, Files)> {
    let n = cache.n_layers();
    let per_file = layers_per_file.unwrap_or(n).max(1);
    let mut names = TensorNames::default();
    let mut layers = Vec::with_capacity(n);
    let mut files = Vec::new();
    let mut entries = Vec::new();
    let mut first = 0;
    while first < n {
        let end = (first + per_file).min(n);
        let before = names.len();
        let mut own: Vec<(String, Tensor)> = Vec::new();
        for l in first..end {
            let mut groups = Vec::new();
            for (g, group) in cache.layer(l).groups().iter().enumerate() {
                let pos_name = format!("p{l}.{g}");
                let flat: Vec<u32> = group.positions.iter().flatten().copied().collect();
                own.push((
                    pos_name.clone(),
                    Tensor::from_vec(flat, (group.n_heads(), group.len()), &Device::Cpu)?,
                ));
                groups.push(GroupHeader {
                    first_head: group.first_head,
                    positions: pos_name,
                    storage: describe_storage(&group.storage, &mut names),
                });
            }
            layers.push(LayerHeader {
                window: cache.window(l),
                shared_from: cache.shared_source(l),
                groups,
            });
        }
        for (name, t) in names.since(before) {
            own.push((name, t.to_device(&Device::Cpu)?));
        }
        let bytes = safetensors::serialize(own.iter().map(|(k, t)| (k.as_str(), t)), None)
            .context("serialising the cache to safetensors")?;
        let name = format!("layers-{first}-{}.safetensors", end - 1);
        entries.push(FileEntry {
            name: name.clone(),
            layers: [first, end],
            bytes: bytes.len() as u64,
            crc32: crc32fast::hash(&bytes),
        });
        files.push((name, bytes));
        first = end;
    }
    let header = Header {
        format: FORMAT.into(),
        version: FORMAT_VERSION,
        model: id.model.clone(),
        context_hash: context_hash(id.context),
        context_tokens: id.context.len(),
        method: id.method.to_string(),
        next_position: cache.next_position(),
        storage: cache.storage_report(),
        layers,
        files: entries,
    };
    Ok((header, files))
}

/// Check a file's bytes against its header entry: a short file is truncated, another CRC-32 is
/// corrupt. `path` names the file in the error.
pub fn verify(entry: &FileEntry, bytes: &[u8], path: &str) -> Result<()> {
    if bytes.len() as u64 != entry.bytes {
        bail!(
            "{path}: truncated or overwritten: {} bytes, the store header says {}",
            bytes.len(),
            entry.bytes
        );
    }
    let crc = crc32fast::hash(bytes);
    if crc != entry.crc32 {
        bail!(
            "{path}: corrupt: CRC-32 {crc:08x}, the store header says {:08x}",
            entry.crc32
        );
    }
    Ok(())
}

/// The cache a header and its verified files describe, on `device`.
pub fn decode(header: &Header, files: &[(String, Vec<u8>)], device: &Device) -> Result<KvCache> {
    let mut host: HashMap<String, Tensor> = HashMap::new();
    for (path, bytes) in files {
        let map = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
            .with_context(|| format!("{path}: not a readable safetensors file"))?;
        host.extend(map);
    }
    let dtype: DType = header
        .model
        .dtype
        .parse()
        .map_err(|e| anyhow::anyhow!("store header: dtype: {e}"))?;
    // Storage tensors move to the device once each, so tensors shared between layers stay one.
    let mut on_device: HashMap<String, Tensor> = HashMap::with_capacity(host.len());
    for (name, t) in &host {
        if !name.starts_with('p') {
            on_device.insert(name.clone(), t.to_device(device)?);
        }
    }
    let m = &header.model;
    let mut cache = KvCache::new(m.n_layers, m.n_kv_heads, m.head_dim, dtype, device)
        .with_windows(header.layers.iter().map(|l| l.window).collect());
    for (l, layer) in header.layers.iter().enumerate() {
        if let Some(src) = layer.shared_from {
            cache
                .share_layer(l, src)
                .with_context(|| format!("store header: layer {l}"))?;
            continue;
        }
        let mut groups = Vec::with_capacity(layer.groups.len());
        for g in &layer.groups {
            let pos = host
                .get(&g.positions)
                .with_context(|| format!("store: positions `{}` missing", g.positions))?;
            let positions: Vec<Vec<u32>> = pos.to_vec2()?;
            let storage = rebuild_storage(&g.storage, &on_device)
                .with_context(|| format!("store: layer {l}"))?;
            groups.push(HeadGroup {
                first_head: g.first_head,
                storage,
                positions,
            });
        }
        cache
            .layer_mut(l)
            .set_groups(groups)
            .with_context(|| format!("store: layer {l}"))?;
    }
    cache.advance(header.next_position);
    Ok(cache)
}

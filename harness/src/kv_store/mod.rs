//! The KV store: a context's cache saved after prefill (and after compression, in its stored
//! form: dense, evicted with ragged heads, quantized codes and scales, low rank, channel-pruned,
//! merged across layers, shared across heads) and loaded back bit for bit.
//!
//! Keyed by model, context tokens and method ([`StoreKey`]); held in host memory or in a
//! directory, one subdirectory per key with `header.json` and one safetensors file per layer
//! range (`format` says what each holds). A store written by another model or format version is
//! refused with the reason; a truncated or corrupt file is an error naming it (every file's
//! length and CRC-32 are in the header and checked on load).
//!
//! Reads go through [`source::Pacer`], which caps their rate (`bandwidth_gbps`) for real.
//! [`ranges`] reads position ranges of a stored cache for Cake (`run::cake`), and [`upload`] moves
//! them to the device on a stream of their own.

pub mod format;
pub mod ranges;
pub mod source;
#[cfg(test)]
mod tests;
pub mod upload;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::Device;
use kvbench_methods::KvCache;

pub use format::{Header, ModelShape};
use format::{Identity, FORMAT_VERSION};
use source::{ByteSource, Pacer};

/// Where a store keeps its entries.
#[derive(Clone, Debug, PartialEq)]
pub enum Location {
    Memory,
    Directory(PathBuf),
}

/// What a stored cache is looked up by.
#[derive(Clone, Debug)]
pub struct StoreKey {
    pub context: Vec<u32>,
    /// The method, budget and split that produced the cache (`full` when uncompressed).
    pub method: String,
}

impl StoreKey {
    /// The entry's name: a digest of the model id, the context tokens and the method.
    fn digest(&self, model: &ModelShape) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(model.id.as_bytes());
        h.update([0]);
        h.update(format::context_hash(&self.context).as_bytes());
        h.update([0]);
        h.update(self.method.as_bytes());
        hex::encode(&h.finalize()[..12])
    }
}

/// A stored entry in host memory: its header and files.
struct MemoryEntry {
    header: Header,
    files: Vec<(String, Arc<Vec<u8>>)>,
}

/// A cache read back, and how many bytes that took.
pub struct Loaded {
    pub cache: KvCache,
    pub bytes_read: u64,
}

/// One model's store.
pub struct KvStore {
    location: Location,
    model: ModelShape,
    memory: HashMap<String, MemoryEntry>,
    /// Layers per safetensors file (`None`: one file per context).
    layers_per_file: Option<usize>,
}

impl KvStore {
    pub fn new(location: Location, model: ModelShape, layers_per_file: Option<usize>) -> Self {
        Self {
            location,
            model,
            memory: HashMap::new(),
            layers_per_file,
        }
    }

    pub fn model(&self) -> &ModelShape {
        &self.model
    }

    fn dir(&self, key: &StoreKey) -> Option<PathBuf> {
        match &self.location {
            Location::Memory => None,
            Location::Directory(d) => Some(d.join(key.digest(&self.model))),
        }
    }

    /// Save `cache` under `key` (replacing an earlier entry); returns the bytes written.
    pub fn save(&mut self, key: &StoreKey, cache: &KvCache) -> Result<u64> {
        let id = Identity {
            model: &self.model,
            context: &key.context,
            method: &key.method,
        };
        let (header, files) = format::encode(cache, &id, self.layers_per_file)?;
        let total = header.total_bytes();
        match self.dir(key) {
            None => {
                let files = files.into_iter().map(|(n, b)| (n, Arc::new(b))).collect();
                self.memory
                    .insert(key.digest(&self.model), MemoryEntry { header, files });
            }
            Some(dir) => {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                for (name, bytes) in &files {
                    let path = dir.join(name);
                    std::fs::write(&path, bytes)
                        .with_context(|| format!("writing {}", path.display()))?;
                }
                // The header last: an entry without one was never finished.
                let path = dir.join("header.json");
                let text = serde_json::to_string_pretty(&header)?;
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Ok(total)
    }

    /// The entry's header if `key` is stored (checked against this store's model and format
    /// version: another one is an error with the reason).
    pub fn header(&self, key: &StoreKey) -> Result<Option<Header>> {
        let header = match self.dir(key) {
            None => match self.memory.get(&key.digest(&self.model)) {
                Some(e) => e.header.clone(),
                None => return Ok(None),
            },
            Some(dir) => {
                let path = dir.join("header.json");
                if !path.exists() {
                    return Ok(None);
                }
                read_header(&path)?
            }
        };
        let what = self
            .dir(key)
            .map_or("memory store".to_string(), |d| d.display().to_string());
        header.check_compatible(&self.model, &what)?;
        if header.context_hash != format::context_hash(&key.context) {
            anyhow::bail!("{what}: stored for other context tokens than this request's");
        }
        Ok(Some(header))
    }

    /// The byte sources of an entry's files, in header order.
    pub fn sources(&self, key: &StoreKey, header: &Header) -> Result<Vec<ByteSource>> {
        match self.dir(key) {
            None => {
                let entry = self
                    .memory
                    .get(&key.digest(&self.model))
                    .context("memory store: entry vanished")?;
                Ok(entry
                    .files
                    .iter()
                    .map(|(name, bytes)| ByteSource::Memory {
                        name: name.clone(),
                        bytes: bytes.clone(),
                    })
                    .collect())
            }
            Some(dir) => header
                .files
                .iter()
                .map(|f| ByteSource::open(dir.join(&f.name)))
                .collect(),
        }
    }

    /// Read every file of `key`'s entry at up to `gbps` (verifying each), and rebuild the cache
    /// on `device`. `None` when nothing is stored under `key`.
    pub fn load(
        &self,
        key: &StoreKey,
        device: &Device,
        gbps: Option<f64>,
    ) -> Result<Option<Loaded>> {
        let Some(header) = self.header(key)? else {
            return Ok(None);
        };
        let mut pacer = Pacer::new(gbps);
        let mut files = Vec::with_capacity(header.files.len());
        for (entry, src) in header.files.iter().zip(self.sources(key, &header)?) {
            let name = src.name();
            let bytes = src.read_all(&mut pacer)?;
            format::verify(entry, &bytes, &name)?;
            files.push((name, bytes));
        }
        let cache = format::decode(&header, &files, device)?;
        Ok(Some(Loaded {
            cache,
            bytes_read: pacer.bytes_read(),
        }))
    }
}

/// A directory entry's header, or an error naming the file.
pub fn read_header(path: &Path) -> Result<Header> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let raw: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a kvbench KV store header", path.display()))?;
    // The version first, so that a newer layout is refused for its version, not its fields.
    if let Some(v) = raw.get("version").and_then(|v| v.as_u64()) {
        if v != FORMAT_VERSION as u64 {
            anyhow::bail!(
                "{}: written by kvbench KV store format version {v}, this kvbench reads version \
                 {FORMAT_VERSION}; recompute the cache (delete the store entry)",
                path.display()
            );
        }
    }
    serde_json::from_value(raw)
        .with_context(|| format!("{}: not a kvbench KV store header", path.display()))
}

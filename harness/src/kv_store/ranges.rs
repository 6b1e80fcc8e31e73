//! Reading a stored cache by position range, for Cake: the loader asks for the entries whose
//! original positions fall in `start..end`, for every layer and KV head, and reads exactly those
//! bytes from the stored files (positioned reads into the safetensors data, paced).
//!
//! Only dense storage can be cut this way (a full cache, or an evicted one with ragged heads):
//! quantized, low-rank, pruned and merged forms encode entries together (per-channel groups, a
//! shared basis or direction), so [`RangeReader::open`] refuses them with the reason. Layers that
//! share another layer's cache are refused too.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};

use super::format::Header;
use super::source::{ByteSource, Pacer};
use super::upload::Uploader;

/// Where a tensor's data lie in a stored file.
#[derive(Clone, Debug)]
struct Located {
    file: usize,
    /// Absolute offset of the tensor's first byte.
    offset: u64,
    dtype: DType,
    shape: Vec<usize>,
}

/// A dense head group: its positions and where its keys and values lie.
struct GroupRanges {
    positions: Vec<Vec<u32>>,
    k: Located,
    v: Located,
}

/// One head's entries of a chunk, on the device: `[m, head_dim]` each, and their positions.
pub struct HeadPiece {
    pub k: Tensor,
    pub v: Tensor,
    pub positions: Vec<u32>,
}

/// The entries of positions `start..end`, per layer and stored head.
pub struct Chunk {
    pub start: usize,
    pub end: usize,
    pub heads: Vec<Vec<HeadPiece>>,
}

/// Reads position ranges of one stored cache.
pub struct RangeReader {
    sources: Vec<ByteSource>,
    layers: Vec<Vec<GroupRanges>>,
}

fn dtype_of(st: &str) -> Result<DType> {
    Ok(match st {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "U8" => DType::U8,
        "U32" => DType::U32,
        "I64" => DType::I64,
        "F64" => DType::F64,
        other => bail!("stored tensor dtype {other} is not one kvbench writes"),
    })
}

/// Name -> location of every tensor of one safetensors file, read (paced) from its header.
fn index_file(
    src: &ByteSource,
    file: usize,
    expected: u64,
    pacer: &mut Pacer,
) -> Result<HashMap<String, Located>> {
    let name = src.name();
    let len = src.len()?;
    if len != expected {
        bail!("{name}: truncated or overwritten: {len} bytes, the store header says {expected}");
    }
    let n = u64::from_le_bytes(src.read_range(0, 8, pacer)?.try_into().expect("8 bytes"));
    if 8 + n > len {
        bail!("{name}: corrupt: safetensors header of {n} bytes in a {len}-byte file");
    }
    let json: serde_json::Value = serde_json::from_slice(&src.read_range(8, n as usize, pacer)?)
        .with_context(|| format!("{name}: corrupt safetensors header"))?;
    let obj = json
        .as_object()
        .with_context(|| format!("{name}: corrupt safetensors header"))?;
    let mut out = HashMap::new();
    for (tname, info) in obj {
        if tname == "__metadata__" {
            continue;
        }
        let bad = || format!("{name}: corrupt safetensors entry `{tname}`");
        let dtype = dtype_of(info["dtype"].as_str().with_context(bad)?)?;
        let shape: Vec<usize> = serde_json::from_value(info["shape"].clone()).with_context(bad)?;
        let start = info["data_offsets"][0].as_u64().with_context(bad)?;
        let end = info["data_offsets"][1].as_u64().with_context(bad)?;
        let size = shape.iter().product::<usize>() * dtype.size_in_bytes();
        if end - start != size as u64 || 8 + n + end > len {
            bail!("{}", bad());
        }
        out.insert(
            tname.clone(),
            Located {
                file,
                offset: 8 + n + start,
                dtype,
                shape,
            },
        );
    }
    Ok(out)
}

/// Why this stored cache cannot be read by position range, if it cannot.
pub fn check_splittable(header: &Header) -> std::result::Result<(), String> {
    for (l, layer) in header.layers.iter().enumerate() {
        if layer.shared_from.is_some() {
            return Err(format!(
                "cake: layer {l} shares another layer's cache; cake needs every layer's own entries"
            ));
        }
        for g in &layer.groups {
            for part in ["k", "v"] {
                let form = g.storage[part]["form"].as_str().unwrap_or("?");
                if form != "dense" {
                    return Err(format!(
                        "cake: layer {l} stores its {} as `{form}`, which cannot be cut by \
                         position; cake needs dense storage (a full or an evicted cache)",
                        if part == "k" { "keys" } else { "values" }
                    ));
                }
            }
        }
    }
    Ok(())
}

impl RangeReader {
    /// Index the stored files and read every group's positions (all paced: these bytes count as
    /// read). Errors when a layer is not dense or shares another layer's cache.
    pub fn open(header: &Header, sources: Vec<ByteSource>, pacer: &mut Pacer) -> Result<Self> {
        check_splittable(header).map_err(anyhow::Error::msg)?;
        let mut located = HashMap::new();
        for (i, (entry, src)) in header.files.iter().zip(&sources).enumerate() {
            located.extend(index_file(src, i, entry.bytes, pacer)?);
        }
        let find = |name: &str| -> Result<Located> {
            located
                .get(name)
                .cloned()
                .with_context(|| format!("cake: tensor `{name}` is not in the stored files"))
        };
        let mut layers = Vec::with_capacity(header.layers.len());
        for layer in &header.layers {
            let mut groups = Vec::new();
            for g in &layer.groups {
                let p = find(&g.positions)?;
                let bytes = sources[p.file].read_range(
                    p.offset,
                    p.shape.iter().product::<usize>() * 4,
                    pacer,
                )?;
                let flat: Vec<u32> = bytes
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
                    .collect();
                let (heads, len) = (p.shape[0], p.shape[1]);
                let positions = (0..heads)
                    .map(|h| flat[h * len..(h + 1) * len].to_vec())
                    .collect();
                let name = |part: &str| g.storage[part]["x"].as_str().unwrap_or("").to_string();
                groups.push(GroupRanges {
                    positions,
                    k: find(&name("k"))?,
                    v: find(&name("v"))?,
                });
            }
            layers.push(groups);
        }
        Ok(Self { sources, layers })
    }

    /// The stored cache's positions per layer and stored head (all of them, ascending).
    pub fn positions(&self) -> Vec<Vec<Vec<u32>>> {
        self.layers
            .iter()
            .map(|groups| groups.iter().flat_map(|g| g.positions.clone()).collect())
            .collect()
    }

    /// Where head `h`'s entries `i0..i1` of `t` (`[heads, len, head_dim]`) lie: byte offset and
    /// length.
    fn head_bytes(t: &Located, h: usize, i0: usize, i1: usize) -> (u64, usize) {
        let (len, dim) = (t.shape[1], t.shape[2]);
        let es = t.dtype.size_in_bytes();
        (
            t.offset + ((h * len + i0) * dim * es) as u64,
            (i1 - i0) * dim * es,
        )
    }

    /// Every layer's and head's entries at positions `start..end`, read into the uploader's
    /// staging buffer and moved to its device in one copy; the pieces are views of it.
    pub fn read_chunk(
        &self,
        start: usize,
        end: usize,
        pacer: &mut Pacer,
        uploader: &mut Uploader,
    ) -> Result<Chunk> {
        struct Span {
            file: usize,
            offset: u64,
            len: usize,
            dim: usize,
        }
        // (k, v, positions) per layer and head, as byte spans of the stored files.
        let mut plan = Vec::with_capacity(self.layers.len());
        let mut dtype = None;
        let mut total = 0;
        for groups in &self.layers {
            let mut layer = Vec::new();
            for g in groups {
                for t in [&g.k, &g.v] {
                    if *dtype.get_or_insert(t.dtype) != t.dtype {
                        bail!("cake: the stored cache mixes element types across layers");
                    }
                }
                for (h, pos) in g.positions.iter().enumerate() {
                    let i0 = pos.partition_point(|&p| (p as usize) < start);
                    let i1 = pos.partition_point(|&p| (p as usize) < end);
                    let mut span = |t: &Located| {
                        let (offset, len) = Self::head_bytes(t, h, i0, i1);
                        total += len;
                        Span {
                            file: t.file,
                            offset,
                            len,
                            dim: t.shape[2],
                        }
                    };
                    let k = span(&g.k);
                    let v = span(&g.v);
                    layer.push((k, v, pos[i0..i1].to_vec()));
                }
            }
            plan.push(layer);
        }
        let dtype = dtype.unwrap_or(DType::F32);
        let buffer = uploader.buffer(dtype, total)?;
        let mut at = 0;
        for (k, v, _) in plan.iter().flatten() {
            for s in [k, v] {
                self.sources[s.file].read_into(s.offset, &mut buffer[at..at + s.len], pacer)?;
                at += s.len;
            }
        }
        let flat = uploader.upload(dtype, total)?;
        let es = dtype.size_in_bytes();
        let mut at = 0;
        let mut view = |s: &Span| -> Result<Tensor> {
            let t = flat
                .narrow(0, at / es, s.len / es)?
                .reshape((s.len / es / s.dim.max(1), s.dim))?;
            at += s.len;
            Ok(t)
        };
        let mut heads = Vec::with_capacity(plan.len());
        for layer in plan {
            let mut pieces = Vec::with_capacity(layer.len());
            for (k, v, positions) in layer {
                pieces.push(HeadPiece {
                    k: view(&k)?,
                    v: view(&v)?,
                    positions,
                });
            }
            heads.push(pieces);
        }
        Ok(Chunk { start, end, heads })
    }
}

//! Reading a stored cache by position range, for Cake: the loader asks for the entries whose
//! original positions fall in `start..end`, for every layer and KV head, and reads exactly those
//! bytes from the stored files (positioned reads into the safetensors data, paced).
//!
//! Dense storage (a full cache, or an evicted one with ragged heads) is cut entry by entry.
//! Quantized storage of whole layers (KIVI, HF-style quant) is cut by rows of its stored tensors:
//! codes and per-token scales by entry, per-channel scales by group of entries (so the range
//! must start on a group boundary), then residual entries. Low-rank, pruned and merged forms
//! encode entries together (a shared basis or direction), and quantized entries of an evicted
//! cache are not indexed by position: [`RangeReader::open`] refuses those with the reason
//! ([`NotSplittable`]), as it does layers that share another layer's cache.

use std::collections::HashMap;
use std::ops::Range;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use kvbench_methods::storage::parts::quant_layout;
use kvbench_methods::storage::{QuantAxis, QuantLayout, QuantRows};

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

/// Where one part (keys or values) of a head group lies.
enum PartRanges {
    /// `[heads, len, head_dim]` entries.
    Dense(Located),
    /// A quantized form's tensors (`kvbench_methods::storage::quantized`), each `[heads, rows, ..]`.
    Quantized {
        layout: QuantLayout,
        codes: Option<Located>,
        scales: Option<Located>,
        zeros: Option<Located>,
        residual: Option<Located>,
    },
}

impl PartRanges {
    /// A quantized part's layout and its tensors in stored order (codes, scales, zeros,
    /// residual); `None` for a dense part.
    fn quantized(&self) -> Option<(QuantLayout, [&Option<Located>; 4])> {
        match self {
            PartRanges::Quantized {
                layout,
                codes,
                scales,
                zeros,
                residual,
            } => Some((*layout, [codes, scales, zeros, residual])),
            PartRanges::Dense(_) => None,
        }
    }
}

/// A head group: its positions and where its keys and values lie.
struct GroupRanges {
    positions: Vec<Vec<u32>>,
    k: PartRanges,
    v: PartRanges,
}

/// One head's entries of a chunk, on the device: `[m, head_dim]` each, and their positions.
pub struct HeadPiece {
    pub k: Tensor,
    pub v: Tensor,
    pub positions: Vec<u32>,
}

/// A quantized layer's stored rows of a chunk, on the device (positions are the chunk's range).
pub struct QuantPiece {
    pub k: QuantRows,
    pub v: QuantRows,
    pub k_layout: QuantLayout,
    pub v_layout: QuantLayout,
}

/// The entries of positions `start..end`, per layer: per stored head for dense layers
/// (`heads`), or one piece per quantized layer (`quantized`; its `heads` entry is empty).
pub struct Chunk {
    pub start: usize,
    pub end: usize,
    pub heads: Vec<Vec<HeadPiece>>,
    pub quantized: Vec<Option<QuantPiece>>,
}

/// What a stored cache holds per layer besides its entries.
#[derive(Clone, Debug)]
pub struct StoredLayout {
    /// Positions per layer and stored head (all of them, ascending).
    pub positions: Vec<Vec<Vec<u32>>>,
    /// Per layer, the layouts of its quantized keys and values (`None` for dense layers).
    pub quantized: Vec<Option<(QuantLayout, QuantLayout)>>,
}

/// Why chunks of `chunk` tokens cannot cut this stored cache, if they cannot: per-channel
/// quantized keys are cut on their groups, so the chunk must be a multiple of the group.
pub fn check_chunk(header: &Header, chunk: usize) -> std::result::Result<(), NotSplittable> {
    for (l, layer) in header.layers.iter().enumerate() {
        for g in &layer.groups {
            for part in ["k", "v"] {
                let meta = &g.storage[part];
                if meta["form"] != "quantized" {
                    continue;
                }
                let Ok(q) = quant_layout(meta) else {
                    return Err(NotSplittable(format!(
                        "cake: layer {l}'s quantized description is unreadable"
                    )));
                };
                if q.scheme.axis == QuantAxis::PerChannel && !chunk.is_multiple_of(q.scheme.group) {
                    return Err(NotSplittable(format!(
                        "cake: chunk_tokens ({chunk}) must be a multiple of the quantization \
                         group ({}) of layer {l}'s per-channel {}: set reuse.chunk_tokens to a \
                         multiple of it",
                        q.scheme.group,
                        if part == "k" { "keys" } else { "values" }
                    )));
                }
            }
        }
    }
    Ok(())
}

/// This stored cache cannot be rebuilt by position ranges, and why: Cake records the request as
/// refused and the run goes on.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotSplittable(pub String);

/// Reads position ranges of one stored cache.
pub struct RangeReader {
    sources: Vec<ByteSource>,
    layers: Vec<Vec<GroupRanges>>,
}

/// Bytes of `t` (`[heads, rows, ..]`) that a request wants: some rows of every head, as one
/// `[heads, rows, width]` tensor (or `[rows, width]` of one head).
struct Want {
    dtype: DType,
    spans: Vec<(usize, u64, usize)>,
    shape: Vec<usize>,
}

impl Want {
    /// Rows `r` of every head of `t`.
    fn rows(t: &Located, r: &Range<usize>) -> Want {
        let (heads, len) = (t.shape[0], t.shape[1]);
        let width: usize = t.shape[2..].iter().product();
        let es = t.dtype.size_in_bytes();
        let spans = (0..heads)
            .map(|h| {
                let off = t.offset + ((h * len + r.start) * width * es) as u64;
                (t.file, off, r.len() * width * es)
            })
            .collect();
        Want {
            dtype: t.dtype,
            spans,
            shape: vec![heads, r.len(), width],
        }
    }

    /// Rows `r` of head `h` of `t`, as `[rows, width]`.
    fn head_rows(t: &Located, h: usize, r: &Range<usize>) -> Want {
        let (len, width) = (t.shape[1], t.shape[2]);
        let es = t.dtype.size_in_bytes();
        let off = t.offset + ((h * len + r.start) * width * es) as u64;
        Want {
            dtype: t.dtype,
            spans: vec![(t.file, off, r.len() * width * es)],
            shape: vec![r.len(), width],
        }
    }

    fn bytes(&self) -> usize {
        self.spans.iter().map(|s| s.2).sum()
    }
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

/// Why this stored cache cannot be read by position range, if it cannot (from its header alone;
/// [`RangeReader::open`] checks the rest).
pub fn check_splittable(header: &Header) -> std::result::Result<(), NotSplittable> {
    for (l, layer) in header.layers.iter().enumerate() {
        if layer.shared_from.is_some() {
            return Err(NotSplittable(format!(
                "cake: layer {l} shares another layer's cache; cake needs every layer's own entries"
            )));
        }
        let forms: Vec<&str> = layer
            .groups
            .iter()
            .flat_map(|g| ["k", "v"].map(|p| g.storage[p]["form"].as_str().unwrap_or("?")))
            .collect();
        let quantized = forms.iter().all(|f| *f == "quantized");
        if quantized && layer.groups.len() > 1 {
            return Err(NotSplittable(format!(
                "cake: layer {l} stores quantized entries in {} head groups (evicted per head); \
                 cake rebuilds quantized storage of whole, uncompressed-length layers only",
                layer.groups.len()
            )));
        }
        if let Some(form) = forms.iter().find(|f| !matches!(**f, "dense" | "quantized")) {
            return Err(NotSplittable(format!(
                "cake: layer {l} stores entries as `{form}`, which cannot be cut by position; \
                 cake needs dense (full or evicted) or quantized storage"
            )));
        }
        if !quantized && forms.contains(&"quantized") {
            return Err(NotSplittable(format!(
                "cake: layer {l} mixes quantized and dense storage; cake rebuilds one or the other"
            )));
        }
    }
    Ok(())
}

/// Where a quantized part's tensors lie, from its description.
fn quantized_ranges(
    meta: &serde_json::Value,
    find: &dyn Fn(&str) -> Result<Located>,
) -> Result<PartRanges> {
    let layout = quant_layout(meta)?;
    let opt = |key: &str| -> Result<Option<Located>> {
        match meta[key].as_str() {
            Some(name) => find(name).map(Some),
            None => Ok(None),
        }
    };
    Ok(PartRanges::Quantized {
        layout,
        codes: opt("codes")?,
        scales: opt("scales")?,
        zeros: opt("zeros")?,
        residual: opt("residual")?,
    })
}

impl RangeReader {
    /// Index the stored files and read every group's positions (all paced: these bytes count as
    /// read). Errors ([`NotSplittable`]) when the cache cannot be cut by position.
    pub fn open(header: &Header, sources: Vec<ByteSource>, pacer: &mut Pacer) -> Result<Self> {
        check_splittable(header)?;
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
        for (l, layer) in header.layers.iter().enumerate() {
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
                let positions: Vec<Vec<u32>> = (0..heads)
                    .map(|h| flat[h * len..(h + 1) * len].to_vec())
                    .collect();
                let part = |key: &str| -> Result<PartRanges> {
                    let meta = &g.storage[key];
                    if meta["form"] == "quantized" {
                        // Entry index = position: every position of the context is held.
                        let whole = positions
                            .iter()
                            .all(|p| p.iter().enumerate().all(|(i, &q)| q as usize == i))
                            && len == header.next_position;
                        if !whole {
                            return Err(NotSplittable(format!(
                                "cake: layer {l} stores quantized entries of an evicted cache; \
                                 cake rebuilds quantized storage of whole layers only"
                            ))
                            .into());
                        }
                        quantized_ranges(meta, &find)
                    } else {
                        let name = meta["x"].as_str().unwrap_or("");
                        Ok(PartRanges::Dense(find(name)?))
                    }
                };
                let (k, v) = (part("k")?, part("v")?);
                groups.push(GroupRanges { positions, k, v });
            }
            layers.push(groups);
        }
        Ok(Self { sources, layers })
    }

    /// What the stored cache holds besides its entries: positions and quantized layouts.
    pub fn layout(&self) -> StoredLayout {
        let positions = self
            .layers
            .iter()
            .map(|groups| groups.iter().flat_map(|g| g.positions.clone()).collect())
            .collect();
        let quantized = self
            .layers
            .iter()
            .map(|groups| {
                let g = groups.first()?;
                Some((g.k.quantized()?.0, g.v.quantized()?.0))
            })
            .collect();
        StoredLayout {
            positions,
            quantized,
        }
    }

    /// Every layer's entries at positions `start..end`, read into the uploader's staging buffer
    /// (one per element type) and moved to its device in one copy each; the pieces are views.
    pub fn read_chunk(
        &self,
        start: usize,
        end: usize,
        pacer: &mut Pacer,
        uploader: &mut Uploader,
    ) -> Result<Chunk> {
        // What each layer wants, in order: per dense head (k, v), or per quantized layer the
        // present tensors of keys then values.
        let mut wants = Vec::new();
        for groups in &self.layers {
            for g in groups {
                match (&g.k, &g.v) {
                    (PartRanges::Dense(k), PartRanges::Dense(v)) => {
                        for (h, pos) in g.positions.iter().enumerate() {
                            let i0 = pos.partition_point(|&p| (p as usize) < start);
                            let i1 = pos.partition_point(|&p| (p as usize) < end);
                            wants.push(Want::head_rows(k, h, &(i0..i1)));
                            wants.push(Want::head_rows(v, h, &(i0..i1)));
                        }
                    }
                    (k, v) => {
                        for part in [k, v] {
                            let Some((layout, tensors)) = part.quantized() else {
                                bail!("cake: a head group mixes dense and quantized storage");
                            };
                            let r = layout.rows(start, end)?;
                            let rows = [&r.codes, &r.params, &r.params, &r.residual];
                            for (t, rows) in tensors.into_iter().zip(rows) {
                                if let Some(t) = t {
                                    wants.push(Want::rows(t, rows));
                                }
                            }
                        }
                    }
                }
            }
        }
        let mut got = self.fetch(&wants, pacer, uploader)?.into_iter();
        let mut heads = Vec::with_capacity(self.layers.len());
        let mut quantized = Vec::with_capacity(self.layers.len());
        for groups in &self.layers {
            let mut pieces = Vec::new();
            let mut quant = None;
            for g in groups {
                match (&g.k, &g.v) {
                    (PartRanges::Dense(_), PartRanges::Dense(_)) => {
                        for pos in &g.positions {
                            let i0 = pos.partition_point(|&p| (p as usize) < start);
                            let i1 = pos.partition_point(|&p| (p as usize) < end);
                            pieces.push(HeadPiece {
                                k: got.next().expect("wanted"),
                                v: got.next().expect("wanted"),
                                positions: pos[i0..i1].to_vec(),
                            });
                        }
                    }
                    (k, v) => {
                        let mut rows = |part: &PartRanges| {
                            let (layout, tensors) = part.quantized().expect("checked above");
                            let [codes, scales, zeros, residual] =
                                tensors.map(|t| t.as_ref().map(|_| got.next().expect("wanted")));
                            let r = QuantRows {
                                start,
                                end,
                                codes,
                                scales,
                                zeros,
                                residual,
                            };
                            (r, layout)
                        };
                        let (kr, kl) = rows(k);
                        let (vr, vl) = rows(v);
                        quant = Some(QuantPiece {
                            k: drop_empty(kr),
                            v: drop_empty(vr),
                            k_layout: kl,
                            v_layout: vl,
                        });
                    }
                }
            }
            heads.push(pieces);
            quantized.push(quant);
        }
        Ok(Chunk {
            start,
            end,
            heads,
            quantized,
        })
    }

    /// Read every want into staging, one upload per element type, and view each as its shape.
    fn fetch(
        &self,
        wants: &[Want],
        pacer: &mut Pacer,
        uploader: &mut Uploader,
    ) -> Result<Vec<Tensor>> {
        let mut out: Vec<Option<Tensor>> = vec![None; wants.len()];
        let mut dtypes: Vec<DType> = Vec::new();
        for w in wants {
            if !dtypes.contains(&w.dtype) {
                dtypes.push(w.dtype);
            }
        }
        for dtype in dtypes {
            let mine: Vec<usize> = (0..wants.len())
                .filter(|&i| wants[i].dtype == dtype)
                .collect();
            let total: usize = mine.iter().map(|&i| wants[i].bytes()).sum();
            if total == 0 {
                // Nothing of this type in the range: empty host tensors, never read by kernels.
                for &i in &mine {
                    out[i] = Some(Tensor::zeros(
                        wants[i].shape.clone(),
                        dtype,
                        &candle_core::Device::Cpu,
                    )?);
                }
                continue;
            }
            let buffer = uploader.buffer(dtype, total)?;
            let mut at = 0;
            for &i in &mine {
                for &(file, offset, len) in &wants[i].spans {
                    self.sources[file].read_into(offset, &mut buffer[at..at + len], pacer)?;
                    at += len;
                }
            }
            let flat = uploader.upload(dtype, total)?;
            let es = dtype.size_in_bytes();
            let mut at = 0;
            for &i in &mine {
                let len = wants[i].bytes();
                out[i] = Some(
                    flat.narrow(0, at / es, len / es)?
                        .reshape(wants[i].shape.clone())?,
                );
                at += len;
            }
        }
        Ok(out
            .into_iter()
            .map(|t| t.expect("every want fetched"))
            .collect())
    }
}

/// Quantized rows with empty tensors (a range outside the quantized part or the residual) left
/// out, so that joining never concatenates host placeholders with device tensors.
fn drop_empty(r: QuantRows) -> QuantRows {
    let keep = |t: Option<Tensor>| t.filter(|t| t.elem_count() > 0);
    QuantRows {
        codes: keep(r.codes),
        scales: keep(r.scales),
        zeros: keep(r.zeros),
        residual: keep(r.residual),
        ..r
    }
}

//! Every storage form as named tensors plus a small JSON description, and back: what the KV
//! store (harness `kv_store`) writes to safetensors files.
//!
//! A form's description names its tensors through a [`TensorNames`] table, which gives each
//! *distinct* tensor (by id) one name. Tensors shared between forms (MiniCache's direction and
//! retained indices, held by both layers of a pair) are therefore written once and read back as
//! one tensor, so `KvCache::bytes` counts them once after a load as before the save.
//!
//! Round trip is exact: every tensor is written in its own dtype and read back bit for bit, and
//! the host-side bookkeeping (MiniCache's retained indices) is rebuilt from the stored tensor.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Tensor, TensorId};
use serde_json::{json, Value};

use super::{
    ChannelPruned, HeadShared, LowRank, Merged, QuantLayout, QuantScheme, Quantized, Result,
    Storage, Stored,
};
use crate::MethodError;

/// Distinct tensors of a cache, each under one name (`t0`, `t1`, ...), in first-seen order.
#[derive(Default)]
pub struct TensorNames {
    by_id: HashMap<TensorId, String>,
    tensors: Vec<(String, Tensor)>,
}

impl TensorNames {
    /// The name of `t`, giving it one the first time it is seen.
    pub fn name(&mut self, t: &Tensor) -> String {
        if let Some(n) = self.by_id.get(&t.id()) {
            return n.clone();
        }
        let n = format!("t{}", self.tensors.len());
        self.by_id.insert(t.id(), n.clone());
        self.tensors.push((n.clone(), t.clone()));
        n
    }

    fn opt(&mut self, t: Option<&Tensor>) -> Value {
        t.map_or(Value::Null, |t| Value::String(self.name(t)))
    }

    /// Tensors named so far.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The tensors named after the first `count`, in first-seen order.
    pub fn since(&self, count: usize) -> Vec<(String, Tensor)> {
        self.tensors[count..].to_vec()
    }
}

fn bad(what: &str) -> MethodError {
    MethodError::Cache(format!("stored form description: {what}"))
}

fn field<'a>(meta: &'a Value, key: &str) -> Result<&'a Value> {
    meta.get(key)
        .ok_or_else(|| bad(&format!("missing `{key}`")))
}

fn usize_of(meta: &Value, key: &str) -> Result<usize> {
    field(meta, key)?
        .as_u64()
        .map(|x| x as usize)
        .ok_or_else(|| bad(&format!("`{key}` is not a count")))
}

/// Looks tensors up by name while reading a description back.
pub trait TensorSource {
    fn tensor(&self, name: &str) -> Result<Tensor>;
}

impl TensorSource for HashMap<String, Tensor> {
    fn tensor(&self, name: &str) -> Result<Tensor> {
        self.get(name)
            .cloned()
            .ok_or_else(|| bad(&format!("tensor `{name}` is not in the file")))
    }
}

fn get(meta: &Value, key: &str, src: &dyn TensorSource) -> Result<Tensor> {
    let name = field(meta, key)?
        .as_str()
        .ok_or_else(|| bad(&format!("`{key}` is not a tensor name")))?;
    src.tensor(name)
}

fn get_opt(meta: &Value, key: &str, src: &dyn TensorSource) -> Result<Option<Tensor>> {
    match meta.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => get(meta, key, src).map(Some),
    }
}

/// Describe `s`, naming its tensors in `names`.
pub fn describe_stored(s: &Stored, names: &mut TensorNames) -> Value {
    match s {
        Stored::Dense(t) => json!({"form": "dense", "x": names.name(t)}),
        Stored::Quantized(q) => json!({
            "form": "quantized",
            "scheme": q.scheme,
            "heads": q.heads,
            "head_dim": q.head_dim,
            "dtype": q.dtype.as_str(),
            "nq": q.nq,
            "codes": names.opt(q.codes.as_ref()),
            "scales": names.opt(q.scales.as_ref()),
            "zeros": names.opt(q.zeros.as_ref()),
            "residual": names.opt(q.residual.as_ref()),
        }),
        Stored::LowRank(f) => json!({
            "form": "low_rank",
            "codes": names.opt(f.codes.as_ref()),
            "basis": names.name(&f.basis),
        }),
        Stored::ChannelPruned(f) => json!({
            "form": "channel_pruned",
            "kept": names.name(&f.kept),
            "channels": names.name(&f.channels),
            "tail": names.opt(f.tail.as_ref()),
            "head_dim": f.head_dim,
        }),
        Stored::Merged(f) => json!({
            "form": "merged",
            "direction": names.name(&f.direction),
            "magnitude": names.name(&f.magnitude),
            "retained_index": names.opt(f.retained_index.as_ref()),
            "retained": names.opt(f.retained.as_ref()),
            "tail": names.opt(f.tail.as_ref()),
        }),
        Stored::HeadShared(f) => json!({
            "form": "head_shared",
            "merged": names.name(&f.merged),
            "group_of": f.group_of,
        }),
    }
}

/// The layout of a quantized form's description (everything but its tensors).
pub fn quant_layout(meta: &Value) -> Result<QuantLayout> {
    let scheme: QuantScheme = serde_json::from_value(field(meta, "scheme")?.clone())
        .map_err(|e| bad(&format!("quantization scheme: {e}")))?;
    let dtype: DType = field(meta, "dtype")?
        .as_str()
        .unwrap_or("")
        .parse()
        .map_err(|e| bad(&format!("dtype: {e}")))?;
    Ok(QuantLayout {
        scheme,
        heads: usize_of(meta, "heads")?,
        head_dim: usize_of(meta, "head_dim")?,
        dtype,
        nq: usize_of(meta, "nq")?,
    })
}

/// Rebuild a form from its description and the tensors it names.
pub fn rebuild_stored(meta: &Value, src: &dyn TensorSource) -> Result<Stored> {
    let form = field(meta, "form")?.as_str().unwrap_or("");
    Ok(match form {
        "dense" => Stored::Dense(get(meta, "x", src)?),
        "quantized" => {
            let layout = quant_layout(meta)?;
            Stored::Quantized(Quantized {
                scheme: layout.scheme,
                heads: layout.heads,
                head_dim: layout.head_dim,
                dtype: layout.dtype,
                nq: layout.nq,
                codes: get_opt(meta, "codes", src)?,
                scales: get_opt(meta, "scales", src)?,
                zeros: get_opt(meta, "zeros", src)?,
                residual: get_opt(meta, "residual", src)?,
            })
        }
        "low_rank" => Stored::LowRank(LowRank {
            codes: get_opt(meta, "codes", src)?,
            basis: get(meta, "basis", src)?,
        }),
        "channel_pruned" => Stored::ChannelPruned(ChannelPruned {
            kept: get(meta, "kept", src)?,
            channels: get(meta, "channels", src)?,
            tail: get_opt(meta, "tail", src)?,
            head_dim: usize_of(meta, "head_dim")?,
        }),
        "merged" => {
            let retained_index = get_opt(meta, "retained_index", src)?;
            // Host bookkeeping, rebuilt from the stored indices.
            let flat: Vec<u32> = match &retained_index {
                Some(t) => t.to_vec1()?,
                None => Vec::new(),
            };
            Stored::Merged(Merged {
                direction: get(meta, "direction", src)?,
                magnitude: get(meta, "magnitude", src)?,
                retained_index,
                retained: get_opt(meta, "retained", src)?,
                retained_flat: Arc::new(flat),
                tail: get_opt(meta, "tail", src)?,
            })
        }
        "head_shared" => {
            let group_of: Vec<u32> = serde_json::from_value(field(meta, "group_of")?.clone())
                .map_err(|e| bad(&format!("group_of: {e}")))?;
            Stored::HeadShared(HeadShared {
                merged: get(meta, "merged", src)?,
                group_of,
            })
        }
        other => return Err(bad(&format!("unknown storage form `{other}`"))),
    })
}

/// Describe a head group's keys and values.
pub fn describe_storage(s: &Storage, names: &mut TensorNames) -> Value {
    json!({"k": describe_stored(&s.k, names), "v": describe_stored(&s.v, names)})
}

/// Rebuild a head group's keys and values.
pub fn rebuild_storage(meta: &Value, src: &dyn TensorSource) -> Result<Storage> {
    Ok(Storage {
        k: rebuild_stored(field(meta, "k")?, src)?,
        v: rebuild_stored(field(meta, "v")?, src)?,
    })
}

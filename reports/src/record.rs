//! The results record: one JSON line per sample x turn x method x budget. Results on disk are the
//! only contract between a run and a report, so every field a table needs is here.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub experiment: String,
    pub model: String,
    pub dataset: String,
    pub task: String,
    pub sample_id: String,
    pub turn: usize,
    pub method: String,
    pub method_params: serde_json::Value,
    /// The budget as written in the experiment (`{"compression_ratio": 0.5}`), null for `full`.
    pub budget: Option<serde_json::Value>,
    /// Short budget label for tables (`r=0.50`, `k=256`, `-` for none).
    pub budget_label: String,
    pub query_aware: bool,
    pub target_ratio: f64,
    /// 1 - kept entries / context entries, over all layers and KV heads.
    pub achieved_ratio: f64,
    pub prediction: String,
    pub answers: Vec<String>,
    pub metric: String,
    pub score: f64,
    /// Fraction of the full-cache run's greedy tokens reproduced at the same positions.
    pub agreement_with_full: f64,
    /// KL(full || method) of the first generated token's distribution, in nats.
    pub kl_first_token: f64,
    /// Bytes the compressed context cache occupies (before the question is appended).
    pub kv_bytes: u64,
    /// Bytes the uncompressed context cache occupies.
    pub kv_bytes_full: u64,
    /// Peak device memory during this request; null where the device cannot report it (CPU).
    /// With batched decoding, the peak of the whole batch the request decoded in.
    pub peak_device_bytes: Option<u64>,
    /// Shared prefill of the context (computed once per sample, reported in each record).
    pub prefill_ms: f64,
    pub compress_ms: f64,
    /// Question appended to the compressed cache, up to the first token's logits.
    pub question_ms: f64,
    /// Time to first token: prefill + compression + question prefill (+ sampling the token).
    pub ttft_ms: f64,
    /// Mean decode step after the first token, decode hook included; with batched decoding each
    /// step counts the whole batched step's time (the latency this sequence saw).
    pub decode_ms_per_token: f64,
    pub context_tokens: usize,
    pub question_tokens: usize,
    /// Context tokens the harness cut from the middle so the prompt and the decode budget fit
    /// the model's context window (0 when nothing was cut, or when the dataset's own
    /// `max_length` truncated the text instead); absent in older results.
    #[serde(default)]
    pub truncated_tokens: usize,
    pub new_tokens: usize,
    pub device: String,
    pub seed: u64,
    pub kvbench_version: String,
    /// Identifies the work this record did; a re-run skips keys already written.
    pub key: String,
    /// The sample's task-specific facts (a needle's `length` and `depth`, LongBench's `length`),
    /// copied from the dataset for reports; null when the sample has none.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub meta: serde_json::Value,
    /// How the compressed context cache is stored: entries per storage form of keys and of values
    /// (`{"k": {"quantized": 23040, "dense": 2880}, ...}`), entries MiniCache kept unmerged and
    /// layers reading another layer's cache; null when everything is dense.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub kv_storage: serde_json::Value,
    /// Why this work failed (a device out of memory on this sample, ...): a failed record holds
    /// no measurement (scores and timings are 0), reports leave it out and count it, and a
    /// re-run retries it (unless `--keep-failed`); absent for a record that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// With `reuse:` (KV store): how this request reached its context cache, `compute` (prefill
    /// and compression), `load` (read from the store) or `cake` (both at once); absent without
    /// reuse, as are the four fields below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_mode: Option<String>,
    /// Bytes read from the KV store for this request (0 when computed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_bytes_read: Option<u64>,
    /// The read cap (GB/s, 10^9 bytes) the load or Cake ran under; absent when uncapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_gbps: Option<f64>,
    /// Time to the context cache by `load` or `cake` (reads, checks, building the cache, the
    /// device copy); `ttft_ms` is this plus `question_ms` for those modes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_ms: Option<f64>,
    /// Where Cake's compute and load met: context tokens computed from the front (the rest was
    /// loaded); a multiple of `chunk_tokens` or the context length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cake_split_tokens: Option<usize>,
}

impl Record {
    /// Whether the work failed ([`Record::error`]): no measurement to aggregate.
    pub fn is_failed(&self) -> bool {
        self.error.is_some()
    }
}

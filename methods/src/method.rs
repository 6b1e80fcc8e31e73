//! The `Method` trait: hooks a compression method implements, and what it may observe.

use candle_core::Tensor;

use crate::{Budget, KvCache, MethodError, ParamError};

/// What a method needs recorded during the shared prefill. The runner takes the union over the
/// methods of an experiment, so each quantity is computed once per sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObservationNeeds {
    /// Keep the last `window` post-RoPE queries of every layer (SnapKV-style observation window).
    pub window_queries: usize,
    /// Accumulate each key's attention received from all prefill queries (H2O), chunk by chunk.
    pub accumulated_attention: bool,
    /// `Some(n)`: mean and covariance of every layer's pre-RoPE queries, leaving out the queries at
    /// sequence positions below `n` (expected attention's sinks), plus the model's RoPE frequencies.
    pub query_statistics: Option<usize>,
}

impl ObservationNeeds {
    pub fn union(self, other: Self) -> Self {
        Self {
            window_queries: self.window_queries.max(other.window_queries),
            accumulated_attention: self.accumulated_attention || other.accumulated_attention,
            query_statistics: match (self.query_statistics, other.query_statistics) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

/// What the prefill recorded for one layer.
#[derive(Clone, Debug, Default)]
pub struct LayerObservation {
    /// Last queries after RoPE: `[q_heads, window, head_dim]`.
    pub window_queries: Option<Tensor>,
    /// Attention each key received, summed over all prefill queries: `[q_heads, len]` (f32).
    /// Column `j` is the key at original position `j` (the prefill starts from an empty cache).
    pub accumulated_attention: Option<Tensor>,
    /// Mean of the pre-RoPE queries: `[q_heads, head_dim]` (f32).
    pub query_mean: Option<Tensor>,
    /// Covariance of the pre-RoPE queries (divided by their count): `[q_heads, head_dim, head_dim]` (f32).
    pub query_cov: Option<Tensor>,
}

/// The model's rotary embedding, for methods that rotate query statistics to future positions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rope {
    /// Inverse frequency of each rotated pair: `[head_dim / 2]`.
    pub inv_freq: Vec<f32>,
    /// Pairs are adjacent dimensions (`2i`, `2i + 1`) instead of halves (`i`, `i + head_dim / 2`).
    pub interleaved: bool,
}

/// Everything recorded during the shared prefill.
#[derive(Clone, Debug, Default)]
pub struct Observations {
    pub layers: Vec<LayerObservation>,
    /// Query heads per KV head (GQA group size).
    pub q_per_kv: usize,
    /// Set when `query_statistics` was asked for.
    pub rope: Option<Rope>,
}

/// A KV-cache compression method: immutable configuration, shared by every request (and by
/// parallel workers, hence `Send + Sync`). Everything that changes during one request lives in the
/// [`Session`] the method opens for it. Implementations state their paper and defaults in their
/// `//!` header.
pub trait Method: Send + Sync {
    /// Registered name (`streaming_llm`); compositions are named `a+b`.
    fn name(&self) -> &str;

    /// Parameters as recorded in results (`method_params`).
    fn params(&self) -> serde_json::Value;

    /// Check every parameter value, with no model at hand: called when the plan is built, so
    /// that `kvbench validate` and `kvbench run` reject a bad value before any download. The
    /// method's run-time checks of its configuration call this too. Nothing to check by default.
    fn validate(&self) -> Result<(), ParamError> {
        Ok(())
    }

    /// Check the parameters against the model's shape (`head_dim` of every KV head, the number
    /// of layers): called once after the model is loaded, before the first sample, and by the
    /// method at run time on its cache. Nothing to check by default.
    fn check_model_shape(
        &self,
        _n_layers: usize,
        _n_kv_heads: usize,
        _head_dim: usize,
    ) -> Result<(), ParamError> {
        Ok(())
    }

    /// Whether the budget axis applies (`full` runs once, without a budget).
    fn uses_budget(&self) -> bool {
        true
    }

    /// What the shared prefill must record for the session's `on_prefill`.
    fn needs(&self) -> ObservationNeeds {
        ObservationNeeds::default()
    }

    /// What each decode forward must record for the session's `on_decode` (the new token's query
    /// for H2O's decode variant and `decoding`). Nothing by default.
    fn decode_needs(&self) -> ObservationNeeds {
        ObservationNeeds::default()
    }

    /// Compress the cache after the shared prefill of the context, for a method without
    /// per-request state: what the default [`Session`] does at `on_prefill`. Methods with state
    /// override [`Method::session`] and implement this as a one-shot request (a fresh session's
    /// `on_prefill`), never the other way round.
    fn compress(
        &self,
        cache: &mut KvCache,
        obs: &Observations,
        budget: &Budget,
    ) -> Result<(), MethodError>;

    /// Whether [`compress_layer`](Self::compress_layer) applies: the method's choice in a layer
    /// depends only on that layer's entries and observations and on the budget. `false` (the
    /// default) for methods that need the whole prefilled cache (cross-layer sharing, budgets
    /// moved between layers, state across layers).
    fn compresses_by_layer(&self) -> bool {
        false
    }

    /// Compress layer `layer` alone, right after the prefill computed it (kvpress's forward
    /// hooks), so that the uncompressed cache of every layer never exists at once and the peak
    /// device memory shows the saving. `obs.layers` holds the layers up to `layer`; the cache's
    /// later layers are still empty. Leaves layer `layer` exactly as [`compress`](Self::compress)
    /// after the prefill leaves it. Only called where
    /// [`compresses_by_layer`](Self::compresses_by_layer).
    fn compress_layer(
        &self,
        _cache: &mut KvCache,
        _layer: usize,
        _obs: &Observations,
        _budget: &Budget,
    ) -> Result<(), MethodError> {
        Err(MethodError::Cache(format!(
            "{} compresses the whole prefilled cache, not one layer at a time",
            self.name()
        )))
    }

    /// Open the state of one request. The session lives from the compression after prefill to
    /// the last decoded token; several sessions of one method may be alive at once. By default a
    /// [`Stateless`] session: `compress` after prefill, nothing while decoding.
    fn session(&self) -> Box<dyn Session + '_> {
        Box::new(Stateless(self))
    }
}

/// One request's run of a method: owns all its mutable state and gets the hooks, in order:
/// `on_prefill` once, then `on_decode` after every decoded token.
pub trait Session: Send {
    /// Compress the cache after the shared prefill of the context (or of context + question, for
    /// query-aware runs).
    fn on_prefill(
        &mut self,
        cache: &mut KvCache,
        obs: &Observations,
        budget: &Budget,
    ) -> Result<(), MethodError>;

    /// Called after every decoded token with what that token's forward recorded
    /// (`Method::decode_needs`); `step` counts the generated tokens now in the cache. Methods that
    /// keep compressing during generation act here; nothing by default.
    fn on_decode(
        &mut self,
        _cache: &mut KvCache,
        _step: usize,
        _obs: &Observations,
        _budget: &Budget,
    ) -> Result<(), MethodError> {
        Ok(())
    }
}

/// The session of a method without per-request state: `Method::compress` after prefill.
pub struct Stateless<'a, M: ?Sized>(pub &'a M);

impl<M: Method + ?Sized> Session for Stateless<'_, M> {
    fn on_prefill(
        &mut self,
        cache: &mut KvCache,
        obs: &Observations,
        budget: &Budget,
    ) -> Result<(), MethodError> {
        self.0.compress(cache, obs, budget)
    }
}

//! kvbench-methods: the compressible KV cache, the `Method` trait, budgets and every registered
//! compression method. Depends on candle-core only: a method never sees a dataset or a model.
//!
//! Token eviction is built from shared parts: `scoring` (the `Scorer` trait, window attention,
//! GQA aggregation, pooling) and `select` (top-k, exact integer budgets, the eviction driver);
//! each method file holds its selection rule, paper and defaults.

//! Layout: the core pieces at the top (cache, `Method` and sessions, budgets, parameters, the
//! registry, composition), the methods in one folder per family following the surveys' taxonomy,
//! and the storage forms they produce in `storage/`, separate from the methods.

pub mod budget;
pub mod cache;
pub mod composed;
pub mod describe;
pub mod full;
pub mod linalg;
pub mod method;
pub mod params;
pub mod registry;
pub mod sliding;
pub mod storage;

pub mod allocation;
pub mod channel_pruning;
pub mod cross_layer;
pub mod low_rank;
pub mod merging;
pub mod quantization;
pub mod selection;

// The flat paths of before the family folders (`kvbench_methods::snapkv`, ...) keep working.
pub use allocation::{adakv, per_layer, pyramidkv};
pub use channel_pruning::think;
pub use cross_layer::{kv_head_merge, kvsharer, minicache};
pub use low_rank::lowrank;
pub use merging::{cam, kvmerger};
pub use quantization::{kivi, quant};
pub use selection::{
    decoding, expected_attention, h2o, keydiff, knorm, lagkv, random, scoring, select, snapkv,
    streaming_llm, tova,
};

#[cfg(test)]
mod testing;

pub use budget::Budget;
pub use cache::{HeadGroup, KvCache, LayerKv, Storage};
pub use describe::{Conformance, Describe, Description, Expect, Param};
pub use method::{
    LayerObservation, Method, ObservationNeeds, Observations, Rope, Session, Stateless,
};
pub use params::ParamError;
pub use registry::{
    method_names, MethodConfig, MethodDescription, MethodSpec, ScorerConfig, METHODS,
};
pub use scoring::Scorer;
pub use storage::{Form, Stored};

/// Errors from cache operations and methods.
#[derive(Debug, thiserror::Error)]
pub enum MethodError {
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("cache: {0}")]
    Cache(String),
    /// A parameter value the method does not accept (also reported when the plan is built).
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error("{method}: {message}")]
    Config {
        method: &'static str,
        message: String,
    },
}

//! kvbench-methods: the compressible KV cache, the `Method` trait, budgets and every registered
//! compression method. Depends on candle-core only: a method never sees a dataset or a model.
//!
//! Token eviction is built from shared parts: `scoring` (the `Scorer` trait, window attention,
//! GQA aggregation, pooling) and `select` (top-k, exact integer budgets, the eviction driver);
//! each method file holds its selection rule, paper and defaults.

pub mod budget;
pub mod cache;
pub mod full;
pub mod method;
pub mod params;
pub mod registry;
pub mod scoring;
pub mod select;
pub mod sliding;
pub mod storage;
pub mod streaming_llm;

pub mod adakv;
pub mod cam;
pub mod composed;
pub mod decoding;
pub mod expected_attention;
pub mod h2o;
pub mod keydiff;
pub mod kivi;
pub mod knorm;
pub mod kv_head_merge;
pub mod kvmerger;
pub mod kvsharer;
pub mod lagkv;
pub mod linalg;
pub mod lowrank;
pub mod minicache;
pub mod per_layer;
pub mod pyramidkv;
pub mod quant;
pub mod random;
pub mod snapkv;
pub mod think;
pub mod tova;

#[cfg(test)]
mod testing;

pub use budget::Budget;
pub use cache::{HeadGroup, KvCache, LayerKv, Storage};
pub use method::{
    LayerObservation, Method, ObservationNeeds, Observations, Rope, Session, Stateless,
};
pub use registry::{
    method_names, MethodConfig, MethodDescription, MethodSpec, ScorerConfig, METHODS,
};
pub use params::ParamError;
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

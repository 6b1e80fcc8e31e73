//! Selection (eviction): scorers that rank entries and keep the best, plus the shared scoring and
//! selection machinery (`scoring`: the `Scorer` trait, window attention, pooling; `select`: top-k,
//! exact budgets, the eviction driver) and `decoding`, which applies a scorer during generation.

pub mod chunk;
pub mod decoding;
pub mod expected_attention;
pub mod h2o;
pub mod keydiff;
pub mod knorm;
pub mod lagkv;
pub mod random;
pub mod scoring;
pub mod select;
pub mod snapkv;
pub mod streaming_llm;
pub mod tova;

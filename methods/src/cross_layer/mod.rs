//! Cross-layer and cross-head sharing: layers or heads store one shared cache.

pub mod kv_head_merge;
pub mod kvsharer;
pub mod minicache;

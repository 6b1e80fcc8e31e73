//! kvbench: measure KV-cache compression for LLM inference.
//!
//! The harness owns everything that touches a model: fetching weights, tokenizing, the
//! Llama-family runtime over the compressible cache, the experiment plan and the runner
//! (`run`: plan -> prefill -> fork -> compress -> decode -> score -> record).
//! Methods, datasets and reports live in their own crates and never see each other.

pub mod bench;
mod chat_pycompat;
pub mod chat_template;
pub mod checks;
pub mod device;
pub mod experiment;
pub mod fetch;
pub mod kv_store;
pub mod loader;
pub mod manifest;
pub mod memory;
pub mod model;
pub mod overrides;
pub mod presets;
pub mod prompt;
pub mod reuse;
pub mod run;
pub mod scale;
/// The runner's former path (`kvbench::runner::{run, RunOptions, ...}`).
pub use run as runner;
pub mod testing;
pub mod tokenizer;
pub mod truncation;

//! The query-aware protocol on the real SmolLM2 model (CPU): a query-aware run is a query-agnostic
//! run cut one token before the end of the question, and its first answer token sees the
//! compression.

use candle_core::Device;
use kvbench_methods::{Budget, MethodConfig};

use super::generate::{generate, Generation, Request};
use super::prefill::{Engine, Split, TurnPrompt};
use crate::loader::{load, LoadedModel};

fn model() -> LoadedModel {
    let files = crate::fetch::ModelFiles::Gguf {
        path: crate::testing::smollm2_gguf(),
    };
    load(&files, &Device::Cpu).unwrap()
}

fn prompt(engine: &Engine, context: &str, question: &str) -> TurnPrompt {
    let tok = &engine.loaded.tokenizer;
    TurnPrompt {
        context_ids: tok.encode(context).unwrap(),
        question_ids: tok.encode_raw(question).unwrap(),
        truncated_tokens: 0,
        max_new_tokens: 6,
    }
}

const CONTEXT: &str =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back \
    again. The special magic number for Anna is 7341. The grass is green. The sky is blue. The sun \
    is yellow. Here we go. There and back again. The grass is green. The sky is blue.";
const QUESTION: &str =
    "\nWhat is the special magic number for Anna?\nAnswer: The special magic number for Anna is";

fn run(engine: &Engine, p: &TurnPrompt, split: Split, yaml: &str, ratio: f64) -> Generation {
    let method = serde_yaml_ng::from_str::<MethodConfig>(yaml)
        .unwrap()
        .build();
    let needs = method.needs();
    let prefilled = engine.prefill(p, split, needs).unwrap();
    let request = Request {
        method: method.as_ref(),
        budget: Budget::CompressionRatio(ratio),
        max_new_tokens: p.max_new_tokens,
    };
    generate(engine, &prefilled, &request).unwrap()
}

#[test]
fn query_aware_equals_query_agnostic_cut_before_the_last_question_token() {
    let loaded = model();
    let engine = Engine::new(&loaded, &Device::Cpu, 0);
    let aware = prompt(&engine, CONTEXT, QUESTION);
    let n = aware.question_ids.len();
    assert!(n > 3, "the question has several tokens");
    let cut = TurnPrompt {
        context_ids: [aware.context_ids.as_slice(), &aware.question_ids[..n - 1]].concat(),
        question_ids: aware.question_ids[n - 1..].to_vec(),
        truncated_tokens: 0,
        max_new_tokens: aware.max_new_tokens,
    };
    // The query-aware prefill is context + question[..n-1]; the last question token follows.
    let (prefix, tail) = aware.split(Split::QueryAware);
    assert_eq!(prefix, cut.context_ids);
    assert_eq!(tail, cut.question_ids);
    assert_eq!(aware.split(Split::QueryAgnostic).1, aware.question_ids);
    for yaml in [
        "method: snapkv\nwindow: 8\nkernel: 5\npooling: avg",
        "method: h2o",
        "method: expected_attention",
        "method: streaming_llm",
        "method: decoding\ninterval: 2\ntarget_size: 40",
    ] {
        let a = run(&engine, &aware, Split::QueryAware, yaml, 0.5);
        let b = run(&engine, &cut, Split::QueryAgnostic, yaml, 0.5);
        assert_eq!(a.tokens, b.tokens, "{yaml}: tokens");
        assert_eq!(a.stored.kept_entries, b.stored.kept_entries, "{yaml}: kept");
        assert_eq!(a.stored.kv_bytes, b.stored.kv_bytes, "{yaml}: bytes");
        assert_eq!(a.first_logprobs, b.first_logprobs, "{yaml}: first token");
    }
}

#[test]
fn a_query_aware_first_token_is_computed_on_the_compressed_cache() {
    let loaded = model();
    let engine = Engine::new(&loaded, &Device::Cpu, 0);
    let p = prompt(&engine, CONTEXT, QUESTION);
    let full = run(&engine, &p, Split::QueryAgnostic, "method: full", 0.0);
    let aware = run(
        &engine,
        &p,
        Split::QueryAware,
        "method: streaming_llm",
        0.75,
    );
    let kl = super::kl_divergence(&full.first_logprobs, &aware.first_logprobs);
    // Before: the whole question was forwarded on the full cache and compression came after, so
    // the first token's distribution was the reference's exactly (KL 0).
    assert!(kl > 1e-3, "first-token KL {kl}");
    // The uncompressed query-aware run gives the reference's first token.
    let full_aware = run(&engine, &p, Split::QueryAware, "method: full", 0.0);
    assert_eq!(full_aware.tokens.first(), full.tokens.first());
}

/// A failed record's reason drops the backtrace a CUDA error carries under `RUST_BACKTRACE`
/// (as seen on an H200: `scripts/device/oom.sh`), keeping every line of the reason itself.
#[test]
fn failure_reasons_drop_backtraces() {
    let text = "attention in layer 0: DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")\n   0: candle_core::error::Error::bt\n   1: <core::result::Result<O,E> as candle_core::cuda_backend::error::WrapErr<O>>::w\n             at /root/.cargo/registry/src/candle-core/src/cuda_backend/error.rs:12:5\n  19: _start\n";
    assert_eq!(
        super::failure::without_backtrace(text),
        "attention in layer 0: DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")"
    );
    let plain = "sample `x`: out of memory (injected)\ncaused by: two lines";
    assert_eq!(super::failure::without_backtrace(plain), plain);
}

//! Batched decoding across configurations gives the records of one-by-one decoding, on the real
//! SmolLM2 model (CPU): the same greedy tokens, first-token distribution and stored cache for
//! every method, whatever its storage (evicted, ragged per head, quantized, low rank, merged
//! across layers) or decode hook (h2o's decode variant, `decoding`).

use candle_core::Device;
use kvbench_methods::{Budget, Method, MethodConfig, ObservationNeeds};

use super::generate::{start, Generation, Request};
use super::lockstep::generate_all;
use super::prefill::{Engine, Split, TurnPrompt};
use crate::loader::{load, LoadedModel};
use crate::model::{argmax, Logits};

fn model() -> LoadedModel {
    let files = crate::fetch::ModelFiles::Gguf {
        path: crate::testing::smollm2_gguf(),
    };
    load(&files, &Device::Cpu).unwrap()
}

const CONTEXT: &str =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back \
    again. The special magic number for Anna is 7341. The grass is green. The sky is blue. The sun \
    is yellow. Here we go. There and back again. The grass is green. The sky is blue. Remember \
    the number for Anna, and the colour of the sky, and where we go.";
const QUESTION: &str =
    "\nWhat is the special magic number for Anna?\nAnswer: The special magic number for Anna is";

/// Methods of every storage form and decode hook, with budgets; `max_new_tokens` differs per
/// run so that runs leave the batch at different steps.
const RUNS: &[(&str, f64, usize)] = &[
    ("method: full", 0.0, 12),
    ("method: streaming_llm", 0.5, 12),
    ("method: snapkv", 0.5, 5),
    ("method: h2o\ndecode: true", 0.5, 12),
    ("method: decoding\ninterval: 2\ntarget_size: 40", 0.5, 12),
    ("method: kivi\nbits: 2", 0.5, 9),
    ("method: quant\nbits: 4", 0.5, 12),
    ("method: lowrank\nrank: 16", 0.5, 12),
    ("method: adakv", 0.5, 12),
    ("method: pyramidkv", 0.5, 3),
    ("method: minicache", 0.5, 12),
    ("method: kvmerger", 0.5, 12),
    ("method: think", 0.5, 12),
    ("method: expected_attention", 0.5, 12),
    ("method: tova", 0.75, 1),
];

fn methods() -> Vec<(Box<dyn Method>, f64, usize)> {
    RUNS.iter()
        .map(|(yaml, ratio, max_new)| {
            let m = serde_yaml_ng::from_str::<MethodConfig>(yaml)
                .unwrap_or_else(|e| panic!("{yaml}: {e}"))
                .build();
            (m, *ratio, *max_new)
        })
        .collect()
}

fn requests(methods: &[(Box<dyn Method>, f64, usize)]) -> Vec<Request<'_>> {
    methods
        .iter()
        .map(|(m, ratio, max_new)| Request {
            method: m.as_ref(),
            budget: Budget::CompressionRatio(*ratio),
            max_new_tokens: *max_new,
        })
        .collect()
}

fn prompt(engine: &Engine) -> TurnPrompt {
    let tok = &engine.loaded.tokenizer;
    TurnPrompt {
        context_ids: tok.encode(CONTEXT).unwrap(),
        question_ids: tok.encode_raw(QUESTION).unwrap(),
        truncated_tokens: 0,
        max_new_tokens: 12,
    }
}

fn outcomes(gs: Vec<anyhow::Result<Generation>>) -> Vec<Generation> {
    gs.into_iter().map(|g| g.unwrap()).collect()
}

#[test]
fn batched_decoding_gives_the_records_of_one_by_one_decoding() {
    let loaded = model();
    let engine = Engine::new(&loaded, &Device::Cpu, 512);
    let methods = methods();
    let needs = methods
        .iter()
        .fold(ObservationNeeds::default(), |a, (m, _, _)| {
            a.union(m.needs())
        });
    let p = prompt(&engine);
    for split in [Split::QueryAgnostic, Split::QueryAware] {
        let prefilled = engine.prefill(&p, split, needs).unwrap();
        let reqs = requests(&methods);
        let alone = outcomes(generate_all(&engine, &prefilled, &reqs, false).unwrap());
        let batched = outcomes(generate_all(&engine, &prefilled, &reqs, true).unwrap());
        let mut lengths = std::collections::BTreeSet::new();
        for ((yaml, _, max_new), (a, b)) in RUNS.iter().zip(alone.iter().zip(&batched)) {
            let what = format!("{split:?} {yaml:?}");
            assert_eq!(a.tokens, b.tokens, "{what}: tokens");
            assert_eq!(a.first_logprobs, b.first_logprobs, "{what}: first token");
            assert_eq!(a.stored.kv_bytes, b.stored.kv_bytes, "{what}: bytes");
            assert_eq!(a.stored.kept_entries, b.stored.kept_entries, "{what}: kept");
            assert_eq!(a.stored.kv_storage, b.stored.kv_storage, "{what}: storage");
            assert!(
                a.tokens.len() <= *max_new,
                "{what}: {} tokens",
                a.tokens.len()
            );
            lengths.insert(b.tokens.len());
        }
        // Runs left the batch at different steps, so the batch really shrank on the way.
        assert!(lengths.len() >= 3, "{split:?}: token counts {lengths:?}");
        // Something was generated and the compressed runs differ from the reference somewhere.
        assert!(batched.iter().any(|g| g.tokens != batched[0].tokens));
    }
}

/// One batched step over differently compressed caches against each cache's own step: the
/// logits of a row are those of the sequence alone up to the last bits of the batched matmuls.
#[test]
fn a_batched_step_matches_each_sequence_alone() {
    let loaded = model();
    let engine = Engine::new(&loaded, &Device::Cpu, 512);
    let methods = methods();
    let needs = methods
        .iter()
        .fold(ObservationNeeds::default(), |a, (m, _, _)| {
            a.union(m.needs())
        });
    let p = prompt(&engine);
    let prefilled = engine.prefill(&p, Split::QueryAgnostic, needs).unwrap();
    let reqs = requests(&methods);
    let started: Vec<_> = reqs
        .iter()
        .map(|r| start(&engine, &prefilled, r).unwrap())
        .collect();
    // Each sequence alone, on a fork of its cache.
    let mut alone = Vec::new();
    for s in &started {
        let mut cache = s.cache.fork();
        let f = engine
            .forward(&[s.next()], &mut cache, Logits::Last, s.decode_needs())
            .unwrap();
        alone.push(f.logits.unwrap().flatten_all().unwrap());
    }
    let mut caches: Vec<_> = started.iter().map(|s| s.cache.fork()).collect();
    let mut refs: Vec<_> = caches.iter_mut().collect();
    let tokens: Vec<u32> = started.iter().map(|s| s.next()).collect();
    let step_needs: Vec<_> = started.iter().map(|s| s.decode_needs()).collect();
    let out = loaded
        .model
        .decode_batch(&tokens, &mut refs, &step_needs, 512)
        .unwrap();
    let mut max_diff = 0f32;
    for (row, a) in alone.iter().enumerate() {
        let b = out.logits.get(row).unwrap();
        let diff: f32 = (a - &b)
            .unwrap()
            .abs()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap();
        max_diff = max_diff.max(diff);
        assert_eq!(argmax(a).unwrap(), argmax(&b).unwrap(), "{:?}", RUNS[row].0);
        // The decode hooks got their own row's query.
        if step_needs[row].window_queries > 0 {
            let q = out.observations[row].layers[0].window_queries.as_ref();
            assert_eq!(q.unwrap().dims()[1], 1, "{:?}", RUNS[row].0);
        }
    }
    eprintln!("max |logit difference| batched vs alone: {max_diff:e}");
    assert!(max_diff < 1e-3, "max logit difference {max_diff}");
    // Every cache advanced by exactly one position.
    for (c, s) in caches.iter().zip(&started) {
        assert_eq!(c.next_position(), s.cache.next_position() + 1);
    }
}

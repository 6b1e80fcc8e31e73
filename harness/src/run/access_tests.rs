//! The reused paths on the real SmolLM2 model (CPU): the greedy output after a loaded cache, and
//! after a Cake-built one wherever compute and load meet, is the output after a computed cache.

use candle_core::Device;
use kvbench_methods::{Budget, KvCache, MethodConfig, ObservationNeeds};

use super::cake;
use super::generate::{fork_and_compress, generate, generate_on, Request};
use super::prefill::{Engine, Split, TurnPrompt};
use crate::kv_store::ranges::RangeReader;
use crate::kv_store::source::Pacer;
use crate::kv_store::upload::Uploader;
use crate::kv_store::{KvStore, Location, ModelShape, StoreKey};
use crate::loader::{load, LoadedModel};
use crate::model::Logits;

fn model() -> LoadedModel {
    let files = crate::fetch::ModelFiles::Gguf {
        path: crate::testing::smollm2_gguf(),
    };
    load(&files, &Device::Cpu).unwrap()
}

const CONTEXT: &str =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back \
    again. The special magic number for Anna is 7341. The grass is green. The sky is blue. The sun \
    is yellow. Here we go. There and back again. The grass is green. The sky is blue.";
const QUESTION: &str =
    "\nWhat is the special magic number for Anna?\nAnswer: The special magic number for Anna is";

fn prompt(engine: &Engine) -> TurnPrompt {
    let tok = &engine.loaded.tokenizer;
    TurnPrompt {
        context_ids: tok.encode(CONTEXT).unwrap(),
        question_ids: tok.encode_raw(QUESTION).unwrap(),
        truncated_tokens: 0,
        max_new_tokens: 8,
    }
}

fn store_for(engine: &Engine) -> KvStore {
    let shape = ModelShape::of("smollm2", &engine.loaded.model.new_cache());
    KvStore::new(Location::Memory, shape, Some(7))
}

/// Cake's front, forced: the cache after computing the first `split` context tokens.
fn computed_front(engine: &Engine, ids: &[u32], split: usize) -> KvCache {
    let mut cache = engine.loaded.model.new_cache();
    if split > 0 {
        engine
            .forward(
                &ids[..split],
                &mut cache,
                Logits::None,
                ObservationNeeds::default(),
            )
            .unwrap();
    }
    cache
}

/// A range reader over `key`'s stored cache, its pacer and a CPU uploader.
fn reader_of(store: &KvStore, key: &StoreKey) -> (RangeReader, Pacer, Uploader) {
    let header = store.header(key).unwrap().unwrap();
    let mut pacer = Pacer::new(None);
    let sources = store.sources(key, &header).unwrap();
    let reader = RangeReader::open(&header, sources, &mut pacer).unwrap();
    (reader, pacer, Uploader::new(&Device::Cpu).unwrap())
}

#[test]
fn a_loaded_cache_gives_the_computed_output_for_full_evicted_and_quantized_storage() {
    let loaded = model();
    let engine = Engine::new(&loaded, &Device::Cpu, 0);
    let p = prompt(&engine);
    let mut store = store_for(&engine);
    for yaml in [
        "method: full",
        "method: snapkv\nwindow: 8\nkernel: 5\npooling: avg",
        "method: kivi",
    ] {
        let method = serde_yaml_ng::from_str::<MethodConfig>(yaml)
            .unwrap()
            .build();
        let prefilled = engine
            .prefill(&p, Split::QueryAgnostic, method.needs())
            .unwrap();
        let request = Request {
            method: method.as_ref(),
            budget: Budget::CompressionRatio(0.5),
            max_new_tokens: p.max_new_tokens,
        };
        let computed = generate(&engine, &prefilled, &request).unwrap();
        let (cache, _, _) = fork_and_compress(&engine, &prefilled, &request).unwrap();
        let key = StoreKey {
            context: p.context_ids.clone(),
            method: yaml.into(),
        };
        store.save(&key, &cache).unwrap();
        let back = store.load(&key, &Device::Cpu, None).unwrap().unwrap();
        let reloaded = generate_on(
            &engine,
            back.cache,
            method.session(),
            &prefilled.tail,
            &request,
            0.0,
        )
        .unwrap();
        assert_eq!(reloaded.tokens, computed.tokens, "{yaml}: tokens");
        assert_eq!(
            reloaded.first_logprobs, computed.first_logprobs,
            "{yaml}: logits"
        );
        assert_eq!(
            reloaded.stored.kv_bytes, computed.stored.kv_bytes,
            "{yaml}: bytes"
        );
    }
}

#[test]
fn cake_gives_the_computed_output_wherever_compute_and_load_meet() {
    let loaded = model();
    let engine = Engine::new(&loaded, &Device::Cpu, 0);
    let p = prompt(&engine);
    let full = kvbench_methods::full::Full;
    let prefilled = engine
        .prefill(&p, Split::QueryAgnostic, ObservationNeeds::default())
        .unwrap();
    let request = Request::reference(p.max_new_tokens);
    let computed = generate(&engine, &prefilled, &request).unwrap();
    let mut store = store_for(&engine);
    let key = StoreKey {
        context: p.context_ids.clone(),
        method: "full".into(),
    };
    store.save(&key, &prefilled.cache).unwrap();
    let n = p.context_ids.len();
    let chunk = 16;
    let run = |built: cake::CakeBuilt| {
        use kvbench_methods::Method;
        generate_on(
            &engine,
            built.cache,
            full.session(),
            &prefilled.tail,
            &request,
            0.0,
        )
        .unwrap()
    };
    // Uncapped reads outrun the compute: mostly loaded. A tiny cap: everything computed.
    for (gbps, all_computed) in [(None, false), (Some(1e-7), true)] {
        let built = cake::build(&engine, &store, &key, &p.context_ids, chunk, gbps).unwrap();
        let split = built.split;
        assert!(split.is_multiple_of(chunk) || split == n, "split {split}");
        if all_computed {
            assert_eq!(split, n);
        } else {
            assert!(built.bytes_read > 0);
        }
        let g = run(built);
        assert_eq!(g.tokens, computed.tokens, "gbps {gbps:?}, split {split}");
    }
    // Every meeting point, forced: compute the front up to `split`, load the rest.
    for split in [0, chunk, 3 * chunk, n] {
        let mut cache = computed_front(&engine, &p.context_ids, split);
        let (reader, mut pacer, mut uploader) = reader_of(&store, &key);
        let chunks = if split < n {
            vec![reader
                .read_chunk(split, n, &mut pacer, &mut uploader)
                .unwrap()]
        } else {
            Vec::new()
        };
        cake::meet(&mut cache, chunks, &reader.layout(), split, n).unwrap();
        assert_eq!(cache.next_position(), n);
        assert_eq!(cache.entries(), prefilled.cache.entries());
        let g = run(cake::CakeBuilt {
            cache,
            bytes_read: 0,
            split,
        });
        assert_eq!(g.tokens, computed.tokens, "split {split}");
    }
}

#[test]
fn cake_on_an_evicted_cache_rebuilds_the_stored_entries_and_output() {
    let loaded = model();
    let engine = Engine::new(&loaded, &Device::Cpu, 0);
    let p = prompt(&engine);
    let method = serde_yaml_ng::from_str::<MethodConfig>("method: snapkv\nwindow: 8")
        .unwrap()
        .build();
    let prefilled = engine
        .prefill(&p, Split::QueryAgnostic, method.needs())
        .unwrap();
    let request = Request {
        method: method.as_ref(),
        budget: Budget::CompressionRatio(0.5),
        max_new_tokens: p.max_new_tokens,
    };
    let (evicted, _, _) = fork_and_compress(&engine, &prefilled, &request).unwrap();
    let mut store = store_for(&engine);
    let key = StoreKey {
        context: p.context_ids.clone(),
        method: "snapkv".into(),
    };
    store.save(&key, &evicted).unwrap();
    let n = p.context_ids.len();
    let split = 32;
    let mut cache = computed_front(&engine, &p.context_ids, split);
    let (reader, mut pacer, mut uploader) = reader_of(&store, &key);
    let chunks = vec![
        reader.read_chunk(64, n, &mut pacer, &mut uploader).unwrap(),
        reader
            .read_chunk(split, 64, &mut pacer, &mut uploader)
            .unwrap(),
    ];
    cake::meet(&mut cache, chunks, &reader.layout(), split, n).unwrap();
    // Entry for entry the stored cache: the computed front is cut to the kept positions below
    // the split, and its keys and values are those of the original prefill.
    let mut cut = 0;
    for l in 0..cache.n_layers() {
        let got = cache.layer(l).positions();
        let kept = evicted.layer(l).positions();
        assert_eq!(got, kept, "layer {l}");
        cut += kept.iter().filter(|k| k.len() < n).count();
        let (gk, gv) = heads_of(cache.layer(l));
        let (wk, wv) = heads_of(evicted.layer(l));
        for (a, b) in gk.iter().zip(&wk).chain(gv.iter().zip(&wv)) {
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-4, "layer {l}");
        }
    }
    assert!(cut > 0, "snapkv at 0.5 evicts entries");
    assert_eq!(cache.next_position(), n);
    let outputs = [cache, evicted].map(|c| {
        generate_on(&engine, c, method.session(), &prefilled.tail, &request, 0.0)
            .unwrap()
            .tokens
    });
    assert!(!outputs[0].is_empty());
    assert_eq!(outputs[0], outputs[1], "cake vs computed");
}

#[test]
fn cake_on_a_kivi_cache_rebuilds_its_quantized_storage_and_output() {
    let loaded = model();
    let engine = Engine::new(&loaded, &Device::Cpu, 0);
    let p = prompt(&engine);
    // Small groups and residual, so that this short context has quantized keys and values.
    let yaml = "method: kivi\ngroup: 8\nresidual: 16";
    let method = serde_yaml_ng::from_str::<MethodConfig>(yaml)
        .unwrap()
        .build();
    let prefilled = engine
        .prefill(&p, Split::QueryAgnostic, method.needs())
        .unwrap();
    let request = Request {
        method: method.as_ref(),
        budget: Budget::CompressionRatio(0.5),
        max_new_tokens: p.max_new_tokens,
    };
    let (stored, _, _) = fork_and_compress(&engine, &prefilled, &request).unwrap();
    let mut store = store_for(&engine);
    let key = StoreKey {
        context: p.context_ids.clone(),
        method: yaml.into(),
    };
    store.save(&key, &stored).unwrap();
    let n = p.context_ids.len();
    let lens = |c: &kvbench_methods::KvCache, l: usize| {
        let s = &c.layer(l).groups()[0].storage;
        [&s.k, &s.v].map(|part| match part {
            kvbench_methods::Stored::Quantized(q) => (q.quantized_len(), q.residual_len()),
            other => panic!("layer {l} stored as {}", other.kind()),
        })
    };
    let [(nqk, _), (nqv, _)] = lens(&stored, 0);
    assert!(
        nqk >= 48 && nqv >= 48 && nqk < n,
        "context of {n}: {nqk} / {nqv} quantized"
    );
    let greedy = |cache: KvCache| {
        generate_on(
            &engine,
            cache,
            method.session(),
            &prefilled.tail,
            &request,
            0.0,
        )
        .unwrap()
        .tokens
    };
    let computed = greedy(stored.clone());
    // Meeting points: nothing computed, inside the quantized keys, at their end (inside the
    // values' residual), everything computed. The loaded back overlaps the front by a group.
    for split in [0, 16, 32, nqk, n] {
        let mut cache = computed_front(&engine, &p.context_ids, split);
        let (reader, mut pacer, mut uploader) = reader_of(&store, &key);
        let from = split.saturating_sub(8).min(nqk);
        let mid = (from + n) / 2 / 8 * 8;
        let chunks = [(mid, n), (from, mid)]
            .into_iter()
            .filter(|(a, b)| a < b && split < n)
            .map(|(a, b)| reader.read_chunk(a, b, &mut pacer, &mut uploader).unwrap())
            .collect();
        cake::meet(&mut cache, chunks, &reader.layout(), split, n).unwrap();
        assert_eq!(cache.next_position(), n);
        assert_eq!(cache.bytes(), stored.bytes(), "split {split}");
        for l in 0..cache.n_layers() {
            assert_eq!(
                lens(&cache, l),
                lens(&stored, l),
                "layer {l}, split {split}"
            );
            let (gk, gv) = cache.layer(l).groups()[0].storage.keys_values().unwrap();
            let (wk, wv) = stored.layer(l).groups()[0].storage.keys_values().unwrap();
            for (a, b) in [(gk, wk), (gv, wv)] {
                let diff = (a - b).unwrap().abs().unwrap().mean_all().unwrap();
                assert!(
                    diff.to_scalar::<f32>().unwrap() < 1e-3,
                    "layer {l}, split {split}"
                );
            }
        }
        assert_eq!(greedy(cache), computed, "split {split}");
    }
    // End to end, racing: chunks of two groups; a chunk that cuts a key group is refused.
    let built = cake::build(&engine, &store, &key, &p.context_ids, 16, None).unwrap();
    let split = built.split;
    assert_eq!(greedy(built.cache), computed, "cake::build, split {split}");
    let e = cake::build(&engine, &store, &key, &p.context_ids, 12, None)
        .err()
        .unwrap();
    assert!(e.downcast_ref::<cake::Refused>().is_some(), "{e:#}");
    assert!(
        format!("{e:#}").contains("multiple of the quantization group (8)"),
        "{e:#}"
    );
}

/// A layer's keys and values per KV head, `[len, d]` each.
fn heads_of(
    layer: &kvbench_methods::LayerKv,
) -> (Vec<candle_core::Tensor>, Vec<candle_core::Tensor>) {
    let (mut ks, mut vs) = (Vec::new(), Vec::new());
    for g in layer.groups() {
        let (k, v) = g.storage.keys_values().unwrap();
        for h in 0..g.n_heads() {
            ks.push(k.get(h).unwrap());
            vs.push(v.get(h).unwrap());
        }
    }
    (ks, vs)
}

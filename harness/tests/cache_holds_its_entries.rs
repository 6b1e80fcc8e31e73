//! The cache a forward leaves holds its entries and nothing else: each layer's keys and values
//! own buffers of exactly their size, not views into a larger projection buffer. (A view keeps
//! the whole q/k/v projection alive per layer, about 2.4x the KV bytes at 8B shapes, which the
//! peak device memory then shows although `kv_bytes` does not.)

use candle_core::{Device, Storage, Tensor};
use kvbench::fetch::{resolve, FetchOptions, ModelSpec};
use kvbench::model::ForwardOptions;
use kvbench_methods::KvCache;

/// Elements in the buffer under `t` (CPU, f32).
fn buffer_len(t: &Tensor) -> usize {
    let (storage, _) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => s.as_slice::<f32>().unwrap().len(),
        _ => panic!("CPU storage expected"),
    }
}

fn check(cache: &KvCache, len: usize, what: &str) {
    for l in 0..cache.n_layers() {
        let (k, v) = cache.layer(l).dense().unwrap();
        for (name, t) in [("keys", &k), ("values", &v)] {
            assert_eq!(t.dim(1).unwrap(), len, "{what}: layer {l} {name}");
            assert_eq!(
                buffer_len(t),
                t.elem_count(),
                "{what}: layer {l} {name} {:?} sit in a larger buffer",
                t.shape()
            );
        }
    }
}

#[test]
fn every_layer_owns_exactly_its_keys_and_values() {
    for family in ["llama31", "qwen3"] {
        let dir = kvbench::testing::shared_data()
            .join("reference/arch")
            .join(family);
        let files = resolve(&ModelSpec::Local(dir), &FetchOptions::from_env()).unwrap();
        let model = kvbench::loader::load(&files, &Device::Cpu).unwrap().model;
        let mut cache = model.new_cache();
        let tokens: Vec<u32> = (0..48).map(|i| 5 + i * 3).collect();
        model
            .forward(&tokens, &mut cache, &ForwardOptions::default())
            .unwrap();
        check(&cache, 48, &format!("{family} after the prefill"));
        // A decode step appends: new buffers, exact again.
        model
            .forward(&[9], &mut cache, &ForwardOptions::default())
            .unwrap();
        check(&cache, 49, &format!("{family} after a decode step"));
    }
}

//! Every storage form saved and loaded back: the same attention output bit for bit, the same
//! bytes, positions and position to continue from; bad stores refused with the reason.

use candle_core::{DType, Device, Tensor, D};
use kvbench_methods::storage::{
    ChannelPruned, HeadShared, LowRank, Merged, QuantAxis, QuantScheme, Quantized, ResidualRule,
};
use kvbench_methods::{HeadGroup, KvCache, Storage, Stored};

use super::source::Pacer;
use super::*;

const LAYERS: usize = 4;
const HEADS: usize = 2;
const DIM: usize = 8;
const LEN: usize = 40;

fn dense_cache() -> KvCache {
    let dev = Device::Cpu;
    let mut cache = KvCache::new(LAYERS, HEADS, DIM, DType::F32, &dev);
    let positions: Vec<u32> = (0..LEN as u32).collect();
    for l in 0..LAYERS {
        let k = Tensor::randn(0f32, 1., (HEADS, LEN, DIM), &dev).unwrap();
        let v = Tensor::randn(0f32, 1., (HEADS, LEN, DIM), &dev).unwrap();
        cache.append(l, &k, &v, &positions).unwrap();
    }
    cache.advance(LEN);
    cache
}

fn model() -> ModelShape {
    ModelShape {
        id: "test-model".into(),
        n_layers: LAYERS,
        n_kv_heads: HEADS,
        head_dim: DIM,
        dtype: "f32".into(),
    }
}

/// Attention of a fixed query over every layer and stored head, flattened: what a loaded cache
/// must reproduce bit for bit.
fn attention(cache: &KvCache) -> Vec<u32> {
    let dev = Device::Cpu;
    let q = Tensor::ones((1, DIM), DType::F32, &dev).unwrap();
    let mut out = Vec::new();
    for l in 0..cache.n_layers() {
        for g in cache.attention_layer(l).groups() {
            let (k, v) = g.storage.keys_values().unwrap();
            for h in 0..g.n_heads() {
                let (k, v) = (k.get(h).unwrap(), v.get(h).unwrap());
                let s = q.matmul(&k.t().unwrap()).unwrap();
                let p = candle_nn::ops::softmax(&s, D::Minus1).unwrap();
                let o: Vec<f32> = p
                    .matmul(&v)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                out.extend(o.iter().map(|x| x.to_bits()));
            }
        }
    }
    out
}

fn assert_round_trip(cache: &KvCache, location: Location, per_file: Option<usize>) {
    let mut store = KvStore::new(location, model(), per_file);
    let key = StoreKey {
        context: (0..LEN as u32).collect(),
        method: "m".into(),
    };
    let written = store.save(&key, cache).unwrap();
    let loaded = store.load(&key, &Device::Cpu, None).unwrap().unwrap();
    assert_eq!(loaded.bytes_read, written);
    let back = loaded.cache;
    assert_eq!(attention(&back), attention(cache));
    assert_eq!(back.bytes(), cache.bytes());
    assert_eq!(back.entries(), cache.entries());
    assert_eq!(back.next_position(), cache.next_position());
    assert_eq!(back.storage_report(), cache.storage_report());
    for l in 0..LAYERS {
        assert_eq!(back.layer(l).positions(), cache.layer(l).positions());
        assert_eq!(back.shared_source(l), cache.shared_source(l));
        assert_eq!(back.window(l), cache.window(l));
    }
}

/// Each layer's single group re-encoded by `f`.
fn restored(f: impl Fn(&Tensor) -> Stored) -> KvCache {
    let mut cache = dense_cache();
    for l in 0..LAYERS {
        cache
            .layer_mut(l)
            .restore(|g| {
                let (k, v) = g.storage.keys_values()?;
                Ok(Storage { k: f(&k), v: f(&v) })
            })
            .unwrap();
    }
    cache
}

fn tmp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("kvbench-kv-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn dense_cache_round_trips_in_memory_and_on_disk() {
    let cache = dense_cache();
    assert_round_trip(&cache, Location::Memory, None);
    assert_round_trip(&cache, Location::Directory(tmp_dir("dense")), Some(3));
}

#[test]
fn evicted_ragged_heads_and_sliding_windows_round_trip() {
    let mut cache = dense_cache().with_windows(vec![None, Some(16), None, None]);
    cache.trim_to_window(1).unwrap();
    // Head 0 keeps every third entry, head 1 the last ten: ragged, one group per head.
    let keep = vec![
        (0..LEN as u32).step_by(3).collect(),
        (30..LEN as u32).collect(),
    ];
    cache.layer_mut(0).retain(&keep).unwrap();
    assert_eq!(cache.layer(0).groups().len(), 2);
    assert_round_trip(&cache, Location::Directory(tmp_dir("ragged")), None);
}

#[test]
fn quantized_codes_and_scales_round_trip() {
    for (axis, rule, symmetric) in [
        (QuantAxis::PerChannel, ResidualRule::Blocks, false),
        (QuantAxis::PerToken, ResidualRule::Sliding, true),
    ] {
        let scheme = QuantScheme {
            bits: 2,
            group: 8,
            axis,
            symmetric,
            residual: 16,
            rule,
        };
        let cache = restored(|x| Stored::Quantized(Quantized::encode(x, scheme).unwrap()));
        assert!(cache.bytes() < dense_cache().bytes());
        assert_round_trip(&cache, Location::Memory, None);
    }
}

#[test]
fn low_rank_pruned_and_head_shared_forms_round_trip() {
    let dev = Device::Cpu;
    let basis = Tensor::eye(DIM, DType::F32, &dev)
        .unwrap()
        .narrow(1, 0, 3)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
        .repeat((HEADS, 1, 1))
        .unwrap();
    let low = restored(|x| Stored::LowRank(LowRank::encode(x, basis.clone()).unwrap()));
    assert_round_trip(&low, Location::Memory, None);
    let pruned = restored(|x| {
        Stored::ChannelPruned(ChannelPruned::encode(x, &[vec![0, 2, 5], vec![1, 3, 7]]).unwrap())
    });
    assert_round_trip(&pruned, Location::Memory, None);
    let shared = restored(|x| Stored::HeadShared(HeadShared::encode(x, vec![0, 0]).unwrap()));
    assert_round_trip(&shared, Location::Memory, None);
}

#[test]
fn merged_layers_keep_one_shared_direction_and_shared_layers_stay_shared() {
    let mut cache = dense_cache();
    let (a, _) = cache.layer(1).dense().unwrap();
    let (b, _) = cache.layer(2).dense().unwrap();
    let norm = |x: &Tensor| {
        x.broadcast_div(&x.sqr().unwrap().sum_keepdim(2).unwrap().sqrt().unwrap())
            .unwrap()
    };
    let direction = norm(&(&a + &b).unwrap());
    let (ma, mb) = Merged::pair(&a, &b, &direction, &[3, 50]).unwrap();
    for (l, m) in [(1, ma), (2, mb)] {
        let positions = cache.layer(l).positions();
        let v = cache.layer(l).dense().unwrap().1;
        let group = HeadGroup {
            first_head: 0,
            storage: Storage {
                k: Stored::Merged(m),
                v: Stored::Dense(v),
            },
            positions,
        };
        cache.layer_mut(l).set_groups(vec![group]).unwrap();
    }
    cache.share_layer(3, 0).unwrap();
    // Layers 1 and 2 in different files: the shared direction is written once, read back once.
    assert_round_trip(&cache, Location::Directory(tmp_dir("merged")), Some(2));
}

fn saved_on_disk(name: &str) -> (KvStore, StoreKey, std::path::PathBuf) {
    let dir = tmp_dir(name);
    let mut store = KvStore::new(Location::Directory(dir.clone()), model(), None);
    let key = StoreKey {
        context: vec![1, 2, 3],
        method: "full".into(),
    };
    store.save(&key, &dense_cache()).unwrap();
    let entry = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    (store, key, entry)
}

#[test]
fn a_truncated_or_corrupt_file_is_an_error_naming_it() {
    let (store, key, entry) = saved_on_disk("truncated");
    let file = entry.join("layers-0-3.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 10]).unwrap();
    let e = format!("{:#}", store.load(&key, &Device::Cpu, None).err().unwrap());
    assert!(
        e.contains("layers-0-3.safetensors") && e.contains("truncated"),
        "{e}"
    );
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    std::fs::write(&file, &flipped).unwrap();
    let e = format!("{:#}", store.load(&key, &Device::Cpu, None).err().unwrap());
    assert!(
        e.contains("layers-0-3.safetensors") && e.contains("corrupt"),
        "{e}"
    );
}

#[test]
fn another_model_or_format_version_is_refused_with_the_reason() {
    let (_, key, entry) = saved_on_disk("refused");
    let dir = entry.parent().unwrap().to_path_buf();
    let mut other = model();
    other.id = "other-model".into();
    let store = KvStore::new(Location::Directory(dir.clone()), other, None);
    // Another model never even finds the entry (the key includes the model) ...
    assert!(store.header(&key).unwrap().is_none());
    // ... and a header copied under its key names both models.
    let mut header = read_header(&entry.join("header.json")).unwrap();
    header.model.head_dim = 16;
    let e = format!(
        "{:#}",
        header.check_compatible(&model(), "store").unwrap_err()
    );
    assert!(e.contains("test-model") && e.contains("x 16"), "{e}");
    let path = entry.join("header.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"version\": 1", "\"version\": 99")).unwrap();
    let store = KvStore::new(Location::Directory(dir), model(), None);
    let e = format!("{:#}", store.header(&key).unwrap_err());
    assert!(e.contains("version 99") && e.contains("header.json"), "{e}");
}

#[test]
fn position_ranges_read_exactly_the_stored_entries() {
    let mut cache = dense_cache();
    let keep = vec![
        (0..LEN as u32).step_by(2).collect(),
        (10..LEN as u32).collect(),
    ];
    cache.layer_mut(2).retain(&keep).unwrap();
    let mut store = KvStore::new(Location::Memory, model(), None);
    let key = StoreKey {
        context: vec![9; LEN],
        method: "m".into(),
    };
    store.save(&key, &cache).unwrap();
    let header = store.header(&key).unwrap().unwrap();
    let mut pacer = Pacer::new(None);
    let reader =
        ranges::RangeReader::open(&header, store.sources(&key, &header).unwrap(), &mut pacer)
            .unwrap();
    let mut uploader = super::upload::Uploader::new(&Device::Cpu).unwrap();
    let chunk = reader
        .read_chunk(20, 32, &mut pacer, &mut uploader)
        .unwrap();
    let piece = &chunk.heads[2][0];
    assert_eq!(piece.positions, (20..32).step_by(2).collect::<Vec<u32>>());
    let (k, _) = cache.layer(2).groups()[0].storage.keys_values().unwrap();
    let want: Vec<Vec<f32>> = k
        .get(0)
        .unwrap()
        .narrow(0, 10, 6)
        .unwrap()
        .to_vec2()
        .unwrap();
    assert_eq!(piece.k.to_vec2::<f32>().unwrap(), want);
    // Quantized storage of whole layers is cut by rows: codes and scales of entries 8..24.
    let scheme = QuantScheme {
        bits: 4,
        group: 8,
        axis: QuantAxis::PerToken,
        symmetric: false,
        residual: 0,
        rule: ResidualRule::Accumulate,
    };
    let quantize = |x: &Tensor| Stored::Quantized(Quantized::encode(x, scheme).unwrap());
    let q = restored(quantize);
    store.save(&key, &q).unwrap();
    let header = store.header(&key).unwrap().unwrap();
    let reader =
        ranges::RangeReader::open(&header, store.sources(&key, &header).unwrap(), &mut pacer)
            .unwrap();
    let chunk = reader.read_chunk(8, 24, &mut pacer, &mut uploader).unwrap();
    let piece = chunk.quantized[1].as_ref().unwrap();
    let stored_k = q.layer(1).groups()[0].storage.k.tensors();
    let rows = |t: &Tensor| t.narrow(1, 8, 16).unwrap().flatten_all().unwrap();
    let got = piece.k.codes.as_ref().unwrap().flatten_all().unwrap();
    assert_eq!(
        got.to_vec1::<u8>().unwrap(),
        rows(stored_k[0]).to_vec1::<u8>().unwrap()
    );
    let got = piece.k.scales.as_ref().unwrap().flatten_all().unwrap();
    assert_eq!(
        got.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap(),
        rows(stored_k[1])
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    );
    // Quantized entries of an evicted layer are not indexed by position: refused with the reason.
    let mut evicted = dense_cache();
    evicted.layer_mut(2).retain(&keep).unwrap();
    evicted
        .layer_mut(2)
        .restore(|g| {
            let (k, v) = g.storage.keys_values()?;
            Ok(Storage {
                k: quantize(&k),
                v: quantize(&v),
            })
        })
        .unwrap();
    store.save(&key, &evicted).unwrap();
    let header = store.header(&key).unwrap().unwrap();
    let e = ranges::RangeReader::open(&header, store.sources(&key, &header).unwrap(), &mut pacer)
        .err()
        .unwrap();
    assert!(e.downcast_ref::<ranges::NotSplittable>().is_some(), "{e:#}");
    let e = format!("{e:#}");
    assert!(e.contains("quantized") && e.contains("evicted"), "{e}");
}

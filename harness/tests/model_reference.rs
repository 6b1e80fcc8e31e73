//! The decoder against Hugging Face transformers' float32 outputs for the same GGUF file
//! (`../shared/data/reference/smollm2_reference.json`).

use candle_core::{DType, Device};
use kvbench::model::{argmax, Decoder, ForwardOptions, Logits, ModelConfig, WeightSource};
use kvbench::testing::{shared_data, smollm2_gguf};
use serde_json::Value;

fn reference() -> Value {
    let path = shared_data().join("reference/smollm2_reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("reference file")).expect("json")
}

fn load_model() -> Decoder {
    let path = smollm2_gguf();
    let mut src = WeightSource::open_gguf(&path).unwrap();
    let cfg = ModelConfig::from_gguf(src.gguf_content().unwrap(), "smollm2").unwrap();
    Decoder::load(cfg, &mut src, DType::F32, &Device::Cpu).unwrap()
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn logits_and_greedy_match_transformers() {
    let model = load_model();
    let reference = reference();
    for case in reference["logits"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let ids = ids_of(&case["ids"]);
        let mut cache = model.new_cache();
        // Small chunks exercise the chunked path on the long prompt.
        let opts = ForwardOptions {
            logits: Logits::All,
            attention_chunk: 256,
            ..Default::default()
        };
        let logits = model
            .forward(&ids, &mut cache, &opts)
            .unwrap()
            .logits
            .unwrap();
        assert_eq!(logits.dims(), &[ids.len(), model.config().vocab_size]);

        // Argmax at every position.
        let am: Vec<u32> = logits.argmax(1).unwrap().to_vec1().unwrap();
        let expected = ids_of(&case["argmax_per_position"]);
        let same = am.iter().zip(&expected).filter(|(a, b)| a == b).count();
        let frac = same as f64 / expected.len() as f64;
        assert!(
            frac >= 0.99,
            "{name}: argmax agrees at {frac:.4} of positions"
        );

        // Last-position top-20 logits and logsumexp.
        let last: Vec<f32> = logits.get(ids.len() - 1).unwrap().to_vec1().unwrap();
        for pair in case["last_top20"].as_array().unwrap() {
            let id = pair[0].as_u64().unwrap() as usize;
            let want = pair[1].as_f64().unwrap();
            let got = last[id] as f64;
            let ok = (got - want).abs() <= 1e-2 || ((got - want) / want).abs() <= 1e-3;
            assert!(
                ok,
                "{name}: logit of token {id}: got {got}, reference {want}"
            );
        }
        let max = last.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let lse = max
            + last
                .iter()
                .map(|&x| (x as f64 - max).exp())
                .sum::<f64>()
                .ln();
        let want_lse = case["last_logsumexp"].as_f64().unwrap();
        assert!(
            (lse - want_lse).abs() <= 1e-2,
            "{name}: logsumexp {lse} vs {want_lse}"
        );

        // 20 greedy tokens decoded one at a time through the cache.
        let mut next = argmax(&logits.get(ids.len() - 1).unwrap()).unwrap();
        let mut greedy = vec![next];
        let step = ForwardOptions {
            logits: Logits::Last,
            ..Default::default()
        };
        while greedy.len() < 20 {
            let l = model
                .forward(&[next], &mut cache, &step)
                .unwrap()
                .logits
                .unwrap();
            next = argmax(&l).unwrap();
            greedy.push(next);
        }
        assert_eq!(
            greedy,
            ids_of(&case["greedy_20"]),
            "{name}: greedy continuation"
        );
        assert_eq!(cache.next_position(), ids.len() + 19);
    }
}

#[test]
fn prefill_in_pieces_equals_one_prefill() {
    let model = load_model();
    let ids: Vec<u32> = ids_of(&reference()["logits"][1]["ids"]);
    let opts = ForwardOptions::default();
    let mut whole = model.new_cache();
    let a = model
        .forward(&ids, &mut whole, &opts)
        .unwrap()
        .logits
        .unwrap();
    let mut pieces = model.new_cache();
    model.forward(&ids[..100], &mut pieces, &opts).unwrap();
    let b = model
        .forward(&ids[100..], &mut pieces, &opts)
        .unwrap()
        .logits
        .unwrap();
    let diff: f32 = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(diff < 1e-3, "max logit difference {diff}");
}

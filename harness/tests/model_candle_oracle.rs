//! The decoder against a second, independent implementation: candle-transformers' quantized
//! llama on the same GGUF weights. candle multiplies with the quantized weights directly (Q4_1
//! blocks, activations quantized to Q8), so agreement is close but not exact; the bounds below
//! are what that quantization noise allows, far tighter than any wiring error (a swapped RoPE
//! layout or a wrong GQA mapping changes most argmaxes).

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use kvbench::model::{Decoder, ForwardOptions, Logits, ModelConfig, WeightSource};
use kvbench::testing::{shared_data, smollm2_gguf};

#[test]
fn agrees_with_candle_quantized_llama() {
    let path = smollm2_gguf();
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(shared_data().join("reference/smollm2_reference.json")).unwrap(),
    )
    .unwrap();
    let ids: Vec<u32> = reference["logits"][1]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();

    let mut src = WeightSource::open_gguf(&path).unwrap();
    let cfg = ModelConfig::from_gguf(src.gguf_content().unwrap(), "smollm2").unwrap();
    let ours = Decoder::load(cfg, &mut src, DType::F32, &Device::Cpu).unwrap();
    let mut cache = ours.new_cache();
    let opts = ForwardOptions {
        logits: Logits::All,
        ..Default::default()
    };
    let our_logits = ours
        .forward(&ids, &mut cache, &opts)
        .unwrap()
        .logits
        .unwrap();

    let mut file = std::fs::File::open(&path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let mut theirs = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();
    // candle's quantized llama returns the last position's logits: feed it chunks of 16 tokens
    // through its own cache and compare at each chunk's last position.
    let mut positions = Vec::new();
    let mut agree = 0;
    let mut worst = 0f32;
    for start in (0..ids.len()).step_by(16) {
        let end = (start + 16).min(ids.len());
        let p = end - 1;
        positions.push(p);
        let input = Tensor::new(&ids[start..end], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let t = theirs.forward(&input, start).unwrap().squeeze(0).unwrap();
        let o = our_logits.get(p).unwrap();
        if t.argmax(0).unwrap().to_scalar::<u32>().unwrap()
            == o.argmax(0).unwrap().to_scalar::<u32>().unwrap()
        {
            agree += 1;
        }
        let diff: f32 = (t - o)
            .unwrap()
            .abs()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap();
        worst = worst.max(diff);
    }
    let frac = agree as f64 / positions.len() as f64;
    eprintln!(
        "argmax agreement {frac:.3} over {} positions, worst max-abs logit diff {worst:.3}",
        positions.len()
    );
    assert!(
        frac >= 0.9,
        "argmax agreement with candle quantized llama {frac:.3}"
    );
    assert!(worst < 2.0, "largest logit difference {worst}");
}

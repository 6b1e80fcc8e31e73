//! Gemma 3 270M from its real GGUF (the `gemma3-270m-q4_k_m` alias) against Hugging Face
//! transformers loading the same file.
//!
//! `data/gemma3_270m_transformers.json` was made on the GPU machine by
//! `scripts/device/gemma_transformers_reference.py` (transformers 5.17, eager attention, the GGUF
//! dequantized to float32): for five prompts of 10 to 2961 tokens, transformers' token ids, the
//! argmax at every position, the top-20 logits at the last position and 16 greedy tokens.
//!
//! The ids are fed as they are: transformers' GGUF tokenizer conversion for Gemma differs from
//! llama.cpp's and from kvbench's (it adds no BOS and splits `▁` from words), so it is no oracle
//! for tokenization; the forward pass on identical ids is what is compared here.

use candle_core::Device;
use kvbench::fetch::ModelFiles;
use kvbench::model::{argmax, ForwardOptions, Logits};
use serde::Deserialize;

#[derive(Deserialize)]
struct Outputs {
    argmax: Vec<u32>,
    top20_ids: Vec<u32>,
    top20_logits: Vec<f32>,
    greedy_16: Vec<u32>,
}

#[derive(Deserialize)]
struct Prompt {
    input_ids: Vec<u32>,
    f32: Outputs,
}

#[derive(Deserialize)]
struct Reference {
    prompts: Vec<Prompt>,
}

#[test]
fn gemma3_270m_gguf_agrees_with_transformers() {
    let text = include_str!("data/gemma3_270m_transformers.json");
    let reference: Reference = serde_json::from_str(text).unwrap();
    let path = kvbench::testing::gemma3_gguf();
    let loaded = kvbench::loader::load(&ModelFiles::Gguf { path }, &Device::Cpu).unwrap();
    let model = &loaded.model;
    let eos = loaded.tokenizer.eos_ids().to_vec();
    let (mut agree, mut total, mut worst_top20) = (0usize, 0usize, 0f32);
    for (i, p) in reference.prompts.iter().enumerate() {
        let n = p.input_ids.len();
        let mut cache = model.new_cache();
        let opts = ForwardOptions {
            logits: Logits::All,
            ..Default::default()
        };
        let logits = model
            .forward(&p.input_ids, &mut cache, &opts)
            .unwrap()
            .logits
            .unwrap();
        let am: Vec<u32> = logits.argmax(1).unwrap().to_vec1().unwrap();
        agree += am.iter().zip(&p.f32.argmax).filter(|(a, b)| a == b).count();
        total += n;
        // The last position's 20 largest logits, value by value.
        let last: Vec<f32> = logits.get(n - 1).unwrap().to_vec1().unwrap();
        for (&id, &want) in p.f32.top20_ids.iter().zip(&p.f32.top20_logits) {
            let diff = (last[id as usize] - want).abs();
            worst_top20 = worst_top20.max(diff);
        }
        assert_eq!(am[n - 1], p.f32.argmax[n - 1], "prompt {i}: next token");
        // Greedy continuation through the cache; transformers stops at an end token.
        let mut next = am[n - 1];
        let mut greedy = vec![next];
        while greedy.len() < p.f32.greedy_16.len() && !eos.contains(&next) {
            let out = model
                .forward(&[next], &mut cache, &ForwardOptions::default())
                .unwrap();
            next = argmax(&out.logits.unwrap()).unwrap();
            greedy.push(next);
        }
        assert_eq!(greedy, p.f32.greedy_16, "prompt {i}: 16 greedy tokens");
    }
    let rate = agree as f64 / total as f64;
    eprintln!(
        "top-1 agreement {agree}/{total} = {rate:.5}; worst top-20 logit difference {worst_top20}"
    );
    // Same dequantized weights, both in f32: only summation order differs, so the argmax may
    // flip only where two logits tie to within that rounding.
    assert!(rate >= 0.999, "top-1 agreement {rate}");
    assert!(worst_top20 < 1e-3, "top-20 logits differ by {worst_top20}");
}

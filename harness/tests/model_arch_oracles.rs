//! Every decoder family against Hugging Face transformers: tiny random checkpoints in
//! `../shared/data/reference/arch/` (llama 3.1 with llama3 RoPE scaling, qwen2, qwen3, qwen3 with
//! yarn, mistral with a sliding window, gemma3 with sliding/global layers, phi3 with fused
//! projections) and the float32 logits transformers computes for them.
//!
//! Each checkpoint goes through the normal path (`ModelSpec::Local` -> fetch -> loader). Checked
//! for the 40- and the 200-token input: logits at every 8th position and at the last within 1e-4
//! (absolute or relative), the argmax at every position, and 12 greedy tokens decoded one at a
//! time through the cache (so the sliding-window cache trimming is exercised too).

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use kvbench::fetch::{resolve, FetchOptions, ModelSpec};
use kvbench::model::{argmax, ForwardOptions, Logits};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    input_ids: Vec<u32>,
    last_logits: Vec<f32>,
    /// Keyed by position ("0", "8", ...).
    logits_every_8th_position: std::collections::BTreeMap<String, Vec<f32>>,
    argmax: Vec<u32>,
    greedy_12: Vec<u32>,
}

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

fn arch_dir(family: &str) -> PathBuf {
    kvbench::testing::shared_data().join(format!("reference/arch/{family}"))
}

fn close(got: f32, want: f32) -> bool {
    let diff = (got - want).abs();
    diff <= 1e-4 || diff <= 1e-4 * want.abs()
}

fn assert_logits(family: &str, what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{family} {what}: vocabulary size");
    let worst = got
        .iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (g, w))| !close(**g, **w))
        .max_by(|a, b| {
            let d = |(g, w): (&f32, &f32)| (g - w).abs();
            d(a.1).total_cmp(&d(b.1))
        });
    if let Some((i, (g, w))) = worst {
        panic!("{family} {what}: logit {i} is {g}, transformers says {w}");
    }
}

/// The end token of every fixture (`eos_token_id` in its config.json).
const EOS: usize = 2;

/// Greedy choice with the end token suppressed.
fn pick(row: &[f32]) -> u32 {
    let mut row = row.to_vec();
    row[EOS] = f32::NEG_INFINITY;
    argmax(&Tensor::new(row.as_slice(), &Device::Cpu).unwrap()).unwrap()
}

/// Run one family's two cases; `chunk` is the attention chunk (small values exercise chunked
/// prefill across the sliding window).
fn check_family(family: &str, chunk: usize) {
    let dir = arch_dir(family);
    let reference: Reference =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let files = resolve(&ModelSpec::Local(dir.clone()), &FetchOptions::from_env())
        .unwrap_or_else(|e| panic!("{family}: {e}"));
    let loaded =
        kvbench::loader::load(&files, &Device::Cpu).unwrap_or_else(|e| panic!("{family}: {e:#}"));
    let model = &loaded.model;
    for case in &reference.cases {
        let n = case.input_ids.len();
        let label = format!("{family} ({n} tokens, chunk {chunk})");
        let mut cache = model.new_cache();
        let opts = ForwardOptions {
            logits: Logits::All,
            attention_chunk: chunk,
            ..Default::default()
        };
        let out = model.forward(&case.input_ids, &mut cache, &opts).unwrap();
        let logits = out.logits.unwrap();
        let rows: Vec<Vec<f32>> = logits.to_vec2().unwrap();
        assert_eq!(
            case.logits_every_8th_position.len(),
            n.div_ceil(8),
            "{label}: positions"
        );
        for (pos, want) in &case.logits_every_8th_position {
            let pos: usize = pos.parse().unwrap();
            assert_logits(&label, &format!("position {pos}"), &rows[pos], want);
        }
        assert_logits(&label, "last position", &rows[n - 1], &case.last_logits);
        let am: Vec<u32> = rows
            .iter()
            .map(|r| argmax(&Tensor::new(r.as_slice(), &Device::Cpu).unwrap()).unwrap())
            .collect();
        assert_eq!(am, case.argmax, "{label}: argmax per position");
        // Greedy decoding through the cache, one token at a time; the end token is suppressed, as
        // `min_new_tokens=12` did in transformers.
        let mut next = pick(&rows[n - 1]);
        let mut greedy = vec![next];
        while greedy.len() < case.greedy_12.len() {
            let out = model
                .forward(&[next], &mut cache, &ForwardOptions::default())
                .unwrap();
            let row: Vec<f32> = out
                .logits
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            next = pick(&row);
            greedy.push(next);
        }
        assert_eq!(greedy, case.greedy_12, "{label}: 12 greedy tokens");
        // Sliding layers hold their window, full layers the whole sequence.
        let total = n + greedy.len() - 1;
        for l in 0..model.config().n_layers {
            let want = model.config().window(l).map_or(total, |w| w.min(total));
            assert_eq!(
                cache.layer(l).head_lens()[0],
                want,
                "{label}: entries in layer {l}"
            );
        }
    }
}

#[test]
fn llama31_llama3_rope_scaling() {
    check_family("llama31", 512);
}

#[test]
fn qwen2_bias_and_tied_embeddings() {
    check_family("qwen2", 512);
}

#[test]
fn qwen3_qk_norm() {
    check_family("qwen3", 512);
}

#[test]
fn qwen3_yarn() {
    check_family("qwen3_yarn", 512);
}

#[test]
fn mistral_sliding_window() {
    check_family("mistral", 512);
    check_family("mistral", 7);
}

#[test]
fn gemma3_sliding_and_global_layers() {
    check_family("gemma3", 512);
    check_family("gemma3", 7);
}

#[test]
fn phi3_fused_projections() {
    check_family("phi3", 512);
}

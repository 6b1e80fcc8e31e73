//! Storage-side methods end to end (`kvbench run` on CPU, the quickstart task): every record's
//! `kv_bytes` matches the method's analytic size, computed here from the model's shape and the
//! record's context length, within 2%.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use kvbench_reports::{read_results, Record};

const EXPERIMENT: &str = "experiment: storage-bytes
model: smollm2-135m-instruct-q4_1
datasets:
  - name: niah
    lengths: [512]
    depths: [0.5]
    samples_per_cell: 1
methods:
  - method: full
  - method: kivi
    bits: 2
  - method: kivi
    bits: 4
  - method: quant
    bits: 8
  - method: quant
    bits: 4
  - method: think
    key_channel_ratio: 0.5
  - method: lowrank
    rank: 16
  - method: lowrank
    rank: 32
  - method: minicache
  - method: kvsharer
  - [{method: snapkv}, {method: kivi, bits: 2}]
budgets:
  - compression_ratio: 0.5
";

// SmolLM2-135M: 30 layers, 3 KV heads of dimension 64; the CPU cache is f32.
const LAYERS: usize = 30;
const HEADS: usize = 3;
const D: usize = 64;
const F32: usize = 4;
const F16: usize = 2;

/// Bytes of one head's `n` entries of one component stored dense.
fn dense(n: usize) -> usize {
    n * D * F32
}

/// KIVI, one head: keys per channel in blocks of `residual` (groups of 32 entries), values per
/// token (groups of 32 channels) with the `residual` newest entries in f32; f16 scale and zero.
fn kivi_head(n: usize, bits: usize) -> usize {
    let (group, residual) = (32, 128);
    let nk = n / residual * residual;
    let keys = nk * D * bits / 8 + (nk / group) * D * 2 * F16 + dense(n - nk);
    let nv = n.saturating_sub(residual);
    let values = nv * D * bits / 8 + nv * (D / group) * 2 * F16 + dense(n.min(residual));
    keys + values
}

/// HF QuantizedCache scheme, one head: everything quantized per token at prefill, groups of 64
/// channels, asymmetric (f16 scale and zero), keys and values alike.
fn quant_head(n: usize, bits: usize) -> usize {
    2 * (n * D * bits / 8 + n * (D / 64) * 2 * F16)
}

fn analytic(r: &Record) -> usize {
    let n = r.context_tokens;
    let p = &r.method_params;
    let per_head = |f: &dyn Fn(usize) -> usize| LAYERS * HEADS * f(n);
    match r.method.as_str() {
        "full" => per_head(&|n| 2 * dense(n)),
        "kivi" => {
            let bits = p["bits"].as_u64().unwrap() as usize;
            per_head(&|n| kivi_head(n, bits))
        }
        "quant" => {
            let bits = p["bits"].as_u64().unwrap() as usize;
            per_head(&|n| quant_head(n, bits))
        }
        "think" => {
            // 32 of 64 channels kept before the 32-entry window; channel indices u32.
            let (window, kept) = (32, 32);
            per_head(&|n| (n - window) * kept * F32 + kept * 4 + dense(window) + dense(n))
        }
        "lowrank" => {
            let rank = p["rank"].as_u64().unwrap() as usize;
            per_head(&|n| n * rank * F32 + D * rank * F32 + dense(n))
        }
        "minicache" => {
            // Layers 15..29 merged in 7 pairs (15, 16) .. (27, 28); 29 and 0..15 stay dense. Per
            // pair and component: one shared direction, a magnitude per layer and entry; each
            // retained entry has a shared u32 index and an original vector in both layers.
            let pairs = 7;
            let dense_layers = LAYERS - 2 * pairs;
            let retained = r.kv_storage["merged_retained"].as_u64().unwrap() as usize;
            dense_layers * HEADS * 2 * dense(n)
                + pairs * 2 * HEADS * (dense(n) + 2 * n * F32)
                + retained / 2 * 4
                + retained * D * F32
        }
        "kvsharer" => {
            let shared = r.kv_storage["shared_layers"].as_u64().unwrap() as usize;
            assert_eq!(shared, 8, "25% of 30 layers, rounded");
            (LAYERS - shared) * HEADS * 2 * dense(n)
        }
        "snapkv+kivi" => {
            let kept = ((1.0 - r.achieved_ratio) * n as f64).round() as usize;
            assert_eq!(kept, n / 2, "snapkv keeps floor(n / 2) entries");
            LAYERS * HEADS * kivi_head(kept, 2)
        }
        other => panic!("no analytic size for {other}"),
    }
}

#[test]
fn storage_methods_store_their_analytic_size() {
    kvbench::testing::smollm2_gguf();
    let dir = std::env::temp_dir().join(format!("kvbench-storage-bytes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let exp = dir.join("exp.yaml");
    std::fs::write(&exp, EXPERIMENT).unwrap();
    let out: PathBuf = dir.join("out");
    let status = Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .args([
            "run",
            exp.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--device",
            "cpu",
        ])
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let records = read_results(&out.join("results.jsonl")).unwrap();
    assert_eq!(records.len(), 11, "one record per method configuration");
    let full = records.iter().find(|r| r.method == "full").unwrap();
    for r in &records {
        let want = analytic(r) as f64;
        let got = r.kv_bytes as f64;
        let rel = (got - want).abs() / want;
        eprintln!(
            "{:<12} {:<40} kv_bytes {:>9} analytic {:>9.0} ({:+.3}%) byte ratio {:.3} agreement {:.2} KL {:.4}",
            r.method,
            r.method_params.to_string(),
            r.kv_bytes,
            want,
            100.0 * (got - want) / want,
            1.0 - got / r.kv_bytes_full as f64,
            r.agreement_with_full,
            r.kl_first_token
        );
        assert!(
            rel <= 0.02,
            "{} {}: {got} bytes, analytic {want}",
            r.method,
            r.method_params
        );
        assert_eq!(r.kv_bytes_full, full.kv_bytes, "{}", r.method);
        if r.method != "full" {
            assert!(r.kv_bytes < full.kv_bytes, "{} saves nothing", r.method);
            assert!(
                !r.kv_storage.is_null(),
                "{} records no storage layout",
                r.method
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

//! `kvbench bench --model synthetic:SHAPE` (issue 14): a model of a real shape with random
//! weights, nothing downloaded, through the whole bench including the batched measurements; an
//! unknown shape is one error listing the known ones.

use std::process::Command;

fn kvbench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .args(args)
        // Nothing may be fetched: a synthetic model needs no files.
        .env("HF_HUB_OFFLINE", "1")
        .env(
            "KVBENCH_CACHE",
            std::env::temp_dir().join("kvbench-bench-synthetic-empty"),
        )
        .output()
        .unwrap()
}

#[test]
fn an_unknown_shape_lists_the_known_ones() {
    let o = kvbench(&["bench", "--model", "synthetic:llama3-9b", "--device", "cpu"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unknown synthetic model `synthetic:llama3-9b`"),
        "{err}"
    );
    for shape in ["smollm2-135m", "llama3-8b", "qwen3-8b", "llama3-70b"] {
        assert!(err.contains(&format!("synthetic:{shape}")), "{err}");
    }
}

#[test]
fn the_small_shape_benches_on_cpu_with_batched_measurements() {
    let out = std::env::temp_dir().join(format!("kvbench-bench-synth-{}.json", std::process::id()));
    let o = kvbench(&[
        "bench",
        "--model",
        "synthetic:smollm2-135m",
        "--device",
        "cpu",
        "--lengths",
        "16",
        "--decode-lengths",
        "16",
        "--sample-length",
        "24",
        "--repeats",
        "1",
        "--skip-compression",
        "--batch-sequences",
        "3",
        "--batch-context",
        "16",
        "--output",
        out.to_str().unwrap(),
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{stderr}");
    assert!(
        stdout.contains("kvbench bench — synthetic:smollm2-135m"),
        "{stdout}"
    );
    assert!(
        stdout.contains("batched decode: 3 sequences at 16 tokens"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    // Tied embeddings counted once: 134.5M parameters in f32.
    assert_eq!(report["weight_bytes"], 134_515_008u64 * 4);
    assert_eq!(report["batched_decode"]["sequences"], 3);
    // Three caches of 16 context tokens plus the 34 decoded ones, 30 layers x 3 heads x 64 x 2.
    let per_token = 30 * 3 * 64 * 2 * 4;
    assert_eq!(
        report["batched_decode"]["kv_bytes"],
        3 * (16 + 34) * per_token
    );
    for field in ["sharing_ratio", "sharing_batched_ratio"] {
        let v = report[field].as_f64().unwrap();
        assert!(v.is_finite() && v > 0.0, "{field} {v}");
    }
    assert!(report["prefill"][0]["median_ms"].as_f64().unwrap() > 0.0);
    let _ = std::fs::remove_file(out);
}

/// `--long-context` and `--memory-context` on CPU: the chunked prefill's cache holds the whole
/// context plus the decoded tokens, the layer-by-layer compressed cache keeps a quarter of the
/// full one at ratio 0.75, and peaks are null where the device has no counter.
#[test]
fn long_context_and_compressed_peak_on_cpu() {
    let out = std::env::temp_dir().join(format!("kvbench-bench-peaks-{}.json", std::process::id()));
    let o = kvbench(&[
        "bench",
        "--model",
        "synthetic:smollm2-135m",
        "--device",
        "cpu",
        "--lengths",
        "16",
        "--decode-lengths",
        "16",
        "--sample-length",
        "16",
        "--repeats",
        "1",
        "--skip-compression",
        "--batch-sequences",
        "0",
        "--long-context",
        "40",
        "--prefill-chunk",
        "16",
        "--memory-context",
        "128",
        "--output",
        out.to_str().unwrap(),
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{stderr}");
    assert!(
        stdout.contains("long context, full cache: 40 tokens prefilled in chunks of 16"),
        "{stdout}"
    );
    assert!(
        stdout.contains("peak memory at 128 tokens, compressed layer by layer during prefill"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let per_token = 30 * 3 * 64 * 2 * 4; // layers x KV heads x head_dim x (K, V) x f32
    let long = &report["long_context"];
    // 40 prefilled in chunks of 16, 16 and 8, then 8 decoded.
    assert_eq!(long["kv_bytes"], (40 + 8) * per_token);
    assert!(long["peak_device_bytes"].is_null() && long["within_budget"].is_null());
    let p = &report["compressed_peak"];
    assert_eq!(p["method"], "snapkv");
    assert_eq!(p["full_kv_bytes"], 128 * per_token);
    // floor(128 x 0.25) = 32 entries per layer and head.
    assert_eq!(p["compressed_kv_bytes"], 32 * per_token);
    assert!(p["saving_share"].is_null());
    let _ = std::fs::remove_file(out);
}

#[test]
fn a_method_across_layers_is_refused_for_the_memory_measurement() {
    let o = kvbench(&[
        "bench",
        "--model",
        "synthetic:smollm2-135m",
        "--device",
        "cpu",
        "--memory-context",
        "64",
        "--memory-method",
        "kvsharer",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--memory-method `kvsharer` compresses the whole prefilled cache")
            && err.contains("snapkv"),
        "{err}"
    );
    assert!(
        !err.contains("building synthetic"),
        "refused before the model is built: {err}"
    );
}

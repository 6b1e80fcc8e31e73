//! `kvbench bench --check-attention`: the fused CUDA attention kernel against the eager path, on
//! the device, over the shapes the models use (decode with split keys, prefill, a prefix, GQA
//! groups, head dimensions 64-256, sliding windows, soft-capping, ragged per-head lengths).
//!
//! The oracle is the eager path in f32 on the same bf16 inputs. The kernel passes a case when
//! its error is within twice the eager bf16 path's own error (plus 2e-3): bf16 rounding of the
//! probabilities is expected, anything larger is a bug. Cases that ask for the accumulated
//! attention (column sums) check those the same way. Each case also times both paths.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use kvbench_methods::LayerKv;
use serde::Serialize;

use crate::device::timed;
use crate::model::attention::{attend, AttentionParams, MaskCache};
use crate::model::fused;

#[derive(Clone, Debug, Serialize)]
pub struct AttentionCase {
    pub name: String,
    /// Error of the fused kernel against the f32 oracle (max abs).
    pub fused_err: f32,
    /// Error of the eager bf16 path against the same oracle.
    pub eager_err: f32,
    /// The same for the accumulated attention (column sums), when the case asks for them.
    pub fused_acc_err: Option<f32>,
    pub eager_acc_err: Option<f32>,
    pub fused_ms: f64,
    pub eager_ms: f64,
    pub passed: bool,
}

struct Case {
    name: &'static str,
    kv_heads: usize,
    group: usize,
    head_dim: usize,
    prefix: usize,
    new: usize,
    window: Option<usize>,
    softcap: Option<f64>,
    /// Keep only every `n`th stored entry of odd heads (ragged per-head lengths).
    ragged: Option<usize>,
    /// Also the attention each key received, summed over the queries (H2O-like methods).
    accumulate: bool,
}

const CASES: &[Case] = &[
    case("decode 8B shape, 4k (split keys)", 8, 4, 128, 4095, 1),
    case("decode 135M shape, 32k (split keys)", 3, 3, 64, 32767, 1),
    case("decode, short cache (no split)", 2, 4, 128, 100, 1),
    case("prefill 8B shape, 2k", 8, 4, 128, 0, 2048),
    case("prefill 135M shape, 4k", 3, 3, 64, 0, 4096),
    case("chunk after a 3k prefix", 8, 4, 128, 3000, 200),
    case("question of 13 tokens, 1k prefix, d=96", 4, 3, 96, 1000, 13),
    Case {
        window: Some(300),
        ..case("sliding window 300, d=256", 2, 2, 256, 0, 900)
    },
    Case {
        window: Some(512),
        ..case("sliding window decode, d=128", 2, 4, 128, 2000, 1)
    },
    Case {
        softcap: Some(50.0),
        ..case("soft-capped scores", 4, 2, 128, 64, 300)
    },
    Case {
        ragged: Some(3),
        ..case("ragged heads (evicted), decode", 4, 4, 128, 3000, 1)
    },
    Case {
        accumulate: true,
        ..case("accumulated: prefill 8B shape, 2k", 8, 4, 128, 0, 2048)
    },
    Case {
        accumulate: true,
        ..case("accumulated: decode at 4k", 8, 4, 128, 4095, 1)
    },
    Case {
        accumulate: true,
        ..case("accumulated: chunk after a prefix", 3, 3, 64, 1500, 100)
    },
    Case {
        accumulate: true,
        window: Some(300),
        softcap: Some(30.0),
        ..case("accumulated: window + soft-cap, d=256", 1, 4, 256, 200, 700)
    },
];

const fn case(
    name: &'static str,
    kv_heads: usize,
    group: usize,
    head_dim: usize,
    prefix: usize,
    new: usize,
) -> Case {
    Case {
        name,
        kv_heads,
        group,
        head_dim,
        prefix,
        new,
        window: None,
        softcap: None,
        ragged: None,
        accumulate: false,
    }
}

fn max_abs(a: &Tensor, b: &Tensor) -> Result<f32> {
    let d = (a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?.abs()?;
    Ok(d.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

fn layer_of(k: &Tensor, v: &Tensor, ragged: Option<usize>) -> Result<LayerKv> {
    let len = k.dim(1)?;
    let mut layer = LayerKv::default();
    let positions: Vec<u32> = (0..len as u32).collect();
    layer.append(k, v, &positions)?;
    if let Some(n) = ragged {
        let keep: Vec<Vec<u32>> = (0..k.dim(0)?)
            .map(|h| {
                // Odd heads keep every nth entry plus the newest, which the new queries are.
                (0..len as u32)
                    .filter(|&i| h % 2 == 0 || i as usize % n == 0 || i as usize == len - 1)
                    .collect()
            })
            .collect();
        layer.retain(&keep)?;
    }
    Ok(layer)
}

/// Run every case on `device` (CUDA); an error lists the failing cases.
pub fn run(device: &Device, repeats: usize) -> Result<Vec<AttentionCase>> {
    if !device.is_cuda() || !fused::AVAILABLE {
        bail!("--check-attention needs a CUDA build and a CUDA device (--device cuda)");
    }
    let mut results = Vec::new();
    for c in CASES {
        let len = c.prefix + c.new;
        let hq = c.kv_heads * c.group;
        // Peaky scores (q scaled up) exercise the running maximum.
        let q = (Tensor::randn(0f32, 1.0, (hq, c.new, c.head_dim), device)? * 3.0)?;
        let k = Tensor::randn(0f32, 1.0, (c.kv_heads, len, c.head_dim), device)?;
        let v = Tensor::randn(0f32, 1.0, (c.kv_heads, len, c.head_dim), device)?;
        let (qb, kb, vb) = (
            q.to_dtype(DType::BF16)?,
            k.to_dtype(DType::BF16)?,
            v.to_dtype(DType::BF16)?,
        );
        // The oracle sees exactly the bf16 values the kernel sees.
        let (qf, kf, vf) = (
            qb.to_dtype(DType::F32)?,
            kb.to_dtype(DType::F32)?,
            vb.to_dtype(DType::F32)?,
        );
        let p = AttentionParams {
            q_per_kv: c.group,
            scale: 1.0 / (c.head_dim as f64).sqrt(),
            window: c.window,
            softcap: c.softcap,
            chunk: 512,
        };
        let bf_layer = layer_of(&kb, &vb, c.ragged)?;
        let f32_layer = layer_of(&kf, &vf, c.ragged)?;
        type Run = (Tensor, Option<Tensor>, f64);
        let run_with = |fused_on: bool, q: &Tensor, layer: &LayerKv| -> Result<Run> {
            fused::set_enabled(fused_on);
            let mut times = Vec::with_capacity(repeats + 1);
            let mut last = None;
            for _ in 0..repeats.max(1) + 1 {
                let mut acc = None;
                let slot = c.accumulate.then_some(&mut acc);
                let (o, ms) = timed(device, || {
                    Ok(attend(q, layer, &p, &mut MaskCache::default(), slot)?)
                })?;
                times.push(ms);
                last = Some((o, acc));
            }
            times.remove(0); // warm-up
            times.sort_by(f64::total_cmp);
            let (o, acc) = last.expect("one run");
            Ok((o, acc, times[times.len() / 2]))
        };
        let (oracle, oracle_acc, _) = run_with(false, &qf, &f32_layer)?;
        let (eager, eager_acc, eager_ms) = run_with(false, &qb, &bf_layer)?;
        let (fused_out, fused_acc, fused_ms) = run_with(true, &qb, &bf_layer)?;
        let fused_err = max_abs(&fused_out, &oracle)?;
        let eager_err = max_abs(&eager, &oracle)?;
        let mut passed = fused_err.is_finite() && fused_err <= 2.0 * eager_err + 2e-3;
        let (mut fused_acc_err, mut eager_acc_err) = (None, None);
        if let (Some(o), Some(e), Some(f)) = (&oracle_acc, &eager_acc, &fused_acc) {
            let (fe, ee) = (max_abs(f, o)?, max_abs(e, o)?);
            // Column sums grow with the number of queries: allow 1e-3 of the largest.
            let largest = o.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            passed &= fe.is_finite() && fe <= 2.0 * ee + 1e-3 * largest.max(1.0);
            (fused_acc_err, eager_acc_err) = (Some(fe), Some(ee));
        } else if c.accumulate {
            passed = false; // a path gave no column sums
        }
        results.push(AttentionCase {
            name: c.name.to_string(),
            fused_err,
            eager_err,
            fused_acc_err,
            eager_acc_err,
            fused_ms,
            eager_ms,
            passed,
        });
    }
    fused::set_enabled(true);
    Ok(results)
}

/// A markdown table of the cases.
pub fn render(cases: &[AttentionCase]) -> String {
    let mut s = String::from(
        "| case | fused err | eager bf16 err | accumulated: fused / eager err | fused ms | eager ms | speed-up | |\n|---|---|---|---|---|---|---|---|\n",
    );
    for c in cases {
        let acc = match (c.fused_acc_err, c.eager_acc_err) {
            (Some(f), Some(e)) => format!("{f:.2e} / {e:.2e}"),
            _ => "-".into(),
        };
        s.push_str(&format!(
            "| {} | {:.2e} | {:.2e} | {} | {:.3} | {:.3} | {:.1}x | {} |\n",
            c.name,
            c.fused_err,
            c.eager_err,
            acc,
            c.fused_ms,
            c.eager_ms,
            c.eager_ms / c.fused_ms,
            if c.passed { "pass" } else { "FAIL" }
        ));
    }
    s
}

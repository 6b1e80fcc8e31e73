//! Quantization (`kernels::quantize_groups`, behind `QuantScheme::quantize`: quant, kivi) on the
//! device against the same call on the CPU, where it runs as candle tensor ops: codes, f16 scales
//! and zero points must be identical, bit for bit. Every bit width (2, 4, 8), both group axes
//! (per token, per channel), symmetric and asymmetric; keys drawn with outlier channels, plus
//! constant groups (the smallest scale) and values on a grid (codes exactly representable).

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use kvbench_methods::storage::{QuantAxis, QuantScheme, ResidualRule};
use rand::{Rng, SeedableRng};

use super::{median, KernelCase};
use crate::device::timed;

/// `[h, m, d]` values: Gaussian, every 16th channel scaled by 20 (outliers), every 9th entry
/// constant, every 7th entry on a grid of 1/8.
fn values(h: usize, m: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(h * m * d);
    for _ in 0..h {
        for t in 0..m {
            for c in 0..d {
                let g: f32 = rng.gen_range(-2.0..2.0);
                out.push(match (t % 9, t % 7) {
                    (0, _) => 0.75,
                    (_, 0) => (g * 8.0).round() / 8.0,
                    _ if c % 16 == 0 => g * 20.0,
                    _ => g,
                });
            }
        }
    }
    out
}

/// Every value's bits: codes as they are, f16 scales through f32 (exact).
fn bits_of(t: &Tensor) -> Result<Vec<u32>> {
    Ok(match t.dtype() {
        DType::U8 => t
            .flatten_all()?
            .to_vec1::<u8>()?
            .into_iter()
            .map(u32::from)
            .collect(),
        _ => t
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(f32::to_bits)
            .collect(),
    })
}

/// Codes, scales and zero points identical, bit for bit.
fn same(
    a: &(Tensor, Tensor, Option<Tensor>),
    b: &(Tensor, Tensor, Option<Tensor>),
) -> Result<bool> {
    let zeros = match (&a.2, &b.2) {
        (Some(x), Some(y)) => bits_of(x)? == bits_of(y)?,
        (None, None) => true,
        _ => false,
    };
    Ok(zeros && bits_of(&a.0)? == bits_of(&b.0)? && bits_of(&a.1)? == bits_of(&b.1)?)
}

pub(super) fn quantize_cases(device: &Device, repeats: usize) -> Result<Vec<KernelCase>> {
    let mut out = Vec::new();
    let mut seed = 2000;
    for (h, m, d) in [(1, 32, 8), (8, 4096, 128)] {
        for bits in [2u32, 4, 8] {
            for (axis, group) in [
                (QuantAxis::PerToken, d.min(64)),
                (QuantAxis::PerChannel, 32),
            ] {
                for symmetric in [false, true] {
                    seed += 1;
                    let scheme = QuantScheme {
                        bits,
                        group,
                        axis,
                        symmetric,
                        residual: 0,
                        rule: ResidualRule::Accumulate,
                    };
                    let x = values(h, m, d, seed);
                    let cpu = Tensor::from_vec(x.clone(), (h, m, d), &Device::Cpu)?;
                    let want_f32 = scheme.quantize(&cpu)?;
                    let f32_device = Tensor::from_vec(x, (h, m, d), device)?;
                    // bf16, as a cache holds it, on both sides.
                    let on_device = f32_device.to_dtype(DType::BF16)?;
                    let want = scheme.quantize(&on_device.to_device(&Device::Cpu)?)?;
                    let (mut kernel_ms, mut host_ms, mut passed) = (Vec::new(), Vec::new(), true);
                    for _ in 0..repeats.max(1) + 1 {
                        let (got, ms) = timed(device, || Ok(scheme.quantize(&on_device)?))?;
                        kernel_ms.push(ms);
                        passed &= same(&got, &want)?;
                        passed &= same(&scheme.quantize(&f32_device)?, &want_f32)?;
                        let (_, ms) = timed(device, || {
                            let x = on_device.to_device(&Device::Cpu)?;
                            Ok(scheme.quantize(&x)?)
                        })?;
                        host_ms.push(ms);
                    }
                    kernel_ms.remove(0); // warm-up
                    host_ms.remove(0);
                    out.push(KernelCase {
                        kernel: "quantize_groups",
                        name: format!(
                            "{bits} bits, {axis:?} {group}{}",
                            if symmetric { ", symmetric" } else { "" }
                        )
                        .to_lowercase(),
                        heads: h,
                        len: m,
                        k: d,
                        kernel_ms: median(kernel_ms),
                        host_ms: median(host_ms),
                        passed,
                    });
                }
            }
        }
    }
    Ok(out)
}

//! Window attention summed over the window (`scoring::window_attention_sums`, SnapKV's score: on
//! CUDA `kernels::window_softmax_sums`) against the same call on the CPU (candle ops: scale, mask,
//! softmax, sum): within 1e-4 of the larger value plus 1e-7 per query summed (the logits come
//! from cuBLAS on one side and the CPU matmul on the other). The keys are a bf16
//! cache at positions 0..len; the window queries sit at the last `w` positions (the causal tail
//! masked) or after the keys (nothing masked), with GQA groups of 1 and 4.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use kvbench_methods::selection::scoring::window_attention_sums;
use kvbench_methods::KvCache;

use super::{median, KernelCase};
use crate::device::timed;

fn cache(k: &Tensor, device: &Device) -> Result<KvCache> {
    let (n, len, d) = k.dims3()?;
    let mut c = KvCache::new(1, n, d, DType::BF16, device);
    let k = k.to_device(device)?.to_dtype(DType::BF16)?;
    c.layer_mut(0)
        .append(&k, &k, &(0..len as u32).collect::<Vec<_>>())?;
    Ok(c)
}

pub(super) fn window_cases(device: &Device, repeats: usize) -> Result<Vec<KernelCase>> {
    let mut out = Vec::new();
    let shapes = [
        (1, 1, 5, 3, 8),
        (2, 4, 100, 8, 64),
        (8, 4, 4096, 32, 128),
        (8, 1, 4096, 32, 128),
        (8, 4, 32768, 32, 128),
    ];
    for (n, g, len, w, d) in shapes {
        for after in [false, true] {
            let k = (Tensor::randn(0f32, 1.0, (n, len, d), &Device::Cpu)? * 2.0)?;
            let q = (Tensor::randn(0f32, 1.0, (n * g, w, d), &Device::Cpu)? * 2.0)?;
            let first = if after { len } else { len.saturating_sub(w) };
            let pos: Vec<u32> = (first..first + w).map(|p| p as u32).collect();
            let (cpu, dev) = (cache(&k, &Device::Cpu)?, cache(&k, device)?);
            let want: Vec<Vec<Vec<f32>>> =
                window_attention_sums(cpu.layer(0), &q, &pos, g)?[0].to_vec3()?;
            let qd = q.to_device(device)?;
            let (mut kernel_ms, mut host_ms, mut passed) = (Vec::new(), Vec::new(), true);
            for _ in 0..repeats.max(1) + 1 {
                let (got, ms) = timed(device, || {
                    Ok(window_attention_sums(dev.layer(0), &qd, &pos, g)?)
                })?;
                kernel_ms.push(ms);
                let got: Vec<Vec<Vec<f32>>> = got[0].to_vec3()?;
                passed &= got.len() == want.len()
                    && got
                        .iter()
                        .flatten()
                        .flatten()
                        .zip(want.iter().flatten().flatten())
                        .all(|(a, b)| {
                            (a - b).abs() <= 1e-4 * a.abs().max(b.abs()) + 1e-7 * w as f32
                        });
                let (_, ms) = timed(device, || {
                    Ok(window_attention_sums(cpu.layer(0), &q, &pos, g)?)
                })?;
                host_ms.push(ms);
            }
            kernel_ms.remove(0); // warm-up
            host_ms.remove(0);
            out.push(KernelCase {
                kernel: "window_softmax_sums",
                name: format!(
                    "g {g}, w {w}, d {d}, {}",
                    if after { "unmasked" } else { "causal tail" }
                ),
                heads: n,
                len,
                k: w,
                kernel_ms: median(kernel_ms),
                host_ms: median(host_ms),
                passed,
            });
        }
    }
    Ok(out)
}

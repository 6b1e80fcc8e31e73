//! LagKV's scores (`kernels::lagkv_scores`) against the candle ops of `lagkv::lag_raw` on the
//! CPU: the kernel's raw chunk scores within 1e-5 (relative) of the CPU's, its ranks exactly the
//! ranks of its own raw scores (ascending, ties to the earlier entry, over lag), and 1 for the
//! sinks and the tail. Raw scores equal to rounding may rank differently on the two sides; the
//! case name says how many final scores differ from the CPU scorer's.

use anyhow::Result;
use candle_core::{Device, Tensor};
use kvbench_methods::kernels::lagkv_scores;
use kvbench_methods::selection::lagkv::lag_raw;
use rand::{Rng, SeedableRng};

use super::{median, KernelCase};
use crate::device::timed;

/// `[h, len, d]`: Gaussian, channel 0 constant (a zero reference range), every 8th channel x 10.
fn values(h: usize, len: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..h * len * d)
        .map(|i| match i % d {
            0 => 0.5,
            c if c % 8 == 0 => 10.0 * rng.gen_range(-1.0f32..1.0),
            _ => rng.gen_range(-1.0f32..1.0),
        })
        .collect()
}

/// Scores from raw chunk scores `[h][chunks - 1][lag]`, as the scorer defines them.
fn ranked(raw: &[Vec<Vec<f32>>], len: usize, sink: usize, lag: usize) -> Vec<Vec<f32>> {
    raw.iter()
        .map(|chunks| {
            let mut s = vec![1.0f32; len];
            for (c, row) in chunks.iter().enumerate() {
                for i in 0..lag {
                    let rank = (0..lag)
                        .filter(|&j| row[j] < row[i] || (row[j] == row[i] && j < i))
                        .count();
                    s[sink + c * lag + i] = rank as f32 * (1.0 / lag as f64) as f32;
                }
            }
            s
        })
        .collect()
}

pub(super) fn lagkv_cases(device: &Device, repeats: usize) -> Result<Vec<KernelCase>> {
    let mut out = Vec::new();
    let shapes = [
        (1, 40, 4, 3, 8),
        (3, 70, 64, 0, 16),
        (8, 4096, 128, 16, 128),
        (8, 4100, 64, 4, 128),
        (8, 32768, 128, 16, 128),
    ];
    for (i, (h, len, d, sink, lag)) in shapes.into_iter().enumerate() {
        let (kx, vx) = (
            values(h, len, d, 3000 + i as u64),
            values(h, len, d, 4000 + i as u64),
        );
        let kc = Tensor::from_vec(kx.clone(), (h, len, d), &Device::Cpu)?;
        let vc = Tensor::from_vec(vx.clone(), (h, len, d), &Device::Cpu)?;
        let want_raw: Vec<Vec<Vec<f32>>> = lag_raw(&kc, &vc, sink, lag)?.to_vec3()?;
        let cpu_scores = ranked(&want_raw, len, sink, lag);
        let kd = Tensor::from_vec(kx, (h, len, d), device)?;
        let vd = Tensor::from_vec(vx, (h, len, d), device)?;
        let (mut kernel_ms, mut host_ms, mut passed, mut differ) =
            (Vec::new(), Vec::new(), true, 0usize);
        for _ in 0..repeats.max(1) + 1 {
            let ((scores, raw), ms) = timed(device, || {
                lagkv_scores(&kd, &vd, sink, lag, true)?
                    .ok_or_else(|| anyhow::anyhow!("the lagkv kernel did not run"))
            })?;
            kernel_ms.push(ms);
            let raw: Vec<Vec<Vec<f32>>> = raw.expect("asked for raw scores").to_vec3()?;
            let close = raw
                .iter()
                .flatten()
                .flatten()
                .zip(want_raw.iter().flatten().flatten());
            passed &= close
                .into_iter()
                .all(|(a, b)| (a - b).abs() <= 1e-5 * a.abs().max(b.abs()) + 1e-12);
            let scores: Vec<Vec<f32>> = scores.to_vec2()?;
            passed &= scores == ranked(&raw, len, sink, lag);
            differ = scores
                .iter()
                .flatten()
                .zip(cpu_scores.iter().flatten())
                .filter(|(a, b)| a != b)
                .count();
            let (_, ms) = timed(device, || {
                let (k, v) = (kd.to_device(&Device::Cpu)?, vd.to_device(&Device::Cpu)?);
                Ok(lag_raw(&k, &v, sink, lag)?)
            })?;
            host_ms.push(ms);
        }
        kernel_ms.remove(0); // warm-up
        host_ms.remove(0);
        out.push(KernelCase {
            kernel: "lagkv_scores",
            name: format!("d {d}, sink {sink}, lag {lag}: {differ} scores differ from the CPU's"),
            heads: h,
            len,
            k: lag,
            kernel_ms: median(kernel_ms),
            host_ms: median(host_ms),
            passed,
        });
    }
    Ok(out)
}

//! MiniCache's SLERP coefficients (`kernels::slerp_coefficients`) against the host path of
//! `minicache::slerp_coefficients` (the same f64 formulas with Rust's `acos` and `sin`), fed the
//! same cosines: angles within 1e-12 rad, weights within 2 f32 ulps (relative 2.4e-7). Cosines
//! are random in [-1, 1] with exact -1, 0 and 1, values past 1 (rounding of unit vectors), and
//! near-parallel pairs around the fallback's threshold (`sin(angle) < 1e-6`).

use anyhow::Result;
use candle_core::{Device, Tensor};
use kvbench_methods::cross_layer::minicache::slerp_coefficients;
use rand::{Rng, SeedableRng};

use super::{median, KernelCase};
use crate::device::timed;

fn cosines(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| match i % 11 {
            0 => 1.0,
            1 => -1.0,
            2 => 0.0,
            3 => 1.0 + 1e-7 * rng.gen_range(0.0f32..3.0),
            4 => 1.0 - 1e-13f32.max(rng.gen_range(0.0f32..1e-6)),
            _ => rng.gen_range(-1.0f32..1.0),
        })
        .collect()
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| (x - y).abs() <= 2.4e-7 * x.abs().max(y.abs()).max(1e-30))
}

pub(super) fn slerp_cases(device: &Device, repeats: usize) -> Result<Vec<KernelCase>> {
    let mut out = Vec::new();
    for (n, t) in [
        (1, 0.5),
        (1000, 0.5),
        (8 * 4096, 0.5),
        (8 * 4096, 0.3),
        (8 * 32768, 0.5),
    ] {
        let cos = cosines(n, n as u64 + (t * 10.0) as u64);
        let host = Tensor::from_vec(cos.clone(), n, &Device::Cpu)?;
        let (want_angle, want_a, want_b) = slerp_coefficients(&host, t)?;
        let (want_a, want_b): (Vec<f32>, Vec<f32>) = (want_a.to_vec1()?, want_b.to_vec1()?);
        let on_device = Tensor::from_vec(cos, n, device)?;
        let (mut kernel_ms, mut host_ms, mut passed) = (Vec::new(), Vec::new(), true);
        for _ in 0..repeats.max(1) + 1 {
            let ((angle, a, b), ms) = timed(device, || Ok(slerp_coefficients(&on_device, t)?))?;
            kernel_ms.push(ms);
            passed &= angle
                .iter()
                .zip(&want_angle)
                .all(|(x, y)| (x - y).abs() <= 1e-12);
            passed &= close(&a.to_vec1::<f32>()?, &want_a) && close(&b.to_vec1::<f32>()?, &want_b);
            let (_, ms) = timed(device, || {
                let c = on_device.to_device(&Device::Cpu)?;
                Ok(slerp_coefficients(&c, t)?)
            })?;
            host_ms.push(ms);
        }
        kernel_ms.remove(0); // warm-up
        host_ms.remove(0);
        out.push(KernelCase {
            kernel: "slerp_coefficients",
            name: format!("t = {t}"),
            heads: 1,
            len: n,
            k: 0,
            kernel_ms: median(kernel_ms),
            host_ms: median(host_ms),
            passed,
        });
    }
    Ok(out)
}

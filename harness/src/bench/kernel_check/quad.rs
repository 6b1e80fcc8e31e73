//! Expected attention's covariance term (`kernels::row_quadratic_forms`) against the candle ops
//! it replaces on CUDA, run on the CPU (`[nh, n, g, d]` product with the keys, summed over `d`):
//! within 1e-5 of the larger value plus 1e-6 of the row's scale.

use anyhow::{anyhow, Result};
use candle_core::{Device, Tensor};
use kvbench_methods::kernels::row_quadratic_forms;

use super::{median, KernelCase};
use crate::device::timed;

pub(super) fn quad_cases(device: &Device, repeats: usize) -> Result<Vec<KernelCase>> {
    let mut out = Vec::new();
    for (nh, n, g, d) in [
        (1, 1, 1, 8),
        (3, 50, 2, 64),
        (8, 4092, 4, 128),
        (8, 32764, 4, 128),
    ] {
        let k = Tensor::randn(0f32, 1.0, (nh, n, d), &Device::Cpu)?;
        let kc = Tensor::randn(0f32, 1.0, (nh, n, g * d), &Device::Cpu)?;
        let want: Vec<f32> = kc
            .reshape((nh, n, g, d))?
            .broadcast_mul(&k.unsqueeze(2)?)?
            .sum(3)?
            .transpose(1, 2)?
            .flatten_all()?
            .to_vec1()?;
        let (kd, kcd) = (k.to_device(device)?, kc.to_device(device)?);
        let (mut times, mut passed) = (Vec::new(), true);
        for _ in 0..repeats.max(1) + 1 {
            let (got, ms) = timed(device, || {
                row_quadratic_forms(&kcd, &kd, g)?.ok_or_else(|| anyhow!("the kernel did not run"))
            })?;
            times.push(ms);
            let got: Vec<f32> = got.flatten_all()?.to_vec1()?;
            passed &= got.len() == want.len()
                && got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| (a - b).abs() <= 1e-5 * a.abs().max(b.abs()) + 1e-6 * d as f32);
        }
        times.remove(0);
        out.push(KernelCase {
            kernel: "row_quadratic_forms",
            name: format!("g {g}, d {d}"),
            heads: nh,
            len: n,
            k: g,
            kernel_ms: median(times),
            host_ms: f64::NAN,
            passed,
        });
    }
    Ok(out)
}

//! Per-run reductions of kvmerger's sets on the device against their candle paths on the CPU:
//! `device_ops::run_argmax` (`kernels::run_argmax`: index and value exactly the doubling scan's,
//! ties to the later entry; values with ties and -inf) and `device_ops::run_sum` (`kernels::
//! run_sum_rows` with one channel, f64 and f32: within 1e-12 and 1e-6 of the larger sum, as runs
//! longer than 64 add in another order than the CPU's lanes).

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use kvbench_methods::device_ops::{run_argmax, run_sum};
use rand::{Rng, SeedableRng};

use super::{median, runs, KernelCase};
use crate::device::timed;

fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= tol * x.abs().max(y.abs()).max(1.0))
}

pub(super) fn run_reduction_cases(device: &Device, repeats: usize) -> Result<Vec<KernelCase>> {
    let mut out = Vec::new();
    for (n, longest) in [
        (1, 1),
        (5, 3),
        (4096, 1),
        (4096, 8),
        (4096, 300),
        (32768, 40),
    ] {
        let ids = runs(n, longest, 7 * n as u64 + longest as u64);
        let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64);
        let vals: Vec<f32> = (0..8 * n)
            .map(|i| match i % 13 {
                0 => f32::NEG_INFINITY,
                _ => (rng.gen_range(-2.0f32..2.0) * 4.0).round() / 4.0, // ties
            })
            .collect();
        let run = Tensor::from_vec(ids, (8, n), &Device::Cpu)?;
        let v = Tensor::from_vec(vals, (8, n), &Device::Cpu)?;
        let finite = v.maximum(-9.0)?; // run_sum's inputs are finite
        let (want_idx, want_val) = run_argmax(&v, &run)?;
        let (want_idx, want_val): (Vec<u32>, Vec<f32>) = (
            want_idx.flatten_all()?.to_vec1()?,
            want_val.flatten_all()?.to_vec1()?,
        );
        let want64: Vec<f64> = run_sum(&finite.to_dtype(DType::F64)?, &run)?
            .flatten_all()?
            .to_vec1()?;
        let want32: Vec<f64> = run_sum(&finite, &run)?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1()?;
        let (vd, rd, fd) = (
            v.to_device(device)?,
            run.to_device(device)?,
            finite.to_device(device)?,
        );
        let f64d = fd.to_dtype(DType::F64)?;
        let (mut times, mut sum_times, mut passed) = (Vec::new(), Vec::new(), true);
        for _ in 0..repeats.max(1) + 1 {
            let ((idx, val), ms) = timed(device, || Ok(run_argmax(&vd, &rd)?))?;
            times.push(ms);
            passed &= idx.flatten_all()?.to_vec1::<u32>()? == want_idx;
            let val: Vec<f32> = val.flatten_all()?.to_vec1()?;
            passed &= val
                .iter()
                .zip(&want_val)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            let (s64, ms) = timed(device, || Ok(run_sum(&f64d, &rd)?))?;
            sum_times.push(ms);
            passed &= close(&s64.flatten_all()?.to_vec1::<f64>()?, &want64, 1e-12);
            let s32: Vec<f64> = run_sum(&fd, &rd)?
                .to_dtype(DType::F64)?
                .flatten_all()?
                .to_vec1()?;
            passed &= close(&s32, &want32, 1e-6);
        }
        times.remove(0);
        sum_times.remove(0);
        out.push(KernelCase {
            kernel: "run_argmax + run_sum",
            name: format!(
                "runs of 1-{longest} (run_sum f64 {:.3} ms)",
                median(sum_times)
            ),
            heads: 8,
            len: n,
            k: 0,
            kernel_ms: median(times),
            host_ms: f64::NAN,
            passed,
        });
    }
    Ok(out)
}

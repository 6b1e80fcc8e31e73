//! `kvbench bench --check-kernels`: the methods' CUDA kernels against their host paths, on the
//! device.
//!
//! Top-k (`selection::device_top_k`) against the host selection (`top_k_sorted`, the oracle
//! every selection test uses).
//! Rows of 1 to 131,072 scores, 1 to 32 heads, budgets from one entry to all but one, and score
//! kinds that stress the order: distinct Gaussian values, heavy ties (a few levels, so the
//! boundary falls inside a run of equal scores and the later entries must win), pinned
//! `+inf` windows, NaN, `-inf` and signed zeros. A case passes when every row keeps exactly the
//! oracle's indices and the flat row numbers point at them. Each case also times the kernel
//! (with the copy of the kept indices to the host) against the host path (scores to the host,
//! then `top_k_sorted` per row).
//!
//! Top-k masks (`device_ops::top_k_mask`, a count per row, invalid entries last): see `masks`.
//!
//! MiniCache's SLERP coefficients: see `slerp`. Quantization codes and scales: see `quantize`.
//! LagKV's scores: see `lagkv`. SnapKV's window attention sums: see `window`.
//! Expected attention's covariance term: see `quad`.
//!
//! Arg-max and sums over runs with one channel (kvmerger's sets): see `runs`.
//!
//! Run sums (`device_ops::run_sum_rows`, kvmerger's merges) against the same sums on the host
//! (candle's CPU `scatter_add`, which adds in the same order): bit-identical or the case fails.
//!
//! Lowrank's eigensolver (`linalg::batched_symmetric_eigen`, the Jacobi kernel for head
//! dimensions up to 128) against the host Jacobi (`linalg::oracle_mismatch`: eigenvalues to 1e-10
//! of the largest, eigenvectors, orthonormality and reconstruction), on Gram matrices of random
//! keys, full rank and rank-deficient (repeated zero eigenvalues).
//!
//! CaM's cascade (`kernels::cam_cascade`) against the recurrence it solves, run on the host in
//! f64 (`x_j = v_j + sum_{j - m <= i < j} a_i x_i`, shares `a_i` = 1/receivers on about half the
//! entries as CaM's gates give): within 1e-4 of the largest value, CaM's own test tolerance.

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use kvbench_methods::device_ops::run_sum_rows;
use kvbench_methods::selection::device_top_k::top_k_rows;
use kvbench_methods::selection::select::top_k_sorted;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::device::timed;

mod lagkv;
mod masks;
mod quad;
mod quantize;
mod runs;
mod slerp;
mod window;

#[derive(Clone, Debug, Serialize)]
pub struct KernelCase {
    pub kernel: &'static str,
    pub name: String,
    pub heads: usize,
    pub len: usize,
    pub k: usize,
    pub kernel_ms: f64,
    pub host_ms: f64,
    pub passed: bool,
}

/// How a case's scores are drawn.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Distinct,
    /// Four levels: most of the boundary is ties.
    Ties,
    /// Gaussian with the last 32 entries pinned at `+inf`, and NaN, `-inf`, `-0.0` and `0.0`
    /// sprinkled in.
    Special,
}

fn scores(kind: Kind, heads: usize, len: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..heads)
        .map(|_| {
            (0..len)
                .map(|i| {
                    let x: f32 = rng.gen_range(-1.0..1.0);
                    match kind {
                        Kind::Distinct => x,
                        Kind::Ties => (x * 2.0).round(),
                        Kind::Special => match (i + 32 >= len, i % 7, rng.gen_range(0..5)) {
                            (true, _, _) => f32::INFINITY,
                            (_, 0, 0) => f32::NAN,
                            (_, 0, 1) => f32::NEG_INFINITY,
                            (_, 0, 2) => -0.0,
                            (_, 0, 3) => 0.0,
                            _ => x,
                        },
                    }
                })
                .collect()
        })
        .collect()
}

fn median(mut t: Vec<f64>) -> f64 {
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Run every case on `device` (CUDA).
pub fn run(device: &Device, repeats: usize) -> Result<Vec<KernelCase>> {
    if !device.is_cuda() || !cfg!(feature = "cuda") {
        bail!("--check-kernels needs a CUDA build and a CUDA device (--device cuda)");
    }
    let mut out = top_k_cases(device, repeats)?;
    out.extend(masks::top_k_mask_cases(device, repeats)?);
    out.extend(slerp::slerp_cases(device, repeats)?);
    out.extend(quantize::quantize_cases(device, repeats)?);
    out.extend(lagkv::lagkv_cases(device, repeats)?);
    out.extend(window::window_cases(device, repeats)?);
    out.extend(quad::quad_cases(device, repeats)?);
    out.extend(run_sum_cases(device, repeats)?);
    out.extend(runs::run_reduction_cases(device, repeats)?);
    out.extend(cascade_cases(device, repeats)?);
    out.extend(eigen_cases(device, repeats)?);
    Ok(out)
}

/// Runs of 1 to `longest` entries along each of 8 rows of `n`, one run of all `n` in the last.
fn runs(n: usize, longest: usize, seed: u64) -> Vec<u32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut ids = Vec::with_capacity(8 * n);
    for row in 0..8 {
        let (mut id, mut left) = (0u32, 0usize);
        for j in 0..n {
            if j > 0 && left == 0 && row < 7 {
                id += 1;
            }
            if left == 0 {
                left = rng.gen_range(1..=longest);
            }
            left -= 1;
            ids.push(id);
        }
    }
    ids
}

fn run_sum_cases(device: &Device, repeats: usize) -> Result<Vec<KernelCase>> {
    let mut out = Vec::new();
    let d = 128;
    for (n, longest) in [
        (1, 1),
        (5, 3),
        (4096, 1),
        (4096, 8),
        (4096, 300),
        (32768, 40),
    ] {
        let ids = runs(n, longest, n as u64 + longest as u64);
        let x = Tensor::randn(0f32, 1.0, (8, n, d), &Device::Cpu)?;
        let run = Tensor::from_vec(ids, (8, n), &Device::Cpu)?;
        let want: Vec<f32> = run_sum_rows(&x, &run)?.flatten_all()?.to_vec1()?;
        let (xd, rd) = (x.to_device(device)?, run.to_device(device)?);
        let mut times = Vec::new();
        let mut passed = true;
        for _ in 0..repeats.max(1) + 1 {
            let (sums, ms) = timed(device, || Ok(run_sum_rows(&xd, &rd)?))?;
            times.push(ms);
            let got: Vec<f32> = sums.flatten_all()?.to_vec1()?;
            passed &= got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
        }
        times.remove(0);
        out.push(KernelCase {
            kernel: "run_sum_rows",
            name: format!("runs of 1-{longest}, d {d}"),
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

fn eigen_cases(device: &Device, repeats: usize) -> Result<Vec<KernelCase>> {
    use kvbench_methods::linalg::{batched_symmetric_eigen, oracle_mismatch};
    let mut out = Vec::new();
    for (b, n, rows) in [
        (4, 2, 3),
        (4, 7, 12),
        (16, 64, 200),
        (16, 128, 4096),
        (16, 128, 40),
    ] {
        let keys = Tensor::randn(0f64, 1.0, (b, rows, n), device)?;
        let gram = keys.t()?.matmul(&keys)?;
        let mismatch = oracle_mismatch(&gram)?;
        if let Some(m) = &mismatch {
            eprintln!("eigen {b}x{n}x{n} from {rows} rows: {m}");
        }
        let mut times = Vec::new();
        for _ in 0..repeats.max(1) + 1 {
            times.push(timed(device, || Ok(batched_symmetric_eigen(&gram)?))?.1);
        }
        times.remove(0);
        out.push(KernelCase {
            kernel: "jacobi_eigen",
            name: format!("Gram of {rows} keys"),
            heads: b,
            len: n,
            k: 0,
            kernel_ms: median(times),
            host_ms: f64::NAN,
            passed: mismatch.is_none(),
        });
    }
    Ok(out)
}

/// The cascade on the host in f64, with running sums.
fn cascade_oracle(v: &[f32], a: &[f32], h: usize, n: usize, d: usize, m: usize) -> Vec<f64> {
    let mut x = vec![0f64; h * n * d];
    for head in 0..h {
        for c in 0..d {
            let mut prefix = vec![0f64; n + 1];
            for j in 0..n {
                let lo = j.saturating_sub(m);
                let xj = v[(head * n + j) * d + c] as f64 + prefix[j] - prefix[lo];
                x[(head * n + j) * d + c] = xj;
                prefix[j + 1] = prefix[j] + a[head * n + j] as f64 * xj;
            }
        }
    }
    x
}

fn cascade_cases(device: &Device, repeats: usize) -> Result<Vec<KernelCase>> {
    use kvbench_methods::kernels::cam_cascade;
    let mut out = Vec::new();
    let (h, d) = (8, 128);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for (n, m) in [
        (1, 1),
        (7, 3),
        (100, 1),
        (100, 33),
        (4096, 32),
        (4096, 2048),
        (32768, 4096),
    ] {
        let v: Vec<f32> = (0..h * n * d).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let a: Vec<f32> = (0..h * n)
            .map(|i| {
                let receivers = m.min(n - 1 - i % n);
                if receivers > 0 && rng.gen_bool(0.5) {
                    1.0 / receivers as f32
                } else {
                    0.0
                }
            })
            .collect();
        let want = cascade_oracle(&v, &a, h, n, d, m);
        let largest = want.iter().fold(0f64, |acc, x| acc.max(x.abs()));
        let vt = Tensor::from_vec(v, (h, n, d), device)?;
        let at = Tensor::from_vec(a, (h, n), device)?;
        let ms = vec![m; h];
        let mut times = Vec::new();
        let mut passed = true;
        for _ in 0..repeats.max(1) + 1 {
            let (x, ms_) = timed(device, || Ok(cam_cascade(&vt, &at, &ms)?))?;
            times.push(ms_);
            let Some(x) = x else {
                passed = false;
                continue;
            };
            let got: Vec<f32> = x.flatten_all()?.to_vec1()?;
            let err = got
                .iter()
                .zip(&want)
                .fold(0f64, |acc, (g, w)| acc.max((*g as f64 - w).abs()));
            passed &= err.is_finite() && err <= 1e-4 * largest.max(1.0);
        }
        times.remove(0);
        out.push(KernelCase {
            kernel: "cam_cascade",
            name: format!("m {m}, d {d}"),
            heads: h,
            len: n,
            k: 0,
            kernel_ms: median(times),
            host_ms: f64::NAN,
            passed,
        });
    }
    Ok(out)
}

fn top_k_cases(device: &Device, repeats: usize) -> Result<Vec<KernelCase>> {
    let mut out = Vec::new();
    let shapes = [
        (1, 1),
        (3, 2),
        (8, 31),
        (8, 33),
        (8, 1000),
        (2, 1025),
        (32, 4096),
        (8, 4096),
        (8, 32768),
        (8, 131072),
    ];
    let mut seed = 0;
    for (heads, len) in shapes {
        let mut budgets = vec![1, len / 4, len / 2, len - 1];
        budgets.retain(|&k| k >= 1 && k < len);
        budgets.dedup();
        for kind in [Kind::Distinct, Kind::Ties, Kind::Special] {
            for &k in &budgets {
                seed += 1;
                let rows = scores(kind, heads, len, seed);
                let flat: Vec<f32> = rows.concat();
                let t = Tensor::from_vec(flat, (heads, len), device)?;
                let want: Vec<Vec<u32>> = rows.iter().map(|r| top_k_sorted(r, k)).collect();
                let mut kernel_ms = Vec::new();
                let mut host_ms = Vec::new();
                let mut passed = true;
                for _ in 0..repeats.max(1) + 1 {
                    let (kept, ms) = timed(device, || Ok(top_k_rows(&t, k)?))?;
                    kernel_ms.push(ms);
                    let got_flat: Vec<u32> = kept.flat.to_vec1()?;
                    let want_flat: Vec<u32> = want
                        .iter()
                        .enumerate()
                        .flat_map(|(h, r)| r.iter().map(move |&i| (h * len) as u32 + i))
                        .collect();
                    passed &= kept.local == want && got_flat == want_flat;
                    let (_, ms) = timed(device, || {
                        let host: Vec<Vec<f32>> = t.to_vec2()?;
                        Ok(host.iter().map(|r| top_k_sorted(r, k)).collect::<Vec<_>>())
                    })?;
                    host_ms.push(ms);
                }
                kernel_ms.remove(0); // warm-up
                host_ms.remove(0);
                out.push(KernelCase {
                    kernel: "top_k_rows",
                    name: format!("{kind:?}").to_lowercase(),
                    heads,
                    len,
                    k,
                    kernel_ms: median(kernel_ms),
                    host_ms: median(host_ms),
                    passed,
                });
            }
        }
    }
    Ok(out)
}

/// A markdown table of the cases.
pub fn render(cases: &[KernelCase]) -> String {
    let mut s = String::from(
        "| kernel | case | rows | len | k | kernel ms | host ms | |\n|---|---|---|---|---|---|---|---|\n",
    );
    for c in cases {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.3} | {:.3} | {} |\n",
            c.kernel,
            c.name,
            c.heads,
            c.len,
            c.k,
            c.kernel_ms,
            c.host_ms,
            if c.passed { "pass" } else { "FAIL" }
        ));
    }
    s
}

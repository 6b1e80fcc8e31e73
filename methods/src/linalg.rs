//! Linear algebra for the storage methods: the eigen-decomposition of the small symmetric
//! `head_dim x head_dim` Gram matrices that low-rank projection needs.
//!
//! [`batched_symmetric_eigen`] runs on the tensors' device with candle ops only (candle has no
//! QR or eigensolver): a parallel cyclic Jacobi method (Brent & Luk round-robin ordering), every
//! matrix of the batch at once, each round rotating `n / 2` disjoint index pairs with one dense
//! rotation matrix built by a scatter and applied by batched matmuls, in f32 until the matrices
//! are nearly diagonal, then in f64 from the re-orthonormalised basis. It converges to the
//! same eigenpairs as the sequential cyclic Jacobi of [`symmetric_eigen`] (kept, on the host, as the
//! test oracle): eigenvalues to about `1e-12` of the matrix norm, eigenvectors up to sign (and up to
//! a rotation inside a subspace of equal eigenvalues). On CUDA, for `m <= 128`, the same sweeps
//! (pairs, rotations, stopping rule) run in one kernel, in f64 throughout, one block per matrix
//! (`crate::kernels::jacobi_eigen`): each round of the tensor-op path is ~20 launches.

use candle_core::{DType, Device, IndexOp, Tensor};

/// Eigenvalues (descending, `[b, n]`) and eigenvectors (`[b, n, n]`, column `i` belongs to value
/// `i`) of each symmetric matrix of `a` (`[b, n, n]`, any float dtype; the result is f64), on
/// `a`'s device. Only one scalar per sweep (the largest relative off-diagonal norm, to stop)
/// comes to the host.
pub fn batched_symmetric_eigen(a: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let (b, n, n2) = a.dims3()?;
    if n != n2 {
        candle_core::bail!("batched_symmetric_eigen: {:?} is not square", a.shape());
    }
    let dev = a.device().clone();
    let a = a.to_dtype(DType::F64)?;
    // Symmetrise exactly (a Gram matrix from a matmul may differ in the last bit).
    let a = ((&a + a.t()?)? * 0.5)?;
    // An odd size gets a zero row and column: never rotated (its off-diagonal entries stay 0).
    let m = n + n % 2;
    let a = if m > n {
        a.pad_with_zeros(1, 0, 1)?.pad_with_zeros(2, 0, 1)?
    } else {
        a
    };
    let eye = Tensor::eye(m, DType::F64, &dev)?
        .unsqueeze(0)?
        .broadcast_as((b, m, m))?
        .contiguous()?;
    let on_device = if m >= 2 {
        // On CUDA (m <= 128) one kernel runs every sweep, in f64, one block per matrix.
        crate::kernels::jacobi_eigen(&a, 1e-14, 60)?
    } else {
        None
    };
    let (a, v) = if let Some(done) = on_device {
        done
    } else if m >= 2 {
        let rounds = Rounds::new(m, b, &dev)?;
        // Most sweeps in f32 (half the GEMM time), until the off-diagonal part is down to 1e-5
        // of the norm; then the basis is made orthonormal again in f64 (Newton-Schulz, quadratic
        // from f32's 1e-6), the original matrix projected on it, and the last sweeps run in f64.
        let (_, v32) = jacobi(
            &a.to_dtype(DType::F32)?,
            &eye.to_dtype(DType::F32)?,
            &rounds,
            1e-5,
        )?;
        let mut v = v32.to_dtype(DType::F64)?;
        for _ in 0..3 {
            let gram = v.t()?.matmul(&v)?;
            v = ((&v * 1.5)? - (v.matmul(&gram)? * 0.5)?)?;
        }
        let projected = v.t()?.matmul(&a.matmul(&v)?)?;
        let projected = ((&projected + projected.t()?)? * 0.5)?;
        jacobi(&projected, &v, &rounds, 1e-14)?
    } else {
        (a, eye)
    };
    let diag_idx: Vec<u32> = (0..n).map(|i| (i * m + i) as u32).collect();
    let diag_idx = Tensor::from_vec(diag_idx, n, &dev)?;
    let values = a.reshape((b, m * m))?.index_select(&diag_idx, 1)?;
    let v = if m > n { v.i((.., ..n, ..n))? } else { v };
    let order = values.arg_sort_last_dim(false)?;
    let values = values.gather(&order, 1)?;
    let order = order.unsqueeze(1)?.broadcast_as((b, n, n))?.contiguous()?;
    let vectors = v.contiguous()?.gather(&order, 2)?;
    Ok((values, vectors))
}

/// Parallel Jacobi sweeps on `a` (`[b, m, m]` symmetric, f32 or f64), accumulating the rotations
/// into `v`, until every matrix's off-diagonal norm is at most `tol` of its norm (60 sweeps at
/// most): `(a, v)` with `a` nearly diagonal and `a_in = v a vᵀ` (for orthonormal `v_in`).
fn jacobi(
    a: &Tensor,
    v: &Tensor,
    rounds: &Rounds,
    tol: f64,
) -> candle_core::Result<(Tensor, Tensor)> {
    let m = a.dim(1)?;
    let (mut a, mut v) = (a.clone(), v.clone());
    let off_mask = (1.0 - Tensor::eye(m, a.dtype(), a.device())?)?;
    let norm = |x: &Tensor| -> candle_core::Result<Tensor> {
        x.to_dtype(DType::F64)?
            .sqr()?
            .sum_keepdim(2)?
            .sum_keepdim(1)?
            .sqrt()
    };
    let scale = norm(&a)?.maximum(1e-30)?;
    for _sweep in 0..60 {
        let off = norm(&a.broadcast_mul(&off_mask)?)?;
        let worst: f64 = (off / &scale)?.max_all()?.to_scalar()?;
        if worst <= tol {
            break;
        }
        for r in 0..m - 1 {
            let rot = rounds.rotation(&a, r)?;
            a = rot.t()?.matmul(&a.matmul(&rot)?)?;
            v = v.matmul(&rot)?;
        }
    }
    Ok((a, v))
}

/// The round-robin pairings of a parallel Jacobi sweep over `m` (even) indices: in each of the
/// `m - 1` rounds every index is in exactly one pair, and every pair meets once per sweep.
struct Rounds {
    m: usize,
    /// Per round, `[3 m/2]` flat indices of `(p,p)`, `(q,q)`, `(p,q)` for the round's pairs.
    gather: Vec<Tensor>,
    /// Per round, `[b, 2m]` flat indices of `(p,p)`, `(q,q)`, `(p,q)`, `(q,p)` (contiguous).
    scatter: Vec<Tensor>,
}

impl Rounds {
    fn new(m: usize, b: usize, dev: &Device) -> candle_core::Result<Self> {
        let (mut gather, mut scatter) = (Vec::new(), Vec::new());
        for r in 0..m - 1 {
            // Circle method: m - 1 fixed, the others rotate.
            let mut pairs = vec![(r, m - 1)];
            for i in 1..m / 2 {
                let p = (r + i) % (m - 1);
                let q = (r + m - 1 - i) % (m - 1);
                pairs.push((p.min(q), p.max(q)));
            }
            let pairs: Vec<(usize, usize)> = pairs
                .into_iter()
                .map(|(p, q)| (p.min(q), p.max(q)))
                .collect();
            let flat = |f: &dyn Fn(usize, usize) -> usize| -> Vec<u32> {
                pairs.iter().map(|&(p, q)| f(p, q) as u32).collect()
            };
            let pp = flat(&|p, _| p * m + p);
            let qq = flat(&|_, q| q * m + q);
            let pq = flat(&|p, q| p * m + q);
            let qp = flat(&|p, q| q * m + p);
            let g: Vec<u32> = [pp.clone(), qq.clone(), pq.clone()].concat();
            gather.push(Tensor::from_vec(g, 3 * m / 2, dev)?);
            let s: Vec<u32> = [pp, qq, pq, qp].concat();
            let s = Tensor::from_vec(s, (1, 2 * m), dev)?
                .broadcast_as((b, 2 * m))?
                .contiguous()?;
            scatter.push(s);
        }
        Ok(Self { m, gather, scatter })
    }

    /// `[b, m, m]` rotation `J` of round `r` for the current `a`: `Jᵀ a J` zeroes `a[p][q]` for
    /// every pair `(p, q)` of the round (Golub & Van Loan's symmetric Schur rotation, the one the
    /// host oracle uses); a pair whose `a[p][q]` is already 0 gets the identity.
    fn rotation(&self, a: &Tensor, r: usize) -> candle_core::Result<Tensor> {
        let (b, m, h) = (a.dim(0)?, self.m, self.m / 2);
        let g = a.reshape((b, m * m))?.index_select(&self.gather[r], 1)?;
        let app = g.narrow(1, 0, h)?;
        let aqq = g.narrow(1, h, h)?;
        let apq = g.narrow(1, 2 * h, h)?;
        // tan(phi) = sgn(x) y / (|x| + sqrt(x^2 + y^2)) with x = a_qq - a_pp, y = 2 a_pq: the
        // smaller of the two angles that zero a_pq, the host oracle's `t` with `theta = x / y`
        // multiplied through by |y| (no division by a_pq; t = 0 when a_pq = 0).
        let x = (aqq - app)?;
        let y = (apq * 2.0)?;
        let hyp = (x.sqr()? + y.sqr()?)?.sqrt()?;
        // (the floor is f32's smallest normal, so that 0 / 0 cannot happen in either dtype)
        let t0 = (y / (x.abs()? + hyp)?.maximum(f32::MIN_POSITIVE as f64)?)?;
        let t = x.ge(0.0)?.where_cond(&t0, &t0.neg()?)?;
        let c = (t.sqr()? + 1.0)?.sqrt()?.recip()?;
        let s = (&t * &c)?;
        let vals = Tensor::cat(&[&c, &c, &s, &s.neg()?], 1)?;
        Tensor::zeros((b, m * m), a.dtype(), a.device())?
            .scatter_add(&self.scatter[r], &vals, 1)?
            .reshape((b, m, m))
    }
}

/// [`batched_symmetric_eigen`] of `a` (`[b, n, n]`, on any device) against the host oracle
/// [`symmetric_eigen`]: the same eigenvalues (to 1e-10 of the largest) and, for each eigenvalue
/// separated from its neighbours, the same eigenvector up to sign; `A = V diag(l) Vᵀ` with
/// orthonormal `V`. The first mismatch, or `None`. Tests use it on the CPU, `kvbench bench
/// --check-kernels` on CUDA.
pub fn oracle_mismatch(a: &Tensor) -> candle_core::Result<Option<String>> {
    let (b, n, _) = a.dims3()?;
    let (values, vectors) = batched_symmetric_eigen(a)?;
    let values: Vec<Vec<f64>> = values.to_vec2()?;
    let vectors: Vec<Vec<Vec<f64>>> = vectors.to_vec3()?;
    let mats: Vec<Vec<Vec<f64>>> = a.to_dtype(DType::F64)?.to_vec3()?;
    for m in 0..b {
        let flat: Vec<f64> = mats[m].iter().flatten().copied().collect();
        let (l_ref, v_ref) = symmetric_eigen(&flat, n);
        let top = l_ref[0].abs().max(1e-300);
        for i in 0..n {
            if (values[m][i] - l_ref[i]).abs() > 1e-10 * top {
                return Ok(Some(format!(
                    "matrix {m} eigenvalue {i}: {} vs {}",
                    values[m][i], l_ref[i]
                )));
            }
            let gap = [i.checked_sub(1), Some(i + 1)]
                .into_iter()
                .flatten()
                .filter(|&j| j < n)
                .map(|j| (l_ref[i] - l_ref[j]).abs())
                .fold(f64::INFINITY, f64::min);
            if gap > 1e-6 * top {
                let dot: f64 = (0..n).map(|k| vectors[m][k][i] * v_ref[i][k]).sum();
                if (dot.abs() - 1.0).abs() >= 1e-8 {
                    return Ok(Some(format!(
                        "matrix {m} eigenvector {i}: |cos| = {}",
                        dot.abs()
                    )));
                }
            }
        }
        for i in 0..n {
            for j in 0..n {
                let dot: f64 = (0..n).map(|k| vectors[m][k][i] * vectors[m][k][j]).sum();
                if (dot - if i == j { 1.0 } else { 0.0 }).abs() >= 1e-10 {
                    return Ok(Some(format!(
                        "matrix {m}: V is not orthonormal at ({i}, {j})"
                    )));
                }
                let rec: f64 = (0..n)
                    .map(|k| vectors[m][i][k] * values[m][k] * vectors[m][j][k])
                    .sum();
                if (rec - mats[m][i][j]).abs() >= 1e-10 * top {
                    return Ok(Some(format!(
                        "matrix {m}: V diag(l) V^T differs at ({i}, {j}): {rec} vs {}",
                        mats[m][i][j]
                    )));
                }
            }
        }
    }
    Ok(None)
}

/// Host reference for [`batched_symmetric_eigen`] (the implementation `lowrank` used before it
/// moved to the device), kept as the oracle of the tests and of `kvbench bench --check-kernels`.
/// Eigenvalues (descending) and unit eigenvectors (`vectors[i]` belongs to `values[i]`) of the
/// symmetric `n x n` matrix `a` (row-major), by cyclic Jacobi rotations: slow for large `n`, exact
/// to rounding and dependency-free for the `n <= 256` of attention heads.
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    assert_eq!(
        a.len(),
        n * n,
        "symmetric_eigen: {} values for {n} x {n}",
        a.len()
    );
    let mut m = a.to_vec();
    // v: accumulated rotations, columns are eigenvectors.
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let scale: f64 = m
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * n + j] * m[i * n + j])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-14 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq.abs() <= 1e-300 {
                    continue;
                }
                // The rotation that zeroes m[p][q] (Golub & Van Loan, symmetric Schur).
                let theta = (m[q * n + q] - m[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (mkp, mkq) = (m[k * n + p], m[k * n + q]);
                    m[k * n + p] = c * mkp - s * mkq;
                    m[k * n + q] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let (mpk, mqk) = (m[p * n + k], m[q * n + k]);
                    m[p * n + k] = c * mpk - s * mqk;
                    m[q * n + k] = s * mpk + c * mqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| m[j * n + j].total_cmp(&m[i * n + i]));
    let values = order.iter().map(|&i| m[i * n + i]).collect();
    let vectors = order
        .iter()
        .map(|&i| (0..n).map(|k| v[k * n + i]).collect())
        .collect();
    (values, vectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(a: &[f64], n: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
        let (l, v) = symmetric_eigen(a, n);
        // Orthonormal vectors, A = V diag(l) V^T, eigenvalues descending.
        for i in 0..n {
            for j in 0..n {
                let dot: f64 = (0..n).map(|k| v[i][k] * v[j][k]).sum();
                assert!(
                    (dot - if i == j { 1.0 } else { 0.0 }).abs() < 1e-9,
                    "{i} {j} {dot}"
                );
                let rec: f64 = (0..n).map(|k| v[k][i] * l[k] * v[k][j]).sum();
                assert!((rec - a[i * n + j]).abs() < 1e-9, "A[{i}][{j}]: {rec}");
            }
        }
        assert!(l.windows(2).all(|w| w[0] >= w[1]));
        (l, v)
    }

    #[test]
    fn diagonal_matrix_sorts_its_entries() {
        let (l, v) = check(&[1.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 2.0], 3);
        assert_eq!(l, vec![3.0, 2.0, 1.0]);
        assert!((v[0][1].abs() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn two_by_two_has_the_known_eigenpairs() {
        // [[2, 1], [1, 2]]: 3 along (1, 1)/sqrt 2, 1 along (1, -1)/sqrt 2.
        let (l, v) = check(&[2.0, 1.0, 1.0, 2.0], 2);
        assert!((l[0] - 3.0).abs() < 1e-12 && (l[1] - 1.0).abs() < 1e-12);
        assert!((v[0][0] - v[0][1]).abs() < 1e-12);
        assert!((v[1][0] + v[1][1]).abs() < 1e-12);
    }

    #[test]
    fn random_gram_matrix_decomposes() {
        let n = 16;
        let x: Vec<f64> = (0..n * 20)
            .map(|i| ((i * 7919 % 113) as f64 / 113.0) - 0.5)
            .collect();
        let mut g = vec![0.0; n * n];
        for r in 0..20 {
            for i in 0..n {
                for j in 0..n {
                    g[i * n + j] += x[r * n + i] * x[r * n + j];
                }
            }
        }
        let (l, _) = check(&g, n);
        assert!(
            l.iter().all(|&x| x > -1e-9),
            "Gram matrices are positive semi-definite"
        );
    }

    /// `[b, n, n]` symmetric test matrices: Gram matrices of pseudo-random rows, with the rows of
    /// the last matrix on fewer directions than `n` (repeated zero eigenvalues).
    fn grams(b: usize, n: usize, rows: usize) -> Tensor {
        let mut out = Vec::new();
        for m in 0..b {
            let x: Vec<f64> = (0..rows * n)
                .map(|i| (((i + 31 * m) * 7919 % 1013) as f64 / 1013.0) - 0.5)
                .collect();
            let rank = if m == b - 1 { n / 2 } else { n };
            let mut g = vec![0.0; n * n];
            for r in 0..rows {
                for i in 0..rank {
                    for j in 0..rank {
                        g[i * n + j] += x[r * n + i] * x[r * n + j];
                    }
                }
            }
            out.extend(g);
        }
        Tensor::from_vec(out, (b, n, n), &Device::Cpu).unwrap()
    }

    fn compare_with_oracle(a: &Tensor) {
        if let Some(m) = oracle_mismatch(a).unwrap() {
            panic!("{m}");
        }
    }

    #[test]
    fn batched_eigen_matches_the_host_oracle_even_size() {
        compare_with_oracle(&grams(3, 16, 40));
    }

    #[test]
    fn batched_eigen_matches_the_host_oracle_odd_size() {
        compare_with_oracle(&grams(2, 7, 12));
    }

    #[test]
    fn batched_eigen_of_f32_gram_at_head_dim_64() {
        compare_with_oracle(&grams(2, 64, 100).to_dtype(DType::F32).unwrap());
    }

    #[test]
    fn batched_eigen_handles_diagonal_and_tiny_inputs() {
        let a = Tensor::from_vec(
            vec![1.0f64, 0., 0., 0., 3., 0., 0., 0., 2.],
            (1, 3, 3),
            &Device::Cpu,
        )
        .unwrap();
        let (l, v) = batched_symmetric_eigen(&a).unwrap();
        assert_eq!(l.to_vec2::<f64>().unwrap(), vec![vec![3.0, 2.0, 1.0]]);
        assert_eq!(v.to_vec3::<f64>().unwrap()[0][1][0].abs(), 1.0);
        let one = Tensor::from_vec(vec![5.0f32], (1, 1, 1), &Device::Cpu).unwrap();
        let (l, v) = batched_symmetric_eigen(&one).unwrap();
        assert_eq!(l.to_vec2::<f64>().unwrap(), vec![vec![5.0]]);
        assert_eq!(v.to_vec3::<f64>().unwrap(), vec![vec![vec![1.0]]]);
        compare_with_oracle(&Tensor::zeros((1, 4, 4), DType::F64, &Device::Cpu).unwrap());
    }
}

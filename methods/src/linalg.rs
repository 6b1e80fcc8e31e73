//! Host-side linear algebra for the storage methods: the eigen-decomposition of the small
//! symmetric `head_dim x head_dim` Gram matrices that low-rank projection needs.

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
}

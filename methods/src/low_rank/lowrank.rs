//! `lowrank`: store each head's keys (optionally values) as codes on its top singular directions.
//!
//! In the spirit of Palu (Chang et al., arXiv 2407.21118), LoRC (Zhang et al., arXiv 2410.03111)
//! and Eigen Attention (Saxena et al., arXiv 2408.05646): per layer and KV head, the right singular
//! vectors of the prefill keys (`[len, head_dim]`, eigenvectors of the uncentred Gram matrix
//! `KᵀK`) give an orthonormal basis; the top `r` of them are kept, the keys are stored as
//! `r`-dimensional codes plus the `head_dim x r` basis (`Stored::LowRank`), attention uses the
//! reconstruction, and tokens generated later are projected on the same basis.
//!
//! `rank` fixes `r`; otherwise `energy` (default 0.9) picks the smallest `r` whose eigenvalues (the
//! squared singular values) sum to that fraction of the total, taking the largest such `r` over a
//! layer's KV heads so that the heads of a layer share a rank.
//!
//! Differences from the papers, which all decompose *offline*: Palu factorises the K/V projection
//! weights (whitened by calibration activations) and caches the latent before RoPE; Eigen Attention
//! takes the SVD of pre-RoPE calibration activations with a tuned threshold; LoRC factorises the
//! weights with a per-layer rank from condition numbers. Here the basis comes from the request's
//! own prefill keys, after RoPE (the cache holds post-RoPE keys), which needs no calibration data
//! and is the best rank-`r` basis for those keys in the least-squares sense; the basis is stored,
//! so its bytes count.
//!
//! The basis is computed on the cache's device: the Gram matrices of every head of every layer go
//! through one batched eigensolver (`linalg::batched_symmetric_eigen`: a parallel Jacobi method in
//! tensor ops, f32 sweeps then f64 ones, exact to rounding like the host Jacobi it replaced, which
//! the tests keep as the oracle: same ranks, projectors within 1e-4 in f32). Only the per-head
//! ranks (with `energy`) and one convergence scalar per sweep come to the host.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::describe::{Conformance, Describe, Description, Expect, Param};
use crate::linalg::batched_symmetric_eigen;
use crate::storage::{LowRank, Stored};
use crate::{Budget, KvCache, Method, MethodError, Observations, Storage};

type Result<T> = std::result::Result<T, MethodError>;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LowRankMethod {
    /// Fixed rank per head (exclusive with `energy`).
    #[serde(default)]
    pub rank: Option<usize>,
    /// Fraction of the spectrum (sum of squared singular values) kept; default 0.9 when `rank` is
    /// not given.
    #[serde(default)]
    pub energy: Option<f64>,
    /// Also store the values in low rank, with their own basis.
    #[serde(default)]
    pub values: bool,
}

const DEFAULT_ENERGY: f64 = 0.9;

impl LowRankMethod {
    /// The run-time check: the plan-time checks, on the cache's head dimension.
    fn check(&self, head_dim: usize) -> Result<()> {
        self.validate()?;
        self.check_model_shape(0, 0, head_dim)?;
        Ok(())
    }

    /// Bases for every tensor of `xs` (each `[heads, n, d]`; one batch, the layers of a
    /// component), grouped by `layer_of` (the rank is shared by a layer's heads): each basis is
    /// `[heads, d, r]`, the top-`r` eigenvectors of the head's uncentred Gram matrix `xᵀx`.
    ///
    /// Everything runs on the tensors' device (one batched eigensolver for all heads of all
    /// layers); with `energy`, each head's rank comes to the host (one integer per head) to take
    /// a layer's maximum.
    fn bases(&self, xs: &[Tensor], layer_of: &[usize], d: usize) -> Result<Vec<Tensor>> {
        if xs.is_empty() {
            return Ok(Vec::new());
        }
        let grams = xs
            .iter()
            .map(|x| {
                let x = x.to_dtype(DType::F32)?;
                x.t()?.contiguous()?.matmul(&x)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let (values, vectors) = batched_symmetric_eigen(&Tensor::cat(&grams, 0)?)?;
        let heads: Vec<usize> = xs.iter().map(|x| x.dim(0)).collect::<candle_core::Result<_>>()?;
        let rank_of_layer: Vec<usize> = match self.rank {
            Some(r) => vec![r; layer_of.iter().max().map_or(0, |&l| l + 1)],
            None => {
                let energy = self.energy.unwrap_or(DEFAULT_ENERGY);
                let per_head = ranks_for(&values, energy)?;
                let mut per_layer = vec![1; layer_of.iter().max().map_or(0, |&l| l + 1)];
                let mut at = 0;
                for (&l, &h) in layer_of.iter().zip(&heads) {
                    for &r in &per_head[at..at + h] {
                        per_layer[l] = per_layer[l].max(r);
                    }
                    at += h;
                }
                per_layer
            }
        };
        let mut at = 0;
        let mut out = Vec::with_capacity(xs.len());
        for ((x, &l), &h) in xs.iter().zip(layer_of).zip(&heads) {
            let r = rank_of_layer[l].clamp(1, d);
            out.push(
                vectors
                    .narrow(0, at, h)?
                    .narrow(2, 0, r)?
                    .to_dtype(x.dtype())?
                    .contiguous()?,
            );
            at += h;
        }
        Ok(out)
    }
}

/// Per head, the smallest rank whose leading eigenvalues (`values`, `[b, n]`, descending) hold
/// `energy` of the total (negative rounding clamped to 0; a zero spectrum gives 1), computed on the
/// device; the `b` integers come to the host.
fn ranks_for(values: &Tensor, energy: f64) -> Result<Vec<usize>> {
    let n = values.dim(1)?;
    let v = values.to_dtype(DType::F64)?.relu()?;
    let total = v.sum_keepdim(1)?;
    let acc = v.cumsum(1)?;
    // The last 1e-6 of the spectrum is f32 rounding of the Gram matrix, not signal.
    let short = acc.broadcast_lt(&(total * (energy - 1e-6))?)?;
    let counts: Vec<u32> = short.to_dtype(DType::U32)?.sum(1)?.to_vec1()?;
    Ok(counts.into_iter().map(|c| (c as usize + 1).min(n)).collect())
}

impl Method for LowRankMethod {
    fn name(&self) -> &str {
        "lowrank"
    }
    fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn uses_budget(&self) -> bool {
        false
    }
    fn validate(&self) -> std::result::Result<(), crate::ParamError> {
        let err =
            |field: &str, message: String| Err(crate::ParamError::new("lowrank", field, message));
        match (self.rank, self.energy) {
            (Some(_), Some(_)) => err(
                "rank",
                "and `energy` are both given; give either `rank` or `energy`, not both".into(),
            ),
            (Some(0), None) => err("rank", "= 0 must be at least 1 (rank per head)".into()),
            (None, Some(e)) if !(e > 0.0 && e <= 1.0) => err(
                "energy",
                format!("= {e} must be in (0, 1] (the fraction of the spectrum kept)"),
            ),
            _ => Ok(()),
        }
    }
    fn check_model_shape(
        &self,
        _n_layers: usize,
        _n_kv_heads: usize,
        head_dim: usize,
    ) -> std::result::Result<(), crate::ParamError> {
        match self.rank {
            Some(r) if r > head_dim => Err(crate::ParamError::new(
                "lowrank",
                "rank",
                format!("= {r} must be in 1..={head_dim} (the head dimension)"),
            )),
            _ => Ok(()),
        }
    }
    fn compress(&self, cache: &mut KvCache, _obs: &Observations, _budget: &Budget) -> Result<()> {
        let d = cache.head_dim();
        self.check(d)?;
        // Every group of every layer, so that one batched eigensolver serves the whole cache.
        let (mut keys, mut values, mut layer_of) = (Vec::new(), Vec::new(), Vec::new());
        for l in 0..cache.n_layers() {
            // A layer reading another layer's cache (kvsharer) has no groups.
            for g in cache.layer(l).groups() {
                let (k, v) = g.storage.keys_values()?;
                keys.push(k);
                values.push(v);
                layer_of.push(l);
            }
        }
        let key_bases = self.bases(&keys, &layer_of, d)?;
        let value_bases = if self.values {
            Some(self.bases(&values, &layer_of, d)?)
        } else {
            None
        };
        let mut i = 0;
        for l in 0..cache.n_layers() {
            if cache.layer(l).groups().is_empty() {
                continue;
            }
            cache.layer_mut(l).restore(|g| {
                let storage = Storage {
                    k: Stored::LowRank(LowRank::encode(&keys[i], key_bases[i].clone())?),
                    v: match &value_bases {
                        Some(b) => Stored::LowRank(LowRank::encode(&values[i], b[i].clone())?),
                        None => g.storage.v.clone(),
                    },
                };
                i += 1;
                Ok(storage)
            })?;
        }
        Ok(())
    }
}

impl Describe for LowRankMethod {
    const DESCRIPTION: Description = Description {
        family: "low_rank",
        summary: "Keys (optionally values) stored as codes on each head's top singular directions of the prefill keys, plus the basis.",
        paper: "https://arxiv.org/abs/2407.21118",
        params: &[
            Param::new("rank", "integer", "rank per head; exclusive with energy; null: use energy"),
            Param::new("energy", "number", "fraction of the spectrum kept; a layer's heads share the largest rank needed; null: 0.9 when rank is not given"),
            Param::new("values", "boolean", "also store values in low rank with their own basis"),
        ],
    };

    fn conformance() -> Conformance {
        Conformance::expect(Expect::Storage)
            .with_specs([serde_json::json!({"method": "lowrank", "rank": 3, "values": true})])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// One layer, 2 KV heads, 16 entries of dimension 8 whose keys span `rank` directions with
    /// decreasing weights; values random.
    fn low_rank_cache(rank: usize) -> (KvCache, Tensor) {
        let dev = Device::Cpu;
        let (h, n, d) = (2, 16, 8);
        let coeffs = Tensor::randn(0f32, 1.0, (h, n, rank), &dev).unwrap();
        let weights: Vec<f32> = (0..rank).map(|i| 4.0 / (i + 1) as f32).collect();
        let w = Tensor::from_vec(weights, (1, 1, rank), &dev).unwrap();
        let dirs = Tensor::randn(0f32, 1.0, (h, rank, d), &dev).unwrap();
        let k = coeffs.broadcast_mul(&w).unwrap().matmul(&dirs).unwrap();
        let v = Tensor::randn(0f32, 1.0, (h, n, d), &dev).unwrap();
        let mut cache = KvCache::new(1, h, d, DType::F32, &dev);
        cache
            .layer_mut(0)
            .append(&k, &v, &(0..n as u32).collect::<Vec<_>>())
            .unwrap();
        cache.advance(n);
        (cache, k)
    }

    fn max_err(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn rank_r_keys_are_exact_at_rank_r_and_bytes_are_codes_plus_basis() {
        let (mut cache, k) = low_rank_cache(3);
        let m = LowRankMethod {
            rank: Some(3),
            ..Default::default()
        };
        m.compress(
            &mut cache,
            &Observations::default(),
            &Budget::CompressionRatio(0.0),
        )
        .unwrap();
        let (got, _) = cache.layer(0).dense().unwrap();
        assert!(max_err(&got, &k) < 1e-4, "{}", max_err(&got, &k));
        // Keys: 2 heads x (16 x 3 codes + 8 x 3 basis); values dense 2 x 16 x 8; f32.
        assert_eq!(cache.bytes(), (2 * (16 * 3 + 8 * 3) + 2 * 16 * 8) * 4);
        // A lower rank loses information.
        let (mut c2, k2) = low_rank_cache(3);
        LowRankMethod {
            rank: Some(1),
            ..Default::default()
        }
        .compress(
            &mut c2,
            &Observations::default(),
            &Budget::CompressionRatio(0.0),
        )
        .unwrap();
        assert!(max_err(&c2.layer(0).dense().unwrap().0, &k2) > 1e-2);
    }

    #[test]
    fn energy_picks_the_rank_that_holds_the_spectrum() {
        // Keys on exactly 2 directions: energy 1.0 needs rank 2 (<= 2 nonzero eigenvalues), and
        // any energy needs at least 1.
        let (mut cache, k) = low_rank_cache(2);
        LowRankMethod {
            energy: Some(1.0),
            values: true,
            ..Default::default()
        }
        .compress(
            &mut cache,
            &Observations::default(),
            &Budget::CompressionRatio(0.0),
        )
        .unwrap();
        let g = &cache.layer(0).groups()[0];
        match (&g.storage.k, &g.storage.v) {
            (Stored::LowRank(kf), Stored::LowRank(vf)) => {
                assert_eq!(kf.rank(), 2);
                // Random values have a full spectrum: energy 1.0 keeps every direction.
                assert_eq!(vf.rank(), 8);
            }
            other => panic!("expected low-rank keys and values, got {other:?}"),
        }
        assert!(max_err(&cache.layer(0).dense().unwrap().0, &k) < 1e-4);
    }

    #[test]
    fn generated_entries_are_projected_on_the_same_basis() {
        let (mut cache, _) = low_rank_cache(2);
        LowRankMethod {
            rank: Some(2),
            ..Default::default()
        }
        .compress(
            &mut cache,
            &Observations::default(),
            &Budget::CompressionRatio(0.0),
        )
        .unwrap();
        let before = cache.bytes();
        let x = Tensor::randn(0f32, 1.0, (2, 1, 8), &Device::Cpu).unwrap();
        cache.append(0, &x, &x, &[16]).unwrap();
        // One more code row of rank 2 per head for keys, one dense row per head for values.
        assert_eq!(cache.bytes() - before, (2 * 2 + 2 * 8) * 4);
        assert!(matches!(
            cache.layer(0).groups()[0].storage.k,
            Stored::LowRank(_)
        ));
    }

    #[test]
    fn rejects_conflicting_or_out_of_range_parameters() {
        let (mut cache, _) = low_rank_cache(2);
        for m in [
            LowRankMethod {
                rank: Some(2),
                energy: Some(0.5),
                values: false,
            },
            LowRankMethod {
                rank: Some(9),
                ..Default::default()
            },
            LowRankMethod {
                energy: Some(1.5),
                ..Default::default()
            },
        ] {
            let e = m
                .compress(
                    &mut cache,
                    &Observations::default(),
                    &Budget::CompressionRatio(0.0),
                )
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("lowrank") && (e.contains("rank") || e.contains("energy")),
                "{e}"
            );
        }
    }

    /// The host implementation `lowrank` had before its basis moved to the device (f64 Jacobi per
    /// head on the f32 Gram matrix, rank per layer from the eigenvalues), as the oracle: the
    /// basis `[heads, d, r]` of each group of `xs` (one layer), in f32.
    fn oracle_bases(m: &LowRankMethod, xs: &[Tensor], d: usize) -> Vec<Tensor> {
        let spectra: Vec<Vec<(Vec<f64>, Vec<Vec<f64>>)>> = xs
            .iter()
            .map(|x| {
                let x = x.to_dtype(DType::F32).unwrap();
                let g: Vec<Vec<Vec<f64>>> = x
                    .t()
                    .unwrap()
                    .contiguous()
                    .unwrap()
                    .matmul(&x)
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec3()
                    .unwrap();
                g.iter()
                    .map(|g| {
                        let flat: Vec<f64> = g.iter().flatten().copied().collect();
                        crate::linalg::symmetric_eigen(&flat, d)
                    })
                    .collect()
            })
            .collect();
        let rank_for = |values: &[f64], energy: f64| {
            let total: f64 = values.iter().map(|v| v.max(0.0)).sum();
            if total <= 0.0 {
                return 1;
            }
            let mut acc = 0.0;
            for (i, v) in values.iter().enumerate() {
                acc += v.max(0.0);
                if acc >= (energy - 1e-6) * total {
                    return i + 1;
                }
            }
            values.len()
        };
        let r = m.rank.unwrap_or_else(|| {
            let e = m.energy.unwrap_or(DEFAULT_ENERGY);
            spectra
                .iter()
                .flatten()
                .map(|(l, _)| rank_for(l, e))
                .max()
                .unwrap_or(1)
        });
        spectra
            .iter()
            .map(|heads| {
                let mut flat = Vec::new();
                for (_, vecs) in heads {
                    for k in 0..d {
                        for v in vecs.iter().take(r) {
                            flat.push(v[k] as f32);
                        }
                    }
                }
                Tensor::from_vec(flat, (heads.len(), d, r), &Device::Cpu).unwrap()
            })
            .collect()
    }

    /// Keys with a decaying spectrum (distinct eigenvalues): `[h, n, d]`.
    fn decaying(h: usize, n: usize, d: usize, seed: u64) -> Tensor {
        let dev = Device::Cpu;
        let x: Vec<f32> = (0..h * n * d)
            .map(|i| {
                let u = ((i as u64 * 2654435761 + seed * 97) % 10007) as f32 / 10007.0 - 0.5;
                u * (1.0 + 3.0 / (1 + i % d) as f32)
            })
            .collect();
        Tensor::from_vec(x, (h, n, d), &dev).unwrap()
    }

    /// The device basis against the host oracle, per layer and group: the same rank and the same
    /// projector `B Bᵀ` (the subspace; the basis inside it may differ by signs), so the stored
    /// reconstruction is the same to float tolerance.
    #[test]
    fn bases_match_the_host_oracle() {
        let d = 16;
        let layers: Vec<Vec<Tensor>> = (0..3)
            .map(|l| vec![decaying(2, 40, d, l), decaying(1, 40, d, 10 + l)])
            .collect();
        for m in [
            LowRankMethod::default(),
            LowRankMethod {
                energy: Some(0.6),
                ..Default::default()
            },
            LowRankMethod {
                rank: Some(5),
                ..Default::default()
            },
        ] {
            let xs: Vec<Tensor> = layers.iter().flatten().cloned().collect();
            let layer_of: Vec<usize> = (0..3).flat_map(|l| [l, l]).collect();
            let got = m.bases(&xs, &layer_of, d).unwrap();
            for (l, layer) in layers.iter().enumerate() {
                let want = oracle_bases(&m, layer, d);
                for (j, w) in want.iter().enumerate() {
                    let g = &got[2 * l + j];
                    assert_eq!(g.dims(), w.dims(), "{m:?} layer {l} group {j}");
                    let proj = |b: &Tensor| b.matmul(&b.t().unwrap()).unwrap();
                    let err = max_err(&proj(g), &proj(w));
                    assert!(err < 1e-4, "{m:?} layer {l} group {j}: projector off by {err}");
                }
            }
            if m.rank.is_none() {
                // The default energy needs more directions than 0.6 does.
                assert!(got[0].dim(2).unwrap() > 1);
            }
        }
        let r09 = LowRankMethod::default()
            .bases(&layers[0], &[0, 0], d)
            .unwrap()[0]
            .dim(2)
            .unwrap();
        let r06 = LowRankMethod {
            energy: Some(0.6),
            ..Default::default()
        }
        .bases(&layers[0], &[0, 0], d)
        .unwrap()[0]
        .dim(2)
        .unwrap();
        assert!(r06 < r09, "{r06} vs {r09}");
    }
}


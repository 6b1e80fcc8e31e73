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

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::describe::{Conformance, Describe, Description, Expect, Param};
use crate::linalg::symmetric_eigen;
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

/// Eigen-decomposition of one head's Gram matrix.
struct Spectrum {
    values: Vec<f64>,
    vectors: Vec<Vec<f64>>,
}

impl Spectrum {
    /// Smallest rank whose leading eigenvalues hold `energy` of the total.
    fn rank_for(&self, energy: f64) -> usize {
        let total: f64 = self.values.iter().map(|v| v.max(0.0)).sum();
        if total <= 0.0 {
            return 1;
        }
        let mut acc = 0.0;
        for (i, v) in self.values.iter().enumerate() {
            acc += v.max(0.0);
            // The last 1e-6 of the spectrum is f32 rounding of the Gram matrix, not signal.
            if acc >= (energy - 1e-6) * total {
                return i + 1;
            }
        }
        self.values.len()
    }
}

impl LowRankMethod {
    /// The run-time check: the plan-time checks, on the cache's head dimension.
    fn check(&self, head_dim: usize) -> Result<()> {
        self.validate()?;
        self.check_model_shape(0, 0, head_dim)?;
        Ok(())
    }

    /// Spectra of every head of `x` (`[heads, n, d]`).
    fn spectra(x: &Tensor) -> Result<Vec<Spectrum>> {
        let x = x.to_dtype(DType::F32)?;
        let (_, _, d) = x.dims3()?;
        let gram = x.t()?.contiguous()?.matmul(&x)?.to_dtype(DType::F64)?;
        let gram: Vec<Vec<Vec<f64>>> = gram.to_vec3()?;
        Ok(gram
            .iter()
            .map(|g| {
                let flat: Vec<f64> = g.iter().flatten().copied().collect();
                let (values, vectors) = symmetric_eigen(&flat, d);
                Spectrum { values, vectors }
            })
            .collect())
    }

    /// `[heads, d, r]` basis from the leading `r` eigenvectors of each spectrum.
    fn basis(spectra: &[Spectrum], r: usize, d: usize, like: &Tensor) -> Result<Tensor> {
        let mut flat = Vec::with_capacity(spectra.len() * d * r);
        for s in spectra {
            for k in 0..d {
                for vec in s.vectors.iter().take(r) {
                    flat.push(vec[k] as f32);
                }
            }
        }
        Ok(Tensor::from_vec(flat, (spectra.len(), d, r), like.device())?.to_dtype(like.dtype())?)
    }

    /// Re-encode one component of every group of a layer; `pick` reads the component.
    fn encode_layer(&self, groups: &[(Tensor, usize)], d: usize) -> Result<Vec<Tensor>> {
        let spectra: Vec<Vec<Spectrum>> = groups
            .iter()
            .map(|(x, _)| Self::spectra(x))
            .collect::<Result<_>>()?;
        let r = match self.rank {
            Some(r) => r,
            None => {
                let energy = self.energy.unwrap_or(DEFAULT_ENERGY);
                spectra
                    .iter()
                    .flatten()
                    .map(|s| s.rank_for(energy))
                    .max()
                    .unwrap_or(1)
            }
        };
        groups
            .iter()
            .zip(&spectra)
            .map(|((x, _), s)| Self::basis(s, r, d, x))
            .collect()
    }
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
        for l in 0..cache.n_layers() {
            let layer = cache.layer(l);
            if layer.groups().is_empty() {
                continue; // a layer reading another layer's cache (kvsharer)
            }
            let mut keys = Vec::new();
            let mut values = Vec::new();
            for g in layer.groups() {
                let (k, v) = g.storage.keys_values()?;
                keys.push((k, g.n_heads()));
                values.push((v, g.n_heads()));
            }
            let key_bases = self.encode_layer(&keys, d)?;
            let value_bases = if self.values {
                Some(self.encode_layer(&values, d)?)
            } else {
                None
            };
            let mut i = 0;
            cache.layer_mut(l).restore(|g| {
                let (k, v) = (&keys[i].0, &values[i].0);
                let storage = Storage {
                    k: Stored::LowRank(LowRank::encode(k, key_bases[i].clone())?),
                    v: match &value_bases {
                        Some(b) => Stored::LowRank(LowRank::encode(v, b[i].clone())?),
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
}

//! `kvsharer`: some layers store nothing and attend to an earlier, most DISsimilar layer's cache.
//!
//! Paper: Yang et al., "KVSharer: Efficient Inference via Layer-Wise Dissimilar KV Cache
//! Sharing", 2024, <https://arxiv.org/abs/2410.18517>; reference code: yangyifei729/KVSharer.
//! Every pair of layers `i > j` is scored by the Euclidean distance between their flattened key
//! caches plus that between their value caches, halved; pairs are taken from the most distant
//! down, and each taken pair makes the later layer `i` attend to `j`'s cache
//! (`KvCache::share_layer`); a layer is made to share at most once, and chains resolve to their
//! root as the reference code's `re_map` does (a layer sharing `j`, where `j` itself shares `k`,
//! reads `k`). It stops when `layers_shared` layers share (default: `fraction` of the layers,
//! rounded to the nearest; 0.25 = the paper's 25% setting, 8 of 32 layers).
//!
//! Deviations, both forced by running inside one request without a model forward:
//! - Calibration: the paper averages each layer's cache over calibration texts (30 Wikipedia
//!   lines of 64 tokens in the reference code) offline, once per model; here the layers are
//!   compared on this request's own prefill cache, so the sharing strategy is per sample.
//! - The paper accepts a pair only if the final hidden states with sharing stay close (cosine
//!   above a threshold, 0.5 in the reference code) to those without: that needs a forward of the
//!   model, which a method cannot run, so every pair taken in order is accepted.
//!
//! The distance is the paper's (flattened caches); the reference code instead averages the
//! per-entry Euclidean distances over heads and tokens, which can rank pairs differently. Layers
//! are compared entry by entry, so every layer must hold the same positions (put `kvsharer` first
//! in a composition with eviction). Layers already sharing are left out. Runs once (no budget).
//!
//! The distances are computed on the cache's device from the layers' Gram matrix (f64 matmuls);
//! only the `[layers, layers]` matrix comes to the host, where the greedy choice runs (the distances
//! within 1e-6 of the per-pair f32 sums it replaced, kept as the test oracle).

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use candle_core::{DType, Tensor};

use crate::describe::{Conformance, Describe, Description, Expect, Param};
use crate::{Budget, KvCache, Method, MethodError, Observations};

type Result<T> = std::result::Result<T, MethodError>;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KvSharer {
    /// Layers made to read another layer's cache; `None`: `fraction` of the layers, rounded.
    #[serde(default)]
    pub layers_shared: Option<usize>,
    /// Share of the layers made to share, when `layers_shared` is not given: in [0, 1).
    #[serde(default = "default_fraction")]
    pub fraction: f64,
}

fn default_fraction() -> f64 {
    0.25
}

impl Default for KvSharer {
    fn default() -> Self {
        Self {
            layers_shared: None,
            fraction: default_fraction(),
        }
    }
}

fn config_error(message: String) -> MethodError {
    MethodError::Config {
        method: "kvsharer",
        message,
    }
}

/// Euclidean distance between every pair of the flattened tensors `xs` (one per layer, equal
/// shapes): `d[i][j]` for `j < i`, from their Gram matrix on the tensors' device,
/// `d(i, j)^2 = G_ii + G_jj - 2 G_ij`, in f64 (one `[layers, w] x [w, layers]` matmul per chunk of
/// `w` flattened entries, at most 2^26 values at a time); only the `[layers, layers]` matrix comes
/// to the host: the pair ranking needs every distance there.
fn pair_distances(xs: &[Tensor]) -> Result<Vec<Vec<f64>>> {
    pair_distances_in(xs, 1 << 26)
}

/// [`pair_distances`] with chunks of at most `max_elems` values (all layers together).
fn pair_distances_in(xs: &[Tensor], max_elems: usize) -> Result<Vec<Vec<f64>>> {
    let n = xs.len();
    if n < 2 {
        return Ok(vec![Vec::new(); n]);
    }
    let flat = xs
        .iter()
        .map(|x| x.flatten_all())
        .collect::<candle_core::Result<Vec<_>>>()?;
    let numel = flat[0].dim(0)?;
    let width = (max_elems / n).max(1);
    let mut gram: Option<Tensor> = None;
    for start in (0..numel).step_by(width) {
        let w = width.min(numel - start);
        let parts = flat
            .iter()
            .map(|f| f.narrow(0, start, w))
            .collect::<candle_core::Result<Vec<_>>>()?;
        // f64: products of f32 (or bf16) values and their sums keep the differences exact enough
        // that the expansion loses nothing against summing squared differences.
        let block = Tensor::stack(&parts, 0)?
            .to_dtype(DType::F32)?
            .to_dtype(DType::F64)?;
        let g = block.matmul(&block.t()?)?;
        gram = Some(match gram {
            Some(acc) => (acc + g)?,
            None => g,
        });
    }
    let g: Vec<Vec<f64>> = match gram {
        Some(g) => g.to_vec2()?,
        None => vec![vec![0.0; n]; n],
    };
    Ok((0..n)
        .map(|i| {
            (0..i)
                .map(|j| (g[i][i] + g[j][j] - 2.0 * g[i][j]).max(0.0).sqrt())
                .collect()
        })
        .collect())
}

impl KvSharer {
    fn target_count(&self, n_layers: usize) -> Result<usize> {
        self.validate()?;
        let want = self
            .layers_shared
            .unwrap_or((self.fraction * n_layers as f64).round() as usize);
        if want >= n_layers.max(1) {
            return Err(config_error(format!(
                "{want} layers to share, but a model of {n_layers} layers has at most {} \
                 (the first layer has no earlier layer); lower layers_shared or fraction",
                n_layers.saturating_sub(1)
            )));
        }
        Ok(want)
    }

    /// For every layer, the layer whose cache it will read (itself when it keeps its own).
    pub fn plan(&self, cache: &KvCache) -> Result<Vec<usize>> {
        let n = cache.n_layers();
        let want = self.target_count(n)?;
        let mut source: Vec<usize> = (0..n).collect();
        let layers: Vec<usize> = (0..n)
            .filter(|&l| cache.shared_source(l).is_none())
            .collect();
        if want == 0 || layers.len() < 2 {
            return Ok(source);
        }
        let positions = cache.layer(layers[0]).positions();
        if let Some(&l) = layers
            .iter()
            .find(|&&l| cache.layer(l).positions() != positions)
        {
            return Err(MethodError::Cache(format!(
                "kvsharer compares layers entry by entry, but layer {l} holds other positions \
                 than layer {}; apply kvsharer before eviction",
                layers[0]
            )));
        }
        let kv = layers
            .iter()
            .map(|&l| cache.layer(l).dense())
            .collect::<Result<Vec<_>>>()?;
        let (keys, values): (Vec<Tensor>, Vec<Tensor>) = kv.into_iter().unzip();
        let dev = cache.device().clone();
        let (dk, dv) = crate::profile::phase("pair distances", &dev, || {
            Ok::<_, MethodError>((pair_distances(&keys)?, pair_distances(&values)?))
        })?;
        let mut pairs = Vec::new();
        for i in 1..layers.len() {
            for j in 0..i {
                pairs.push(((dk[i][j] + dv[i][j]) / 2.0, layers[i], layers[j]));
            }
        }
        // Most distant first; ties to the earlier pair.
        pairs.sort_by(|a, b| {
            b.0.partial_cmp(&a.0)
                .unwrap_or(Ordering::Equal)
                .then((a.1, a.2).cmp(&(b.1, b.2)))
        });
        let mut taken = 0;
        for (_, i, j) in pairs {
            if taken == want {
                break;
            }
            if source[i] == i {
                source[i] = j;
                taken += 1;
            }
        }
        // Resolve chains in layer order: every source is earlier, so already resolved.
        for l in 0..n {
            source[l] = source[source[l]];
        }
        Ok(source)
    }
}

impl Method for KvSharer {
    fn name(&self) -> &str {
        "kvsharer"
    }
    fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn uses_budget(&self) -> bool {
        false
    }
    fn validate(&self) -> std::result::Result<(), crate::ParamError> {
        crate::params::check_range(
            "kvsharer",
            "fraction",
            self.fraction,
            0.0,
            1.0,
            false,
            "share of the layers that read another layer's cache",
        )
    }
    fn check_model_shape(
        &self,
        n_layers: usize,
        _n_kv_heads: usize,
        _head_dim: usize,
    ) -> std::result::Result<(), crate::ParamError> {
        self.target_count(n_layers).map(|_| ()).map_err(|e| {
            let field = if self.layers_shared.is_some() {
                "layers_shared"
            } else {
                "fraction"
            };
            crate::ParamError::new(
                "kvsharer",
                field,
                e.to_string().trim_start_matches("kvsharer: ").to_string(),
            )
        })
    }
    fn compress(&self, cache: &mut KvCache, _obs: &Observations, _budget: &Budget) -> Result<()> {
        for (layer, source) in self.plan(cache)?.into_iter().enumerate() {
            if source != layer {
                cache.share_layer(layer, source)?;
            }
        }
        Ok(())
    }
}

impl Describe for KvSharer {
    const DESCRIPTION: Description = Description {
        family: "cross_layer",
        summary: "Later layers attend to the cache of the most dissimilar earlier layer and store nothing; layers compared on the prefill cache (runs once).",
        paper: "https://arxiv.org/abs/2410.18517",
        params: &[
            Param::new("layers_shared", "integer or null", "layers made to read another layer's cache; null: fraction x n_layers"),
            Param::new("fraction", "number", "share of the layers that share, when layers_shared is not given"),
        ],
    };

    fn conformance() -> Conformance {
        Conformance::expect(Expect::Storage)
            .with_specs([serde_json::json!({"method": "kvsharer", "layers_shared": 2})])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Four layers, one head, two entries of one dim, every entry of layer `l` equal to `c[l]`
    /// (values 2 x keys): distances between layers are proportional to `|c_i - c_j|`.
    fn cache(c: [f32; 4]) -> KvCache {
        let dev = Device::Cpu;
        let mut cache = KvCache::new(4, 1, 1, DType::F32, &dev);
        for (l, &x) in c.iter().enumerate() {
            let k = Tensor::new(&[[[x], [x]]], &dev).unwrap();
            let v = (&k * 2.0).unwrap();
            cache.layer_mut(l).append(&k, &v, &[0, 1]).unwrap();
        }
        cache.advance(2);
        cache
    }

    fn run(m: &KvSharer, cache: &mut KvCache) -> Result<()> {
        m.compress(cache, &Observations::default(), &Budget::Tokens(0))
    }

    #[test]
    fn the_most_dissimilar_pair_shares_and_its_later_layer_stores_nothing() {
        let mut c = cache([0., 10., 1., 12.]);
        let (before, layer3) = (c.bytes(), c.layer(3).bytes());
        // Default: 25% of 4 layers = 1; the most distant pair is (3, 0).
        run(&KvSharer::default(), &mut c).unwrap();
        assert_eq!(c.shared_source(3), Some(0));
        assert_eq!((1..3).filter_map(|l| c.shared_source(l)).count(), 0);
        assert_eq!(c.bytes(), before - layer3);
        let (k, v) = c.attention_layer(3).dense().unwrap();
        assert_eq!(
            k.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![0., 0.]
        );
        assert_eq!(
            v.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![0., 0.]
        );
        // New entries of a sharing layer are not stored.
        let x = Tensor::new(&[[[5f32]]], &Device::Cpu).unwrap();
        c.append(3, &x, &x, &[2]).unwrap();
        assert_eq!(c.bytes(), before - layer3);
    }

    #[test]
    fn each_layer_shares_once_and_chains_resolve_to_their_root() {
        // Pairs by distance: (3,0) 12, (3,2) 11, (1,0) 10, (2,1) 9, (3,1) 2, (2,0) 1.
        let mut c = cache([0., 10., 1., 12.]);
        let layer0 = c.layer(0).bytes();
        let m = KvSharer {
            layers_shared: Some(3),
            ..Default::default()
        };
        // (3,2) is skipped (3 already shares); (2,1) makes 2 read 1, which reads 0.
        assert_eq!(m.plan(&c).unwrap(), vec![0, 0, 0, 0]);
        run(&m, &mut c).unwrap();
        assert_eq!(c.bytes(), layer0);
        for l in 1..4 {
            assert_eq!(c.shared_source(l), Some(0));
        }
        let m = KvSharer {
            layers_shared: Some(2),
            ..Default::default()
        };
        assert_eq!(
            m.plan(&cache([0., 10., 1., 12.])).unwrap(),
            vec![0, 0, 2, 0]
        );
    }

    /// The per-pair distance `plan` used before the batched one (the test oracle).
    fn distance(a: &Tensor, b: &Tensor) -> f64 {
        let d = (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap()).unwrap();
        (d.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64).sqrt()
    }

    #[test]
    fn batched_pair_distances_match_the_per_pair_oracle() {
        let dev = Device::Cpu;
        let xs: Vec<Tensor> = (0..5)
            .map(|l| {
                Tensor::randn(0f32, 1.0 + l as f32, (2, 30, 4), &dev)
                    .unwrap()
                    .to_dtype(DType::BF16)
                    .unwrap()
            })
            .collect();
        let got = pair_distances(&xs).unwrap();
        // Chunks of 7 entries of every layer (the last one short): the same distances.
        let chunked = pair_distances_in(&xs, 5 * 7).unwrap();
        for i in 1..5 {
            assert_eq!(got[i].len(), i);
            for j in 0..i {
                let want = distance(&xs[i], &xs[j]);
                assert!((got[i][j] - want).abs() <= 1e-6 * want, "{i} {j}: {} vs {want}", got[i][j]);
                assert!((chunked[i][j] - got[i][j]).abs() <= 1e-9 * want);
            }
        }
        // Identical layers are at distance 0, not a rounding error's square root.
        let same = pair_distances(&[xs[1].clone(), xs[1].clone()]).unwrap();
        assert!(same[1][0] <= 1e-6 * distance(&xs[1], &xs[0]), "{}", same[1][0]);
        assert!(pair_distances(&xs[..1]).unwrap()[0].is_empty());
    }

    #[test]
    fn rejects_impossible_counts_and_layers_holding_other_tokens() {
        let mut c = cache([0., 10., 1., 12.]);
        let all = KvSharer {
            layers_shared: Some(4),
            ..Default::default()
        };
        assert!(run(&all, &mut c).is_err());
        let bad = KvSharer {
            fraction: 1.0,
            ..Default::default()
        };
        assert!(run(&bad, &mut c).is_err());
        c.layer_mut(2).retain(&[vec![1]]).unwrap();
        assert!(run(&KvSharer::default(), &mut c).is_err());
    }
}

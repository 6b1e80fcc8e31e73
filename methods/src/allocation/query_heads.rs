//! `query_heads`: KVCache-Factory's cache layout. Every KV head is stored once per query head of
//! its GQA group (`repeat_kv` before compression), then the budget is spread over the layers and
//! the stored (query) heads by `allocator` and a scorer keeps each query head's own best entries.
//! On a GQA model this keeps `q_per_kv` times the entries, and bytes, that per-KV-head selection
//! keeps at the same budget; the records report exactly that (`kv_bytes`, and `achieved_ratio`
//! against the KV-head cache, which can turn negative). On a model without GQA it is the
//! allocator and scorer alone.
//!
//! Source: KVCache-Factory @ c97f9d706d63d1b56e980f8b81b2a924c21162b3, whose default
//! `--kv_cache_granularity query_head` stores every compressed cache at query-head granularity
//! (`pyramidkv/llama_model.py`, `mistral_model.py`: `maybe_repeat_kv_before_cache` before
//! `kv_cluster.update_kv`; audited in its `docs/gqa_cache_layout.md`). Its clusters
//! (`pyramidkv/pyramidkv_utils.py`) then see `num_attention_heads` stored heads:
//!
//! - `allocator: {method: uniform}` (default): SnapKV-style clusters, each stored head keeps
//!   `max_capacity_prompt` entries (`SnapKVCluster.update_kv`'s per-head `topk`).
//! - `allocator: {method: pyramidkv, schedule, beta}` (defaults `kvcache_factory`, 20):
//!   `PyramidKVCluster.update_kv`; the layer's budget is one number for every stored head
//!   (`max_capacity_prompt` of layer `l`, a per-head count), so each query head keeps the layer's
//!   pyramid share; the schedules are `pyramidkv`'s ([`pyramid_budgets`], which sums exactly to
//!   `L x B` per head, where KVCache-Factory's integer steps only come close).
//! - `allocator: {method: adakv, floor}`: `AdaKVCluster.update_kv` spends one budget per layer
//!   across the stored heads (`num_heads` is `key_states.shape[1]`, the query heads in this
//!   layout: `topk(k = num_heads x base_capacity)` over all heads' scores), with a per-head floor
//!   (`floor_ratio`, default 0.2). Here the layer keeps exactly `query heads x B` entries, every
//!   query head at least `floor(floor x B)`, by `adakv`'s rule ([`Adaptive`]: kvpress's
//!   floor-then-global); KVCache-Factory's per-head rounding and score normalisation, which make
//!   its total only approximately `heads x B`, are not reproduced (see `adakv`).
//!
//! kvpress and the rest of kvbench select per KV head, the query heads' scores averaged.
//!
//! Defaults: allocator `uniform`, scorer `snapkv` with its defaults; the `kvcache_factory` preset
//! runs snapkv, pyramidkv and adakv this way with window 8, kernel 7, max pooling, as
//! KVCache-Factory's `run_longbench.py`. The budget applies per stored head, as there; a budget
//! that keeps every entry leaves the cache per KV head (nothing is selected; KVCache-Factory would
//! still store the repeated heads). Only prefill eviction is covered.
//!
//! With the uniform or pyramid allocator and a scorer that scores query heads on their own
//! (SnapKV), no layer is repeated whole: each query head is scored from its KV head and the kept
//! rows are gathered straight into the per-query-head layout (`LayerKv::retain_per_query_head`);
//! the same entries as repeating first (a test compares both).

use serde::{Deserialize, Serialize};

use super::adakv::{default_floor, Adaptive};
use super::pyramidkv::{default_beta, pyramid_budgets, PyramidAllocator, Schedule};
use crate::describe::{Describe, Description, Param};
use crate::registry::ScorerConfig;
use crate::selection::device_top_k::top_k_rows;
use crate::selection::scoring::LayerInput;
use crate::selection::select::{evict_with, TopK, Uniform};
use crate::{Budget, KvCache, Method, MethodError, ObservationNeeds, Observations};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueryHeads {
    /// Scorer that ranks each query head's entries.
    #[serde(default)]
    pub scorer: ScorerConfig,
    /// How the budget is spread over layers and stored (query) heads.
    #[serde(default)]
    pub allocator: HeadAllocator,
}

/// KVCache-Factory's budget rules over the stored heads (see the header).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum HeadAllocator {
    /// Every stored head keeps the budget (its SnapKV-style clusters).
    #[default]
    Uniform,
    /// `PyramidKVCluster`: layer budgets by `pyramidkv`'s schedule, the same for every stored head.
    Pyramidkv {
        #[serde(default = "default_beta")]
        beta: f64,
        /// Default `kvcache_factory` (this is KVCache-Factory's layout), not `pyramidkv`'s
        /// `kvpress`.
        #[serde(default = "factory_schedule")]
        schedule: Schedule,
    },
    /// `AdaKVCluster`: one budget per layer across the stored heads, with a per-head floor.
    Adakv {
        #[serde(default = "default_floor")]
        floor: f64,
    },
}

fn factory_schedule() -> Schedule {
    Schedule::KvcacheFactory
}

impl Method for QueryHeads {
    fn name(&self) -> &str {
        "query_heads"
    }

    fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn needs(&self) -> ObservationNeeds {
        self.scorer.scorer().observation_needs()
    }

    fn validate(&self) -> Result<(), crate::ParamError> {
        match &self.allocator {
            HeadAllocator::Uniform => {}
            HeadAllocator::Pyramidkv { beta, .. } => {
                if !(*beta >= 1.0 && beta.is_finite()) {
                    return Err(crate::ParamError::new(
                        "query_heads",
                        "allocator.beta",
                        format!(
                            "= {beta} must be a number >= 1 (the pyramid's steepness; the \
                             default is 20)"
                        ),
                    ));
                }
            }
            HeadAllocator::Adakv { floor } => crate::params::check_range(
                "query_heads",
                "allocator.floor",
                *floor,
                0.0,
                1.0,
                true,
                "share of the uniform budget every query head keeps",
            )?,
        }
        self.scorer.validate_within("query_heads", "scorer")
    }

    fn compress(
        &self,
        cache: &mut KvCache,
        obs: &Observations,
        budget: &Budget,
    ) -> Result<(), MethodError> {
        self.validate()?;
        let q_per_kv = obs.q_per_kv.max(1);
        // Nothing to select when the budget keeps every entry: the cache stays per KV head, as an
        // uncompressed cache (ratio 0 means no compression, in layout too). The pyramid's shares
        // and AdaKV's shared budget only move entries within the budget's total, so the same test
        // holds for them.
        let evicts = cache
            .layers()
            .iter()
            .any(|l| l.head_lens().iter().any(|&n| budget.kept(n) < n));
        if !evicts {
            return Ok(());
        }
        let scorer = self.scorer.scorer();
        if let Some(done) = self.select_without_repeat(cache, obs, budget)? {
            return Ok(done);
        }
        let dev = cache.device().clone();
        crate::profile::phase("expand heads", &dev, || {
            for l in 0..cache.n_layers() {
                if cache.shared_source(l).is_none() {
                    cache.layer_mut(l).expand_heads(q_per_kv)?;
                }
            }
            Ok::<_, MethodError>(())
        })?;
        // Stored head h is now query head h: the scorer sees groups of one.
        let per_query_head = Observations {
            layers: obs.layers.clone(),
            q_per_kv: 1,
            rope: obs.rope.clone(),
        };
        match &self.allocator {
            HeadAllocator::Uniform => {
                evict_with(cache, &per_query_head, scorer, &mut Uniform(budget), &mut TopK)
            }
            HeadAllocator::Pyramidkv { beta, schedule } => {
                let mut pyramid = PyramidAllocator::new(*schedule, *beta, scorer.window(), budget);
                evict_with(cache, &per_query_head, scorer, &mut pyramid, &mut TopK)
            }
            HeadAllocator::Adakv { floor } => {
                let mut rule = Adaptive {
                    floor: floor.clamp(0.0, 1.0),
                };
                evict_with(cache, &per_query_head, scorer, &mut Uniform(budget), &mut rule)
            }
        }
    }
}

impl QueryHeads {
    /// The uniform and pyramid allocators with a scorer that scores query heads on their own
    /// (`Scorer::score_query_heads`, SnapKV): every layer scored on its KV heads and gathered per
    /// query head (`LayerKv::retain_per_query_head`), never repeated whole first. The same
    /// entries as repeating then selecting (the same scores, but for float rounding in batched
    /// products). `None` (nothing changed) where this path does not apply: another allocator or
    /// scorer, layers shared, ragged or of unequal lengths.
    fn select_without_repeat(
        &self,
        cache: &mut KvCache,
        obs: &Observations,
        budget: &Budget,
    ) -> Result<Option<()>, MethodError> {
        let scorer = self.scorer.scorer();
        let q_per_kv = obs.q_per_kv.max(1);
        let n_layers = cache.n_layers();
        let len = cache.layer(0).head_lens().first().copied().unwrap_or(0);
        let applies = scorer.scores_query_heads()
            && !matches!(self.allocator, HeadAllocator::Adakv { .. })
            && (0..n_layers).all(|l| {
                let layer = cache.layer(l);
                cache.shared_source(l).is_none()
                    && layer.groups().len() == 1
                    && layer.head_lens().iter().all(|&n| n == len)
            });
        if !applies {
            return Ok(None);
        }
        let per_query_head = |l: usize, heads: usize| -> Option<usize> {
            self.stored_head_budget(l, n_layers, len, budget)
                .map(|t| t.min(len))
                .filter(|_| heads > 0)
        };
        let dev = cache.device().clone();
        for l in 0..n_layers {
            let heads = cache.layer(l).n_heads() * q_per_kv;
            let Some(target) = per_query_head(l, heads) else {
                return Err(MethodError::Cache(format!("layer {l}: no per-head budget")));
            };
            if target >= len {
                cache.layer_mut(l).expand_heads(q_per_kv)?;
                continue;
            }
            let targets = vec![target; heads];
            let input = LayerInput {
                index: l,
                layer: cache.layer(l),
                obs,
                next_position: cache.next_position(),
                targets: &targets,
            };
            let Some(scores) =
                crate::profile::phase("score (query heads)", &dev, || scorer.score_query_heads(&input))?
            else {
                return Err(MethodError::Cache(format!(
                    "layer {l}: {} gave no query-head scores",
                    scorer.scorer_name()
                )));
            };
            let kept = crate::profile::phase("top-k", &dev, || top_k_rows(&scores, target))?;
            crate::profile::phase("retain (query heads)", &dev, || {
                cache
                    .layer_mut(l)
                    .retain_per_query_head(&kept.local, Some(&kept.flat), q_per_kv)
            })?;
        }
        Ok(Some(()))
    }

    /// Entries each stored head of layer `layer` (of `n_layers`) keeps when its heads hold `len`
    /// entries, for the allocators whose targets do not depend on the scores (`None` for
    /// `adakv`, whose heads share the layer's `heads x B`).
    pub fn stored_head_budget(
        &self,
        layer: usize,
        n_layers: usize,
        len: usize,
        budget: &Budget,
    ) -> Option<usize> {
        match &self.allocator {
            HeadAllocator::Uniform => Some(budget.kept(len)),
            HeadAllocator::Pyramidkv { beta, schedule } => Some(
                pyramid_budgets(
                    *schedule,
                    n_layers,
                    len,
                    budget.kept(len),
                    self.scorer.scorer().window(),
                    *beta,
                )[layer],
            ),
            HeadAllocator::Adakv { .. } => None,
        }
    }
}

impl Describe for QueryHeads {
    const DESCRIPTION: Description = Description {
        family: "allocator",
        summary: "KV heads repeated per query head (KVCache-Factory's layout), then a scorer keeps each query head's own entries.",
        paper: "https://github.com/Zefan-Cai/KVCache-Factory",
        params: &[
            Param::new(
                "scorer",
                "method",
                "scorer ranking each query head's entries",
            ),
            Param::new(
                "allocator",
                "{method: uniform|pyramidkv|adakv, ...}",
                "how the budget is spread over layers and query heads (KVCache-Factory's \
                 SnapKV, PyramidKV and AdaKV clusters)",
            ),
        ],
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::knorm::Knorm;
    use candle_core::{Device, Tensor};

    /// A 2-KV-head layer of 8 entries read by 4 query heads; key norms rank the entries.
    fn cache() -> KvCache {
        let dev = Device::Cpu;
        let mut c = KvCache::new(1, 2, 2, candle_core::DType::F32, &dev);
        let norms: Vec<f32> = (0..16).map(|i| ((i * 7) % 16) as f32).collect();
        let k = Tensor::from_vec(
            norms.iter().flat_map(|&n| [n, 0.0]).collect::<Vec<f32>>(),
            (2, 8, 2),
            &dev,
        )
        .unwrap();
        let v = (&k + 1.0).unwrap();
        c.append(0, &k, &v, &(0..8).collect::<Vec<u32>>()).unwrap();
        c.advance(8);
        c
    }

    #[test]
    fn each_query_head_keeps_its_own_copy_at_the_budget() {
        let mut c = cache();
        let before = c.bytes();
        let m = QueryHeads {
            scorer: ScorerConfig::Knorm(Knorm::default()),
            ..Default::default()
        };
        let obs = Observations {
            layers: vec![Default::default()],
            q_per_kv: 2,
            rope: None,
        };
        m.compress(&mut c, &obs, &Budget::Tokens(4)).unwrap();
        let layer = c.layer(0);
        assert_eq!(layer.n_heads(), 4, "stored per query head");
        assert_eq!(layer.head_lens(), vec![4, 4, 4, 4]);
        // A knorm copy keeps what knorm keeps on its KV head: both query heads of a group agree.
        let pos = layer.positions();
        assert_eq!(pos[0], pos[1]);
        assert_eq!(pos[2], pos[3]);
        // Half the entries of twice the heads: the same bytes as the uncompressed KV-head cache.
        assert_eq!(c.bytes(), before);
        // New tokens are repeated into every query head's copy.
        let k = Tensor::ones((2, 1, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        c.append(0, &k, &k, &[8]).unwrap();
        assert_eq!(c.layer(0).head_lens(), vec![5, 5, 5, 5]);
    }

    fn layers(n_layers: usize) -> KvCache {
        let dev = Device::Cpu;
        let mut c = KvCache::new(n_layers, 2, 2, candle_core::DType::F32, &dev);
        for l in 0..n_layers {
            let norms: Vec<f32> = (0..80).map(|i| ((i * 7 + l) % 80) as f32).collect();
            let k = Tensor::from_vec(
                norms.iter().flat_map(|&n| [n, 0.0]).collect::<Vec<f32>>(),
                (2, 40, 2),
                &dev,
            )
            .unwrap();
            c.layer_mut(l)
                .append(&k, &k, &(0..40).collect::<Vec<u32>>())
                .unwrap();
        }
        c.advance(40);
        c
    }

    fn gqa() -> Observations {
        Observations {
            layers: vec![Default::default(); 3],
            q_per_kv: 2,
            rope: None,
        }
    }

    #[test]
    fn pyramid_shares_are_per_query_head() {
        let m: QueryHeads = serde_json::from_value(serde_json::json!({
            "scorer": {"method": "knorm"},
            "allocator": {"method": "pyramidkv", "schedule": "kvcache_factory", "beta": 4.0}
        }))
        .unwrap();
        let mut c = layers(3);
        m.compress(&mut c, &gqa(), &Budget::Tokens(10)).unwrap();
        // knorm has no window: S = 10, min = 2.5, max = 17.5: 17.5, 10, 2.5 -> 18, 10, 2 (sum 30).
        let want = pyramid_budgets(Schedule::KvcacheFactory, 3, 40, 10, 0, 4.0);
        assert_eq!(want, vec![18, 10, 2]);
        for (l, &w) in want.iter().enumerate() {
            assert_eq!(c.layer(l).head_lens(), vec![w; 4], "layer {l}");
            assert_eq!(m.stored_head_budget(l, 3, 40, &Budget::Tokens(10)), Some(w));
        }
    }

    #[test]
    fn adakv_shares_the_layer_across_query_heads_with_a_floor() {
        let m: QueryHeads = serde_json::from_value(serde_json::json!({
            "scorer": {"method": "knorm"},
            "allocator": {"method": "adakv", "floor": 0.5}
        }))
        .unwrap();
        let mut c = layers(3);
        m.compress(&mut c, &gqa(), &Budget::Tokens(10)).unwrap();
        for l in 0..3 {
            let lens = c.layer(l).head_lens();
            assert_eq!(lens.len(), 4, "stored per query head");
            assert_eq!(lens.iter().sum::<usize>(), 4 * 10, "layer {l}: {lens:?}");
            assert!(lens.iter().all(|&n| n >= 5), "layer {l}: floor 5: {lens:?}");
        }
        assert_eq!(m.stored_head_budget(0, 3, 40, &Budget::Tokens(10)), None);
    }

    /// The path that never repeats the cache (SnapKV scoring each query head from the KV heads)
    /// keeps what repeating every layer per query head and then selecting keeps: positions and
    /// rows of every stored head, for the uniform and pyramid allocators.
    #[test]
    fn selecting_without_the_repeat_keeps_what_the_repeat_keeps() {
        use crate::selection::select::evict_with;
        use crate::LayerObservation;
        let dev = Device::Cpu;
        let (n_layers, kv, g, len, d, w) = (3, 2, 2, 40, 8, 4);
        let mut c = KvCache::new(n_layers, kv, d, candle_core::DType::F32, &dev);
        let mut layers = Vec::new();
        for l in 0..n_layers {
            let k = Tensor::randn(0f32, 1.0, (kv, len, d), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (kv, len, d), &dev).unwrap();
            c.layer_mut(l)
                .append(&k, &v, &(0..len as u32).collect::<Vec<_>>())
                .unwrap();
            layers.push(LayerObservation {
                window_queries: Some(Tensor::randn(0f32, 1.0, (kv * g, w, d), &dev).unwrap()),
                ..Default::default()
            });
        }
        c.advance(len);
        let obs = Observations {
            layers,
            q_per_kv: g,
            rope: None,
        };
        for allocator in [
            serde_json::json!({"method": "uniform"}),
            serde_json::json!({"method": "pyramidkv", "schedule": "kvcache_factory", "beta": 4.0}),
        ] {
            let m: QueryHeads = serde_json::from_value(serde_json::json!({
                "scorer": {"method": "snapkv", "window": w, "kernel": 3},
                "allocator": allocator,
            }))
            .unwrap();
            let budget = Budget::Tokens(12);
            let mut fast = c.clone();
            m.compress(&mut fast, &obs, &budget).unwrap();
            // The repeat-then-select path, by hand.
            let mut slow = c.clone();
            for l in 0..n_layers {
                slow.layer_mut(l).expand_heads(g).unwrap();
            }
            let per_query_head = Observations {
                layers: obs.layers.clone(),
                q_per_kv: 1,
                rope: None,
            };
            let scorer = m.scorer.scorer();
            let mut targets = |l: usize, n: usize, lens: &[usize]| -> Vec<usize> {
                let t = m.stored_head_budget(l, n, lens[0], &budget).unwrap();
                vec![t; lens.len()]
            };
            evict_with(&mut slow, &per_query_head, scorer, &mut targets, &mut TopK).unwrap();
            for l in 0..n_layers {
                assert_eq!(fast.layer(l).positions(), slow.layer(l).positions(), "layer {l}");
                let (fk, fv) = fast.layer(l).dense().unwrap();
                let (sk, sv) = slow.layer(l).dense().unwrap();
                let rows = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(rows(&fk), rows(&sk), "layer {l} keys");
                assert_eq!(rows(&fv), rows(&sv), "layer {l} values");
                assert_eq!(fast.layer(l).n_heads(), kv * g);
            }
            assert_eq!(fast.bytes(), slow.bytes());
        }
    }

    #[test]
    fn allocator_parses_and_checks() {
        let m: QueryHeads = serde_json::from_str("{}").unwrap();
        assert_eq!(m.allocator, HeadAllocator::Uniform);
        assert_eq!(
            serde_json::to_value(&m).unwrap()["allocator"],
            serde_json::json!({"method": "uniform"})
        );
        let m: QueryHeads =
            serde_json::from_str(r#"{"allocator": {"method": "adakv"}}"#).unwrap();
        assert_eq!(m.allocator, HeadAllocator::Adakv { floor: 0.2 });
        let m: QueryHeads =
            serde_json::from_str(r#"{"allocator": {"method": "pyramidkv"}}"#).unwrap();
        assert_eq!(
            m.allocator,
            HeadAllocator::Pyramidkv {
                beta: 20.0,
                schedule: Schedule::KvcacheFactory
            }
        );
        assert!(serde_json::from_str::<QueryHeads>(r#"{"allocator": {"method": "adakv", "flor": 1}}"#).is_err());
        assert!(serde_json::from_str::<QueryHeads>(r#"{"allocator": {"method": "pyramid"}}"#).is_err());
        let bad: QueryHeads =
            serde_json::from_str(r#"{"allocator": {"method": "adakv", "floor": 2}}"#).unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("allocator.floor"));
    }
}

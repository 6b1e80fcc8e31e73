//! `query_heads`: selection per query head, KVCache-Factory's cache layout. Every KV head is
//! stored once per query head of its GQA group (`repeat_kv` before compression), and a scorer
//! then keeps each query head's own best entries. On a GQA model this keeps `q_per_kv` times the
//! entries, and bytes, that per-KV-head selection keeps at the same budget; the records report
//! exactly that (`kv_bytes`, and `achieved_ratio` against the KV-head cache, which can turn
//! negative). On a model without GQA it is the scorer alone.
//!
//! Source: KVCache-Factory stores every compressed cache at query-head granularity
//! (`pyramidkv/llama_model.py`, `mistral_model.py`: `repeat_kv` before `kv_cluster.update_kv`;
//! audited in its `docs/gqa_cache_layout.md`, commit c97f9d706d63d1b56e980f8b81b2a924c21162b3).
//! kvpress and the rest of kvbench select per KV head, the query heads' scores averaged.
//!
//! Defaults: scorer `snapkv` with its defaults; the `kvcache_factory` preset runs it with window
//! 8, kernel 7, max pooling, as KVCache-Factory's `run_longbench.py`. The budget applies per
//! stored head, as there; a budget that keeps every entry leaves the cache per KV head (nothing
//! is selected; KVCache-Factory would still store the repeated heads). Only prefill eviction by a scorer is covered: KVCache-Factory's
//! allocators (PyramidKV, AdaKV) in this layout are not.

use serde::{Deserialize, Serialize};

use crate::describe::{Describe, Description, Param};
use crate::registry::ScorerConfig;
use crate::selection::select::evict_uniform;
use crate::{Budget, KvCache, Method, MethodError, ObservationNeeds, Observations};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueryHeads {
    /// Scorer that ranks each query head's entries.
    #[serde(default)]
    pub scorer: ScorerConfig,
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
        // uncompressed cache (ratio 0 means no compression, in layout too).
        let evicts = cache
            .layers()
            .iter()
            .any(|l| l.head_lens().iter().any(|&n| budget.kept(n) < n));
        if !evicts {
            return Ok(());
        }
        for l in 0..cache.n_layers() {
            if cache.shared_source(l).is_none() {
                cache.layer_mut(l).expand_heads(q_per_kv)?;
            }
        }
        // Stored head h is now query head h: the scorer sees groups of one.
        let per_query_head = Observations {
            layers: obs.layers.clone(),
            q_per_kv: 1,
            rope: obs.rope.clone(),
        };
        evict_uniform(cache, &per_query_head, self.scorer.scorer(), budget)
    }
}

impl Describe for QueryHeads {
    const DESCRIPTION: Description = Description {
        family: "allocator",
        summary: "KV heads repeated per query head (KVCache-Factory's layout), then a scorer keeps each query head's own entries.",
        paper: "https://github.com/Zefan-Cai/KVCache-Factory",
        params: &[Param::new(
            "scorer",
            "method",
            "scorer ranking each query head's entries",
        )],
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
}

//! `kv_head_merge`: groups of consecutive KV heads share one cache, the average of theirs
//! (post-hoc grouped-query attention, training-free).
//!
//! Paper: Ainslie et al., "GQA: Training Generalized Multi-Query Transformer Models from
//! Multi-Head Checkpoints", EMNLP 2023, <https://arxiv.org/abs/2305.13245>. GQA converts a
//! checkpoint by mean-pooling the key and value projection heads of each group, then uptrains.
//! Here, without training, each group of `group_size` consecutive KV heads stores the mean of its
//! heads' cached keys and values after the prefill, and every head of the group (so every query
//! head attached to it) reads that mean (`storage::HeadShared`); entries generated later are
//! averaged the same way. Averaging cached post-RoPE keys equals caching the keys of the
//! mean-pooled K projection, since RoPE is linear and the same for every head
//! (`mean_h R_p W_h x = R_p (mean_h W_h) x`); values likewise. But it is applied after the prefill,
//! whose own attention used the separate heads, and there is no uptraining. Default `group_size` 2
//! (halves the KV heads); the last group is smaller when `group_size` does not divide the heads.
//! Runs once (no budget). Heads are only averaged entry by entry when they hold the same
//! positions: after per-head eviction, a head whose positions differ from its group's first head
//! starts a group of its own; heads in different storage groups (ragged layers) are never merged.

use serde::{Deserialize, Serialize};

use crate::describe::{Conformance, Describe, Description, Expect, Param};
use crate::storage::HeadShared;
use crate::{Budget, HeadGroup, KvCache, Method, MethodError, Observations, Storage, Stored};

type Result<T> = std::result::Result<T, MethodError>;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KvHeadMerge {
    /// Consecutive KV heads averaged into one.
    #[serde(default = "default_group_size")]
    pub group_size: usize,
}

fn default_group_size() -> usize {
    2
}

impl Default for KvHeadMerge {
    fn default() -> Self {
        Self {
            group_size: default_group_size(),
        }
    }
}

impl KvHeadMerge {
    /// Merge group (numbered from 0) of every head of `g`: heads `h` with the same
    /// `h / group_size` and the same positions share one.
    fn group_of(&self, g: &HeadGroup) -> Vec<u32> {
        let mut out = Vec::with_capacity(g.n_heads());
        let mut first = 0;
        for local in 0..g.n_heads() {
            let same = local > 0
                && (g.first_head + local) / self.group_size
                    == (g.first_head + first) / self.group_size
                && g.positions[local] == g.positions[first];
            if !same {
                first = local;
            }
            let next = out.last().map_or(0, |&x: &u32| x + u32::from(!same));
            out.push(next);
        }
        out
    }
}

impl Method for KvHeadMerge {
    fn name(&self) -> &str {
        "kv_head_merge"
    }
    fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn uses_budget(&self) -> bool {
        false
    }
    fn validate(&self) -> std::result::Result<(), crate::ParamError> {
        crate::params::check_positive(
            "kv_head_merge",
            "group_size",
            self.group_size,
            "consecutive KV heads merged into one",
        )
    }
    fn compress(&self, cache: &mut KvCache, _obs: &Observations, _budget: &Budget) -> Result<()> {
        self.validate()?;
        for l in 0..cache.n_layers() {
            cache.layer_mut(l).restore(|g| {
                let group_of = self.group_of(g);
                let merged = group_of
                    .last()
                    .is_some_and(|&x| x as usize + 1 < g.n_heads());
                if !merged || g.is_empty() {
                    return Ok(g.storage.clone());
                }
                let (k, v) = g.storage.keys_values()?;
                Ok(Storage {
                    k: Stored::HeadShared(HeadShared::encode(&k, group_of.clone())?),
                    v: Stored::HeadShared(HeadShared::encode(&v, group_of)?),
                })
            })?;
        }
        Ok(())
    }
}

impl Describe for KvHeadMerge {
    const DESCRIPTION: Description = Description {
        family: "cross_head",
        summary: "Groups of consecutive KV heads store the mean of their caches (post-hoc grouped-query attention, no training; runs once).",
        paper: "https://arxiv.org/abs/2305.13245",
        params: &[
            Param::new("group_size", "integer", "consecutive KV heads averaged into one; the last group may be smaller"),
        ],
    };

    fn conformance() -> Conformance {
        Conformance::expect(Expect::Storage)
            .with_specs([serde_json::json!({"method": "kv_head_merge", "group_size": 3})])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};

    /// One layer of 3 KV heads, 2 entries of 2 dims; values are 10 x keys.
    fn cache() -> KvCache {
        let dev = Device::Cpu;
        let k = Tensor::from_vec(
            vec![
                1f32, 2., 3., 4., //
                5., 6., 7., 8., //
                -1., 0., 0., -1.,
            ],
            (3, 2, 2),
            &dev,
        )
        .unwrap();
        let v = (&k * 10.0).unwrap();
        let mut cache = KvCache::new(1, 3, 2, DType::F32, &dev);
        cache.layer_mut(0).append(&k, &v, &[0, 1]).unwrap();
        cache.advance(2);
        cache
    }

    type Heads = Vec<Vec<Vec<f32>>>;

    fn heads(cache: &KvCache) -> (Heads, Heads) {
        let (k, v) = cache.layer(0).dense().unwrap();
        (k.to_vec3().unwrap(), v.to_vec3().unwrap())
    }

    fn run(m: &KvHeadMerge, cache: &mut KvCache) {
        m.compress(cache, &Observations::default(), &Budget::Tokens(0))
            .unwrap();
    }

    #[test]
    fn heads_of_a_group_read_their_average_and_the_last_group_may_be_smaller() {
        let mut c = cache();
        run(&KvHeadMerge::default(), &mut c);
        let (k, v) = heads(&c);
        assert_eq!(k[0], vec![vec![3., 4.], vec![5., 6.]]);
        assert_eq!(k[1], k[0]);
        assert_eq!(k[2], vec![vec![-1., 0.], vec![0., -1.]]);
        assert_eq!(v[1], vec![vec![30., 40.], vec![50., 60.]]);
        // Two slabs (heads 0-1, head 2) x 2 entries x 2 dims, keys and values, f32.
        assert_eq!(c.bytes(), 2 * (2 * 2 * 2) * 4);

        let mut c = cache();
        run(&KvHeadMerge { group_size: 4 }, &mut c);
        let (k, _) = heads(&c);
        let want = [5. / 3., 8. / 3., 10. / 3., 11. / 3.];
        let got: Vec<f32> = k[2].iter().flatten().copied().collect();
        assert!(
            got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-6),
            "{got:?}"
        );
        assert_eq!(c.bytes(), 2 * (2 * 2) * 4);

        let mut c = cache();
        let before = c.bytes();
        run(&KvHeadMerge { group_size: 1 }, &mut c);
        assert_eq!(c.bytes(), before);
        assert!(KvHeadMerge { group_size: 0 }
            .compress(&mut c, &Observations::default(), &Budget::Tokens(0))
            .is_err());
    }

    #[test]
    fn heads_holding_other_positions_are_not_averaged() {
        let dev = Device::Cpu;
        let k = Tensor::arange(0f32, 18., &dev)
            .unwrap()
            .reshape((3, 3, 2))
            .unwrap();
        let layer = |keep: &[Vec<u32>]| {
            let mut c = KvCache::new(1, 3, 2, DType::F32, &dev);
            c.layer_mut(0).append(&k, &k, &[0, 1, 2]).unwrap();
            c.layer_mut(0).retain(keep).unwrap();
            c
        };
        // Heads 0 and 1 keep different positions: no merge; head 2 is alone in its group anyway.
        let mut c = layer(&[vec![0, 1], vec![1, 2], vec![0, 2]]);
        let before = c.bytes();
        run(&KvHeadMerge::default(), &mut c);
        assert_eq!(c.bytes(), before);
        assert!(c.layer(0).groups()[0].storage.is_dense());
        // One group of three: heads 0 and 1 agree and merge, head 2 differs and stays apart.
        let mut c = layer(&[vec![0, 1], vec![0, 1], vec![1, 2]]);
        run(&KvHeadMerge { group_size: 3 }, &mut c);
        assert_eq!(c.bytes(), 2 * (2 * 2 * 2) * 4);
        let (k, _) = heads(&c);
        assert_eq!(k[0], vec![vec![3., 4.], vec![5., 6.]]);
        assert_eq!(k[2], vec![vec![14., 15.], vec![16., 17.]]);
    }
}

//! `knorm`: keep the keys with the lowest L2 norm.
//!
//! Paper: Devoto et al., "A Simple and Effective L2 Norm-Based Strategy for KV Cache Compression",
//! 2024, <https://arxiv.org/abs/2406.11430>. Score of an entry: minus the L2 norm of its key
//! (post-RoPE, as stored; RoPE preserves norms). No parameters; no window and no sinks, as in
//! kvpress's `KnormPress` (`-keys.norm(dim=-1)`, every layer compressed) and KVCache-Factory's
//! `L2NormCluster`.
//!
//! Defaults: every layer compressed, as kvpress does. KVCache-Factory differs: its `init_l2norm`
//! sets `skip_layers = [0, 1]` when the config names none (and its `run_longbench.py` names
//! none), so layers 0 and 1 keep their whole cache there (the class's own default, `[]`, is
//! never used by its scripts). The nearest here is `per_layer` with `scorer: knorm` and ratio 0
//! on layers 0 and 1.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::describe::{Describe, Description};
use crate::selection::scoring::{host_scores, LayerInput, Scorer};
use crate::MethodError;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Knorm {}

impl Scorer for Knorm {
    fn scorer_name(&self) -> &'static str {
        "knorm"
    }
    fn score(&self, input: &LayerInput) -> Result<Vec<Vec<f32>>, MethodError> {
        host_scores(self, input)
    }
    /// Every head of a group at once on the device.
    fn score_groups(&self, input: &LayerInput) -> Result<Option<Vec<Tensor>>, MethodError> {
        let mut out = Vec::new();
        for g in input.layer.groups() {
            let k = g.storage.keys_values()?.0.to_dtype(DType::F32)?;
            out.push(k.sqr()?.sum(2)?.sqrt()?.neg()?);
        }
        Ok(Some(out))
    }
}

crate::selection::select::uniform_scorer_method!(Knorm, "knorm");

impl Describe for Knorm {
    const DESCRIPTION: Description = Description {
        family: "scorer",
        summary: "Keys with the lowest L2 norm.",
        paper: "https://arxiv.org/abs/2406.11430",
        params: &[],
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{cache_with_keys, keep_of};

    /// The per-head scorer `score` replaced must give the same scores, ragged heads included.
    #[test]
    fn group_scores_match_the_per_head_oracle() {
        for ragged in [false, true] {
        let c = crate::testing::random_cache(ragged);
        let targets = vec![1; 3];
        let obs = Observations::default();
        let input = LayerInput {
            index: 0,
            layer: c.layer(0),
            obs: &obs,
            next_position: 40,
            targets: &targets,
        };
        let oracle: Vec<Vec<f32>> = input
            .heads()
            .unwrap()
            .iter()
            .map(|h| h.k.sqr().unwrap().sum(1).unwrap().sqrt().unwrap().neg().unwrap().to_vec1().unwrap())
            .collect();
        assert_eq!(Knorm::default().score(&input).unwrap(), oracle);
        }
    }
    #[allow(unused_imports)]
    use crate::{Budget, KvCache, Method, ObservationNeeds, Observations};

    #[test]
    fn keeps_lowest_norm_keys_per_head() {
        let head0 = vec![
            vec![3.0, 0.0],
            vec![0.1, 0.0],
            vec![0.0, 2.0],
            vec![0.5, 0.5],
            vec![4.0, 4.0],
        ];
        let head1 = vec![
            vec![0.1, 0.0],
            vec![3.0, 3.0],
            vec![0.2, 0.0],
            vec![5.0, 0.0],
            vec![0.0, 0.3],
        ];
        let mut cache = cache_with_keys(&[head0, head1]);
        Knorm::default()
            .compress(
                &mut cache,
                &Observations::default(),
                &Budget::CompressionRatio(0.4),
            )
            .unwrap();
        assert_eq!(keep_of(&cache, 0), vec![vec![1, 2, 3], vec![0, 2, 4]]);
    }
}

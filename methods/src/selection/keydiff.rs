//! `keydiff`: keep the keys least similar to the layer head's mean key direction.
//!
//! Paper: Park et al., "KeyDiff: Key Similarity-Based KV Cache Eviction for Long-Context LLM
//! Inference in Resource-Constrained Environments", 2025, <https://arxiv.org/abs/2504.15364>.
//! Score of an entry: minus the cosine similarity between its key and the anchor, the mean of the
//! head's L2-normalised keys. No parameters. The paper evicts block by block while prefilling;
//! like kvpress's `KeyDiffPress` (which leaves the block-wise variant to `BlockPress`), this scores
//! the whole prefilled context once.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::describe::{Describe, Description};
use crate::selection::scoring::{host_scores, LayerInput, Scorer};
use crate::MethodError;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyDiff {}

const EPS: f64 = 1e-8;

impl Scorer for KeyDiff {
    fn scorer_name(&self) -> &'static str {
        "keydiff"
    }
    fn score(&self, input: &LayerInput) -> Result<Vec<Vec<f32>>, MethodError> {
        host_scores(self, input)
    }
    /// Every head of a group at once on the device.
    fn score_groups(&self, input: &LayerInput) -> Result<Option<Vec<Tensor>>, MethodError> {
        let mut out = Vec::new();
        for g in input.layer.groups() {
            let k = g.storage.keys_values()?.0.to_dtype(DType::F32)?; // [n, len, d]
            let norms = (k.sqr()?.sum_keepdim(2)?.sqrt()? + EPS)?; // [n, len, 1]
            let unit = k.broadcast_div(&norms)?;
            let anchor = unit.mean_keepdim(1)?; // [n, 1, d]
            let anchor =
                anchor.broadcast_div(&(anchor.sqr()?.sum_keepdim(2)?.sqrt()? + EPS)?)?;
            let cos = unit.broadcast_mul(&anchor)?.sum(2)?;
            out.push(cos.neg()?);
        }
        Ok(Some(out))
    }
}

crate::selection::select::uniform_scorer_method!(KeyDiff, "keydiff");

impl Describe for KeyDiff {
    const DESCRIPTION: Description = Description {
        family: "scorer",
        summary: "Keys least similar (cosine) to the head's mean key direction.",
        paper: "https://arxiv.org/abs/2504.15364",
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
            .map(|h| {
                let norms = (h.k.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap() + EPS).unwrap();
                let unit = h.k.broadcast_div(&norms).unwrap();
                let anchor = unit.mean_keepdim(0).unwrap();
                let n = (anchor.sqr().unwrap().sum_all().unwrap().sqrt().unwrap() + EPS).unwrap();
                let anchor = anchor.broadcast_div(&n).unwrap();
                let cos = unit.broadcast_mul(&anchor).unwrap().sum(1).unwrap();
                cos.neg().unwrap().to_vec1().unwrap()
            })
            .collect();
        assert_eq!(KeyDiff::default().score(&input).unwrap(), oracle);
        }
    }
    #[allow(unused_imports)]
    use crate::{Budget, KvCache, Method, ObservationNeeds, Observations};

    #[test]
    fn keeps_keys_pointing_away_from_the_mean_direction() {
        // Most keys point along x (any length); key 2 points along y, key 4 along -x.
        let keys = vec![
            vec![1.0, 0.0],
            vec![5.0, 0.1],
            vec![0.0, 1.0],
            vec![2.0, 0.0],
            vec![-1.0, 0.0],
            vec![3.0, -0.1],
        ];
        let mut cache = cache_with_keys(&[keys]);
        KeyDiff::default()
            .compress(&mut cache, &Observations::default(), &Budget::Tokens(2))
            .unwrap();
        assert_eq!(keep_of(&cache, 0), vec![vec![2, 4]]);
    }
}

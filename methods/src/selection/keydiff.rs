//! `keydiff`: keep the keys least similar to the layer head's mean key direction.
//!
//! Paper: Park et al., "KeyDiff: Key Similarity-Based KV Cache Eviction for Long-Context LLM
//! Inference in Resource-Constrained Environments", 2025, <https://arxiv.org/abs/2504.15364>.
//! Score of an entry: minus the cosine similarity between its key and the anchor, the mean of the
//! head's L2-normalised keys. No parameters. The paper evicts block by block while prefilling;
//! like kvpress's `KeyDiffPress` (which leaves the block-wise variant to `BlockPress`), this scores
//! the whole prefilled context once.

use serde::{Deserialize, Serialize};

use crate::describe::{Describe, Description};
use crate::selection::scoring::{LayerInput, Scorer};
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
        input
            .heads()?
            .iter()
            .map(|h| {
                let norms = (h.k.sqr()?.sum_keepdim(1)?.sqrt()? + EPS)?; // [len, 1]
                let unit = h.k.broadcast_div(&norms)?;
                let anchor = unit.mean_keepdim(0)?; // [1, d]
                let anchor = anchor.broadcast_div(&(anchor.sqr()?.sum_all()?.sqrt()? + EPS)?)?;
                let cos = unit.broadcast_mul(&anchor)?.sum(1)?;
                Ok(cos.neg()?.to_vec1()?)
            })
            .collect()
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

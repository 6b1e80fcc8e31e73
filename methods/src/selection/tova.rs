//! `tova`: keep the entries the last query attends to most, averaged over all heads of the layer.
//!
//! Paper: Oren et al., "Transformers are Multi-State RNNs", 2024, <https://arxiv.org/abs/2401.06104>
//! (Token Omission Via Attention). Score of an entry: the attention the last query gives it,
//! averaged over *every* query head of the layer, so all KV heads of a layer keep the same
//! positions (the paper's head-averaged variant, its default). The last entry (the query's own
//! token) is always kept, as in kvpress's `TOVAPress`. No parameters; kvpress matches. The paper
//! applies TOVA at every decoding step; here (as in kvpress) it compresses the prefilled context once.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::describe::{Describe, Description};
use crate::selection::scoring::{window_attention, LayerInput, Scorer};
use crate::{MethodError, ObservationNeeds};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tova {}

impl Scorer for Tova {
    fn scorer_name(&self) -> &'static str {
        "tova"
    }
    fn observation_needs(&self) -> ObservationNeeds {
        ObservationNeeds {
            window_queries: 1,
            ..Default::default()
        }
    }
    fn window(&self) -> usize {
        1
    }
    fn score(&self, input: &LayerInput) -> Result<Vec<Vec<f32>>, MethodError> {
        let (q, pos) = input.window_queries(1, "tova")?;
        let q_heads = q.dim(0)? as f32;
        let att = window_attention(input.layer, &q, &pos, input.q_per_kv("tova")?)?;
        let positions = input.layer.positions();
        // Mean over all query heads, by original position (a head that holds no entry at a
        // position contributes zero there).
        let mut by_pos: HashMap<u32, f32> = HashMap::new();
        for (a, pos) in att.iter().zip(&positions) {
            let summed: Vec<f32> = a.sum(0)?.squeeze(0)?.to_vec1()?;
            for (&p, s) in pos.iter().zip(summed) {
                *by_pos.entry(p).or_default() += s / q_heads;
            }
        }
        Ok(positions
            .iter()
            .map(|pos| {
                let mut s: Vec<f32> = pos.iter().map(|p| by_pos[p]).collect();
                if let Some(last) = s.last_mut() {
                    *last = f32::INFINITY;
                }
                s
            })
            .collect())
    }
}

crate::selection::select::uniform_scorer_method!(Tova, "tova");

impl Describe for Tova {
    const DESCRIPTION: Description = Description {
        family: "scorer",
        summary: "Attention of the last query, averaged over all heads of the layer.",
        paper: "https://arxiv.org/abs/2401.06104",
        params: &[],
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{cache_with_keys, keep_of, obs_with_queries};
    #[allow(unused_imports)]
    use crate::{Budget, KvCache, Method, ObservationNeeds, Observations};

    #[test]
    fn heads_share_the_head_averaged_choice() {
        // Two KV heads, one query head each. Head 0's query favours key 1 strongly and key 2
        // a little; head 1's favours key 3 a little. Averaged, keys 1 and 3 win over 2 for both heads.
        let e = |j: usize| {
            (0..6)
                .map(|i| if i == j { 1.0f32 } else { 0.0 })
                .collect::<Vec<_>>()
        };
        let keys: Vec<Vec<f32>> = (0..6).map(e).collect();
        let cache0 = cache_with_keys(&[keys.clone(), keys]);
        let s = 6f32.sqrt();
        let mut q0 = vec![0.0; 6];
        q0[1] = 6.0 * s;
        q0[2] = 3.0 * s;
        let mut q1 = vec![0.0; 6];
        q1[3] = 5.0 * s;
        let obs = obs_with_queries(&[vec![q0], vec![q1]], 1);
        let mut cache = cache0.fork();
        Tova::default()
            .compress(&mut cache, &obs, &Budget::Tokens(3))
            .unwrap();
        assert_eq!(keep_of(&cache, 0), vec![vec![1, 3, 5], vec![1, 3, 5]]);
    }
}

//! `tova`: keep the entries the last query attends to most, averaged over all heads of the layer.
//!
//! Paper: Oren et al., "Transformers are Multi-State RNNs", 2024, <https://arxiv.org/abs/2401.06104>
//! (Token Omission Via Attention). Score of an entry: the attention the last query gives it,
//! averaged over *every* query head of the layer, so all KV heads of a layer keep the same
//! positions (the paper's head-averaged variant, its default). The last entry (the query's own
//! token) is always kept, as in kvpress's `TOVAPress`. No parameters; kvpress matches. The paper
//! applies TOVA at every decoding step; here (as in kvpress) it compresses the prefilled context once.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::describe::{Describe, Description};
use crate::selection::scoring::{host_scores, window_attention_groups, LayerInput, Scorer};
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
        host_scores(self, input)
    }
    /// On the device: each group's attention summed over its query heads, divided by the number
    /// of query heads, summed by original position across all heads with one `scatter_add`
    /// (heads in order, as the host map it replaced adds them), read back per head; the last
    /// entry of each head always kept.
    fn score_groups(&self, input: &LayerInput) -> Result<Option<Vec<Tensor>>, MethodError> {
        let (q, pos) = input.window_queries(1, "tova")?;
        let q_heads = q.dim(0)? as f32;
        let att = window_attention_groups(input.layer, &q, &pos, input.q_per_kv("tova")?)?;
        let dev = q.device();
        let divisor = Tensor::full(q_heads, (1, 1), dev)?;
        let groups = input.layer.groups();
        let mut vals = Vec::new();
        let mut ids = Vec::new();
        for (a, g) in att.iter().zip(groups) {
            // [n, q_per_kv, 1, len] -> [n, len]
            let per_head = a.sum(1)?.squeeze(1)?.broadcast_div(&divisor)?;
            vals.push(per_head.flatten_all()?);
            ids.push(Tensor::new(g.positions.concat().as_slice(), dev)?);
        }
        let pin_last = |s: &Tensor, n: usize, len: usize| -> Result<Tensor, MethodError> {
            Ok(Tensor::cat(
                &[
                    &s.narrow(1, 0, len - 1)?,
                    &Tensor::full(f32::INFINITY, (n, 1), dev)?,
                ],
                1,
            )?)
        };
        let mut out = Vec::new();
        if let Some(row) = same_positions_row(groups, &vals)? {
            let len = row.dim(1)?;
            let row = pin_last(&row, 1, len)?;
            for g in groups {
                out.push(row.broadcast_as((g.n_heads(), len))?.contiguous()?);
            }
            return Ok(Some(out));
        }
        let vals = Tensor::cat(&vals, 0)?.unsqueeze(0)?;
        let ids = Tensor::cat(&ids, 0)?.unsqueeze(0)?;
        let size = input
            .layer
            .positions()
            .iter()
            .flatten()
            .map(|&p| p as usize + 1)
            .max()
            .unwrap_or(0);
        let by_pos = Tensor::zeros((1, size), DType::F32, dev)?.scatter_add(&ids, &vals, 1)?;
        for g in groups {
            let (n, len) = (g.n_heads(), g.len());
            if len == 0 {
                out.push(Tensor::zeros((n, 0), DType::F32, dev)?);
                continue;
            }
            let idx = Tensor::new(g.positions.concat().as_slice(), dev)?;
            let s = by_pos.squeeze(0)?.index_select(&idx, 0)?.reshape((n, len))?;
            out.push(pin_last(&s, n, len)?);
        }
        Ok(Some(out))
    }
}

/// Where every head of the layer holds the same positions (a layer straight out of the prefill),
/// the sum by position is the sum over heads: one reduction, one `[1, len]` row. (The general
/// path's `scatter_add` into one row runs, on candle's CUDA kernel, as a single thread walking
/// every entry: ~5 ms per layer at 4k tokens on an H200.) Same order of additions, so the same
/// scores. `None` when the heads hold different positions or nothing.
fn same_positions_row(
    groups: &[crate::cache::HeadGroup],
    vals: &[Tensor],
) -> Result<Option<Tensor>, MethodError> {
    let heads: Vec<&Vec<u32>> = groups.iter().flat_map(|g| &g.positions).collect();
    let Some(&first) = heads.first() else {
        return Ok(None);
    };
    if first.is_empty() || heads.iter().any(|&p| p != first) {
        return Ok(None);
    }
    let len = first.len();
    let total = Tensor::cat(vals, 0)?
        .reshape((heads.len(), len))?
        .sum_keepdim(0)?;
    Ok(Some(total))
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
    use crate::selection::scoring::LayerInput;
    use crate::testing::{cache_with_keys, keep_of, obs_with_queries};
    #[allow(unused_imports)]
    use crate::{Budget, KvCache, Method, ObservationNeeds, Observations};

    /// The host scorer `score` replaced (the test oracle).
    fn oracle_score(input: &LayerInput) -> Result<Vec<Vec<f32>>, MethodError> {
        use crate::selection::scoring::window_attention;
        use std::collections::HashMap;
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

    #[test]
    fn device_scores_match_the_host_oracle() {
        use candle_core::{Device, Tensor};
        let dev = Device::Cpu;
        let q: Vec<Vec<Vec<f32>>> = Tensor::randn(0f32, 1.0, (6, 1, 8), &dev)
            .unwrap()
            .to_vec3()
            .unwrap();
        let obs = obs_with_queries(&q, 2);
        for ragged in [false, true] {
            let c = crate::testing::random_cache(ragged);
            let targets = vec![1; 3];
            let input = LayerInput {
                index: 0,
                layer: c.layer(0),
                obs: &obs,
                next_position: 40,
                targets: &targets,
            };
            assert_eq!(
                Tova::default().score(&input).unwrap(),
                oracle_score(&input).unwrap(),
                "ragged {ragged}"
            );
        }
    }

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

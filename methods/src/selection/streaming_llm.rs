//! `streaming_llm`: keep the first `sinks` entries (attention sinks) and the most recent ones.
//!
//! Paper: Xiao et al., "Efficient Streaming Language Models with Attention Sinks", 2023,
//! <https://arxiv.org/abs/2309.17453>. Default `sinks = 4`, as in the paper and in both kvpress
//! (`StreamingLLMPress(n_sink=4)`) and KVCache-Factory. Applied once to the prefilled context
//! (kvpress semantics); every head keeps the same entries.

use serde::{Deserialize, Serialize};

use crate::describe::{Describe, Description, Param};
use crate::selection::scoring::{LayerInput, Scorer};
use crate::{Budget, KvCache, Method, MethodError, Observations};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamingLlm {
    /// Entries kept at the start of the sequence.
    #[serde(default = "default_sinks")]
    pub sinks: usize,
}

fn default_sinks() -> usize {
    4
}

impl Default for StreamingLlm {
    fn default() -> Self {
        Self {
            sinks: default_sinks(),
        }
    }
}

/// Indices kept out of `len`: the first `min(sinks, kept)` and the last `kept - sinks`.
pub fn sink_and_recent(len: usize, kept: usize, sinks: usize) -> Vec<u32> {
    let kept = kept.min(len);
    let sinks = sinks.min(kept);
    let recent = kept - sinks;
    (0..sinks)
        .chain(len - recent..len)
        .map(|i| i as u32)
        .collect()
}

/// As a scorer (inside `pyramidkv`, `adakv`, `per_layer`, `decoding`): sinks first, in order, then
/// recency; the top-k keeps exactly what `sink_and_recent` keeps.
impl Scorer for StreamingLlm {
    fn scorer_name(&self) -> &'static str {
        "streaming_llm"
    }
    fn score(&self, input: &LayerInput) -> Result<Vec<Vec<f32>>, MethodError> {
        Ok(input
            .layer
            .head_lens()
            .iter()
            .map(|&len| {
                (0..len)
                    .map(|i| {
                        if i < self.sinks {
                            (2 * len - i) as f32
                        } else {
                            i as f32
                        }
                    })
                    .collect()
            })
            .collect())
    }
}

impl Method for StreamingLlm {
    fn name(&self) -> &str {
        "streaming_llm"
    }
    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "sinks": self.sinks })
    }
    fn compress(
        &self,
        cache: &mut KvCache,
        _: &Observations,
        budget: &Budget,
    ) -> Result<(), MethodError> {
        for l in 0..cache.n_layers() {
            self.keep_sinks_and_recent(cache, l, budget)?;
        }
        Ok(())
    }
    fn compresses_by_layer(&self) -> bool {
        true
    }
    fn compress_layer(
        &self,
        cache: &mut KvCache,
        layer: usize,
        _: &Observations,
        budget: &Budget,
    ) -> Result<(), MethodError> {
        self.keep_sinks_and_recent(cache, layer, budget)
    }
}

impl StreamingLlm {
    /// Every head of layer `l` keeps its sinks and its most recent entries.
    fn keep_sinks_and_recent(
        &self,
        cache: &mut KvCache,
        l: usize,
        budget: &Budget,
    ) -> Result<(), MethodError> {
        let layer = cache.layer_mut(l);
        let lens = layer.head_lens();
        let keep: Vec<Vec<u32>> = lens
            .iter()
            .map(|&len| sink_and_recent(len, budget.kept(len), self.sinks))
            .collect();
        if keep.iter().zip(&lens).all(|(k, &len)| k.len() == len) {
            return Ok(());
        }
        layer.retain(&keep)
    }
}

impl Describe for StreamingLlm {
    const DESCRIPTION: Description = Description {
        family: "scorer",
        summary: "Attention sinks (first entries) plus the most recent window.",
        paper: "https://arxiv.org/abs/2309.17453",
        params: &[Param::new(
            "sinks",
            "integer",
            "entries kept at the start of the sequence",
        )],
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sinks_and_recent_window() {
        assert_eq!(sink_and_recent(10, 6, 4), vec![0, 1, 2, 3, 8, 9]);
        assert_eq!(sink_and_recent(10, 3, 4), vec![0, 1, 2]);
        assert_eq!(sink_and_recent(5, 8, 4), vec![0, 1, 2, 3, 4]);
        assert_eq!(sink_and_recent(10, 4, 0), vec![6, 7, 8, 9]);
    }

    #[test]
    fn scorer_keeps_what_the_method_keeps() {
        use crate::selection::select::top_k_sorted;
        let cache = crate::testing::cache_with_keys(&[(0..10).map(|i| vec![i as f32]).collect()]);
        let obs = Observations::default();
        for (kept, sinks) in [(6, 4), (3, 4), (4, 0), (10, 4)] {
            let input = LayerInput {
                index: 0,
                layer: cache.layer(0),
                obs: &obs,
                next_position: 10,
                targets: &[kept],
            };
            let s = StreamingLlm { sinks }.score(&input).unwrap();
            assert_eq!(top_k_sorted(&s[0], kept), sink_and_recent(10, kept, sinks));
        }
    }
}

//! `think`: prune the key channels that queries use least, per KV head (ThinK).
//!
//! Paper: Xu et al., "ThinK: Thinner Key Cache by Query-Driven Pruning", ICLR 2025,
//! <https://arxiv.org/abs/2407.21018>; reference code SalesforceAIResearch/ThinK. Score of channel
//! `c` of a head: `mean_w(q_c²) x mean_n(k_c²)`, the squared magnitudes of that channel in the
//! observation window's queries (the last `window` prefill queries, after RoPE, as kvpress's
//! `ThinKPress.compute_window_queries`; exactly `window` of them even when another method of the
//! experiment made the shared prefill record more) and in the head's keys (all of them); `floor(key_channel_ratio x head_dim)` channels are removed, the best ones kept. Keys before the
//! window are stored with only the kept channels (`Stored::ChannelPruned`, channel indices counted
//! in the bytes); the window's keys and every key generated later are stored whole, and values are
//! untouched, as in the reference code.
//!
//! Defaults: `key_channel_ratio = 0.4` (the fraction of channels removed; the paper's main
//! setting), `window = 32` (the reference code's observation window, inherited from SnapKV).
//!
//! Deviation: with grouped-query attention the scores of the query heads sharing a KV head are
//! averaged (as kvpress's `ThinKPress` does), since the channels are pruned from the shared key;
//! the reference code targets one query head per KV head.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::describe::{Conformance, Describe, Description, Expect, Param};
use crate::storage::{ChannelPruned, Stored};
use crate::{Budget, KvCache, Method, MethodError, ObservationNeeds, Observations, Storage};

type Result<T> = std::result::Result<T, MethodError>;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Think {
    /// Fraction of each head's key channels removed.
    #[serde(default = "default_ratio")]
    pub key_channel_ratio: f64,
    /// Observation window: the last prefill queries that score the channels; their keys stay whole.
    #[serde(default = "default_window")]
    pub window: usize,
}

fn default_ratio() -> f64 {
    0.4
}
fn default_window() -> usize {
    32
}

impl Default for Think {
    fn default() -> Self {
        Self {
            key_channel_ratio: default_ratio(),
            window: default_window(),
        }
    }
}

impl Think {
    /// Channels kept per head.
    pub fn kept_channels(&self, head_dim: usize) -> usize {
        // As the reference code: `floor(head_dim x ratio)` channels are removed.
        let removed = (self.key_channel_ratio * head_dim as f64 + 1e-9).floor() as usize;
        head_dim.saturating_sub(removed).max(1)
    }

    /// Kept channels (increasing) of each head of `k` (`[heads, n, d]`), given the window queries
    /// of those heads' query heads (`[heads x q_per_kv, w, d]`).
    fn channels(&self, k: &Tensor, q: &Tensor, q_per_kv: usize) -> Result<Vec<Vec<u32>>> {
        let (h, _, d) = k.dims3()?;
        let key_energy = k.to_dtype(DType::F32)?.sqr()?.mean(1)?; // [h, d]
        let query_energy = q
            .to_dtype(DType::F32)?
            .sqr()?
            .mean(1)? // [h * g, d]
            .reshape((h, q_per_kv, d))?
            .mean(1)?; // [h, d]
        let scores: Vec<Vec<f32>> = (key_energy * query_energy)?.to_vec2()?;
        let keep = self.kept_channels(d);
        Ok(scores
            .iter()
            .map(|s| crate::selection::select::top_k_sorted(s, keep))
            .collect())
    }
}

impl Method for Think {
    fn name(&self) -> &str {
        "think"
    }
    fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn uses_budget(&self) -> bool {
        false
    }
    fn validate(&self) -> std::result::Result<(), crate::ParamError> {
        crate::params::check_range(
            "think",
            "key_channel_ratio",
            self.key_channel_ratio,
            0.0,
            1.0,
            false,
            "the fraction of key channels removed",
        )?;
        crate::params::check_positive(
            "think",
            "window",
            self.window,
            "last prefill queries scoring the channels",
        )
    }
    fn needs(&self) -> ObservationNeeds {
        ObservationNeeds {
            window_queries: self.window.max(1),
            ..Default::default()
        }
    }
    fn compress(&self, cache: &mut KvCache, obs: &Observations, _budget: &Budget) -> Result<()> {
        self.validate()?;
        if self.kept_channels(cache.head_dim()) >= cache.head_dim() {
            return Ok(());
        }
        let q_per_kv = obs.q_per_kv.max(1);
        for l in 0..cache.n_layers() {
            if cache.layer(l).groups().is_empty() {
                continue; // a layer reading another layer's cache (kvsharer)
            }
            let q = obs
                .layers
                .get(l)
                .and_then(|o| o.window_queries.clone())
                .ok_or_else(|| MethodError::Config {
                    method: "think",
                    message: format!("no window queries observed for layer {l}"),
                })?;
            cache.layer_mut(l).restore(|g| {
                let (k, _) = g.storage.keys_values()?;
                let n = g.len();
                // The window's own keys (the last `w` entries) stay whole.
                let w = self.window.min(q.dim(1)?).min(n);
                if n <= w {
                    return Ok(g.storage.clone());
                }
                // Only this method's own window of queries scores the channels: the shared
                // prefill records the most any method asked for (snapkv's 64, say).
                let (q_len, q_w) = (q.dim(1)?, self.window.min(q.dim(1)?));
                let qg = q
                    .narrow(0, g.first_head * q_per_kv, g.n_heads() * q_per_kv)?
                    .narrow(1, q_len - q_w, q_w)?;
                let channels = self.channels(&k, &qg, q_per_kv)?;
                let mut pruned = ChannelPruned::encode(&k.narrow(1, 0, n - w)?, &channels)?;
                crate::storage::Form::append(&mut pruned, &k.narrow(1, n - w, w)?)?;
                Ok(Storage {
                    k: Stored::ChannelPruned(pruned),
                    v: g.storage.v.clone(),
                })
            })?;
        }
        Ok(())
    }
}

impl Describe for Think {
    const DESCRIPTION: Description = Description {
        family: "channel_pruning",
        summary: "Key channels pruned per head by query-driven scores (window queries x key magnitudes); the window and generated keys stay whole.",
        paper: "https://arxiv.org/abs/2407.21018",
        params: &[
            Param::new("key_channel_ratio", "number", "fraction of each head's key channels removed"),
            Param::new("window", "integer", "observation window: last prefill queries scoring the channels; their keys stay whole"),
        ],
    };

    fn conformance() -> Conformance {
        Conformance::expect(Expect::Storage).with_specs([
            serde_json::json!({"method": "think", "key_channel_ratio": 0.5, "window": 4}),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{cache_with_keys, obs_with_queries};

    #[test]
    fn keeps_the_channels_queries_and_keys_both_use() {
        // 1 KV head, 2 query heads, d = 4, 6 entries. Keys are large on channels 0 and 1, queries
        // on channels 1 and 2: channel 1 scores highest, then 2 (small keys but strong queries)
        // or 0 (strong keys, no queries); keeping 50% keeps {1, 2} since q on 0 is 0.
        let keys: Vec<Vec<f32>> = (0..6)
            .map(|i| vec![3.0 + i as f32, 2.0, 0.5, 0.1])
            .collect();
        let mut cache = cache_with_keys(&[keys.clone()]);
        let q = vec![vec![0.0, 1.0, 2.0, 0.0]; 2];
        let obs = obs_with_queries(&[q.clone(), q], 2);
        let m = Think {
            key_channel_ratio: 0.5,
            window: 2,
        };
        m.compress(&mut cache, &obs, &Budget::CompressionRatio(0.0))
            .unwrap();
        let g = &cache.layer(0).groups()[0];
        let Stored::ChannelPruned(f) = &g.storage.k else {
            panic!("keys not pruned: {:?}", g.storage.k.kind());
        };
        assert_eq!(f.kept_channels(), 2);
        let (k, _) = g.storage.keys_values().unwrap();
        let k: Vec<Vec<f32>> = k.get(0).unwrap().to_vec2().unwrap();
        // First 4 entries pruned to channels {1, 2}; the 2-entry window whole.
        assert_eq!(k[0], vec![0.0, 2.0, 0.5, 0.0]);
        assert_eq!(k[5], keys[5]);
        // Scores q·k over the kept channels equal those with the full keys (q is 0 elsewhere).
        let qv = [0.0f32, 1.0, 2.0, 0.0];
        for (pruned, orig) in k.iter().zip(&keys).take(4) {
            let dot = |x: &[f32]| x.iter().zip(qv).map(|(a, b)| a * b).sum::<f32>();
            assert_eq!(dot(pruned), dot(orig));
        }
        // Bytes: pruned 4 x 2 f32 + 2 channel indices u32 + window 2 x 4 f32; values 6 x 4 f32.
        assert_eq!(cache.bytes(), (4 * 2 + 2 + 2 * 4 + 6 * 4) * 4);
    }

    #[test]
    fn scores_with_its_own_window_whatever_else_was_recorded() {
        // think (window 2) alone records 2 window queries; beside snapkv (window 6) the shared
        // prefill records 6. The 4 earlier queries point at channels 0 and 3, the last 2 at
        // channels 1 and 2: think must keep {1, 2} either way, with identical keys.
        use crate::selection::snapkv::SnapKv;
        let think = Think {
            key_channel_ratio: 0.5,
            window: 2,
        };
        let snapkv = SnapKv {
            window: 6,
            ..Default::default()
        };
        let alone = think.needs().window_queries;
        let beside = think.needs().union(snapkv.needs()).window_queries;
        assert_eq!((alone, beside), (2, 6));
        let keys: Vec<Vec<f32>> = (0..8)
            .map(|i| vec![1.0 + i as f32, 1.0, 1.0, 1.0])
            .collect();
        let recorded: Vec<Vec<f32>> = (0..6)
            .map(|i| {
                if i < 4 {
                    vec![9.0, 0.0, 0.0, 9.0]
                } else {
                    vec![0.0, 1.0, 2.0, 0.0]
                }
            })
            .collect();
        let run = |n: usize| {
            let mut cache = cache_with_keys(std::slice::from_ref(&keys));
            let q = recorded[recorded.len() - n..].to_vec();
            think
                .compress(
                    &mut cache,
                    &obs_with_queries(&[q], 1),
                    &Budget::CompressionRatio(0.0),
                )
                .unwrap();
            let g = &cache.layer(0).groups()[0];
            let Stored::ChannelPruned(f) = &g.storage.k else {
                panic!("keys not pruned");
            };
            assert_eq!(f.kept_channels(), 2);
            let (k, _) = g.storage.keys_values().unwrap();
            k.get(0).unwrap().to_vec2::<f32>().unwrap()
        };
        let (a, b) = (run(alone), run(beside));
        assert_eq!(a[0], vec![0.0, 1.0, 1.0, 0.0]);
        assert_eq!(a, b);
    }

    #[test]
    fn kept_channel_count_follows_the_ratio() {
        let t = |r| Think {
            key_channel_ratio: r,
            window: 32,
        };
        assert_eq!(t(0.4).kept_channels(64), 39);
        assert_eq!(t(0.5).kept_channels(64), 32);
        assert_eq!(t(0.0).kept_channels(64), 64);
        let mut cache = cache_with_keys(&[vec![vec![1.0, 2.0]; 4]]);
        let err = t(1.0)
            .compress(
                &mut cache,
                &Observations::default(),
                &Budget::CompressionRatio(0.0),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("key_channel_ratio"), "{err}");
    }
}

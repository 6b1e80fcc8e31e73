//! `decoding`: compress during generation: every `interval` generated tokens, every layer and KV
//! head holding more than `target_size` entries is cut down to `target_size` by a scorer.
//!
//! No paper: kvpress's `DecodingPress` is the reference (its semantics, parameter for parameter:
//! `compression_interval`, `target_size`, `hidden_states_buffer_size`). The prefilled context is not
//! compressed (the budget axis does not apply; the method runs once per experiment), so long
//! generations are bounded whatever the context. Attention-based scorers see the queries of the
//! last `buffer` generated tokens (kvpress buffers their hidden states and recomputes the queries);
//! the buffer is cleared after each compression. `h2o` as a scorer here sums the attention of the
//! buffered queries; `expected_attention` is not supported (it needs prefill query statistics).
//!
//! Cadence, as kvpress counts it: `DecodingPress.forward_hook` counts every forward after the
//! prefill, and kvpress's pipeline forwards the question (after the context's prefill) as one
//! such forward, then each generated token but the last. So the question's forward is step 1 and
//! the first compression follows the forward of generated token `interval - 1`, then every
//! `interval` tokens. The runner calls the decode hook only after generated tokens, so the session
//! starts its count at 1 for the question. Not reproduced: kvpress also compresses right after
//! the question's forward when `interval = 1` or when the question alone is at least
//! `target_size` tokens long (here that compression happens after the first generated token);
//! and its buffer also holds the question's hidden states until the first compression, where
//! attention-based scorers here see only generated tokens' queries.
//!
//! Defaults: `interval = 512`, `target_size = 2048`, `buffer = 256` (kvpress's defaults); scorer
//! `knorm` (the scorer of kvpress's decoding examples; it needs no queries).

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::describe::{Describe, Description, Param};
use crate::registry::ScorerConfig;
use crate::selection::knorm::Knorm;
use crate::selection::scoring::window_attention;
use crate::selection::select::{evict_with, TopK};
use crate::{
    Budget, KvCache, LayerObservation, Method, MethodError, ObservationNeeds, Observations, Session,
};

type Result<T> = std::result::Result<T, MethodError>;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(try_from = "DecodingFields")]
pub struct Decoding {
    /// Forwards between two compressions: the question's counts as the first (kvpress).
    pub interval: usize,
    /// Entries per layer and KV head after a compression.
    pub target_size: usize,
    /// Generated tokens whose queries attention-based scorers see.
    pub buffer: usize,
    /// Scorer choosing what to keep.
    pub scorer: ScorerConfig,
}

/// `Decoding` as written, checked by `TryFrom`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecodingFields {
    #[serde(default = "default_interval")]
    interval: usize,
    #[serde(default = "default_target")]
    target_size: usize,
    #[serde(default = "default_buffer")]
    buffer: usize,
    #[serde(default = "default_scorer")]
    scorer: ScorerConfig,
}

fn default_interval() -> usize {
    512
}
fn default_target() -> usize {
    2048
}
fn default_buffer() -> usize {
    256
}
fn default_scorer() -> ScorerConfig {
    ScorerConfig::Knorm(Knorm::default())
}

impl TryFrom<DecodingFields> for Decoding {
    type Error = String;
    fn try_from(f: DecodingFields) -> std::result::Result<Self, String> {
        if f.interval == 0 || f.target_size == 0 {
            return Err("decoding: `interval` and `target_size` must be at least 1".into());
        }
        if f.scorer
            .scorer()
            .observation_needs()
            .query_statistics
            .is_some()
        {
            return Err("decoding: scorer `expected_attention` is not supported during generation (it needs the prefill's query statistics)".into());
        }
        Ok(Self {
            interval: f.interval,
            target_size: f.target_size,
            buffer: f.buffer,
            scorer: f.scorer,
        })
    }
}

impl Default for Decoding {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            target_size: default_target(),
            buffer: default_buffer(),
            scorer: default_scorer(),
        }
    }
}

impl Decoding {
    fn wants_queries(&self) -> bool {
        let n = self.scorer.scorer().observation_needs();
        n.window_queries > 0 || n.accumulated_attention
    }

    /// What the scorer would have recorded, rebuilt from the buffered decode queries.
    fn observations(
        &self,
        cache: &KvCache,
        queries: &[Vec<Tensor>],
        q_per_kv: usize,
    ) -> Result<Observations> {
        let needs = self.scorer.scorer().observation_needs();
        let mut layers = Vec::with_capacity(cache.n_layers());
        for (l, buffered) in queries.iter().enumerate() {
            let mut o = LayerObservation::default();
            if !buffered.is_empty() {
                let q = Tensor::cat(buffered, 1)?;
                if needs.accumulated_attention {
                    // Attention of the buffered queries, summed, in columns indexed by position.
                    let n = q.dim(1)?;
                    let next = cache.next_position();
                    let pos: Vec<u32> = (next - n..next).map(|p| p as u32).collect();
                    let att =
                        window_attention(cache.layer(l), &q.to_dtype(DType::F32)?, &pos, q_per_kv)?;
                    let q_heads = q.dim(0)?;
                    let mut acc = vec![0f32; q_heads * next];
                    for (h, (a, positions)) in
                        att.iter().zip(cache.layer(l).positions()).enumerate()
                    {
                        let summed: Vec<Vec<f32>> = a.sum(1)?.to_vec2()?;
                        for (j, row) in summed.iter().enumerate() {
                            let qh = h * q_per_kv + j;
                            for (&p, &v) in positions.iter().zip(row) {
                                acc[qh * next + p as usize] = v;
                            }
                        }
                    }
                    o.accumulated_attention =
                        Some(Tensor::from_vec(acc, (q_heads, next), q.device())?);
                }
                o.window_queries = Some(q);
            }
            layers.push(o);
        }
        Ok(Observations {
            layers,
            q_per_kv,
            rope: None,
        })
    }
}

impl Method for Decoding {
    fn name(&self) -> &str {
        "decoding"
    }
    fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn uses_budget(&self) -> bool {
        false
    }
    fn decode_needs(&self) -> ObservationNeeds {
        ObservationNeeds {
            window_queries: usize::from(self.wants_queries()),
            ..Default::default()
        }
    }
    /// The prefilled context is left alone.
    fn validate(&self) -> std::result::Result<(), crate::ParamError> {
        crate::params::check_positive(
            "decoding",
            "interval",
            self.interval,
            "generated tokens between two compressions",
        )?;
        crate::params::check_positive(
            "decoding",
            "target_size",
            self.target_size,
            "entries per layer and KV head after a compression",
        )?;
        if self
            .scorer
            .scorer()
            .observation_needs()
            .query_statistics
            .is_some()
        {
            return Err(crate::ParamError::new(
                "decoding",
                "scorer",
                "`expected_attention` is not supported during generation (it needs the \
                 prefill's query statistics); use knorm, snapkv, tova, h2o, ...",
            ));
        }
        self.scorer.validate_within("decoding", "scorer")
    }
    fn compress(&self, _: &mut KvCache, _: &Observations, _: &Budget) -> Result<()> {
        Ok(())
    }
    fn session(&self) -> Box<dyn Session + '_> {
        Box::new(DecodingSession {
            config: self,
            steps: 1,
            queries: Vec::new(),
        })
    }
}

/// One request of `decoding`: its step counter and query buffer.
struct DecodingSession<'a> {
    config: &'a Decoding,
    /// Forwards since the last compression: the question's (counted at prefill, as kvpress does)
    /// and the generated tokens'.
    steps: usize,
    /// Per layer, the queries of the latest generated tokens, `[q_heads, 1, head_dim]` each.
    queries: Vec<Vec<Tensor>>,
}

impl Session for DecodingSession<'_> {
    fn on_prefill(&mut self, _: &mut KvCache, _: &Observations, _: &Budget) -> Result<()> {
        // The question's forward, which follows, is kvpress's first decoding step.
        self.steps = 1;
        self.queries.clear();
        Ok(())
    }

    fn on_decode(
        &mut self,
        cache: &mut KvCache,
        _step: usize,
        obs: &Observations,
        _budget: &Budget,
    ) -> Result<()> {
        let n_layers = cache.n_layers();
        self.queries.resize(n_layers, Vec::new());
        if self.config.wants_queries() {
            for l in 0..n_layers {
                let q = obs
                    .layers
                    .get(l)
                    .and_then(|o| o.window_queries.as_ref())
                    .ok_or_else(|| MethodError::Config {
                        method: "decoding",
                        message: format!("layer {l}: the decode step recorded no query"),
                    })?;
                let w = q.dim(1)?;
                let buf = &mut self.queries[l];
                buf.push(q.narrow(1, w - 1, 1)?);
                let excess = buf.len().saturating_sub(self.config.buffer.max(1));
                buf.drain(..excess);
            }
        }
        self.steps += 1;
        if self.steps < self.config.interval {
            return Ok(());
        }
        self.steps = 0;
        let synthetic = if self.config.wants_queries() {
            self.config
                .observations(cache, &self.queries, obs.q_per_kv)?
        } else {
            Observations::default()
        };
        // Every head holding more than `target_size` entries is cut down to it.
        let target_size = self.config.target_size;
        let mut allocator = |_: usize, _: usize, lens: &[usize]| -> Vec<usize> {
            lens.iter().map(|&n| n.min(target_size)).collect()
        };
        let scorer = self.config.scorer.scorer();
        evict_with(cache, &synthetic, scorer, &mut allocator, &mut TopK)?;
        for buf in &mut self.queries {
            buf.clear();
        }
        Ok(())
    }
}

impl Describe for Decoding {
    const DESCRIPTION: Description = Description {
        family: "decoding",
        summary: "During generation, every `interval` tokens, cut every head to `target_size` entries with a scorer (kvpress DecodingPress; runs once).",
        paper: "",
        params: &[
            Param::new("interval", "integer", "forwards between two compressions, the question's counting as the first (kvpress's compression_interval)"),
            Param::new("target_size", "integer", "entries per layer and KV head after a compression"),
            Param::new("buffer", "integer", "generated tokens whose queries attention-based scorers see"),
            Param::new("scorer", "scorer", "scorer ranking the entries (expected_attention excluded)"),
        ],
    };

    fn conformance() -> crate::describe::Conformance {
        // Interval 5: the question's forward is step 1, so the conformance test's 4th decoded
        // token compresses every head to `target_size`.
        crate::describe::Conformance::expect(crate::describe::Expect::Unchanged)
            .with_after_decode(crate::describe::AfterDecode::PerHead(40))
            .with_params(serde_json::json!({"interval": 5, "target_size": 40}))
            .with_specs([
                serde_json::json!({"method": "decoding", "interval": 5, "target_size": 40, "scorer": {"method": "snapkv", "window": 4}}),
                serde_json::json!({"method": "decoding", "interval": 5, "target_size": 40, "scorer": {"method": "h2o"}}),
            ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::snapkv::SnapKv;
    use crate::testing::{cache_with_keys, keep_of};
    use candle_core::Device;

    fn step(m: &mut dyn Session, cache: &mut KvCache, key: Vec<f32>, query: Vec<f32>) {
        let d = key.len();
        let p = cache.next_position() as u32;
        let k = Tensor::from_vec(key, (1, 1, d), &Device::Cpu).unwrap();
        cache.layer_mut(0).append(&k, &k, &[p]).unwrap();
        cache.advance(1);
        let q = Tensor::from_vec(query, (1, 1, d), &Device::Cpu).unwrap();
        let obs = Observations {
            layers: vec![LayerObservation {
                window_queries: Some(q),
                ..Default::default()
            }],
            q_per_kv: 1,
            rope: None,
        };
        m.on_decode(
            cache,
            cache.next_position(),
            &obs,
            &Budget::CompressionRatio(0.0),
        )
        .unwrap();
    }

    #[test]
    fn compresses_to_target_every_interval() {
        // Knorm; keys' norm = index + 1, so the oldest (smallest) survive. Prefill of 6 is left
        // alone; interval 3 with the question's forward as step 1: after 2 generated tokens (8
        // entries) the head is cut to 5; then 3 more tokens each time.
        let mut cache = cache_with_keys(&[(0..6).map(|i| vec![i as f32 + 1.0]).collect()]);
        let m = Decoding {
            interval: 3,
            target_size: 5,
            ..Default::default()
        };
        let mut s = m.session();
        s.on_prefill(
            &mut cache,
            &Observations::default(),
            &Budget::CompressionRatio(0.5),
        )
        .unwrap();
        assert_eq!(cache.entries(), 6);
        step(s.as_mut(), &mut cache, vec![0.5], vec![0.0]);
        assert_eq!(cache.entries(), 7);
        step(s.as_mut(), &mut cache, vec![100.0], vec![0.0]);
        assert_eq!(keep_of(&cache, 0), vec![vec![0, 1, 2, 3, 6]]);
        step(s.as_mut(), &mut cache, vec![1.0], vec![0.0]);
        step(s.as_mut(), &mut cache, vec![1.0], vec![0.0]);
        assert_eq!(cache.entries(), 7);
        step(s.as_mut(), &mut cache, vec![1.0], vec![0.0]);
        assert_eq!(cache.entries(), 5);
        assert_eq!(cache.next_position(), 11);
    }

    #[test]
    fn the_question_forward_is_the_first_step() {
        // kvpress's DecodingPress with compression_interval = 2: the question's forward is step 1,
        // generated token 1's forward step 2, which compresses; then tokens 3, 5, ...
        let mut cache = cache_with_keys(&[(0..6).map(|i| vec![i as f32 + 1.0]).collect()]);
        let m = Decoding {
            interval: 2,
            target_size: 5,
            ..Default::default()
        };
        let mut s = m.session();
        s.on_prefill(
            &mut cache,
            &Observations::default(),
            &Budget::CompressionRatio(0.0),
        )
        .unwrap();
        let mut lens = Vec::new();
        for _ in 0..4 {
            step(s.as_mut(), &mut cache, vec![0.5], vec![0.0]);
            lens.push(cache.entries());
        }
        assert_eq!(lens, vec![5, 6, 5, 6]);
    }

    #[test]
    fn attention_scorers_see_the_buffered_generated_queries() {
        // SnapKV with window 1 over the last generated query: it points at entry 2.
        let d = 8;
        let e = |j: usize| {
            (0..d)
                .map(|i| if i == j { 1.0f32 } else { 0.0 })
                .collect::<Vec<_>>()
        };
        let mut cache = cache_with_keys(&[(0..5).map(e).collect()]);
        let cfg = Decoding {
            interval: 1,
            target_size: 3,
            buffer: 4,
            scorer: ScorerConfig::Snapkv(SnapKv {
                window: 1,
                kernel: 1,
                ..Default::default()
            }),
        };
        assert_eq!(cfg.decode_needs().window_queries, 1);
        let mut s = cfg.session();
        s.on_prefill(
            &mut cache,
            &Observations::default(),
            &Budget::CompressionRatio(0.0),
        )
        .unwrap();
        let mut q = vec![0.0; d];
        q[2] = 30.0;
        q[4] = 20.0;
        step(s.as_mut(), &mut cache, e(5), q);
        // Window (the new token, position 5) + entries 2 and 4.
        assert_eq!(keep_of(&cache, 0), vec![vec![2, 4, 5]]);
    }

    #[test]
    fn expected_attention_is_rejected_when_parsed() {
        let err = serde_json::from_str::<Decoding>(r#"{"scorer":{"method":"expected_attention"}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not supported"), "{err}");
        assert!(serde_json::from_str::<Decoding>(r#"{"intervall":3}"#).is_err());
    }
}

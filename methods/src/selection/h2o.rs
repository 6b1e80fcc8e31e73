//! `h2o`: keep the heavy hitters (entries with the most attention accumulated over all prefill
//! queries) plus the most recent entries; optionally keep evicting while generating.
//!
//! Paper: Zhang et al., "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large
//! Language Models", 2023, <https://arxiv.org/abs/2306.14048>. Score of an entry: the attention it
//! received, summed over every prefill query, averaged over the query heads of its KV head (GQA).
//! Of each head's budget, `recent_fraction` goes to the most recent entries and the rest to the
//! highest scores.
//!
//! Decode variant (`decode: true`, the paper's generation-time algorithm): every generated token
//! adds its attention to the running scores and, per head, the lowest-scored entry outside the
//! recent share is evicted, so the cache stays at the size it had when generation began (the
//! compressed context plus the question). Entries appended after the prefill (the question) start
//! from zero. Without compression at prefill (ratio 0) the variant does nothing.
//!
//! Defaults: `recent_fraction = 0.5` (the paper's equal heavy/recent budgets, e.g. 10% + 10%),
//! `decode = false`. Elsewhere: KVCache-Factory keeps a fixed window of 8 recent entries and sums
//! scores over all queries as here; kvpress's `ObservedAttentionPress` keeps no recent window and
//! divides each key's sum by the number of queries that could see it.

use serde::{Deserialize, Serialize};

use crate::describe::{Describe, Description, Param};
use crate::selection::scoring::{gqa_mean, host_scores, window_attention, LayerInput, Scorer};
use crate::selection::select::{
    evict_one_layer_uniform, evict_uniform, evict_with, score_layer, top_k_per_head, top_k_sorted, KeepRule, Uniform,
};
use crate::{Budget, KvCache, Method, MethodError, ObservationNeeds, Observations, Session};

type Result<T> = std::result::Result<T, MethodError>;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct H2o {
    /// Share of each head's budget kept for the most recent entries (0 to 1).
    #[serde(default = "default_recent")]
    pub recent_fraction: f64,
    /// Keep evicting during generation (one entry per head and token).
    #[serde(default)]
    pub decode: bool,
}

fn default_recent() -> f64 {
    0.5
}

impl Default for H2o {
    fn default() -> Self {
        Self {
            recent_fraction: default_recent(),
            decode: false,
        }
    }
}

impl H2o {
    fn recent(&self, target: usize) -> usize {
        ((target as f64 * self.recent_fraction.clamp(0.0, 1.0)).floor() as usize).min(target)
    }

    /// Accumulated attention of the group's entries (`[heads, len]` f32, on the cache's device),
    /// averaged over each KV head's query heads: [`H2o::accumulated`] for one group, left on the
    /// device (for the mergers).
    pub(crate) fn accumulated_group(
            input: &LayerInput,
            g: &crate::HeadGroup,
            method: &'static str,
        ) -> Result<candle_core::Tensor> {
        let err = |message: String| MethodError::Config {
            method,
            message,
        };
        let acc = input
            .observation()
            .and_then(|o| o.accumulated_attention.as_ref())
            .ok_or_else(|| err(format!("layer {}: no accumulated attention was recorded", input.index)))?;
        let q = input.q_per_kv(method)?;
        let covered = acc.dim(1)?;
        // Every head holding the same positions (a layer straight out of the prefill): one
        // index_select for the whole group instead of one per head, the same sums over q.
        if let Some(first) = g.positions.first() {
            let same = g.positions.iter().all(|p| p == first);
            if same && first.last().is_some_and(|&p| (p as usize) < covered) {
                let ids = candle_core::Tensor::new(first.as_slice(), acc.device())?;
                let (n, len) = (g.n_heads(), first.len());
                return Ok(acc
                    .narrow(0, g.first_head * q, n * q)?
                    .index_select(&ids, 1)?
                    .reshape((n, q, len))?
                    .mean(1)?
                    .to_dtype(candle_core::DType::F32)?);
            }
        }
        let rows = g
            .positions
            .iter()
            .enumerate()
            .map(|(local, pos)| {
                if pos.last().is_some_and(|&p| p as usize >= covered) {
                    return Err(err(format!(
                        "accumulated attention covers {covered} positions, the cache holds later ones"
                    )));
                }
                let ids = candle_core::Tensor::new(pos.as_slice(), acc.device())?;
                Ok(acc
                    .narrow(0, (g.first_head + local) * q, q)?
                    .index_select(&ids, 1)?
                    .mean(0)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(candle_core::Tensor::stack(&rows, 0)?.to_dtype(candle_core::DType::F32)?)
    }

    /// Accumulated attention of every stored entry, per KV head (no pins); errors name `method`.
    pub(crate) fn accumulated(input: &LayerInput, method: &'static str) -> Result<Vec<Vec<f32>>> {
        // One transfer per group of heads (the per-head reads it replaced gave the same values).
        let mut out = Vec::new();
        for g in input.layer.groups() {
            out.extend(Self::accumulated_group(input, g, method)?.to_vec2::<f32>()?);
        }
        Ok(out)
    }
}

impl Scorer for H2o {
    fn scorer_name(&self) -> &'static str {
        "h2o"
    }
    fn validate(&self) -> std::result::Result<(), crate::ParamError> {
        crate::params::check_range(
            "h2o",
            "recent_fraction",
            self.recent_fraction,
            0.0,
            1.0,
            true,
            "share of each head's budget kept for the most recent entries",
        )
    }
    fn observation_needs(&self) -> ObservationNeeds {
        ObservationNeeds {
            accumulated_attention: true,
            ..Default::default()
        }
    }
    fn score(&self, input: &LayerInput) -> Result<Vec<Vec<f32>>> {
        host_scores(self, input)
    }
    /// Each group's accumulated attention on the device, its last `recent` entries per head
    /// pinned (`f32::INFINITY`).
    fn score_groups(&self, input: &LayerInput) -> Result<Option<Vec<candle_core::Tensor>>> {
        use candle_core::Tensor;
        let mut out = Vec::new();
        for g in input.layer.groups() {
            let acc = Self::accumulated_group(input, g, "h2o")?; // [n, len]
            let len = g.len();
            let recent: Vec<usize> = (0..g.n_heads())
                .map(|l| self.recent(input.targets[g.first_head + l]).min(len))
                .collect();
            let pin = |rows: &Tensor, r: usize| -> Result<Tensor> {
                if r == 0 {
                    return Ok(rows.clone());
                }
                let n = rows.dim(0)?;
                Ok(Tensor::cat(
                    &[
                        &rows.narrow(1, 0, len - r)?,
                        &Tensor::full(f32::INFINITY, (n, r), rows.device())?,
                    ],
                    1,
                )?)
            };
            if recent.iter().all(|&r| r == recent[0]) {
                out.push(pin(&acc, recent.first().copied().unwrap_or(0))?);
            } else {
                let rows = (0..g.n_heads())
                    .map(|l| pin(&acc.narrow(0, l, 1)?, recent[l]))
                    .collect::<Result<Vec<_>>>()?;
                out.push(Tensor::cat(&rows, 0)?);
            }
        }
        Ok(Some(out))
    }
}

impl Method for H2o {
    fn name(&self) -> &str {
        "h2o"
    }
    fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn needs(&self) -> ObservationNeeds {
        self.observation_needs()
    }
    fn decode_needs(&self) -> ObservationNeeds {
        ObservationNeeds {
            window_queries: if self.decode { 1 } else { 0 },
            ..Default::default()
        }
    }
    /// A one-shot request: a fresh session's prefill.
    fn validate(&self) -> std::result::Result<(), crate::ParamError> {
        Scorer::validate(self)
    }
    fn compress(&self, cache: &mut KvCache, obs: &Observations, budget: &Budget) -> Result<()> {
        self.session().on_prefill(cache, obs, budget)
    }
    /// Layer by layer only without the decode variant (whose running scores span every layer).
    fn compresses_by_layer(&self) -> bool {
        !self.decode
    }
    fn compress_layer(
        &self,
        cache: &mut KvCache,
        layer: usize,
        obs: &Observations,
        budget: &Budget,
    ) -> Result<()> {
        evict_one_layer_uniform(cache, layer, obs, self, budget)
    }
    fn session(&self) -> Box<dyn Session + '_> {
        Box::new(H2oSession {
            config: self,
            state: None,
        })
    }
}

/// Running scores of the decode variant.
#[derive(Default)]
struct DecodeState {
    /// `[layer][head][entry]`, aligned with the stored entries.
    scores: Vec<Vec<Vec<f32>>>,
    /// Entries per head the cache is held at, `[layer][head]`; set at the first generated token.
    limits: Option<Vec<Vec<usize>>>,
}

/// The decode variant's prefill keep rule: top-k by the pinned scores, recording each layer's raw
/// accumulated attention of the kept entries for the decode steps.
struct TrackAccumulated {
    st: DecodeState,
    compressed: bool,
}

impl TrackAccumulated {
    fn raw(
        cache: &KvCache,
        l: usize,
        obs: &Observations,
        targets: &[usize],
    ) -> Result<Vec<Vec<f32>>> {
        let input = LayerInput {
            index: l,
            layer: cache.layer(l),
            obs,
            next_position: cache.next_position(),
            targets,
        };
        H2o::accumulated(&input, "h2o")
    }
}

impl KeepRule for TrackAccumulated {
    fn apply(
        &mut self,
        cache: &mut KvCache,
        l: usize,
        obs: &Observations,
        pinned: Vec<Vec<f32>>,
        targets: &[usize],
    ) -> Result<()> {
        let raw = Self::raw(cache, l, obs, targets)?;
        self.compressed = true;
        let keep = top_k_per_head(&pinned, targets);
        cache.layer_mut(l).retain(&keep)?;
        self.st.scores.push(
            raw.iter()
                .zip(&keep)
                .map(|(r, k)| k.iter().map(|&i| r[i as usize]).collect())
                .collect(),
        );
        Ok(())
    }
    fn unchanged(
        &mut self,
        cache: &mut KvCache,
        l: usize,
        obs: &Observations,
        targets: &[usize],
    ) -> Result<()> {
        let raw = Self::raw(cache, l, obs, targets)?;
        self.st.scores.push(raw);
        Ok(())
    }
}

/// One request of `h2o`: the decode variant's running scores (`None` until a prefill compressed,
/// and always without the decode variant).
struct H2oSession<'a> {
    config: &'a H2o,
    state: Option<DecodeState>,
}

impl Session for H2oSession<'_> {
    fn on_prefill(
        &mut self,
        cache: &mut KvCache,
        obs: &Observations,
        budget: &Budget,
    ) -> Result<()> {
        self.state = None;
        if !self.config.decode {
            return evict_uniform(cache, obs, self.config, budget);
        }
        let mut rule = TrackAccumulated {
            st: DecodeState::default(),
            compressed: false,
        };
        evict_with(cache, obs, self.config, &mut Uniform(budget), &mut rule)?;
        if rule.compressed {
            self.state = Some(rule.st);
        }
        Ok(())
    }

    fn on_decode(
        &mut self,
        cache: &mut KvCache,
        _step: usize,
        obs: &Observations,
        _budget: &Budget,
    ) -> Result<()> {
        let Some(st) = self.state.as_mut() else {
            return Ok(());
        };
        let limits = st.limits.get_or_insert_with(|| {
            // Hold the cache at its size before this token.
            (0..cache.n_layers())
                .map(|l| {
                    cache
                        .layer(l)
                        .head_lens()
                        .iter()
                        .map(|&n| n.saturating_sub(1))
                        .collect()
                })
                .collect()
        });
        // The shared eviction driver, targets the held sizes: every layer's step attention goes
        // into the running scores, and a head above its size loses its lowest-scored entry.
        let mut allocator = |l: usize, _: usize, _: &[usize]| -> Vec<usize> { limits[l].clone() };
        let mut rule = HoldSize {
            config: self.config,
            scores: &mut st.scores,
        };
        evict_with(cache, obs, &StepAttention, &mut allocator, &mut rule)
    }
}

/// The decode variant's scorer: each stored entry's attention from the newest generated token,
/// averaged over the query heads of its KV head (GQA). Nothing pinned: [`HoldSize`] adds it to the
/// running scores and pins the recent share there.
struct StepAttention;

impl Scorer for StepAttention {
    fn scorer_name(&self) -> &'static str {
        "h2o"
    }
    fn observation_needs(&self) -> ObservationNeeds {
        ObservationNeeds {
            window_queries: 1,
            ..Default::default()
        }
    }
    fn score(&self, input: &LayerInput) -> Result<Vec<Vec<f32>>> {
        let (q, pos) = input.window_queries(1, "h2o")?;
        let att = window_attention(input.layer, &q, &pos, input.q_per_kv("h2o")?)?;
        att.iter().map(|a| gqa_mean(&a.squeeze(1)?)).collect()
    }
}

/// The decode variant's keep rule, its targets being the held sizes: every layer's step attention
/// ([`StepAttention`]) is added to the running scores (entries appended since start from zero);
/// a head that outgrew its size keeps the best running scores, the recent share pinned.
struct HoldSize<'a> {
    config: &'a H2o,
    /// The running scores, `[layer][head][entry]`.
    scores: &'a mut [Vec<Vec<f32>>],
}

impl HoldSize<'_> {
    fn accumulate(&mut self, l: usize, step: &[Vec<f32>]) {
        for (s, a) in self.scores[l].iter_mut().zip(step) {
            s.resize(a.len(), 0.0);
            for (x, y) in s.iter_mut().zip(a) {
                *x += y;
            }
        }
    }
}

impl KeepRule for HoldSize<'_> {
    fn apply(
        &mut self,
        cache: &mut KvCache,
        l: usize,
        _obs: &Observations,
        step: Vec<Vec<f32>>,
        limits: &[usize],
    ) -> Result<()> {
        self.accumulate(l, &step);
        let scores = &mut self.scores[l];
        let keep: Vec<Vec<u32>> = scores
            .iter()
            .zip(limits)
            .map(|(s, &lim)| {
                let recent = self.config.recent(lim).min(s.len());
                let mut pinned = s.clone();
                let n = pinned.len();
                pinned[n - recent..].fill(f32::INFINITY);
                top_k_sorted(&pinned, lim)
            })
            .collect();
        cache.layer_mut(l).retain(&keep)?;
        for (s, k) in scores.iter_mut().zip(&keep) {
            *s = k.iter().map(|&i| s[i as usize]).collect();
        }
        Ok(())
    }
    fn unchanged(
        &mut self,
        cache: &mut KvCache,
        l: usize,
        obs: &Observations,
        limits: &[usize],
    ) -> Result<()> {
        let step = score_layer(cache, l, obs, &StepAttention, limits)?;
        self.accumulate(l, &step);
        Ok(())
    }
}

impl Describe for H2o {
    const DESCRIPTION: Description = Description {
        family: "scorer",
        summary: "Heavy hitters by attention accumulated over all prefill queries, plus recent entries; optional decode-phase eviction.",
        paper: "https://arxiv.org/abs/2306.14048",
        params: &[
            Param::new("recent_fraction", "number", "share of each head's budget kept for the most recent entries"),
            Param::new("decode", "boolean", "keep evicting while generating: one entry per head and token, holding the cache at its size when generation began"),
        ],
    };

    fn conformance() -> crate::describe::Conformance {
        // The decode variant holds the cache at its size after prefill.
        crate::describe::Conformance::default().with_spec_after_decode(
            serde_json::json!({"method": "h2o", "decode": true}),
            crate::describe::AfterDecode::Held,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{cache_with_keys, keep_of};
    use crate::LayerObservation;
    use candle_core::{Device, Tensor};

    fn obs_acc(acc: Vec<Vec<f32>>) -> Observations {
        let (h, n) = (acc.len(), acc[0].len());
        let t = Tensor::from_vec(
            acc.into_iter().flatten().collect::<Vec<_>>(),
            (h, n),
            &Device::Cpu,
        )
        .unwrap();
        Observations {
            layers: vec![LayerObservation {
                accumulated_attention: Some(t),
                ..Default::default()
            }],
            q_per_kv: 2,
            rope: None,
        }
    }

    #[test]
    fn heavy_hitters_by_group_mean_plus_recent_share() {
        // One KV head with two query heads; 8 entries, keep 4: 2 recent (6, 7) + 2 heaviest of the
        // rest by the mean over the two query heads: entry 1 (mean 0.5) and entry 4 (mean 0.45),
        // not entry 2 (0.9 in one head, 0 in the other).
        let keys: Vec<Vec<f32>> = (0..8).map(|i| vec![i as f32]).collect();
        let mut cache = cache_with_keys(&[keys]);
        let obs = obs_acc(vec![
            vec![0.1, 0.5, 0.9, 0.0, 0.4, 0.0, 0.0, 0.0],
            vec![0.1, 0.5, 0.0, 0.1, 0.5, 0.2, 0.0, 0.0],
        ]);
        H2o::default()
            .compress(&mut cache, &obs, &Budget::Tokens(4))
            .unwrap();
        assert_eq!(keep_of(&cache, 0), vec![vec![1, 4, 6, 7]]);
    }

    #[test]
    fn decode_variant_evicts_the_lowest_accumulated_entry_per_token() {
        // Keys along axes. The prefill keeps heavy hitters 0 (3.0) and 1 (0.5) plus recent 4, 5.
        // The generated token (position 6) attends almost only to entry 4, lifting it to ~1, so
        // entry 1 becomes the lowest outside the recent share (5, 6) and is evicted: the cache
        // keeps its size.
        let d = 8;
        let e = |j: usize| {
            (0..d)
                .map(|i| if i == j { 1.0f32 } else { 0.0 })
                .collect::<Vec<_>>()
        };
        let mut cache = cache_with_keys(&[(0..6).map(e).collect()]);
        let obs = obs_acc(vec![vec![3.0, 0.5, 0.1, 0.2, 0.0, 0.0]; 2]);
        let m = H2o {
            recent_fraction: 0.5,
            decode: true,
        };
        let mut m = m.session();
        m.on_prefill(&mut cache, &obs, &Budget::Tokens(4)).unwrap();
        assert_eq!(keep_of(&cache, 0), vec![vec![0, 1, 4, 5]]);
        let k = Tensor::from_vec(e(6), (1, 1, d), &Device::Cpu).unwrap();
        cache.layer_mut(0).append(&k, &k, &[6]).unwrap();
        cache.advance(1);
        let mut q = vec![0.0f32; d];
        q[4] = 40.0;
        let qt = Tensor::from_vec([q.clone(), q].concat(), (2, 1, d), &Device::Cpu).unwrap();
        let dobs = Observations {
            layers: vec![LayerObservation {
                window_queries: Some(qt),
                ..Default::default()
            }],
            q_per_kv: 2,
            rope: None,
        };
        m.on_decode(&mut cache, 1, &dobs, &Budget::Tokens(4))
            .unwrap();
        assert_eq!(keep_of(&cache, 0), vec![vec![0, 4, 5, 6]]);
        // Without the decode variant nothing happens after the prefill.
        let mut plain = cache_with_keys(&[(0..6).map(e).collect()]);
        let plain_method = H2o::default();
        let mut m = plain_method.session();
        m.on_prefill(&mut plain, &obs, &Budget::Tokens(4)).unwrap();
        plain.layer_mut(0).append(&k, &k, &[6]).unwrap();
        plain.advance(1);
        m.on_decode(&mut plain, 1, &dobs, &Budget::Tokens(4))
            .unwrap();
        assert_eq!(keep_of(&plain, 0), vec![vec![0, 1, 4, 5, 6]]);
    }
}

//! `adakv`: one budget per layer shared by its KV heads, spent by a single top-k across the heads,
//! with a per-head floor; heads end up with different lengths and are stored ragged.
//!
//! Paper: Feng et al., "Ada-KV: Optimizing KV Cache Eviction by Adaptive Budget Allocation for
//! Efficient LLM Inference", 2024, <https://arxiv.org/abs/2407.11550>. Per layer, with `B` the
//! uniform budget per head: every head first keeps its `floor(floor x B)` best entries (the
//! safeguard), then the remaining `sum(B) - sum(floors)` entries go to the best scores among all
//! heads' other entries. The layer keeps exactly `heads x B` entries, as the uniform budget would,
//! and the scorer's window (SnapKV's, by default) is kept in every head. Storage is ragged
//! (`LayerKv::retain` keeps one group per head), so the memory is really freed, where kvpress's
//! `AdaKVPress` only masks the evicted entries.
//!
//! Defaults: `floor = 0.2`, the paper's alpha, kvpress's `AdaKVPress.alpha_safeguard` default
//! (0.20, applied as `int(n_kept x alpha)` as here) and KVCache-Factory's `floor_ratio` default
//! (`init_adakv`; its `run_longbench.py --floor 0.2` writes `config.floor`, which `init_adakv`
//! does not read, so `floor_ratio`'s own 0.2 is what runs). Scorer `snapkv` with its defaults
//! (window 32, kernel 7, max pooling), the settings of the AdaKV repository's LongBench runs;
//! kvpress's `AdaKVPress` wraps any `ScorerPress` and has no default scorer; KVCache-Factory's
//! `init_adakv` defaults to window 32, kernel 5, max pooling, but its `run_longbench.py` runs
//! window 8, kernel 7, max pooling, and it averages the window's attention instead of summing it
//! (which ranks identically).
//!
//! KVCache-Factory's `AdaKVCluster` differs further: its floor is a share of `B - window` (its
//! `base_capacity`), the window being added to every head afterwards; with `normalize` (on by
//! default) each head's scores are scaled by the share of its attention in its top `B - window`
//! before the global top-k; and each head's count is rounded
//! (`round(count (1 - floor) + floor (B - window))`), so its total is only approximately
//! `heads x B`. The floor-then-global rule here is kvpress's.
//!
//! The selection runs on the cache's device (`adaptive_keep_on`, the radix-select kernel on CUDA);
//! on a layer stored as one group the scorer's scores stay there too (`KeepRule::apply_on_device`),
//! and only the kept mask comes to the host.

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::describe::{Describe, Description, Param};
use crate::registry::ScorerConfig;
use crate::device_ops::top_k_mask;
use crate::profile::phase;
use crate::selection::select::{evict_with, KeepRule, Uniform};
use crate::{Budget, KvCache, Method, MethodError, ObservationNeeds, Observations};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdaKv {
    /// Share of the uniform budget every head keeps whatever the other heads score (0 to 1).
    #[serde(default = "default_floor")]
    pub floor: f64,
    /// Scorer whose scores are compared across heads.
    #[serde(default)]
    pub scorer: ScorerConfig,
}

pub(crate) fn default_floor() -> f64 {
    0.2
}

impl Default for AdaKv {
    fn default() -> Self {
        Self {
            floor: default_floor(),
            scorer: ScorerConfig::default(),
        }
    }
}

/// Indices kept per head: each head's top `floors[h]`, then the best `sum(targets - floors)` of the
/// rest across heads (ties to the later entry, then the later head), chosen on `dev`.
///
/// The scores (host) go to the device once, padded to the longest head, and the choice is
/// [`adaptive_keep_on`]'s.
pub fn adaptive_keep(
    scores: &[Vec<f32>],
    targets: &[usize],
    floors: &[usize],
    dev: &Device,
) -> Result<Vec<Vec<u32>>, MethodError> {
    let h = scores.len();
    let n = scores.iter().map(|s| s.len()).max().unwrap_or(0);
    if h == 0 || n == 0 {
        return Ok(vec![Vec::new(); h]);
    }
    let mut flat = vec![f32::NAN; h * n];
    let mut valid = vec![0u8; h * n];
    for (r, s) in scores.iter().enumerate() {
        flat[r * n..r * n + s.len()].copy_from_slice(s);
        valid[r * n..r * n + s.len()].fill(1);
    }
    let x = Tensor::from_vec(flat, (h, n), dev)?;
    let valid = Tensor::from_vec(valid, (h, n), dev)?;
    let lens: Vec<usize> = scores.iter().map(Vec::len).collect();
    adaptive_keep_on(&x, Some(&valid), &lens, targets, floors)
}

/// [`adaptive_keep`] of `[heads, n]` scores `x` where they are: head `h` holds its first
/// `lens[h]` entries (`valid`, u8, marks them; `None`: every head holds all `n`).
///
/// The floors are one `top_k_mask` over the head rows, the shared rest one `top_k_mask` over the
/// layer's entries laid out entry-major (`i * heads + h`, so "later" is the later entry, then the
/// later head, as the host rule kept as the test oracle). On CUDA both are the radix-select
/// kernel; only the kept mask comes back, as `LayerKv::retain` takes host indices.
pub fn adaptive_keep_on(
    x: &Tensor,
    valid: Option<&Tensor>,
    lens: &[usize],
    targets: &[usize],
    floors: &[usize],
) -> Result<Vec<Vec<u32>>, MethodError> {
    let (h, n) = x.dims2()?;
    if h == 0 || n == 0 {
        return Ok(vec![Vec::new(); h]);
    }
    let floors: Vec<usize> = floors.iter().zip(lens).map(|(&f, &l)| f.min(l)).collect();
    let floor_mask = top_k_mask(x, &floors, valid)?;
    let total: usize = targets.iter().sum();
    let not_floor = (1.0 - floor_mask.to_dtype(DType::F32)?)?.to_dtype(DType::U8)?;
    let open = match valid {
        Some(valid) => valid.mul(&not_floor)?,
        None => not_floor,
    };
    let open_count: usize = lens.iter().sum::<usize>() - floors.iter().sum::<usize>();
    let rest = total.saturating_sub(floors.iter().sum()).min(open_count);
    let entry_major =
        |t: &Tensor| -> candle_core::Result<Tensor> { t.t()?.contiguous()?.reshape((1, h * n)) };
    let shared = top_k_mask(&entry_major(x)?, &[rest], Some(&entry_major(&open)?))?
        .reshape((n, h))?
        .t()?;
    let keep: Vec<Vec<u8>> = floor_mask.maximum(&shared)?.to_vec2()?;
    Ok(keep
        .iter()
        .map(|row| (0..n as u32).filter(|&i| row[i as usize] != 0).collect())
        .collect())
}

impl Method for AdaKv {
    fn name(&self) -> &str {
        "adakv"
    }
    fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn needs(&self) -> ObservationNeeds {
        self.scorer.scorer().observation_needs()
    }
    fn validate(&self) -> Result<(), crate::ParamError> {
        crate::params::check_range(
            "adakv",
            "floor",
            self.floor,
            0.0,
            1.0,
            true,
            "share of the uniform budget every head keeps",
        )?;
        self.scorer.validate_within("adakv", "scorer")
    }
    fn compress(
        &self,
        cache: &mut KvCache,
        obs: &Observations,
        budget: &Budget,
    ) -> Result<(), MethodError> {
        let mut rule = Adaptive {
            floor: self.floor.clamp(0.0, 1.0),
        };
        evict_with(
            cache,
            obs,
            self.scorer.scorer(),
            &mut Uniform(budget),
            &mut rule,
        )
    }
}

/// AdaKV's keep rule: each head keeps its `floor x target` best, the rest of the layer's total
/// goes to the best scores across heads. Shared by `adakv` and `query_heads` (where the heads are
/// the query heads of KVCache-Factory's layout).
pub struct Adaptive {
    /// Share of each head's target it keeps whatever the other heads score (0 to 1).
    pub floor: f64,
}

impl KeepRule for Adaptive {
    fn apply(
        &mut self,
        cache: &mut KvCache,
        layer: usize,
        _obs: &Observations,
        scores: Vec<Vec<f32>>,
        targets: &[usize],
    ) -> Result<(), MethodError> {
        let floors = self.floors(targets);
        let dev = cache.device().clone();
        let keep = adaptive_keep(&scores, targets, &floors, &dev)?;
        cache.layer_mut(layer).retain(&keep)
    }
    /// A layer of one group: its heads' scores stay on the device.
    fn takes_device_scores(&self, _targets: &[usize]) -> bool {
        true
    }
    fn apply_on_device(
        &mut self,
        cache: &mut KvCache,
        layer: usize,
        _obs: &Observations,
        scores: &Tensor,
        targets: &[usize],
    ) -> Result<(), MethodError> {
        let (h, n) = scores.dims2()?;
        let keep = phase("adaptive select", scores.device(), || {
            adaptive_keep_on(scores, None, &vec![n; h], targets, &self.floors(targets))
        })?;
        phase("retain (ragged)", scores.device(), || {
            cache.layer_mut(layer).retain(&keep)
        })
    }
}

impl Adaptive {
    /// Each head's floor: `floor x target`, rounded down.
    fn floors(&self, targets: &[usize]) -> Vec<usize> {
        targets
            .iter()
            .map(|&t| (t as f64 * self.floor).floor() as usize)
            .collect()
    }
}

impl Describe for AdaKv {
    const DESCRIPTION: Description = Description {
        family: "allocator",
        summary:
            "One top-k across the KV heads of a layer with a per-head floor; heads stored ragged.",
        paper: "https://arxiv.org/abs/2407.11550",
        params: &[
            Param::new(
                "floor",
                "number",
                "share of the uniform budget every head keeps",
            ),
            Param::new("scorer", "scorer", "scorer ranking the entries"),
        ],
    };

    fn conformance() -> crate::describe::Conformance {
        crate::describe::Conformance::expect(crate::describe::Expect::PerHeadTotal { floor: 0.2 })
            .with_specs([
                serde_json::json!({"method": "adakv", "scorer": {"method": "knorm"}}),
                serde_json::json!({"method": "adakv", "scorer": {"method": "h2o"}}),
            ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::knorm::Knorm;
    use crate::selection::select::top_k_sorted;
    use crate::testing::{cache_with_keys, keep_of};
    use candle_core::Device;

    /// The host rule `adaptive_keep` replaced (the test oracle).
    /// rest across heads (ties to the later entry, then the later head).
    fn oracle_keep(scores: &[Vec<f32>], targets: &[usize], floors: &[usize]) -> Vec<Vec<u32>> {
        let mut keep: Vec<Vec<u32>> = scores
            .iter()
            .zip(floors)
            .map(|(s, &f)| top_k_sorted(s, f))
            .collect();
        let total: usize = targets.iter().sum();
        let mut rest = total.saturating_sub(keep.iter().map(|k| k.len()).sum());
        let key = |s: f32| if s.is_nan() { f32::NEG_INFINITY } else { s };
        let mut pool: Vec<(f32, u32, usize)> = Vec::new();
        for (h, (s, k)) in scores.iter().zip(&keep).enumerate() {
            let mut taken = k.iter().peekable();
            for (i, &v) in s.iter().enumerate() {
                if taken.peek() == Some(&&(i as u32)) {
                    taken.next();
                } else {
                    pool.push((key(v), i as u32, h));
                }
            }
        }
        pool.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)));
        for &(_, i, h) in &pool {
            if rest == 0 {
                break;
            }
            keep[h].push(i);
            rest -= 1;
        }
        for k in &mut keep {
            k.sort_unstable();
        }
        keep
    }

    /// Device selection against the host oracle: exact index sets, ties included (scores on a
    /// coarse grid, NaN), ragged heads, floors and totals of all sizes.
    #[test]
    fn device_keep_matches_the_host_oracle() {
        let mut state = 17u64;
        let mut rnd = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as usize
        };
        for case in 0..40 {
            let heads = 1 + case % 4;
            let scores: Vec<Vec<f32>> = (0..heads)
                .map(|_| {
                    let len = 1 + rnd() % 40;
                    (0..len)
                        .map(|_| match rnd() % 10 {
                            0 => f32::NAN,
                            r => (r % 4) as f32 * 0.25,
                        })
                        .collect()
                })
                .collect();
            let targets: Vec<usize> = scores.iter().map(|s| rnd() % (s.len() + 1)).collect();
            let floors: Vec<usize> = targets.iter().map(|&t| t * (case % 3) / 3).collect();
            assert_eq!(
                adaptive_keep(&scores, &targets, &floors, &Device::Cpu).unwrap(),
                oracle_keep(&scores, &targets, &floors),
                "case {case}: {scores:?} {targets:?} {floors:?}"
            );
        }
    }

    /// The device path (the scorer's `[heads, len]` scores left where they are, `apply_on_device`)
    /// keeps exactly what the host path (`score`, then `apply`) keeps, keys and values included.
    #[test]
    fn device_scores_keep_what_host_scores_keep() {
        use crate::selection::scoring::Scorer;
        use crate::selection::select::score_layer;
        for (floor, target) in [(0.0, 9), (0.2, 13), (0.7, 20), (1.0, 5)] {
            let host = crate::testing::random_cache(false);
            let mut device = host.clone();
            let mut host = host;
            let obs = Observations::default();
            let targets = vec![target; 3];
            let knorm = Knorm::default();
            let scores = score_layer(&host, 0, &obs, &knorm, &targets).unwrap();
            Adaptive { floor }
                .apply(&mut host, 0, &obs, scores, &targets)
                .unwrap();
            let input = crate::selection::scoring::LayerInput {
                index: 0,
                layer: device.layer(0),
                obs: &obs,
                next_position: device.next_position(),
                targets: &targets,
            };
            let groups = knorm.score_groups(&input).unwrap().unwrap();
            let mut rule = Adaptive { floor };
            assert!(rule.takes_device_scores(&targets));
            rule.apply_on_device(&mut device, 0, &obs, &groups[0], &targets)
                .unwrap();
            assert_eq!(keep_of(&device, 0), keep_of(&host, 0), "floor {floor}");
            let total: usize = keep_of(&device, 0).iter().map(Vec::len).sum();
            assert_eq!(total, 3 * target);
            for (a, b) in device.layer(0).groups().iter().zip(host.layer(0).groups()) {
                let (ka, va) = a.storage.keys_values().unwrap();
                let (kb, vb) = b.storage.keys_values().unwrap();
                assert_eq!(ka.flatten_all().unwrap().to_vec1::<f32>().unwrap(), kb.flatten_all().unwrap().to_vec1::<f32>().unwrap());
                assert_eq!(va.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vb.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            }
        }
    }

    #[test]
    fn global_top_k_with_per_head_floor() {
        let scores = vec![vec![0.9, 0.8, 0.7, 0.6], vec![0.1, 0.2, 0.05, 0.3]];
        // Budget 2 per head, no floor: head 0 takes all four best scores.
        assert_eq!(
            adaptive_keep(&scores, &[2, 2], &[0, 0], &Device::Cpu).unwrap(),
            vec![vec![0, 1, 2, 3], vec![]]
        );
        // Floor 1: head 1 keeps its best (3), head 0 the three best of the rest.
        assert_eq!(
            adaptive_keep(&scores, &[2, 2], &[1, 1], &Device::Cpu).unwrap(),
            vec![vec![0, 1, 2], vec![3]]
        );
    }

    #[test]
    fn ragged_heads_are_stored_per_head_with_exact_layer_total() {
        // Knorm scores: head 0's keys are all small (high scores), head 1's large but one.
        let head0: Vec<Vec<f32>> = (0..8).map(|i| vec![0.1 + 0.01 * i as f32]).collect();
        let mut head1: Vec<Vec<f32>> = (0..8).map(|i| vec![5.0 + i as f32]).collect();
        head1[6] = vec![0.01];
        let mut cache = cache_with_keys(&[head0, head1]);
        let m = AdaKv {
            floor: 0.25,
            scorer: ScorerConfig::Knorm(Knorm::default()),
        };
        m.compress(&mut cache, &Observations::default(), &Budget::Tokens(4))
            .unwrap();
        // Floors: 1 per head (head 0 keeps 0, head 1 keeps 6); the other 6 of the layer's 8 go
        // to head 0.
        assert_eq!(keep_of(&cache, 0), vec![vec![0, 1, 2, 3, 4, 5, 6], vec![6]]);
        assert_eq!(cache.layer(0).groups().len(), 2);
        // 8 entries x (key + value) x 1 dim x 4 bytes.
        assert_eq!(cache.bytes(), 8 * 2 * 4);
    }
}

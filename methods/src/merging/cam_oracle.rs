//! The host sweep `cam` ran before it moved to the device, kept as the test oracle for
//! `cam.rs`, with the tests that compare the two.

use super::merge_probability;

/// One head's values after merging: `values` is `[len, d]` row-major, `attention` one accumulated
/// score per entry, `kept` the sorted kept indices, `m` the receivers per evicted entry; `draw`
/// gives one uniform number in `[0, 1)` per evicted entry that has receivers (merge when below the
/// probability). Returns every entry's value, `[len, d]`: kept entries' final values; an evicted
/// entry holds what it had when it passed it on.
pub(super) fn merge_values(
    values: &[f32],
    d: usize,
    attention: &[f32],
    kept: &[u32],
    m: usize,
    mut draw: impl FnMut() -> f32,
) -> Vec<f32> {
    let len = attention.len();
    let mut out = values.to_vec();
    // prefix[j] = sum of attention[..j], for the receivers' mean.
    let mut prefix = vec![0f64; len + 1];
    for (j, &a) in attention.iter().enumerate() {
        prefix[j + 1] = prefix[j] + a as f64;
    }
    // A share added to entries j+1..=j+count is added to the running `acc` after entry j and
    // removed again at j+1+count (`ends`), so the sweep is O(len x d) whatever m is.
    let mut acc = vec![0f32; d];
    let mut ends = vec![0f32; (len + 1) * d];
    let mut next_kept = kept.iter().peekable();
    for j in 0..len {
        for (a, e) in acc.iter_mut().zip(&ends[j * d..(j + 1) * d]) {
            *a -= e;
        }
        let row = &mut out[j * d..(j + 1) * d];
        for (x, a) in row.iter_mut().zip(&acc) {
            *x += a;
        }
        if next_kept.peek() == Some(&&(j as u32)) {
            next_kept.next();
            continue;
        }
        let count = m.min(len - 1 - j);
        if count == 0 {
            continue;
        }
        let mean = ((prefix[j + 1 + count] - prefix[j + 1]) / count as f64) as f32;
        if draw() >= merge_probability(attention[j], mean) {
            continue;
        }
        let end = j + 1 + count;
        for c in 0..d {
            let share = out[j * d + c] / count as f32;
            acc[c] += share;
            ends[end * d + c] += share;
        }
    }
    out
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::merging::cam::{auto_merge_budget, Cam};
    use crate::registry::ScorerConfig;
    use crate::selection::h2o::H2o;
    use crate::selection::scoring::LayerInput;
    use crate::selection::select::{score_layer, top_k_per_head};
    use crate::{Budget, KvCache, LayerObservation, Method, Observations};
    use candle_core::{DType, Device, Tensor};
    use rand::Rng;

    #[test]
    fn the_draw_gates_each_merge_by_its_probability() {
        // Entry 0 evicted, one receiver (entry 1), m = 1: p = 1 / 2.
        let values = [2.0f32, 10.0];
        let attention = [1.0f32, 2.0];
        assert_eq!(merge_probability(1.0, 2.0), 0.5);
        assert_eq!(
            merge_values(&values, 1, &attention, &[1], 1, || 0.4),
            vec![2.0, 12.0]
        );
        assert_eq!(
            merge_values(&values, 1, &attention, &[1], 1, || 0.6),
            vec![2.0, 10.0]
        );
        // Edge cases: nothing received by anyone, or only by the receivers.
        assert_eq!(merge_probability(0.0, 0.0), 0.0);
        assert_eq!(merge_probability(1.0, 0.0), 1.0);
        // The last entry has no receivers: its value is dropped, no draw is taken.
        let out = merge_values(&[1.0, 3.0], 1, &[1.0, 1.0], &[0], 4, || panic!("no draw"));
        assert_eq!(out, vec![1.0, 3.0]);
    }


    /// `heads` KV heads (2 query heads each) of `len` entries of dimension 4, pseudo-random keys,
    /// values and accumulated attention (positive).
    /// With `seed` 1, attention is the same everywhere: every evicted entry merges (probability
    /// 1), so with `merge_budget = 1` values chain through every evicted entry (paths past 64).
    fn cache(heads: usize, len: usize, seed: u64) -> (KvCache, Observations) {
        let d = 4;
        let mut state = seed.wrapping_add(7);
        let mut rnd = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as f32 / (1u64 << 31) as f32
        };
        let dev = Device::Cpu;
        let mut t = |n: usize| {
            let x: Vec<f32> = (0..n).map(|_| rnd() - 0.5).collect();
            x
        };
        let k = Tensor::from_vec(t(heads * len * d), (heads, len, d), &dev).unwrap();
        let v = Tensor::from_vec(t(heads * len * d), (heads, len, d), &dev).unwrap();
        let acc: Vec<f32> = t(2 * heads * len)
            .iter()
            .map(|x| if seed == 1 { 1.0 } else { x + 0.6 })
            .collect();
        let mut cache = KvCache::new(1, heads, d, DType::F32, &dev);
        cache
            .layer_mut(0)
            .append(&k, &v, &(0..len as u32).collect::<Vec<_>>())
            .unwrap();
        cache.advance(len);
        let obs = Observations {
            layers: vec![LayerObservation {
                accumulated_attention: Some(
                    Tensor::from_vec(acc, (2 * heads, len), &dev).unwrap(),
                ),
                ..Default::default()
            }],
            q_per_kv: 2,
            rope: None,
        };
        (cache, obs)
    }

    /// The device cascade against this host sweep: the same kept entries and their values within
    /// 1e-4 of the largest (the host sweep's running sums drift by ~1e-5 over long chains), for
    /// the default (auto merge budget, cascades across more than one 128-entry block), a small
    /// fixed merge budget with h2o, a chain through every evicted entry (`merge_budget = 1`,
    /// uniform attention), and several seeds and budgets.
    #[test]
    fn device_cascade_matches_the_host_sweep() {
        let configs = [
            Cam::default(),
            Cam {
                scorer: ScorerConfig::H2o(H2o::default()),
                merge_budget: 4,
                seed: 3,
            },
            Cam {
                merge_budget: 200,
                seed: 9,
                ..Default::default()
            },
            Cam {
                merge_budget: 1,
                ..Default::default()
            },
        ];
        let mut compared = 0;
        for m in &configs {
            for (len, tokens) in [(300, 150), (300, 40), (64, 60), (129, 1)] {
                for seed in 0..2 {
                    let (mut cache, obs) = cache(2, len, seed);
                    let targets = vec![tokens; 2];
                    let scores = score_layer(&cache, 0, &obs, m.scorer.scorer(), &targets).unwrap();
                    let keep = top_k_per_head(&scores, &targets);
                    let layer = cache.layer(0);
                    let input = LayerInput {
                        index: 0,
                        layer,
                        obs: &obs,
                        next_position: cache.next_position(),
                        targets: &targets,
                    };
                    let attention = H2o::accumulated(&input, "cam").unwrap();
                    let values: Vec<Vec<Vec<f32>>> = layer.dense().unwrap().1.to_vec3().unwrap();
                    m.compress(&mut cache, &obs, &Budget::Tokens(tokens)).unwrap();
                    let got: Vec<Vec<Vec<f32>>> =
                        cache.layer(0).dense().unwrap().1.to_vec3().unwrap();
                    for h in 0..2 {
                        let mh = match m.merge_budget {
                            0 => auto_merge_budget(&keep[h], len),
                            mb => mb,
                        };
                        let mut rng = m.stream(0, h);
                        let rows = values[h].concat();
                        let want = merge_values(&rows, 4, &attention[h], &keep[h], mh, || {
                            rng.gen::<f32>()
                        });
                        let scale = want.iter().fold(1f32, |a, x| a.max(x.abs()));
                        assert_eq!(got[h].len(), keep[h].len());
                        for (r, &i) in keep[h].iter().enumerate() {
                            for c in 0..4 {
                                let (a, b) = (got[h][r][c], want[i as usize * 4 + c]);
                                assert!(
                                    (a - b).abs() <= 1e-4 * scale,
                                    "{m:?} len {len} tokens {tokens} seed {seed} head {h} entry {i}: {a} vs {b}"
                                );
                            }
                        }
                        compared += 1;
                    }
                }
            }
        }
        assert_eq!(compared, 4 * 4 * 2 * 2);
    }
}

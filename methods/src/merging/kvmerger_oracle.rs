//! The host implementation `kvmerger` had before it moved to the device (per-entry loops over
//! every head's keys and values), kept as the test oracle for `kvmerger.rs`, with the test that
//! compares the two.

use std::ops::Range;

use crate::selection::select::top_k_sorted;

fn row(x: &[f32], d: usize, i: usize) -> &[f32] {
    &x[i * d..(i + 1) * d]
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// Merging sets of one head (`keys` is `[len, d]` row-major): runs of entries linked by adjacent
/// cosine similarity `>= threshold`, using at most `max_links` links, the most similar first (ties
/// to the later pair). Returns ranges covering `0..len` in order.
pub(super) fn merging_sets(keys: &[f32], d: usize, threshold: f32, max_links: usize) -> Vec<Range<usize>> {
    let len = keys.len() / d;
    let mut links: Vec<(f32, usize)> = (0..len.saturating_sub(1))
        .map(|i| (cosine(row(keys, d, i), row(keys, d, i + 1)), i))
        .filter(|&(s, _)| s >= threshold) // NaN (a zero key) never links
        .collect();
    links.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
    let mut linked = vec![false; len];
    for &(_, i) in links.iter().take(max_links) {
        linked[i] = true;
    }
    let mut sets = Vec::new();
    let mut start = 0;
    for (i, &joined) in linked.iter().enumerate() {
        if !joined {
            sets.push(start..i + 1);
            start = i + 1;
        }
    }
    sets
}

/// One merging set as a single entry: `(pivot, key, value)`, the pivot being the set's entry with
/// the highest `attention` (ties to the later entry), key and value Gaussian-kernel weighted
/// averages around the pivot's key.
pub(super) fn gaussian_merge(
    keys: &[f32],
    values: &[f32],
    d: usize,
    set: Range<usize>,
    attention: &[f32],
) -> (usize, Vec<f32>, Vec<f32>) {
    let pivot = set
        .clone()
        .reduce(|best, i| {
            if attention[i].total_cmp(&attention[best]).is_ge() {
                i
            } else {
                best
            }
        })
        .expect("merging sets are not empty");
    let kp = row(keys, d, pivot);
    let dist: Vec<f64> = set
        .clone()
        .map(|i| {
            row(keys, d, i)
                .iter()
                .zip(kp)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    let sigma = dist.iter().sum::<f64>() / (2f64.sqrt() * dist.len() as f64);
    // Identical keys (sigma 0): equal weights.
    let g: Vec<f64> = dist
        .iter()
        .map(|&r| {
            if sigma > 0.0 {
                (-r * r / (2.0 * sigma * sigma)).exp()
            } else {
                1.0
            }
        })
        .collect();
    let total: f64 = g.iter().sum();
    let mut k = vec![0f32; d];
    let mut v = vec![0f32; d];
    for (i, w) in set.zip(&g) {
        let w = (w / total) as f32;
        for c in 0..d {
            k[c] += w * keys[i * d + c];
            v[c] += w * values[i * d + c];
        }
    }
    (pivot, k, v)
}

/// One head's entries: keys and values (`[n, d]` row-major) and positions.
pub(super) type HeadRows = (Vec<f32>, Vec<f32>, Vec<u32>);

/// One head as stored, on the host: keys and values `[len, d]` row-major, positions, and each
/// entry's accumulated attention and score.
pub(super) struct HeadInput<'a> {
    pub(super) keys: &'a [f32],
    pub(super) values: &'a [f32],
    pub(super) d: usize,
    pub(super) positions: &'a [u32],
    pub(super) attention: &'a [f32],
    pub(super) scores: &'a [f32],
}

/// One head compressed to at most `target` entries: merged sets, then the best `target` of them by
/// `scores` (a set scores its best member).
pub(super) fn merge_head(head: &HeadInput, threshold: f32, target: usize) -> HeadRows {
    let HeadInput {
        keys,
        values,
        d,
        positions,
        attention,
        scores,
    } = *head;
    let len = positions.len();
    let sets = merging_sets(keys, d, threshold, len.saturating_sub(target));
    let set_scores: Vec<f32> = sets
        .iter()
        .map(|s| {
            scores[s.clone()]
                .iter()
                .copied()
                .filter(|x| !x.is_nan())
                .fold(f32::NEG_INFINITY, f32::max)
        })
        .collect();
    let kept = top_k_sorted(&set_scores, target);
    let (mut k, mut v, mut p) = (Vec::new(), Vec::new(), Vec::new());
    for &s in &kept {
        let set = sets[s as usize].clone();
        if set.len() == 1 {
            k.extend_from_slice(row(keys, d, set.start));
            v.extend_from_slice(row(values, d, set.start));
            p.push(positions[set.start]);
        } else {
            let (pivot, mk, mv) = gaussian_merge(keys, values, d, set, attention);
            k.extend(mk);
            v.extend(mv);
            p.push(positions[pivot]);
        }
    }
    (k, v, p)
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::merging::kvmerger::KvMerger;
    use crate::selection::h2o::H2o;
    use crate::selection::scoring::LayerInput;
    use crate::selection::select::score_layer;
    use crate::{Budget, KvCache, LayerObservation, Method, Observations};
    use candle_core::{DType, Device, Tensor};

    #[test]
    fn sets_follow_adjacent_similarity() {
        let flat: Vec<f32> = [[0.0f32, 1.0], [1.0, 0.0], [1.0, 0.1], [1.0, 0.2], [0.0, -1.0], [-1.0, 0.0]].concat();
        assert_eq!(
            merging_sets(&flat, 2, 0.75, 6),
            vec![0..1, 1..4, 4..5, 5..6]
        );
        assert_eq!(
            merging_sets(&flat, 2, 0.75, 1),
            vec![0..1, 1..2, 2..4, 4..5, 5..6]
        );
        assert_eq!(merging_sets(&flat, 2, 0.75, 0).len(), 6);
        // A zero key never links.
        assert_eq!(merging_sets(&[0.0, 0.0, 0.0, 0.0], 2, -1.0, 1).len(), 2);
    }


    /// Keys on a slow random walk (long runs of similar neighbours, a few jumps, some exact
    /// repeats), random values, accumulated attention with ties: `heads` KV heads, 2 query heads
    /// each, `len` entries of dimension 8.
    fn walk_cache(heads: usize, len: usize, seed: u64) -> (KvCache, Observations) {
        let d = 8;
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut rnd = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let mut k = Vec::new();
        for _ in 0..heads {
            let mut x: Vec<f32> = (0..d).map(|_| rnd()).collect();
            for i in 0..len {
                let jump = rnd();
                if jump > 0.35 {
                    x = (0..d).map(|_| rnd()).collect();
                } else if jump > -0.3 {
                    x.iter_mut().for_each(|c| *c += 0.15 * rnd());
                } // else: the same key again
                let _ = i;
                k.extend_from_slice(&x);
            }
        }
        let v: Vec<f32> = (0..heads * len * d).map(|_| rnd()).collect();
        let acc: Vec<f32> = (0..2 * heads * len)
            .map(|_| (rnd() * 8.0).round() / 8.0 + 0.5)
            .collect();
        let dev = Device::Cpu;
        let mut cache = KvCache::new(1, heads, d, DType::F32, &dev);
        cache
            .layer_mut(0)
            .append(
                &Tensor::from_vec(k, (heads, len, d), &dev).unwrap(),
                &Tensor::from_vec(v, (heads, len, d), &dev).unwrap(),
                &(0..len as u32).collect::<Vec<_>>(),
            )
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

    /// The device merge against this host oracle: the same kept positions per head, merged keys
    /// and values within 1e-5, over thresholds and budgets where the link cap binds and where it
    /// does not, and where eviction follows merging.
    #[test]
    fn device_merge_matches_the_host_oracle() {
        let mut compared = 0;
        // 200 entries: longer than `run_sum`'s 64 lanes.
        for (seed, len) in (0..4).flat_map(|s| [(s, 64), (s, 200)]) {
            for threshold in [0.5, 0.9] {
                for tokens in [50, 30, 12, 3] {
                    let (mut cache, obs) = walk_cache(3, len, seed);
                    let m = KvMerger {
                        threshold,
                        skip_first_layers: 0,
                        skip_last_layers: 0,
                        ..Default::default()
                    };
                    let targets = vec![tokens; 3];
                    let layer = cache.layer(0);
                    let input = LayerInput {
                        index: 0,
                        layer,
                        obs: &obs,
                        next_position: cache.next_position(),
                        targets: &targets,
                    };
                    let attention = H2o::accumulated(&input, "kvmerger").unwrap();
                    let scores =
                        score_layer(&cache, 0, &obs, m.scorer.scorer(), &targets).unwrap();
                    let (k, v) = layer.dense().unwrap();
                    let (k, v): (Vec<Vec<Vec<f32>>>, Vec<Vec<Vec<f32>>>) =
                        (k.to_vec3().unwrap(), v.to_vec3().unwrap());
                    let positions = layer.positions();
                    let want: Vec<HeadRows> = (0..3)
                        .map(|h| {
                            let keys: Vec<f32> = k[h].concat();
                            let values: Vec<f32> = v[h].concat();
                            merge_head(
                                &HeadInput {
                                    keys: &keys,
                                    values: &values,
                                    d: 8,
                                    positions: &positions[h],
                                    attention: &attention[h],
                                    scores: &scores[h],
                                },
                                threshold as f32,
                                tokens,
                            )
                        })
                        .collect();
                    m.compress(&mut cache, &obs, &Budget::Tokens(tokens)).unwrap();
                    let got_pos = cache.layer(0).positions();
                    let (gk, gv) = cache.layer(0).dense().unwrap();
                    let (gk, gv): (Vec<Vec<Vec<f32>>>, Vec<Vec<Vec<f32>>>) =
                        (gk.to_vec3().unwrap(), gv.to_vec3().unwrap());
                    for h in 0..3 {
                        let ctx = format!(
                            "seed {seed} len {len} threshold {threshold} tokens {tokens} head {h}"
                        );
                        assert_eq!(got_pos[h], want[h].2, "{ctx}");
                        for (got, want) in [(&gk[h], &want[h].0), (&gv[h], &want[h].1)] {
                            let got: Vec<f32> = got.concat();
                            assert_eq!(got.len(), want.len(), "{ctx}");
                            for (a, b) in got.iter().zip(want.iter()) {
                                assert!((a - b).abs() < 1e-5, "{ctx}: {a} vs {b}");
                            }
                        }
                        compared += 1;
                    }
                }
            }
        }
        assert_eq!(compared, 4 * 2 * 2 * 4 * 3);
    }
}

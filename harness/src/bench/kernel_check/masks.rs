//! `top_k_mask` (`device_ops::top_k_mask`: AdaKV's shared budget, kvmerger's links and sets) on
//! the device against the host rule: per row, the `k[row]` best valid entries by `top_k_sorted`
//! (NaN as -inf, ties to the later entry), then, when `k` exceeds the valid ones, the latest
//! invalid entries. Rows get different counts (0, 1, a share, all but one, all and more) and
//! validity masks (all valid, a random 80 %, and a valid prefix as for heads padded to one length).

use anyhow::Result;
use candle_core::{Device, Tensor};
use kvbench_methods::device_ops::top_k_mask;
use kvbench_methods::selection::select::top_k_sorted;
use rand::{Rng, SeedableRng};

use super::{median, scores, KernelCase, Kind};
use crate::device::timed;

/// The host's mask of one row.
fn oracle(row: &[f32], valid: &[u8], k: usize) -> Vec<u8> {
    let n = row.len();
    let mut mask = vec![0u8; n];
    let ok: Vec<usize> = (0..n).filter(|&i| valid[i] != 0).collect();
    let vals: Vec<f32> = ok.iter().map(|&i| row[i]).collect();
    let kv = k.min(vals.len());
    for j in top_k_sorted(&vals, kv) {
        mask[ok[j as usize]] = 1;
    }
    let rest = k.min(n) - kv;
    for i in (0..n).rev().filter(|&i| valid[i] == 0).take(rest) {
        mask[i] = 1;
    }
    mask
}

/// Validity of `heads` rows of `len`: 0 all valid, 1 random 80 %, 2 a valid prefix per row.
fn validity(style: usize, heads: usize, len: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
    (0..heads)
        .map(|_| {
            let cut = rng.gen_range(1..=len);
            (0..len)
                .map(|i| match style {
                    0 => 1,
                    1 => u8::from(rng.gen_range(0..10) < 8),
                    _ => u8::from(i < cut),
                })
                .collect()
        })
        .collect()
}

pub(super) fn top_k_mask_cases(device: &Device, repeats: usize) -> Result<Vec<KernelCase>> {
    let mut out = Vec::new();
    let shapes = [
        (1, 1),
        (3, 2),
        (8, 33),
        (2, 1025),
        (8, 4096),
        (1, 32768),
        (8, 32768),
    ];
    let mut seed = 1000;
    for (heads, len) in shapes {
        for kind in [Kind::Distinct, Kind::Ties, Kind::Special] {
            for style in 0..3 {
                seed += 1;
                let rows = scores(kind, heads, len, seed);
                let valid = validity(style, heads, len, seed);
                let options = [0, 1, len / 4, len / 2, len.saturating_sub(1), len, len + 3];
                let ks: Vec<usize> = (0..heads)
                    .map(|h| options[(h + seed as usize) % 7])
                    .collect();
                let t = Tensor::from_vec(rows.concat(), (heads, len), device)?;
                let v = Tensor::from_vec(valid.concat(), (heads, len), device)?;
                let want: Vec<Vec<u8>> = (0..heads)
                    .map(|h| oracle(&rows[h], &valid[h], ks[h]))
                    .collect();
                let want_all: Vec<Vec<u8>> = (0..heads)
                    .map(|h| oracle(&rows[h], &vec![1; len], ks[h]))
                    .collect();
                let (mut kernel_ms, mut host_ms, mut passed) = (Vec::new(), Vec::new(), true);
                for _ in 0..repeats.max(1) + 1 {
                    let (mask, ms) = timed(device, || Ok(top_k_mask(&t, &ks, Some(&v))?))?;
                    kernel_ms.push(ms);
                    passed &= mask.to_vec2::<u8>()? == want;
                    // Without a validity mask: every entry valid.
                    passed &= top_k_mask(&t, &ks, None)?.to_vec2::<u8>()? == want_all;
                    let (_, ms) = timed(device, || {
                        let host: Vec<Vec<f32>> = t.to_vec2()?;
                        let vh: Vec<Vec<u8>> = v.to_vec2()?;
                        Ok((0..heads)
                            .map(|h| oracle(&host[h], &vh[h], ks[h]))
                            .collect::<Vec<_>>())
                    })?;
                    host_ms.push(ms);
                }
                kernel_ms.remove(0); // warm-up
                host_ms.remove(0);
                out.push(KernelCase {
                    kernel: "top_k_mask",
                    name: format!("{kind:?}, validity {style}").to_lowercase(),
                    heads,
                    len,
                    k: ks.iter().copied().max().unwrap_or(0),
                    kernel_ms: median(kernel_ms),
                    host_ms: median(host_ms),
                    passed,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The oracle itself on a hand-checked row: valid entries by score (ties to the later), then
    /// the latest invalid ones.
    #[test]
    fn oracle_ranks_valid_entries_first_then_the_latest_invalid() {
        let row = [0.5, 0.9, 0.5, f32::NAN, 0.1];
        let valid = [1, 0, 1, 1, 0];
        assert_eq!(oracle(&row, &valid, 1), vec![0, 0, 1, 0, 0]);
        assert_eq!(oracle(&row, &valid, 3), vec![1, 0, 1, 1, 0]);
        assert_eq!(oracle(&row, &valid, 4), vec![1, 0, 1, 1, 1]);
        assert_eq!(oracle(&row, &valid, 9), vec![1; 5]);
    }

    /// The CPU path of `top_k_mask` (candle ops) agrees with the oracle the kernel is checked
    /// against, so the two device paths make one choice.
    #[test]
    fn cpu_top_k_mask_matches_the_oracle() {
        let mut seed = 7;
        for (heads, len) in [(3, 2), (8, 33), (2, 300)] {
            for kind in [Kind::Distinct, Kind::Ties] {
                for style in 0..3 {
                    seed += 1;
                    // Signed zeros as +0: the candle path ties -0.0 with 0.0 (its doc says so).
                    let rows: Vec<Vec<f32>> = scores(kind, heads, len, seed)
                        .into_iter()
                        .map(|r| {
                            r.into_iter()
                                .map(|x| if x == 0.0 { 0.0 } else { x })
                                .collect()
                        })
                        .collect();
                    let valid = validity(style, heads, len, seed);
                    let options = [0, 1, len / 4, len / 2, len - 1, len, len + 3];
                    let ks: Vec<usize> = (0..heads)
                        .map(|h| options[(h + seed as usize) % 7])
                        .collect();
                    let t = Tensor::from_vec(rows.concat(), (heads, len), &Device::Cpu).unwrap();
                    let v = Tensor::from_vec(valid.concat(), (heads, len), &Device::Cpu).unwrap();
                    let got: Vec<Vec<u8>> =
                        top_k_mask(&t, &ks, Some(&v)).unwrap().to_vec2().unwrap();
                    let want: Vec<Vec<u8>> = (0..heads)
                        .map(|h| oracle(&rows[h], &valid[h], ks[h]))
                        .collect();
                    assert_eq!(got, want, "{kind:?} style {style} {heads}x{len} {ks:?}");
                }
            }
        }
    }
}

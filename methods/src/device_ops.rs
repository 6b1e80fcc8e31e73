//! Building blocks for compression on the cache's device, from candle ops that have CUDA kernels
//! (elementwise ops, comparisons, `where_cond`, reductions, `matmul`, `gather`, `index_select`,
//! `scatter_add`): a cumulative sum for rows of any length, an exact top-k mask that keeps the
//! host's tie-breaking, and a segmented arg-max over runs of entries.
//!
//! Why not `arg_sort_last_dim`: candle's CUDA sort is a bitonic sort of one row in shared memory
//! (4 bytes per padded column), which cannot launch for rows past 12,288 entries (48 KiB), and it
//! is not stable, so it cannot keep "ties to the later entry". Why not `cumsum`: it multiplies by
//! an `n x n` triangular matrix (4 GiB at 32k entries).

use candle_core::{DType, Device, Result, Tensor};

/// Block length of [`cumsum_last`].
const BLOCK: usize = 128;

/// Inclusive cumulative sum along the last dimension of `x` (`[r, n]`, f32 or f64), in blocks of
/// 128 (one `[128, 128]` triangular matmul, then the block totals' own cumulative sum).
pub fn cumsum_last(x: &Tensor) -> Result<Tensor> {
    let (r, n) = x.dims2()?;
    if n <= BLOCK {
        let tri = Tensor::triu2(n, x.dtype(), x.device())?;
        return x.matmul(&tri);
    }
    let nb = n.div_ceil(BLOCK);
    let padded = x.pad_with_zeros(1, 0, nb * BLOCK - n)?;
    let tri = Tensor::triu2(BLOCK, x.dtype(), x.device())?;
    let local = padded.reshape((r * nb, BLOCK))?.matmul(&tri)?;
    let local = local.reshape((r, nb, BLOCK))?;
    let totals = local.narrow(2, BLOCK - 1, 1)?.squeeze(2)?.contiguous()?;
    let carry = (cumsum_last(&totals)? - &totals)?;
    local
        .broadcast_add(&carry.unsqueeze(2)?)?
        .reshape((r, nb * BLOCK))?
        .narrow(1, 0, n)
}

/// `[r, 1]` column of `values` on `dev`, in `dtype`.
fn column(values: &[f64], dtype: DType, dev: &Device) -> Result<Tensor> {
    Tensor::from_vec(values.to_vec(), (values.len(), 1), dev)?.to_dtype(dtype)
}

/// Pivots per refinement step of [`top_k_mask`].
const PIVOTS: usize = 64;
/// Refinement steps of [`top_k_mask`] taken before checking for convergence.
const UNCHECKED_STEPS: usize = 6;

/// Per row `i` of `x` (`[r, n]`, any float dtype), a `[r, n]` u8 mask of the `k[i]` entries the
/// host's `select::top_k_sorted` keeps: highest value first, NaN as `-inf`, ties to the later
/// (higher) index; `k[i] >= n` keeps the row. Entries where `valid` (`[r, n]` u8) is 0 rank below
/// every valid one (NaN included), for rows padded to a common length.
///
/// Exact without sorting: the `k`-th largest value of each row is found by refining an interval
/// with 63 pivots at a time (one broadcast comparison per step; 6 steps, then one host sync per
/// step until every row has converged, usually one or two), then the entries equal to it are taken latest first with a reverse cumulative
/// sum. Values within `1e-16` of the row's range of each other may not be told apart (they then
/// count as tied); `-0.0` and `0.0` tie here where the host's `total_cmp` ranks `0.0` first.
///
/// On CUDA, for f32/f16/bf16 scores, a radix-select kernel (`kernels::top_k_mask`) makes the same
/// choice in one launch, exactly as the host does (`-0.0` below `0.0` included).
pub fn top_k_mask(x: &Tensor, k: &[usize], valid: Option<&Tensor>) -> Result<Tensor> {
    let (r, n) = x.dims2()?;
    if k.len() != r {
        candle_core::bail!("top_k_mask: {} counts for {r} rows", k.len());
    }
    if x.dtype() != DType::F64 {
        if let Some(mask) = crate::kernels::top_k_mask(x, k, valid)? {
            return Ok(mask);
        }
    }
    let dev = x.device();
    let x = x.to_dtype(DType::F64)?;
    let big = 1e300;
    let finite = x.abs()?.lt(f64::INFINITY)?; // NaN compares false
    let full = |v: f64| Tensor::full(v, (r, n), dev);
    let fmin = finite.where_cond(&x, &full(big)?)?.min_keepdim(1)?;
    let fmax = finite.where_cond(&x, &full(-big)?)?.max_keepdim(1)?;
    let none = fmin.gt(&fmax)?; // no finite value in the row
    let zero = Tensor::zeros((r, 1), DType::F64, dev)?;
    let lo_f = none.where_cond(&zero, &fmin)?;
    let hi_f = none.where_cond(&zero, &fmax)?;
    // +inf above every finite value, NaN and -inf (tied) below, invalid entries lower still.
    let top = (&hi_f + 1.0)?.broadcast_as((r, n))?;
    let low = (&lo_f - 1.0)?.broadcast_as((r, n))?;
    let pos = x.gt(0.0)?;
    let mut x = finite.where_cond(&x, &pos.where_cond(&top, &low)?)?;
    if let Some(valid) = valid {
        x = valid.where_cond(&x, &(&lo_f - 2.0)?.broadcast_as((r, n))?)?;
    }
    let kk: Vec<f64> = k.iter().map(|&k| k.min(n) as f64).collect();
    let kk = column(&kk, DType::F64, dev)?;
    // Invariant: #(x >= lo) >= k and #(x >= hi) < k (for k >= 1).
    let mut lo = (&lo_f - 2.0)?;
    let mut hi = (&hi_f + 2.0)?;
    let steps: Vec<f64> = (1..PIVOTS).map(|j| j as f64 / PIVOTS as f64).collect();
    let steps = Tensor::from_vec(steps, (1, PIVOTS - 1), dev)?;
    let x3 = x.unsqueeze(2)?;
    for step in 0..48 {
        // The first steps narrow any range below f32 spacing in practice (64^6 ~ 7e10); only then
        // is it worth a host sync to ask whether every row's band holds a single value.
        if step >= UNCHECKED_STEPS {
            let band = x.broadcast_ge(&lo)?.mul(&x.broadcast_lt(&hi)?)?;
            let bmin = band.where_cond(&x, &full(big)?)?.min_keepdim(1)?;
            let bmax = band.where_cond(&x, &full(-big)?)?.max_keepdim(1)?;
            let open: f64 = bmin
                .lt(&bmax)?
                .to_dtype(DType::F64)?
                .sum_all()?
                .to_scalar()?;
            if open == 0.0 {
                break;
            }
        }
        let piv = lo.broadcast_add(&(&hi - &lo)?.broadcast_mul(&steps)?)?; // [r, P-1]
        let counts = x3
            .broadcast_ge(&piv.unsqueeze(1)?)?
            .to_dtype(DType::F32)?
            .sum(1)?
            .to_dtype(DType::F64)?;
        let j = counts
            .broadcast_ge(&kk)?
            .to_dtype(DType::U32)?
            .sum_keepdim(1)?;
        let ext = Tensor::cat(&[&lo, &piv, &hi], 1)?; // [r, P + 1]
        lo = ext.gather(&j, 1)?;
        hi = ext.gather(&(j + 1.0)?, 1)?;
    }
    let above = x.broadcast_ge(&hi)?;
    let band = x.broadcast_ge(&lo)?.mul(&x.broadcast_lt(&hi)?)?;
    let need = (kk - above.to_dtype(DType::F64)?.sum_keepdim(1)?)?;
    let bandf = band.to_dtype(DType::F32)?;
    // Band entries at or after each index: take the latest `need` of them.
    let from_end = (bandf.sum_keepdim(1)?.broadcast_sub(&cumsum_last(&bandf)?)? + &bandf)?;
    let take = from_end
        .to_dtype(DType::F64)?
        .broadcast_le(&need)?
        .mul(&band)?;
    above.maximum(&take)
}

/// Arg-max over runs: for entries grouped into consecutive runs by `run` (`[r, n]`, run ids
/// nondecreasing along each row, any dtype that holds them exactly), returns, at each entry, the
/// index (`[r, n]` u32) of the largest `values` (`[r, n]`, f32 or f64, no NaN) from its run's start
/// up to it, ties to the later index, and that value. At a run's last entry this is the run's
/// arg-max (as `Iterator::reduce` with `>=` finds it on the host). A doubling scan: `log2 n` steps.
///
/// On CUDA, for f32 values, one kernel (`kernels::run_argmax`) walks each run from its first entry.
pub fn run_argmax(values: &Tensor, run: &Tensor) -> Result<(Tensor, Tensor)> {
    if let Some(found) = crate::kernels::run_argmax(values, run)? {
        return Ok(found);
    }
    let (r, n) = values.dims2()?;
    let dev = values.device();
    let run = run.to_dtype(DType::F64)?;
    let mut val = values.clone();
    let mut idx = Tensor::arange(0u32, n as u32, dev)?
        .unsqueeze(0)?
        .broadcast_as((r, n))?
        .contiguous()?;
    let shift = |x: &Tensor, s: usize, fill: f64| -> Result<Tensor> {
        let head = Tensor::full(fill, (r, s), dev)?.to_dtype(x.dtype())?;
        Tensor::cat(&[&head, &x.narrow(1, 0, n - s)?], 1)
    };
    let mut s = 1;
    while s < n {
        let same = shift(&run, s, -1.0)?.eq(&run)?;
        let prev_val = shift(&val, s, f64::NEG_INFINITY)?;
        let prev_idx = shift(&idx, s, 0.0)?;
        // The earlier window only wins when strictly larger: ties stay with the later entry.
        let better = same.mul(&prev_val.gt(&val)?)?;
        val = better.where_cond(&prev_val, &val)?;
        idx = better.where_cond(&prev_idx, &idx)?;
        s *= 2;
    }
    Ok((idx, val))
}

/// Lanes of [`run_sum`]: entries `j` with the same `j % RUN_SUM_LANES` add up in one lane.
const RUN_SUM_LANES: usize = 64;

/// Sum of `x` (`[r, n]`) over each run of `run` (`[r, n]` u32 run ids, `0..n`): `[r, n]`, slot `s`
/// holding run `s`'s total (0 past the last run).
///
/// candle's CUDA `scatter_add` gives one thread to each row of the output and walks the scattered
/// dimension serially, so one scatter along a row of 4k-32k entries is thousands of dependent
/// steps. Here the row is cut into 64 lanes (entry `j` in lane `j % 64`), scattered into
/// `[r, n, 64]` with 64 threads per row, and the lanes summed: rows of up to 64 entries add in
/// the same order as one scatter, longer ones per lane first.
///
/// On CUDA (f32, f64) it is `kernels::run_sum_rows` with one channel: each run added in order by
/// the thread at its first entry (the same sums; runs longer than 64 in another order). That
/// kernel needs each run id on consecutive entries, as kvmerger's sets (its only caller) are.
pub fn run_sum(x: &Tensor, run: &Tensor) -> Result<Tensor> {
    if let Some(sums) = crate::kernels::run_sum_rows(&x.unsqueeze(2)?, run)? {
        return sums.squeeze(2);
    }
    let (r, n) = x.dims2()?;
    let lanes = RUN_SUM_LANES.min(n.max(1));
    let steps = n.div_ceil(lanes);
    let pad = steps * lanes - n;
    // Padding adds zeros to run 0.
    let x = x.pad_with_zeros(1, 0, pad)?.reshape((r, steps, lanes))?;
    let run = run.pad_with_zeros(1, 0, pad)?.reshape((r, steps, lanes))?;
    Tensor::zeros((r, n, lanes), x.dtype(), x.device())?
        .scatter_add(&run.contiguous()?, &x.contiguous()?, 1)?
        .sum(2)
}

/// Sum of the rows of `x` (`[r, n, d]` f32) over each run of `run` (`[r, n]` u32 ids of runs of
/// consecutive entries, `0..n`): `[r, n, d]`, row `s` holding run `s`'s sum (0 past the last).
/// The rows of a run add in order. On CUDA a kernel gives each run's first entry and channel a
/// thread that walks the run (`crate::kernels::run_sum_rows`); elsewhere it is one
/// `scatter_add`, which adds in the same order (and on CUDA would walk all `n` entries in one
/// thread per row and channel).
pub fn run_sum_rows(x: &Tensor, run: &Tensor) -> Result<Tensor> {
    if let Some(sums) = crate::kernels::run_sum_rows(x, run)? {
        return Ok(sums);
    }
    let (r, n, d) = x.dims3()?;
    let idx = run.unsqueeze(2)?.broadcast_as((r, n, d))?.contiguous()?;
    x.zeros_like()?.scatter_add(&idx, &x.contiguous()?, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::select::top_k_sorted;

    fn mask_to_indices(m: &Tensor) -> Vec<Vec<u32>> {
        let m: Vec<Vec<u8>> = m.to_vec2().unwrap();
        m.iter()
            .map(|row| {
                row.iter()
                    .enumerate()
                    .filter(|(_, &b)| b != 0)
                    .map(|(i, _)| i as u32)
                    .collect()
            })
            .collect()
    }

    fn check_top_k(rows: &[Vec<f32>], k: &[usize]) {
        let n = rows[0].len();
        let x = Tensor::from_vec(rows.concat(), (rows.len(), n), &Device::Cpu).unwrap();
        let got = mask_to_indices(&top_k_mask(&x, k, None).unwrap());
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(got[i], top_k_sorted(row, k[i]), "row {i} k {}", k[i]);
        }
    }

    #[test]
    fn top_k_mask_matches_the_host_top_k_with_its_tie_rule() {
        check_top_k(&[vec![0.1, 0.9, 0.5, 0.7]], &[2]);
        check_top_k(&[vec![1.0, 1.0, 1.0, 0.0]], &[2]);
        check_top_k(&[vec![f32::NAN, 0.0, f32::INFINITY]], &[2]);
        check_top_k(&[vec![f32::NAN, f32::NEG_INFINITY, f32::NAN, 1.0]], &[3]);
        check_top_k(&[vec![0.3, 0.2], vec![0.1, 0.1]], &[5, 0]);
        check_top_k(&[vec![f32::NAN; 5]], &[2]);
        // Pseudo-random rows with many ties (values on a coarse grid) and spread values.
        let n = 1000;
        let rows: Vec<Vec<f32>> = (0..4)
            .map(|r| {
                (0..n)
                    .map(|i| {
                        let u = ((i * 7919 + r * 104729) % 1009) as f32;
                        if r % 2 == 0 {
                            (u / 50.0).floor()
                        } else {
                            (u * 0.37).sin() * 1e-3 + 1e-9 * i as f32
                        }
                    })
                    .collect()
            })
            .collect();
        for k in [1, 17, 500, 999, 1000] {
            check_top_k(&rows, &[k, k, k / 2, n - k]);
        }
    }

    #[test]
    fn invalid_entries_rank_below_nan() {
        let x = Tensor::from_vec(vec![f32::NAN, 1.0, 2.0, 3.0], (1, 4), &Device::Cpu).unwrap();
        let valid = Tensor::from_vec(vec![1u8, 1, 0, 0], (1, 4), &Device::Cpu).unwrap();
        let got = mask_to_indices(&top_k_mask(&x, &[2], Some(&valid)).unwrap());
        assert_eq!(got, vec![vec![0, 1]]);
    }

    #[test]
    fn cumsum_last_matches_a_running_sum_past_one_block() {
        let n = 300;
        let v: Vec<f32> = (0..2 * n).map(|i| (i % 7) as f32).collect();
        let x = Tensor::from_vec(v.clone(), (2, n), &Device::Cpu).unwrap();
        let got: Vec<Vec<f32>> = cumsum_last(&x).unwrap().to_vec2().unwrap();
        for r in 0..2 {
            let mut acc = 0.0;
            for i in 0..n {
                acc += v[r * n + i];
                assert_eq!(got[r][i], acc);
            }
        }
    }

    #[test]
    fn run_argmax_finds_each_runs_latest_maximum() {
        let values = Tensor::from_vec(
            vec![1f32, 3., 3., 2., 5., 0., 0., 7., 7., 1.],
            (1, 10),
            &Device::Cpu,
        )
        .unwrap();
        let run =
            Tensor::from_vec(vec![0u32, 0, 0, 0, 1, 2, 2, 3, 3, 3], (1, 10), &Device::Cpu).unwrap();
        let (idx, val) = run_argmax(&values, &run).unwrap();
        let idx: Vec<u32> = idx.squeeze(0).unwrap().to_vec1().unwrap();
        let val: Vec<f32> = val.squeeze(0).unwrap().to_vec1().unwrap();
        // Run ends: 3 (max 3 at 2, the later of 1 and 2), 4, 6 (tie 0: later, 6), 9 (tie 7: 8).
        assert_eq!([idx[3], idx[4], idx[6], idx[9]], [2, 4, 6, 8], "{idx:?}");
        assert_eq!([val[3], val[4], val[6], val[9]], [3., 5., 0., 7.]);
        let sums = run_sum(&values, &run).unwrap();
        let sums: Vec<f32> = sums.squeeze(0).unwrap().to_vec1().unwrap();
        assert_eq!(&sums[..5], &[9., 5., 0., 15., 0.]);
    }

    /// Rows longer than the lanes, runs of every length (one entry, across lanes, the whole
    /// tail), f64 and f32, against sums on the host.
    #[test]
    fn run_sum_over_long_rows_matches_the_host() {
        let n = 1000;
        let mut runs = Vec::new();
        let mut vals = Vec::new();
        for row in 0..3u32 {
            let mut id = 0u32;
            for j in 0..n as u32 {
                // Row 0: runs of 1; row 1: runs of 7 and 130 alternating; row 2: one run.
                let start = match row {
                    0 => j > 0,
                    1 => j > 0 && (j % 137 == 0 || j % 137 == 7),
                    _ => false,
                };
                id += start as u32;
                runs.push(id);
                vals.push(((j * 31 + row * 7) % 17) as f64 - 8.0 + 0.25);
            }
        }
        let dev = Device::Cpu;
        let run = Tensor::from_vec(runs.clone(), (3, n), &dev).unwrap();
        for dtype in [DType::F64, DType::F32] {
            let x = Tensor::from_vec(vals.clone(), (3, n), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let got: Vec<Vec<f64>> = run_sum(&x, &run)
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec2()
                .unwrap();
            for r in 0..3 {
                let mut want = vec![0f64; n];
                for j in 0..n {
                    want[runs[r * n + j] as usize] += vals[r * n + j];
                }
                // The values are multiples of 1/4 below 2^20: exact in either dtype and order.
                assert_eq!(got[r], want, "row {r} {dtype:?}");
            }
        }
    }
}

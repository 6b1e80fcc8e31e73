//! The methods' own CUDA kernels (`methods/kernels/compress.cu`, compiled to PTX by build.rs in
//! `--features cuda` builds), launched on candle's stream over the tensors' own device buffers.
//! Each function answers `None` where its kernel does not run (a CPU tensor, a CPU build); the
//! caller then takes its portable path, which is also the kernel's oracle.
//!
//! - [`top_k_rows`]: each row's `k` best scores, in index order (`selection::device_top_k`).
//! - [`top_k_mask`]: the same choice as a `[rows, len]` mask, with a count per row and entries
//!   marked invalid ranked last (`device_ops::top_k_mask`: AdaKV's shared budget, kvmerger).
//! - [`run_sum_rows`]: the sum of the rows of each run of consecutive entries (kvmerger's merges).
//! - [`cam_cascade`]: CaM's merge cascade, `x_j = v_j + sum_{j - m <= i < j} a_i x_i`.
//! - [`slerp_coefficients`]: MiniCache's angles and SLERP weights (`cross_layer::minicache`).
//! - [`quantize_groups`]: codes, scales and zero points of `QuantScheme::quantize` (quant, kivi).
//! - [`lagkv_scores`]: LagKV's chunk-relative rank scores, one block per chunk and head.
//! - [`jacobi_eigen`]: parallel cyclic Jacobi on symmetric matrices, one block per matrix
//!   (lowrank's bases, `linalg::batched_symmetric_eigen`).

use candle_core::{Result, Tensor};

/// Kept indices of each row of `scores` (`[rows, len]` f32, `1 <= k < len`): `([rows, k]` local
/// indices, `[rows * k]` flat row numbers `row * len + index`), both u32 on the device.
pub fn top_k_rows(scores: &Tensor, k: usize) -> Result<Option<(Tensor, Tensor)>> {
    imp::top_k_rows(scores, k)
}

/// `[rows, len]` u8 mask of each row's `k[row]` best scores (`[rows, len]` f32), where entries
/// whose `valid` (`[rows, len]` u8) is 0 rank below every valid one and among themselves the
/// later first; `k[row] >= len` keeps the row.
pub fn top_k_mask(scores: &Tensor, k: &[usize], valid: Option<&Tensor>) -> Result<Option<Tensor>> {
    imp::top_k_mask(scores, k, valid)
}

/// `[r, n, d]` f32: row `s` of each `r` is the sum of the rows of `x` (`[r, n, d]` f32) whose
/// `run` (`[r, n]` u32, runs of consecutive entries numbered from 0) is `s`, added in order; rows
/// past the last run are 0.
pub fn run_sum_rows(x: &Tensor, run: &Tensor) -> Result<Option<Tensor>> {
    imp::run_sum_rows(x, run)
}

/// CaM's cascade (`merging::cam`): `x` (`[h, n, d]` f32) with `x_j = v_j + sum over i in
/// [max(0, j - m[h]), j) of a_i x_i`, for `v` `[h, n, d]` f32 and `a` `[h, n]` f32; `m[h] >= 1`.
pub fn cam_cascade(v: &Tensor, a: &Tensor, m: &[usize]) -> Result<Option<Tensor>> {
    imp::cam_cascade(v, a, m)
}

/// MiniCache's SLERP of `cosine` (`[n]` f32, the cosines between two layers' unit directions):
/// `(angle [n] f64, wa [n] f32, wb [n] f32)` with `angle = acos(clamp(cosine))`, `wa = sin((1 - t)
/// angle) / sin(angle)` and `wb = sin(t angle) / sin(angle)`, or `1 - t` and `t` where
/// `sin(angle) < parallel`; computed in f64.
pub fn slerp_coefficients(
    cosine: &Tensor,
    t: f64,
    parallel: f64,
) -> Result<Option<(Tensor, Tensor, Tensor)>> {
    imp::slerp_coefficients(cosine, t, parallel)
}

/// `QuantScheme::quantize` of `x` (`[h, m, d]` f32) in two launches, bit for bit: packed codes
/// (`[h, m, d * bits / 8]` u8), f16 scales and, unless `symmetric`, f16 zero points, both
/// `[h, m, d / group]` (`per_token`) or `[h, m / group, d]` (per channel; `m` a multiple of
/// `group`).
pub fn quantize_groups(
    x: &Tensor,
    bits: u32,
    group: usize,
    per_token: bool,
    symmetric: bool,
) -> Result<Option<QuantizedGroups>> {
    imp::quantize_groups(x, bits, group, per_token, symmetric)
}

/// Codes, scales and (asymmetric) zero points from [`quantize_groups`].
pub type QuantizedGroups = (Tensor, Tensor, Option<Tensor>);

/// LagKV's scores of one group (`selection::lagkv`): keys and values `[h, len, d]` (f32 or
/// narrower), `sink` leading entries, chunks of `lag` (`len >= sink + 2 lag`): `[h, len]` f32
/// scores (1 for the sinks and the unranked tail) and, with `want_raw`, the raw chunk scores
/// `[h, chunks - 1, lag]` the ranks come from.
pub fn lagkv_scores(
    k: &Tensor,
    v: &Tensor,
    sink: usize,
    lag: usize,
    want_raw: bool,
) -> Result<Option<(Tensor, Option<Tensor>)>> {
    imp::lagkv_scores(k, v, sink, lag, want_raw)
}

/// Jacobi sweeps on `a` (`[b, m, m]` f64 symmetric, `m` even, at most 128) until each matrix's
/// off-diagonal norm is at most `tol` of its norm, or `max_sweeps`: `(a', v)` with `a'` nearly
/// diagonal and `a = v a' vᵀ`, both `[b, m, m]` f64.
pub fn jacobi_eigen(a: &Tensor, tol: f64, max_sweeps: usize) -> Result<Option<(Tensor, Tensor)>> {
    imp::jacobi_eigen(a, tol, max_sweeps)
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::{Result, Tensor};

    pub(super) fn top_k_rows(_: &Tensor, _: usize) -> Result<Option<(Tensor, Tensor)>> {
        Ok(None)
    }
    pub(super) fn top_k_mask(_: &Tensor, _: &[usize], _: Option<&Tensor>) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub(super) fn run_sum_rows(_: &Tensor, _: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub(super) fn cam_cascade(_: &Tensor, _: &Tensor, _: &[usize]) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub(super) fn jacobi_eigen(_: &Tensor, _: f64, _: usize) -> Result<Option<(Tensor, Tensor)>> {
        Ok(None)
    }
    pub(super) fn slerp_coefficients(
        _: &Tensor,
        _: f64,
        _: f64,
    ) -> Result<Option<(Tensor, Tensor, Tensor)>> {
        Ok(None)
    }
    pub(super) fn lagkv_scores(
        _: &Tensor,
        _: &Tensor,
        _: usize,
        _: usize,
        _: bool,
    ) -> Result<Option<(Tensor, Option<Tensor>)>> {
        Ok(None)
    }
    pub(super) fn quantize_groups(
        _: &Tensor,
        _: u32,
        _: usize,
        _: bool,
        _: bool,
    ) -> Result<Option<super::QuantizedGroups>> {
        Ok(None)
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute_enum;
    use candle_core::cuda_backend::cudarc::driver::{
        CudaFunction, CudaView, LaunchConfig, PushKernelArg,
    };
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::op::BackpropOp;
    use candle_core::{CudaDevice, CudaStorage, DType, Device, Shape, Storage, Tensor};

    use super::Result;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/compress.ptx"));
    const MODULE: &str = "kvbench_methods_compress";

    fn function(dev: &CudaDevice, name: &str) -> Result<CudaFunction> {
        Ok(dev
            .get_or_load_custom_func(name, MODULE, PTX)?
            .into_cuda_function())
    }

    /// The device buffer under a contiguous CUDA tensor.
    fn view<'a, T: CudaDType>(
        storage: &'a Storage,
        layout: &candle_core::Layout,
    ) -> Result<CudaView<'a, T>> {
        let fail = |m: &str| Err(candle_core::Error::Msg(m.into()));
        let Storage::Cuda(cs) = storage else {
            return fail("a kernel input is not on CUDA");
        };
        let Some((a, b)) = layout.contiguous_offsets() else {
            return fail("a kernel input is not contiguous");
        };
        Ok(cs.as_cuda_slice::<T>()?.slice(a..b))
    }

    fn wrap<T: CudaDType>(
        dev: &CudaDevice,
        x: candle_core::cuda_backend::cudarc::driver::CudaSlice<T>,
        shape: impl Into<Shape>,
    ) -> Tensor {
        let s = Storage::Cuda(CudaStorage::wrap_cuda_slice(x, dev.clone()));
        Tensor::from_storage(s, shape, BackpropOp::none(), false)
    }

    pub(super) fn top_k_rows(scores: &Tensor, k: usize) -> Result<Option<(Tensor, Tensor)>> {
        let Device::Cuda(dev) = scores.device() else {
            return Ok(None);
        };
        let (rows, len) = scores.dims2()?;
        let scores = scores.to_dtype(DType::F32)?.contiguous()?;
        let (storage, layout) = scores.storage_and_layout();
        let src = view::<f32>(&storage, layout)?;
        // SAFETY: the kernel writes all k entries of every row (exactly k keys are kept).
        let local = unsafe { dev.alloc::<u32>(rows * k) }?;
        let flat = unsafe { dev.alloc::<u32>(rows * k) }?;
        let func = function(dev, "top_k_rows_f32")?;
        let stream = dev.cuda_stream();
        let (n, kk) = (len as i32, k as i32);
        let mut b = stream.launch_builder(&func);
        b.arg(&src).arg(&local).arg(&flat).arg(&n).arg(&kk);
        let threads = len.div_ceil(32).clamp(1, 32) * 32;
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (threads as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches `top_k_rows_f32` (scores, local, flat, n, k); one block per row, a
        // multiple of 32 threads up to 1024; 1 <= k < n (the caller's contract).
        unsafe { b.launch(cfg) }.w()?;
        Ok(Some((
            wrap(dev, local, (rows, k)),
            wrap(dev, flat, rows * k),
        )))
    }

    pub(super) fn top_k_mask(
        scores: &Tensor,
        k: &[usize],
        valid: Option<&Tensor>,
    ) -> Result<Option<Tensor>> {
        let Device::Cuda(dev) = scores.device() else {
            return Ok(None);
        };
        let (rows, len) = scores.dims2()?;
        if k.len() != rows || rows == 0 || len == 0 || len > u32::MAX as usize {
            return Ok(None);
        }
        let scores = scores.to_dtype(DType::F32)?.contiguous()?;
        let ks: Vec<u32> = k.iter().map(|&x| x.min(len) as u32).collect();
        let ks = Tensor::from_vec(ks, rows, scores.device())?;
        let valid = valid
            .map(|v| v.to_dtype(DType::U8)?.contiguous())
            .transpose()?;
        let (ss, sl) = scores.storage_and_layout();
        let (ks_s, ks_l) = ks.storage_and_layout();
        let (sv, kv) = (view::<f32>(&ss, sl)?, view::<u32>(&ks_s, ks_l)?);
        // SAFETY: the kernel writes every entry of every row.
        let mask = unsafe { dev.alloc::<u8>(rows * len) }?;
        let func = function(dev, "top_k_mask_f32")?;
        let stream = dev.cuda_stream();
        let n = len as i32;
        let threads = len.div_ceil(32).clamp(1, 32) * 32;
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (threads as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        match &valid {
            Some(valid) => {
                if valid.dims2()? != (rows, len) {
                    candle_core::bail!("top_k_mask: valid {:?} for scores {:?}", valid.dims(), (rows, len));
                }
                let (vs, vl) = valid.storage_and_layout();
                let vv = view::<u8>(&vs, vl)?;
                let mut b = stream.launch_builder(&func);
                b.arg(&sv).arg(&vv).arg(&kv).arg(&mask).arg(&n);
                // SAFETY: matches `top_k_mask_f32` (scores, valid, ks, mask, n); one block per
                // row, a multiple of 32 threads up to 1024.
                unsafe { b.launch(cfg) }.w()?;
            }
            None => {
                let none: u64 = 0; // a null `valid` pointer: every entry valid
                let mut b = stream.launch_builder(&func);
                b.arg(&sv).arg(&none).arg(&kv).arg(&mask).arg(&n);
                // SAFETY: as above, with a null `valid`, which the kernel checks.
                unsafe { b.launch(cfg) }.w()?;
            }
        }
        Ok(Some(wrap(dev, mask, (rows, len))))
    }

    pub(super) fn run_sum_rows(x: &Tensor, run: &Tensor) -> Result<Option<Tensor>> {
        let Device::Cuda(dev) = x.device() else {
            return Ok(None);
        };
        let (r, n, d) = x.dims3()?;
        if run.dims2()? != (r, n) || x.dtype() != DType::F32 || r * n * d == 0 {
            return Ok(None);
        }
        let x = x.contiguous()?;
        let run = run.to_dtype(DType::U32)?.contiguous()?;
        let (xs, xl) = x.storage_and_layout();
        let (rs, rl) = run.storage_and_layout();
        let (xv, rv) = (view::<f32>(&xs, xl)?, view::<u32>(&rs, rl)?);
        let out = dev.alloc_zeros::<f32>(r * n * d)?;
        let func = function(dev, "run_sum_rows_f32")?;
        let stream = dev.cuda_stream();
        let (r_, n_, d_) = (r as i32, n as i32, d as i32);
        let mut b = stream.launch_builder(&func);
        b.arg(&xv).arg(&rv).arg(&out).arg(&r_).arg(&n_).arg(&d_);
        let cfg = LaunchConfig::for_num_elems((r * n * d) as u32);
        // SAFETY: matches `run_sum_rows_f32` (x, run, out, r, n, d); the grid covers every
        // (row, entry, channel); `out` is zeroed and holds r * n * d values.
        unsafe { b.launch(cfg) }.w()?;
        Ok(Some(wrap(dev, out, (r, n, d))))
    }

    pub(super) fn cam_cascade(v: &Tensor, a: &Tensor, m: &[usize]) -> Result<Option<Tensor>> {
        let Device::Cuda(dev) = v.device() else {
            return Ok(None);
        };
        let (h, n, d) = v.dims3()?;
        if a.dims2()? != (h, n) || m.len() != h || m.contains(&0) || h * n * d == 0 {
            return Ok(None);
        }
        let v = v.to_dtype(DType::F32)?.contiguous()?;
        let a = a.to_dtype(DType::F32)?.contiguous()?;
        let m: Vec<u32> = m.iter().map(|&x| x.min(n) as u32).collect();
        let m = Tensor::from_vec(m, h, v.device())?;
        let (vs, vl) = v.storage_and_layout();
        let (as_, al) = a.storage_and_layout();
        let (ms, ml) = m.storage_and_layout();
        let (vv, av, mv) = (
            view::<f32>(&vs, vl)?,
            view::<f32>(&as_, al)?,
            view::<u32>(&ms, ml)?,
        );
        // SAFETY (both): the kernel writes every prefix row 0..=n and every output entry.
        let prefix = unsafe { dev.alloc::<f32>(h * (n + 1) * d) }?;
        let out = unsafe { dev.alloc::<f32>(h * n * d) }?;
        let func = function(dev, "cam_cascade_f32")?;
        let stream = dev.cuda_stream();
        let (n_, d_) = (n as i32, d as i32);
        let mut b = stream.launch_builder(&func);
        b.arg(&vv)
            .arg(&av)
            .arg(&mv)
            .arg(&prefix)
            .arg(&out)
            .arg(&n_)
            .arg(&d_);
        let threads = d.min(128);
        let cfg = LaunchConfig {
            grid_dim: (h as u32, d.div_ceil(threads) as u32, 1),
            block_dim: (threads as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches `cam_cascade_f32` (v, a, m, prefix, out, n, d); one thread per (head,
        // channel); the buffers hold what the kernel indexes.
        unsafe { b.launch(cfg) }.w()?;
        Ok(Some(wrap(dev, out, (h, n, d))))
    }

    pub(super) fn slerp_coefficients(
        cosine: &Tensor,
        t: f64,
        parallel: f64,
    ) -> Result<Option<(Tensor, Tensor, Tensor)>> {
        let Device::Cuda(dev) = cosine.device() else {
            return Ok(None);
        };
        let n = cosine.dims1()?;
        if n == 0 || n > i32::MAX as usize {
            return Ok(None);
        }
        let cosine = cosine.to_dtype(DType::F32)?.contiguous()?;
        let (cs, cl) = cosine.storage_and_layout();
        let cv = view::<f32>(&cs, cl)?;
        // SAFETY (all three): the kernel writes every entry.
        let angle = unsafe { dev.alloc::<f64>(n) }?;
        let wa = unsafe { dev.alloc::<f32>(n) }?;
        let wb = unsafe { dev.alloc::<f32>(n) }?;
        let func = function(dev, "slerp_coefficients_f32")?;
        let stream = dev.cuda_stream();
        let n_ = n as i32;
        let mut b = stream.launch_builder(&func);
        b.arg(&cv)
            .arg(&angle)
            .arg(&wa)
            .arg(&wb)
            .arg(&n_)
            .arg(&t)
            .arg(&parallel);
        // SAFETY: matches `slerp_coefficients_f32` (cosine, angle, ca, cb, n, t, parallel); one
        // thread per entry.
        unsafe { b.launch(LaunchConfig::for_num_elems(n as u32)) }.w()?;
        Ok(Some((wrap(dev, angle, n), wrap(dev, wa, n), wrap(dev, wb, n))))
    }

    pub(super) fn quantize_groups(
        x: &Tensor,
        bits: u32,
        group: usize,
        per_token: bool,
        symmetric: bool,
    ) -> Result<Option<super::QuantizedGroups>> {
        let Device::Cuda(dev) = x.device() else {
            return Ok(None);
        };
        let (h, m, d) = x.dims3()?;
        let fits = matches!(bits, 2 | 4 | 8)
            && group > 0
            && (d * bits as usize) % 8 == 0
            && if per_token { d % group == 0 } else { m % group == 0 };
        if !fits || h * m * d == 0 || h * m * d > i32::MAX as usize {
            return Ok(None);
        }
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        let (xs, xl) = x.storage_and_layout();
        let xv = view::<f32>(&xs, xl)?;
        let params: Shape = if per_token {
            (h, m, d / group).into()
        } else {
            (h, m / group, d).into()
        };
        let n_params = params.elem_count();
        let bytes = d * bits as usize / 8;
        // SAFETY (all): the kernels write every scale, zero point and code byte.
        let scales = unsafe { dev.alloc::<half::f16>(n_params) }?;
        let zeros = unsafe { dev.alloc::<half::f16>(if symmetric { 1 } else { n_params }) }?;
        let codes = unsafe { dev.alloc::<u8>(h * m * bytes) }?;
        let stream = dev.cuda_stream();
        let args = [h, m, d, group].map(|v| v as i32);
        let flags = [per_token as i32, symmetric as i32, bits as i32];
        let func = function(dev, "quant_params_f32")?;
        let mut b = stream.launch_builder(&func);
        b.arg(&xv).arg(&scales).arg(&zeros);
        for a in &args {
            b.arg(a);
        }
        for f in &flags {
            b.arg(f);
        }
        // SAFETY: matches `quant_params_f32` (x, scales, zeros, h, m, d, group, per_token,
        // symmetric, bits); one thread per group; zeros unused when symmetric.
        unsafe { b.launch(LaunchConfig::for_num_elems(n_params as u32)) }.w()?;
        let func = function(dev, "quant_codes_f32")?;
        let mut b = stream.launch_builder(&func);
        b.arg(&xv).arg(&scales).arg(&zeros).arg(&codes);
        for a in &args {
            b.arg(a);
        }
        for f in &flags {
            b.arg(f);
        }
        // SAFETY: matches `quant_codes_f32` (x, scales, zeros, codes, h, m, d, group, per_token,
        // symmetric, bits); one thread per code byte.
        unsafe { b.launch(LaunchConfig::for_num_elems((h * m * bytes) as u32)) }.w()?;
        let zeros = (!symmetric).then(|| wrap(dev, zeros, params.clone()));
        Ok(Some((
            wrap(dev, codes, (h, m, bytes)),
            wrap(dev, scales, params),
            zeros,
        )))
    }

    pub(super) fn lagkv_scores(
        k: &Tensor,
        v: &Tensor,
        sink: usize,
        lag: usize,
        want_raw: bool,
    ) -> Result<Option<(Tensor, Option<Tensor>)>> {
        let Device::Cuda(dev) = k.device() else {
            return Ok(None);
        };
        let (h, len, d) = k.dims3()?;
        let smem = (4 * d + 3 * lag) * std::mem::size_of::<f32>();
        if v.dims3()? != (h, len, d) || lag == 0 || h == 0 || len < sink + 2 * lag || smem > 200_000
        {
            return Ok(None);
        }
        let chunks = (len - sink) / lag;
        let k = k.to_dtype(DType::F32)?.contiguous()?;
        let v = v.to_dtype(DType::F32)?.contiguous()?;
        let (ks, kl) = k.storage_and_layout();
        let (vs, vl) = v.storage_and_layout();
        let (kv, vv) = (view::<f32>(&ks, kl)?, view::<f32>(&vs, vl)?);
        // SAFETY: the kernel writes every score (sinks, ranked chunks, tail) and, when asked,
        // every raw score.
        let out = unsafe { dev.alloc::<f32>(h * len) }?;
        let raw = if want_raw {
            Some(unsafe { dev.alloc::<f32>(h * (chunks - 1) * lag) }?)
        } else {
            None
        };
        let func = function(dev, "lagkv_scores_f32")?;
        func.set_attribute(
            CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            smem as i32,
        )
        .w()?;
        let stream = dev.cuda_stream();
        let args = [len, d, sink, lag, chunks].map(|x| x as i32);
        let none: u64 = 0; // a null `raw`: not written
        let mut b = stream.launch_builder(&func);
        b.arg(&kv).arg(&vv).arg(&out);
        match &raw {
            Some(r) => b.arg(r),
            None => b.arg(&none),
        };
        for a in &args {
            b.arg(a);
        }
        let cfg = LaunchConfig {
            grid_dim: ((chunks - 1) as u32, h as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        // SAFETY: matches `lagkv_scores_f32` (k, v, out, raw, len, d, sink, lag, chunks); one
        // block of 256 threads per (chunk, head); (4 d + 3 lag) floats of shared memory.
        unsafe { b.launch(cfg) }.w()?;
        let raw = raw.map(|r| wrap(dev, r, (h, chunks - 1, lag)));
        Ok(Some((wrap(dev, out, (h, len)), raw)))
    }

    pub(super) fn jacobi_eigen(
        a: &Tensor,
        tol: f64,
        max_sweeps: usize,
    ) -> Result<Option<(Tensor, Tensor)>> {
        let Device::Cuda(dev) = a.device() else {
            return Ok(None);
        };
        let (b, m, m2) = a.dims3()?;
        if m != m2 || m % 2 != 0 || !(2..=128).contains(&m) || b == 0 {
            return Ok(None);
        }
        let a = a.to_dtype(DType::F64)?.contiguous()?;
        let (s, l) = a.storage_and_layout();
        let av = view::<f64>(&s, l)?;
        // SAFETY (both): the kernel writes every entry of every matrix.
        let a_out = unsafe { dev.alloc::<f64>(b * m * m) }?;
        let v = unsafe { dev.alloc::<f64>(b * m * m) }?;
        let smem = m * m * std::mem::size_of::<f64>();
        let func = function(dev, "jacobi_eigen_f64")?;
        func.set_attribute(
            CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            smem as i32,
        )
        .w()?;
        let stream = dev.cuda_stream();
        let (m_, sweeps) = (m as i32, max_sweeps as i32);
        let mut bld = stream.launch_builder(&func);
        bld.arg(&av)
            .arg(&a_out)
            .arg(&v)
            .arg(&m_)
            .arg(&tol)
            .arg(&sweeps);
        let cfg = LaunchConfig {
            grid_dim: (b as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        // SAFETY: matches `jacobi_eigen_f64` (a_in, a_out, v, m, tol, max_sweeps); one block of
        // 256 threads per matrix, m * m f64 of shared memory (m <= 128, even).
        unsafe { bld.launch(cfg) }.w()?;
        Ok(Some((wrap(dev, a_out, (b, m, m)), wrap(dev, v, (b, m, m)))))
    }
}

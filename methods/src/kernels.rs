//! The methods' own CUDA kernels (`methods/kernels/compress.cu`, compiled to PTX by build.rs in
//! `--features cuda` builds), launched on candle's stream over the tensors' own device buffers.
//! Each function answers `None` where its kernel does not run (a CPU tensor, a CPU build); the
//! caller then takes its portable path, which is also the kernel's oracle.
//!
//! - [`top_k_rows`]: each row's `k` best scores, in index order (`selection::device_top_k`).
//! - [`run_sum_rows`]: the sum of the rows of each run of consecutive entries (kvmerger's merges).
//! - [`cam_cascade`]: CaM's merge cascade, `x_j = v_j + sum_{j - m <= i < j} a_i x_i`.
//! - [`jacobi_eigen`]: parallel cyclic Jacobi on symmetric matrices, one block per matrix
//!   (lowrank's bases, `linalg::batched_symmetric_eigen`).

use candle_core::{Result, Tensor};

/// Kept indices of each row of `scores` (`[rows, len]` f32, `1 <= k < len`): `([rows, k]` local
/// indices, `[rows * k]` flat row numbers `row * len + index`), both u32 on the device.
pub fn top_k_rows(scores: &Tensor, k: usize) -> Result<Option<(Tensor, Tensor)>> {
    imp::top_k_rows(scores, k)
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
    pub(super) fn run_sum_rows(_: &Tensor, _: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub(super) fn cam_cascade(_: &Tensor, _: &Tensor, _: &[usize]) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub(super) fn jacobi_eigen(_: &Tensor, _: f64, _: usize) -> Result<Option<(Tensor, Tensor)>> {
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

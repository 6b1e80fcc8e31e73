//! The CUDA side of [`super`]: each launcher takes contiguous f32 (or u8/u32) views of candle's
//! device buffers, launches on candle's stream and wraps the outputs as tensors.

use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute_enum;
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaView, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::op::BackpropOp;
use candle_core::{CudaDevice, CudaStorage, DType, Device, Shape, Storage, Tensor};

use super::Result;

/// The PTX of `kernels/select.cu` and `kernels/compress.cu`, with their module names.
const SELECT: (&str, &str) = (
    "kvbench_methods_select",
    include_str!(concat!(env!("OUT_DIR"), "/select.ptx")),
);
const COMPRESS: (&str, &str) = (
    "kvbench_methods_compress",
    include_str!(concat!(env!("OUT_DIR"), "/compress.ptx")),
);

/// Kernel `name` of the PTX module `(module, ptx)`, loaded once per device.
fn function(dev: &CudaDevice, (module, ptx): (&str, &str), name: &str) -> Result<CudaFunction> {
    Ok(dev
        .get_or_load_custom_func(name, module, ptx)?
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
    let func = function(dev, SELECT, "top_k_rows_f32")?;
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
    let func = function(dev, SELECT, "top_k_mask_f32")?;
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
                candle_core::bail!(
                    "top_k_mask: valid {:?} for scores {:?}",
                    valid.dims(),
                    (rows, len)
                );
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
    if run.dims2()? != (r, n) || r * n * d == 0 {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let run = run.to_dtype(DType::U32)?.contiguous()?;
    let (xs, xl) = x.storage_and_layout();
    let (rs, rl) = run.storage_and_layout();
    let rv = view::<u32>(&rs, rl)?;
    let stream = dev.cuda_stream();
    let (r_, n_, d_) = (r as i32, n as i32, d as i32);
    let cfg = LaunchConfig::for_num_elems((r * n * d) as u32);
    match x.dtype() {
        DType::F32 => {
            let xv = view::<f32>(&xs, xl)?;
            let out = dev.alloc_zeros::<f32>(r * n * d)?;
            let func = function(dev, COMPRESS, "run_sum_rows_f32")?;
            let mut b = stream.launch_builder(&func);
            b.arg(&xv).arg(&rv).arg(&out).arg(&r_).arg(&n_).arg(&d_);
            // SAFETY: matches `run_sum_rows_f32` (x, run, out, r, n, d); the grid covers every
            // (row, entry, channel); `out` is zeroed and holds r * n * d values.
            unsafe { b.launch(cfg) }.w()?;
            Ok(Some(wrap(dev, out, (r, n, d))))
        }
        DType::F64 => {
            let xv = view::<f64>(&xs, xl)?;
            let out = dev.alloc_zeros::<f64>(r * n * d)?;
            let func = function(dev, COMPRESS, "run_sum_rows_f64")?;
            let mut b = stream.launch_builder(&func);
            b.arg(&xv).arg(&rv).arg(&out).arg(&r_).arg(&n_).arg(&d_);
            // SAFETY: as above, in f64.
            unsafe { b.launch(cfg) }.w()?;
            Ok(Some(wrap(dev, out, (r, n, d))))
        }
        _ => Ok(None),
    }
}

pub(super) fn run_argmax(values: &Tensor, run: &Tensor) -> Result<Option<(Tensor, Tensor)>> {
    let Device::Cuda(dev) = values.device() else {
        return Ok(None);
    };
    let (r, n) = values.dims2()?;
    if run.dims2()? != (r, n) || values.dtype() != DType::F32 || r * n == 0 {
        return Ok(None);
    }
    let values = values.contiguous()?;
    let run = run.to_dtype(DType::U32)?.contiguous()?;
    let (vs, vl) = values.storage_and_layout();
    let (rs, rl) = run.storage_and_layout();
    let (vv, rv) = (view::<f32>(&vs, vl)?, view::<u32>(&rs, rl)?);
    // SAFETY (both): every entry belongs to a run whose first entry's thread writes it.
    let idx = unsafe { dev.alloc::<u32>(r * n) }?;
    let val = unsafe { dev.alloc::<f32>(r * n) }?;
    let func = function(dev, COMPRESS, "run_argmax_f32")?;
    let stream = dev.cuda_stream();
    let (r_, n_) = (r as i32, n as i32);
    let mut b = stream.launch_builder(&func);
    b.arg(&vv).arg(&rv).arg(&idx).arg(&val).arg(&r_).arg(&n_);
    // SAFETY: matches `run_argmax_f32` (values, run, idx, val, r, n); a thread per entry.
    unsafe { b.launch(LaunchConfig::for_num_elems((r * n) as u32)) }.w()?;
    Ok(Some((wrap(dev, idx, (r, n)), wrap(dev, val, (r, n)))))
}

pub(super) fn row_quadratic_forms(kc: &Tensor, k: &Tensor, g: usize) -> Result<Option<Tensor>> {
    let Device::Cuda(dev) = k.device() else {
        return Ok(None);
    };
    let (nh, n, d) = k.dims3()?;
    if kc.dims3()? != (nh, n, g * d) || nh * n * d == 0 || g == 0 {
        return Ok(None);
    }
    let kc = kc.to_dtype(DType::F32)?.contiguous()?;
    let k = k.to_dtype(DType::F32)?.contiguous()?;
    let (cs, cl) = kc.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (cv, kv) = (view::<f32>(&cs, cl)?, view::<f32>(&ks, kl)?);
    // SAFETY: one warp per (head, entry) writes each of its g outputs.
    let out = unsafe { dev.alloc::<f32>(nh * g * n) }?;
    let func = function(dev, SELECT, "row_quadratic_forms_f32")?;
    let stream = dev.cuda_stream();
    let (nh_, n_, g_, d_) = (nh as i32, n as i32, g as i32, d as i32);
    let mut b = stream.launch_builder(&func);
    b.arg(&cv)
        .arg(&kv)
        .arg(&out)
        .arg(&nh_)
        .arg(&n_)
        .arg(&g_)
        .arg(&d_);
    let cfg = LaunchConfig {
        grid_dim: ((nh * n).div_ceil(8) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: matches `row_quadratic_forms_f32` (kc, k, out, nh, n, g, d); 8 warps per block,
    // one per (head, entry), covering nh * n rows.
    unsafe { b.launch(cfg) }.w()?;
    Ok(Some(wrap(dev, out, (nh, g, n))))
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
    let func = function(dev, COMPRESS, "cam_cascade_f32")?;
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
    let func = function(dev, COMPRESS, "slerp_coefficients_f32")?;
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
    Ok(Some((
        wrap(dev, angle, n),
        wrap(dev, wa, n),
        wrap(dev, wb, n),
    )))
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
        && if per_token {
            d % group == 0
        } else {
            m % group == 0
        };
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
    let func = function(dev, COMPRESS, "quant_params_f32")?;
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
    let func = function(dev, COMPRESS, "quant_codes_f32")?;
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
    if v.dims3()? != (h, len, d) || lag == 0 || h == 0 || len < sink + 2 * lag || smem > 200_000 {
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
    let func = function(dev, SELECT, "lagkv_scores_f32")?;
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

pub(super) fn window_softmax_sums(
    logits: &Tensor,
    mask: Option<&Tensor>,
    tail_start: usize,
    w: usize,
    scale: f32,
) -> Result<Option<Tensor>> {
    let Device::Cuda(dev) = logits.device() else {
        return Ok(None);
    };
    let (n, rows, len) = logits.dims3()?;
    if w == 0 || rows % w != 0 || n * rows * len == 0 || tail_start > len {
        return Ok(None);
    }
    let g = rows / w;
    let logits = logits.to_dtype(DType::F32)?.contiguous()?;
    let mask = match mask {
        Some(m) if tail_start < len => {
            if m.dims3()? != (n, w, len - tail_start) {
                candle_core::bail!("window mask {:?} for {n} heads, {w} queries", m.dims());
            }
            Some(m.to_dtype(DType::F32)?.contiguous()?)
        }
        _ => None,
    };
    let (ls, ll) = logits.storage_and_layout();
    let lv = view::<f32>(&ls, ll)?;
    let mask_storage = mask.as_ref().map(|m| m.storage_and_layout());
    let mv = match &mask_storage {
        Some((s, l)) => Some(view::<f32>(s, l)?),
        None => None,
    };
    // SAFETY (all three): the kernels write every entry.
    let row_max = unsafe { dev.alloc::<f32>(n * rows) }?;
    let row_sum = unsafe { dev.alloc::<f32>(n * rows) }?;
    let out = unsafe { dev.alloc::<f32>(n * g * len) }?;
    let stream = dev.cuda_stream();
    let none: u64 = 0; // a null mask: no key masked
    let (rows_, w_, len_, tail_) = (rows as i32, w as i32, len as i32, tail_start as i32);
    let func = function(dev, SELECT, "window_row_stats_f32")?;
    let mut b = stream.launch_builder(&func);
    b.arg(&lv);
    match &mv {
        Some(m) => b.arg(m),
        None => b.arg(&none),
    };
    b.arg(&row_max)
        .arg(&row_sum)
        .arg(&rows_)
        .arg(&w_)
        .arg(&len_)
        .arg(&tail_)
        .arg(&scale);
    let cfg = LaunchConfig {
        grid_dim: (rows as u32, n as u32, 1),
        block_dim: (len.div_ceil(32).clamp(1, 8) as u32 * 32, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: matches `window_row_stats_f32` (logits, mask, row_max, row_sum, R, w, len,
    // tail_start, scale); one block (a multiple of 32 threads) per (row, head).
    unsafe { b.launch(cfg) }.w()?;
    let (n_, g_) = (n as i32, g as i32);
    let func = function(dev, SELECT, "window_column_sums_f32")?;
    let mut b = stream.launch_builder(&func);
    b.arg(&lv);
    match &mv {
        Some(m) => b.arg(m),
        None => b.arg(&none),
    };
    b.arg(&row_max)
        .arg(&row_sum)
        .arg(&out)
        .arg(&n_)
        .arg(&g_)
        .arg(&w_)
        .arg(&len_)
        .arg(&tail_)
        .arg(&scale);
    // SAFETY: matches `window_column_sums_f32` (logits, mask, row_max, row_sum, out, n, g, w,
    // len, tail_start, scale); one thread per output entry.
    unsafe { b.launch(LaunchConfig::for_num_elems((n * g * len) as u32)) }.w()?;
    Ok(Some(wrap(dev, out, (n, g, len))))
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
    let func = function(dev, COMPRESS, "jacobi_eigen_f64")?;
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

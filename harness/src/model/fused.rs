//! Fused attention on CUDA: `harness/kernels/flash_attention.cu` (compiled to PTX by build.rs in
//! `--features cuda` builds), launched on candle's stream over the tensors' own device buffers.
//! Not a candle custom op: those return one tensor, and the accumulated pass needs the output,
//! the log-sum-exp and the column sums.
//!
//! It replaces the eager path (scores materialised chunk by chunk, a mask, a softmax, two
//! matmuls, ~8 launches per chunk) over a dense bf16 cache with a head dimension of 64, 96, 128
//! or 256. Sliding windows and logit soft-capping run in the kernel. Decoding (few query rows,
//! long keys) splits the keys over blocks and merges the partial softmaxes in a second kernel.
//! H2O-like methods' accumulated attention comes from a third pass that recomputes the scores
//! tile by tile and normalises them with the forward's log-sum-exp, so no queries x keys matrix
//! is ever written. Compressed storage (quantized, low rank, ...) keeps the eager path.
//!
//! `KVBENCH_ATTENTION=eager` (or `kvbench bench --attention eager`) turns it off, for A/B
//! measurements and for checking the kernel against the eager path (`kvbench bench
//! --check-attention`).

// CPU builds compile the planning helpers for their unit tests only.
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

use std::sync::atomic::{AtomicU8, Ordering};

use candle_core::{Result, Tensor};

use super::attention::AttentionParams;

/// 0: not decided yet (read `KVBENCH_ATTENTION`), 1: fused where it applies, 2: eager only.
static MODE: AtomicU8 = AtomicU8::new(0);

/// Use the fused kernel where it applies (`true`) or the eager path everywhere.
pub fn set_enabled(on: bool) {
    MODE.store(if on { 1 } else { 2 }, Ordering::Relaxed);
}

/// Whether the fused kernel is on (the default; `KVBENCH_ATTENTION=eager` turns it off).
pub fn enabled() -> bool {
    match MODE.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let on = std::env::var("KVBENCH_ATTENTION").as_deref() != Ok("eager");
            set_enabled(on);
            on
        }
    }
}

/// Whether this build has the kernel at all.
pub const AVAILABLE: bool = cfg!(feature = "cuda");

/// Attend `q` (`[kv_heads * q_per_kv, t, d]`, the newest `t` of `len` stored positions) to the
/// dense `k`, `v` (`[kv_heads, len, d]`), causally. With `accumulate`, also the attention each
/// key received summed over the `t` queries, `[q_heads, len]` f32 (what the eager path's
/// `accumulated` gives). `None` when the kernel does not apply (CPU, another dtype or head
/// dimension, a GQA group over 16 when accumulating, turned off): the caller runs the eager path.
pub fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    p: &AttentionParams,
    accumulate: bool,
) -> Result<Option<(Tensor, Option<Tensor>)>> {
    if !AVAILABLE || !enabled() || !q.device().is_cuda() {
        return Ok(None);
    }
    let d = q.dim(2)?;
    let bf16 = candle_core::DType::BF16;
    if ![64, 96, 128, 256].contains(&d) || [q, k, v].iter().any(|x| x.dtype() != bf16) {
        return Ok(None);
    }
    if accumulate && p.q_per_kv > 16 {
        return Ok(None);
    }
    // One query over a 256-wide head: the WMMA kernel (d = 256 has no register-resident version)
    // measured slower than the eager path on an H200 (0.075 vs 0.047 ms, sliding-window decode).
    if d > 128 && q.dim(1)? == 1 {
        return Ok(None);
    }
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    // The kernel reads rows with 16-byte loads.
    let aligned = |x: &Tensor| x.layout().start_offset() % 8 == 0;
    if ![&q, &k, &v].iter().all(|x| aligned(x)) {
        return Ok(None);
    }
    let op = Flash {
        q_per_kv: p.q_per_kv,
        scale: p.scale as f32,
        softcap: p.softcap.unwrap_or(0.0) as f32,
        window: p.window.unwrap_or(0),
    };
    #[cfg(feature = "cuda")]
    {
        cuda::forward(&q, &k, &v, &op, accumulate).map(Some)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (op, accumulate);
        Ok(None)
    }
}

struct Flash {
    q_per_kv: usize,
    scale: f32,
    softcap: f32,
    window: usize,
}

/// How a launch covers the work: row tiles of 64 packed (query, head) rows per KV head, and the
/// keys cut into `splits` ranges of `split_keys` when too few tiles would leave SMs idle.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    row_tiles: usize,
    splits: usize,
    split_keys: usize,
}

/// Streaming multiprocessors to fill (an H100/H200 has 132); more splits than this only add merge
/// work.
const TARGET_BLOCKS: usize = 2 * 132;

fn plan(rows: usize, kv_heads: usize, len: usize) -> Plan {
    let row_tiles = rows.div_ceil(64);
    let blocks = row_tiles * kv_heads;
    let mut splits = 1;
    if blocks < TARGET_BLOCKS / 2 && len >= 512 {
        splits = TARGET_BLOCKS.div_ceil(blocks).min(len.div_ceil(256));
    }
    let split_keys = len.div_ceil(splits).div_ceil(64) * 64;
    Plan {
        row_tiles,
        splits: len.div_ceil(split_keys).max(1),
        split_keys,
    }
}

/// Shared memory per block of the WMMA kernels (`flash_fwd_d256`, `flash_colsum_d*`) for head
/// dimension `d` (mirrors `Smem<D>` in the .cu).
fn shared_bytes(d: usize) -> usize {
    let (qk_ld, s_ld, p_ld, o_ld) = (d + 8, 64 + 4, 64 + 8, d + 4);
    3 * 64 * qk_ld * 2 + 4 * 16 * s_ld * 4 + 4 * 16 * p_ld * 2 + 4 * 16 * o_ld * 4
}

/// The forward kernel for head dimension `d` and its shared memory: the register-resident
/// `flash_fwd2` up to 128 (mirrors `Smem2<D>`), the WMMA one above.
fn forward_kernel(d: usize) -> (String, usize) {
    if d <= 128 {
        (
            format!("flash_fwd2_d{d}"),
            (2 * 64 * (d + 8) + d * (64 + 8)) * 2,
        )
    } else {
        (format!("flash_fwd_d{d}"), shared_bytes(d))
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute_enum;
    use candle_core::cuda_backend::cudarc::driver::{
        CudaFunction, CudaSlice, CudaView, LaunchConfig, PushKernelArg,
    };
    use candle_core::cuda_backend::WrapErr;
    use candle_core::op::BackpropOp;
    use candle_core::{bail, CudaDevice, CudaStorage, Device, Layout, Result, Storage, Tensor};
    use half::bf16;

    use super::{forward_kernel, plan, shared_bytes, Flash};

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/flash_attention.ptx"));
    const MODULE: &str = "kvbench_flash_attention";

    fn view<'a>(s: &'a Storage, l: &Layout) -> Result<CudaView<'a, bf16>> {
        let Storage::Cuda(cs) = s else {
            bail!("fused attention runs on CUDA tensors")
        };
        match l.contiguous_offsets() {
            Some((a, b)) => Ok(cs.as_cuda_slice::<bf16>()?.slice(a..b)),
            None => bail!("fused attention takes contiguous tensors"),
        }
    }

    fn wrap<T>(dev: &CudaDevice, x: CudaSlice<T>, shape: (usize, usize, usize)) -> Tensor
    where
        T: candle_core::cuda_backend::CudaDType,
    {
        let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(x, dev.clone()));
        Tensor::from_storage(storage, shape, BackpropOp::none(), false)
    }

    /// A kernel of the module, allowed the shared memory it needs.
    fn function(dev: &CudaDevice, name: &str, smem: usize) -> Result<CudaFunction> {
        let func = dev
            .get_or_load_custom_func(name, MODULE, PTX)?
            .into_cuda_function();
        func.set_attribute(
            CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            smem as i32,
        )
        .w()?;
        Ok(func)
    }

    pub(super) fn forward(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        op: &Flash,
        accumulate: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let Device::Cuda(dev) = q.device() else {
            bail!("fused attention runs on CUDA")
        };
        let (hq, t, d) = q.dims3()?;
        let (hkv, len, dk) = k.dims3()?;
        if v.dims3()? != (hkv, len, dk) || dk != d || hq != hkv * op.q_per_kv || t > len {
            bail!(
                "fused attention: q {:?}, k {:?}, v {:?} with {} query heads per KV head",
                q.dims(),
                k.dims(),
                v.dims(),
                op.q_per_kv
            );
        }
        let (sq, lq) = q.storage_and_layout();
        let (sk, lk) = k.storage_and_layout();
        let (sv, lv) = v.storage_and_layout();
        let (qs, ks, vs) = (view(&sq, lq)?, view(&sk, lk)?, view(&sv, lv)?);
        let p = plan(t * op.q_per_kv, hkv, len);
        let n_rows = hq * t;
        let smem = shared_bytes(d);
        let stream = dev.cuda_stream();
        // SAFETY (all allocations below): every element is written by the kernels before it is
        // read: the forward (or the merge) writes each output row and its log-sum-exp, each
        // split writes all its partial rows, and the column pass writes every (head, key).
        let out = unsafe { dev.alloc::<bf16>(n_rows * d)? };
        let lse = if accumulate {
            Some(unsafe { dev.alloc::<f32>(n_rows)? })
        } else {
            None
        };
        let parts = if p.splits > 1 {
            Some(unsafe {
                (
                    dev.alloc::<f32>(p.splits * n_rows * d)?,
                    dev.alloc::<f32>(p.splits * n_rows * 2)?,
                )
            })
        } else {
            None
        };
        let null = 0u64;
        let (t_, len_, group) = (t as i32, len as i32, op.q_per_kv as i32);
        let (window, split_keys) = (op.window as i32, p.split_keys as i32);
        let (name, fwd_smem) = forward_kernel(d);
        let func = function(dev, &name, fwd_smem)?;
        let mut b = stream.launch_builder(&func);
        b.arg(&qs).arg(&ks).arg(&vs).arg(&out);
        match &parts {
            Some((po, pml)) => b.arg(po).arg(pml),
            None => b.arg(&null).arg(&null),
        };
        match (&lse, &parts) {
            (Some(l), None) => b.arg(l),
            _ => b.arg(&null), // the merge writes it
        };
        b.arg(&t_)
            .arg(&len_)
            .arg(&group)
            .arg(&op.scale)
            .arg(&op.softcap);
        b.arg(&window).arg(&split_keys);
        let cfg = LaunchConfig {
            grid_dim: (p.row_tiles as u32, hkv as u32, p.splits as u32),
            block_dim: (128, 1, 1),
            shared_mem_bytes: fwd_smem as u32,
        };
        // SAFETY: arguments match `flash_fwd_d*` / `flash_fwd2_d*` in order and type; the grid covers every row
        // tile, KV head and split; the buffers hold what the kernel indexes.
        unsafe { b.launch(cfg) }.w()?;
        if let Some((po, pml)) = &parts {
            let func = function(dev, "flash_combine_f32", 0)?;
            let (n, s, dd) = (n_rows as i32, p.splits as i32, d as i32);
            let mut b = stream.launch_builder(&func);
            b.arg(po).arg(pml).arg(&out);
            match &lse {
                Some(l) => b.arg(l),
                None => b.arg(&null),
            };
            b.arg(&n).arg(&s).arg(&dd);
            let cfg = LaunchConfig {
                grid_dim: (n_rows as u32, 1, 1),
                block_dim: (d as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: matches `flash_combine_f32`; one block per row, one thread per column.
            unsafe { b.launch(cfg) }.w()?;
        }
        let accumulated = match &lse {
            Some(lse) => {
                let acc = unsafe { dev.alloc::<f32>(hq * len)? };
                let func = function(dev, &format!("flash_colsum_d{d}"), smem)?;
                let mut b = stream.launch_builder(&func);
                b.arg(&qs).arg(&ks).arg(lse).arg(&acc);
                b.arg(&t_)
                    .arg(&len_)
                    .arg(&group)
                    .arg(&op.scale)
                    .arg(&op.softcap);
                b.arg(&window);
                let cfg = LaunchConfig {
                    grid_dim: (len.div_ceil(64) as u32, hkv as u32, 1),
                    block_dim: (128, 1, 1),
                    shared_mem_bytes: smem as u32,
                };
                // SAFETY: matches `flash_colsum_d*`; one block per key tile and KV head.
                unsafe { b.launch(cfg) }.w()?;
                Some(wrap(dev, acc, (hq, len, 1)).reshape((hq, len))?)
            }
            None => None,
        };
        Ok((wrap(dev, out, (hq, t, d)), accumulated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_splits_long_keys_and_prefill_does_not() {
        // One token of an 8B-shaped model at 4k: 8 KV heads x 1 tile leaves the GPU idle.
        let p = plan(4, 8, 4096);
        assert_eq!(p.row_tiles, 1);
        assert!(p.splits > 1 && p.splits * p.split_keys >= 4096);
        assert_eq!(p.split_keys % 64, 0);
        // Every split has keys.
        assert!((p.splits - 1) * p.split_keys < 4096);
        // A 4k prefill has 256 tiles per KV head: no split.
        assert_eq!(plan(4 * 4096, 8, 4096).splits, 1);
        // Short caches are not split.
        assert_eq!(plan(4, 8, 300).splits, 1);
    }

    #[test]
    fn shared_memory_fits_a_hopper_block() {
        for d in [64, 96, 128, 256] {
            assert!(shared_bytes(d) <= 227 * 1024, "d={d}");
            assert!(forward_kernel(d).1 <= 227 * 1024, "d={d}");
        }
    }
}

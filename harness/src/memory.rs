//! Peak device memory per request, measured by the device.
//!
//! On CUDA, candle allocates through cudarc with stream-ordered allocation (`cuMemAllocAsync`),
//! i.e. from the device's default memory pool. The pool's `USED_MEM_HIGH` attribute is the
//! high-water mark of bytes in live allocations, transient buffers included (attention scores,
//! activations, the forked cache). It is reset before each request and read after, so the peak
//! covers weights + everything that request allocated. It does not include the CUDA context,
//! cuBLAS workspaces allocated outside the pool, or pool fragmentation (see `reserved_peak`).
//! On CPU nothing comparable exists per request, so the peak is `None` (null in results).

use candle_core::{Device, DeviceLocation};

/// Reset the device's peak-memory counter (no-op where not measurable).
pub fn reset_peak(device: &Device) {
    if let DeviceLocation::Cuda { gpu_id } = device.location() {
        #[cfg(feature = "cuda")]
        cuda_pool::reset(gpu_id);
        #[cfg(not(feature = "cuda"))]
        let _ = gpu_id;
    }
}

/// Bytes in use at the high-water mark since the last reset; `None` where not measurable.
pub fn peak_bytes(device: &Device) -> Option<u64> {
    match device.location() {
        #[cfg(feature = "cuda")]
        DeviceLocation::Cuda { gpu_id } => cuda_pool::attribute(gpu_id, cuda_pool::USED_HIGH),
        _ => None,
    }
}

/// Bytes currently in live allocations; `None` where not measurable.
pub fn used_bytes(device: &Device) -> Option<u64> {
    match device.location() {
        #[cfg(feature = "cuda")]
        DeviceLocation::Cuda { gpu_id } => cuda_pool::attribute(gpu_id, cuda_pool::USED_CURRENT),
        _ => None,
    }
}

#[cfg(feature = "cuda")]
mod cuda_pool {
    use cudarc::driver::sys;

    pub const USED_HIGH: sys::CUmemPool_attribute =
        sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH;
    pub const USED_CURRENT: sys::CUmemPool_attribute =
        sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_CURRENT;

    fn pool(ordinal: usize) -> Option<sys::CUmemoryPool> {
        // SAFETY: plain driver queries with valid out-pointers; the context exists because a
        // candle CUDA device was created for this ordinal.
        unsafe {
            let mut dev: sys::CUdevice = 0;
            if sys::cuDeviceGet(&mut dev, ordinal as i32) != sys::CUresult::CUDA_SUCCESS {
                return None;
            }
            let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
            if sys::cuDeviceGetDefaultMemPool(&mut pool, dev) != sys::CUresult::CUDA_SUCCESS {
                return None;
            }
            Some(pool)
        }
    }

    pub fn reset(ordinal: usize) {
        if let Some(p) = pool(ordinal) {
            let mut zero: u64 = 0;
            // SAFETY: USED_MEM_HIGH takes a u64 and may only be set to zero.
            unsafe {
                sys::cuMemPoolSetAttribute(
                    p,
                    USED_HIGH,
                    &mut zero as *mut u64 as *mut std::ffi::c_void,
                );
            }
        }
    }

    pub fn attribute(ordinal: usize, attr: sys::CUmemPool_attribute) -> Option<u64> {
        let p = pool(ordinal)?;
        let mut v: u64 = 0;
        // SAFETY: the USED_MEM attributes are u64 values.
        let r = unsafe {
            sys::cuMemPoolGetAttribute(p, attr, &mut v as *mut u64 as *mut std::ffi::c_void)
        };
        (r == sys::CUresult::CUDA_SUCCESS).then_some(v)
    }
}

//! Moving loaded cache bytes to the device off the compute path, for Cake's loader thread.
//!
//! A chunk's bytes are read straight into one staging buffer and copied to the device as one
//! flat tensor, which the chunk's pieces then view. On CUDA the buffer is pinned host memory and
//! the copy runs on the uploader's own stream, from the loader thread: candle's kernels keep
//! running on the device's stream meanwhile (a copy from pageable memory, or on candle's stream,
//! would wait behind them). The loader thread waits for its stream after each copy, so a chunk is
//! complete on the device before it is handed over and the staging buffer can be refilled at
//! once; kvbench does not rely on cudarc's event tracking (off, `crate::device`). The slices are
//! freed on this stream, so `run::cake::meet` synchronises the compute stream before dropping
//! them.
//! Elsewhere the buffer is plain host memory and the copy is `Tensor::to_device`.
//!
//! Pinned buffers cost milliseconds to allocate, so they are pooled per process and reused by
//! every later request.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};

/// Copies staged bytes to one device.
pub struct Uploader {
    device: Device,
    staging: Staging,
}

impl Uploader {
    pub fn new(device: &Device) -> Result<Self> {
        Ok(Self {
            device: device.clone(),
            staging: Staging::new(device)?,
        })
    }

    /// Whether copies run on their own stream from pinned memory (CUDA builds on a CUDA device).
    pub fn is_async(&self) -> bool {
        self.staging.is_pinned()
    }

    /// A zeroed-or-stale host buffer of `len` bytes for `dtype` elements, to fill before
    /// [`Uploader::upload`].
    pub fn buffer(&mut self, dtype: DType, len: usize) -> Result<&mut [u8]> {
        self.staging.buffer(dtype, len)
    }

    /// The first `len` bytes of the buffer as a flat `dtype` tensor on the device.
    pub fn upload(&mut self, dtype: DType, len: usize) -> Result<Tensor> {
        self.staging.upload(&self.device, dtype, len)
    }
}

/// Plain host staging: the copy is candle's own (synchronous on CUDA, from pageable memory).
#[derive(Default)]
struct HostStaging {
    bytes: Vec<u8>,
}

impl HostStaging {
    fn buffer(&mut self, len: usize) -> &mut [u8] {
        self.bytes.resize(len, 0);
        &mut self.bytes[..len]
    }

    fn upload(&self, device: &Device, dtype: DType, len: usize) -> Result<Tensor> {
        let elems = len / dtype.size_in_bytes();
        let t = Tensor::from_raw_buffer(&self.bytes[..len], dtype, &[elems], &Device::Cpu)?;
        Ok(t.to_device(device)?)
    }
}

/// Without CUDA support every device gets plain host staging.
#[cfg(not(feature = "cuda"))]
struct Staging(HostStaging);

#[cfg(not(feature = "cuda"))]
impl Staging {
    fn new(_: &Device) -> Result<Self> {
        Ok(Self(HostStaging::default()))
    }

    fn is_pinned(&self) -> bool {
        false
    }

    fn buffer(&mut self, _: DType, len: usize) -> Result<&mut [u8]> {
        Ok(self.0.buffer(len))
    }

    fn upload(&mut self, device: &Device, dtype: DType, len: usize) -> Result<Tensor> {
        self.0.upload(device, dtype, len)
    }
}

#[cfg(feature = "cuda")]
use cuda::Staging;

#[cfg(feature = "cuda")]
mod cuda {
    use std::sync::{Arc, Mutex};

    use anyhow::{bail, Result};
    use candle_core::cuda_backend::CudaDType;
    use candle_core::op::BackpropOp;
    use candle_core::{CudaDevice, CudaStorage, DType, Device, Storage, Tensor};
    use cudarc::driver::{CudaStream, DeviceRepr, PinnedHostSlice, ValidAsZeroBits};
    use half::{bf16, f16};

    use super::HostStaging;

    /// A pinned host buffer, typed by the element the device tensor will have (one per chunk and
    /// element type: a quantized chunk uploads codes, scales and residual separately).
    pub(super) enum Pinned {
        /// Packed quantization codes.
        U8(PinnedHostSlice<u8>),
        Bf16(PinnedHostSlice<bf16>),
        F16(PinnedHostSlice<f16>),
        F32(PinnedHostSlice<f32>),
    }

    impl Pinned {
        fn bytes(&self) -> usize {
            match self {
                Pinned::U8(p) => p.len(),
                Pinned::Bf16(p) => p.len() * 2,
                Pinned::F16(p) => p.len() * 2,
                Pinned::F32(p) => p.len() * 4,
            }
        }

        fn dtype(&self) -> DType {
            match self {
                Pinned::U8(_) => DType::U8,
                Pinned::Bf16(_) => DType::BF16,
                Pinned::F16(_) => DType::F16,
                Pinned::F32(_) => DType::F32,
            }
        }
    }

    /// Pinned buffers of finished uploaders, reused by the next (allocation costs milliseconds).
    static POOL: Mutex<Vec<Pinned>> = Mutex::new(Vec::new());

    pub(super) enum Staging {
        Host(HostStaging),
        Pinned {
            device: CudaDevice,
            stream: Arc<CudaStream>,
            buffer: Option<Pinned>,
            /// For element types without pinned staging (kvbench stores caches as floats and u8
            /// codes, so in practice unused).
            other: HostStaging,
        },
    }

    impl Drop for Staging {
        fn drop(&mut self) {
            if let Staging::Pinned { buffer, .. } = self {
                if let (Some(b), Ok(mut pool)) = (buffer.take(), POOL.lock()) {
                    pool.push(b);
                }
            }
        }
    }

    fn pinnable(dtype: DType) -> bool {
        matches!(dtype, DType::U8 | DType::BF16 | DType::F16 | DType::F32)
    }

    fn alloc(device: &CudaDevice, dtype: DType, bytes: usize) -> Result<Pinned> {
        let ctx = device.cuda_stream().context().clone();
        // SAFETY: the buffers are only written through `as_mut_slice` before a copy and read by
        // the copy; their contents start undefined and every byte used is written first.
        Ok(unsafe {
            match dtype {
                DType::U8 => Pinned::U8(ctx.alloc_pinned::<u8>(bytes)?),
                DType::BF16 => Pinned::Bf16(ctx.alloc_pinned::<bf16>(bytes.div_ceil(2))?),
                DType::F16 => Pinned::F16(ctx.alloc_pinned::<f16>(bytes.div_ceil(2))?),
                DType::F32 => Pinned::F32(ctx.alloc_pinned::<f32>(bytes.div_ceil(4))?),
                other => bail!("no pinned staging for {other:?}"),
            }
        })
    }

    /// `p`'s elements as bytes.
    fn as_bytes<T: ValidAsZeroBits>(p: &mut PinnedHostSlice<T>) -> Result<&mut [u8]> {
        let s = p.as_mut_slice()?;
        let n = std::mem::size_of_val(s);
        // SAFETY: plain-old-data numbers viewed as bytes, same allocation and length.
        Ok(unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<u8>(), n) })
    }

    fn copy<T: CudaDType + DeviceRepr + ValidAsZeroBits>(
        device: &CudaDevice,
        stream: &Arc<CudaStream>,
        src: &PinnedHostSlice<T>,
        elems: usize,
    ) -> Result<Tensor> {
        // SAFETY: every element is written by the copy below before anyone reads it.
        let mut dst = unsafe { stream.alloc::<T>(elems)? };
        // A sub-slice of pinned memory: the driver copies it asynchronously to the device; cudarc
        // then waits for this stream (the loader thread's wait, not the compute stream's), so the
        // buffer can be refilled as soon as this returns.
        stream.memcpy_htod(&src.as_slice()?[..elems], &mut dst)?;
        let storage = CudaStorage::wrap_cuda_slice(dst, device.clone());
        Ok(Tensor::from_storage(
            Storage::Cuda(storage),
            elems,
            BackpropOp::none(),
            false,
        ))
    }

    impl Staging {
        pub(super) fn new(device: &Device) -> Result<Self> {
            Ok(match device {
                Device::Cuda(d) => Staging::Pinned {
                    device: d.clone(),
                    stream: d.cuda_stream().context().new_stream()?,
                    buffer: None,
                    other: HostStaging::default(),
                },
                _ => Staging::Host(HostStaging::default()),
            })
        }

        pub(super) fn is_pinned(&self) -> bool {
            matches!(self, Staging::Pinned { .. })
        }

        pub(super) fn buffer(&mut self, dtype: DType, len: usize) -> Result<&mut [u8]> {
            let (device, buffer) = match self {
                Staging::Host(h) => return Ok(h.buffer(len)),
                Staging::Pinned { other, .. } if !pinnable(dtype) => return Ok(other.buffer(len)),
                Staging::Pinned { device, buffer, .. } => (device, buffer),
            };
            let fits = |b: &Pinned| b.dtype() == dtype && b.bytes() >= len;
            if !buffer.as_ref().is_some_and(fits) {
                let pooled = {
                    let mut pool = POOL.lock().expect("pinned pool");
                    pool.iter().position(fits).map(|i| pool.swap_remove(i))
                };
                let fresh = match pooled {
                    Some(b) => b,
                    // Grow by half again so a slightly longer chunk does not reallocate.
                    None => alloc(device, dtype, len + len / 2)?,
                };
                if let Some(old) = buffer.replace(fresh) {
                    POOL.lock().expect("pinned pool").push(old);
                }
            }
            let bytes = match buffer.as_mut().expect("just set") {
                Pinned::U8(p) => as_bytes(p)?,
                Pinned::Bf16(p) => as_bytes(p)?,
                Pinned::F16(p) => as_bytes(p)?,
                Pinned::F32(p) => as_bytes(p)?,
            };
            Ok(&mut bytes[..len])
        }

        pub(super) fn upload(
            &mut self,
            device: &Device,
            dtype: DType,
            len: usize,
        ) -> Result<Tensor> {
            let (cuda, stream, buffer) = match self {
                Staging::Host(h) => return h.upload(device, dtype, len),
                Staging::Pinned { other, .. } if !pinnable(dtype) => {
                    return other.upload(device, dtype, len)
                }
                Staging::Pinned {
                    device,
                    stream,
                    buffer,
                    ..
                } => (device, stream, buffer),
            };
            let elems = len / dtype.size_in_bytes();
            match buffer.as_ref() {
                Some(Pinned::U8(p)) if dtype == DType::U8 => copy(cuda, stream, p, elems),
                Some(Pinned::Bf16(p)) if dtype == DType::BF16 => copy(cuda, stream, p, elems),
                Some(Pinned::F16(p)) if dtype == DType::F16 => copy(cuda, stream, p, elems),
                Some(Pinned::F32(p)) if dtype == DType::F32 => copy(cuda, stream, p, elems),
                _ => bail!("upload of {dtype:?} without a staged {dtype:?} buffer"),
            }
        }
    }
}

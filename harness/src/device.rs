//! Choosing the compute device, and timing work on it honestly (synchronised).

use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::{DType, Device};

/// Parse `auto`, `cpu`, `cuda` or `cuda:N`. `auto` takes CUDA device 0 when this binary was
/// built with CUDA and a device answers, else the CPU.
pub fn select(spec: &str) -> Result<Device> {
    let spec = spec.trim();
    match spec {
        "cpu" => Ok(Device::Cpu),
        "auto" => {
            if candle_core::utils::cuda_is_available() {
                if let Ok(d) = Device::new_cuda(0) {
                    return Ok(untracked(d));
                }
            }
            Ok(Device::Cpu)
        }
        "cuda" => cuda(0),
        s if s.starts_with("cuda:") => match s["cuda:".len()..].parse::<usize>() {
            Ok(n) => cuda(n),
            Err(_) => {
                bail!("device `{s}`: the ordinal after `cuda:` must be a number, e.g. cuda:0")
            }
        },
        other => bail!("device `{other}` is not one of auto, cpu, cuda, cuda:N"),
    }
}

fn cuda(ordinal: usize) -> Result<Device> {
    if !candle_core::utils::cuda_is_available() {
        bail!("device cuda:{ordinal} asked for, but this kvbench was built without CUDA; rebuild with `--features cuda` (see scripts/build-cuda.sh) or use --device cpu");
    }
    Device::new_cuda(ordinal)
        .map(untracked)
        .map_err(|e| anyhow::anyhow!("opening CUDA device {ordinal}: {e}"))
}

/// Turn off cudarc's per-allocation event tracking on a CUDA device, unless
/// `KVBENCH_CUDA_EVENT_TRACKING=1` keeps it. Tracking creates two CUDA events per allocation
/// (every candle op's output) and, once a second stream exists, records and waits on them at
/// every launch. kvbench needs none of it: candle runs on one stream, and the one other stream
/// (Cake's loader, `kv_store::upload`) synchronises its own copies and is joined explicitly
/// before its buffers are released. Measured on an H200 (`scripts/device/event_tracking.sh`) the
/// single-stream cost is within noise; the saving is in Cake's requests, where the loader's
/// stream would otherwise switch every launch to recording events.
fn untracked(device: Device) -> Device {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = &device {
        if std::env::var("KVBENCH_CUDA_EVENT_TRACKING").as_deref() != Ok("1") {
            // SAFETY: see above; tensors created before this call (none yet) keep tracking.
            unsafe { d.disable_event_tracking() };
        }
    }
    device
}

/// The compute dtype for a device: f32 on CPU, bf16 on CUDA.
pub fn compute_dtype(device: &Device) -> DType {
    if device.is_cuda() {
        DType::BF16
    } else {
        DType::F32
    }
}

/// Human-readable device label recorded in results.
pub fn label(device: &Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} threads)", candle_core::utils::get_num_threads()),
        Device::Cuda(_) => "cuda".to_string(),
        Device::Metal(_) => "metal".to_string(),
    }
}

/// Run `f` between two device synchronisations and return its result with elapsed milliseconds,
/// so asynchronous GPU work is inside the measured interval.
pub fn timed<T>(device: &Device, f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    device.synchronize()?;
    let t0 = Instant::now();
    let out = f()?;
    device.synchronize()?;
    Ok((out, t0.elapsed().as_secs_f64() * 1e3))
}

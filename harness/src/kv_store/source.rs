//! Where a stored file's bytes come from (host memory or a file on disk), read at a capped rate.
//!
//! `bandwidth_gbps` is a real pacing of reads, not a formula applied afterwards: reads go in
//! pieces of at most [`PIECE`] bytes, and after each piece the reader sleeps until the bytes read
//! so far could have arrived at the cap (a token bucket with no burst allowance, refilled at
//! `gbps * 1e9` bytes per second). Reads at the cap therefore take at least `bytes / rate`;
//! without a cap they run as fast as memory or the disk allow. GB here is 10^9 bytes.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Largest single read between two pacing checks.
pub const PIECE: usize = 1 << 20;

/// The bytes of one stored file.
#[derive(Clone)]
pub enum ByteSource {
    /// Held in host memory (the `memory` store).
    Memory { name: String, bytes: Arc<Vec<u8>> },
    /// A file of a directory store, read with positioned reads.
    Disk { path: PathBuf, file: Arc<File> },
}

impl ByteSource {
    pub fn open(path: PathBuf) -> Result<Self> {
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        Ok(ByteSource::Disk {
            path,
            file: Arc::new(file),
        })
    }

    /// Names the file in errors.
    pub fn name(&self) -> String {
        match self {
            ByteSource::Memory { name, .. } => format!("memory store: {name}"),
            ByteSource::Disk { path, .. } => path.display().to_string(),
        }
    }

    pub fn len(&self) -> Result<u64> {
        Ok(match self {
            ByteSource::Memory { bytes, .. } => bytes.len() as u64,
            ByteSource::Disk { file, path } => file
                .metadata()
                .with_context(|| format!("{}", path.display()))?
                .len(),
        })
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Fill `buf` from `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        match self {
            ByteSource::Memory { bytes, name } => {
                let start = offset as usize;
                let Some(src) = bytes.get(start..start + buf.len()) else {
                    bail!("memory store: {name}: read past the end (truncated)");
                };
                buf.copy_from_slice(src);
            }
            ByteSource::Disk { file, path } => {
                use std::os::unix::fs::FileExt;
                file.read_exact_at(buf, offset).with_context(|| {
                    format!(
                        "{}: reading {} bytes at {offset} (truncated?)",
                        path.display(),
                        buf.len()
                    )
                })?;
            }
        }
        Ok(())
    }

    /// `len` bytes from `offset`, paced by `pacer`.
    pub fn read_range(&self, offset: u64, len: usize, pacer: &mut Pacer) -> Result<Vec<u8>> {
        let mut out = vec![0u8; len];
        self.read_into(offset, &mut out, pacer)?;
        Ok(out)
    }

    /// Fill `out` from `offset` on, paced (into a caller's buffer: Cake's pinned staging).
    pub fn read_into(&self, offset: u64, out: &mut [u8], pacer: &mut Pacer) -> Result<()> {
        for (i, piece) in out.chunks_mut(PIECE).enumerate() {
            if pacer.cancelled() {
                bail!("{}: read cancelled", self.name());
            }
            self.read_at(offset + (i * PIECE) as u64, piece)?;
            pacer.account(piece.len());
        }
        Ok(())
    }

    /// The whole file, paced.
    pub fn read_all(&self, pacer: &mut Pacer) -> Result<Vec<u8>> {
        let len = self.len()? as usize;
        self.read_range(0, len, pacer)
    }
}

/// Caps the read rate and counts the bytes read.
pub struct Pacer {
    bytes_per_second: Option<f64>,
    start: Instant,
    read: u64,
    /// Set by another thread to stop reading (Cake's compute reached the loader).
    cancel: Option<Arc<AtomicBool>>,
}

impl Pacer {
    /// `gbps`: the cap in GB/s (10^9 bytes), or `None` for no cap.
    pub fn new(gbps: Option<f64>) -> Self {
        Self {
            bytes_per_second: gbps.map(|g| g * 1e9),
            start: Instant::now(),
            read: 0,
            cancel: None,
        }
    }

    /// Stop reading (and waiting) once `flag` is set: reads then fail with "read cancelled".
    pub fn cancelled_by(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = Some(flag);
        self
    }

    pub fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Acquire))
    }

    /// Count `n` bytes just read and wait until they could have arrived at the cap.
    pub fn account(&mut self, n: usize) {
        self.read += n as u64;
        if let Some(rate) = self.bytes_per_second {
            let due = Duration::from_secs_f64(self.read as f64 / rate);
            // Sleep in short steps so that a cancelled read stops waiting at once.
            let step = Duration::from_millis(2);
            while due > self.start.elapsed() && !self.cancelled() {
                std::thread::sleep(due.saturating_sub(self.start.elapsed()).min(step));
            }
        }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capped_read_takes_at_least_bytes_over_rate() {
        let src = ByteSource::Memory {
            name: "x".into(),
            bytes: Arc::new(vec![7u8; 3 * PIECE]),
        };
        // 3 MiB at 0.1 GB/s: at least 31 ms.
        let mut pacer = Pacer::new(Some(0.1));
        let t = Instant::now();
        let got = src.read_all(&mut pacer).unwrap();
        assert!(t.elapsed() >= Duration::from_secs_f64(3.0 * PIECE as f64 / 1e8));
        assert_eq!(got.len(), 3 * PIECE);
        assert_eq!(pacer.bytes_read(), 3 * PIECE as u64);
        // Uncapped, the same read is far faster than the cap would allow.
        let mut free = Pacer::new(None);
        let t = Instant::now();
        src.read_all(&mut free).unwrap();
        assert!(t.elapsed() < Duration::from_secs_f64(3.0 * PIECE as f64 / 1e8));
    }

    #[test]
    fn reading_past_the_end_is_an_error_naming_the_file() {
        let src = ByteSource::Memory {
            name: "ctx/layers-0-1.safetensors".into(),
            bytes: Arc::new(vec![0u8; 10]),
        };
        let e = src.read_range(5, 10, &mut Pacer::new(None)).unwrap_err();
        assert!(format!("{e:#}").contains("layers-0-1.safetensors"), "{e:#}");
    }
}

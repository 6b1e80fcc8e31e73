//! Opt-in phase timings of compression, for finding where a method's time goes on a device with
//! no profiler: with `KVBENCH_PROFILE_COMPRESS=1`, each [`phase`] synchronises the device before
//! and after its work and adds the wall time to a per-name total; `kvbench bench` prints and
//! clears the totals after each method ([`take`]). Off (the default) a phase is a plain call:
//! no synchronisation, no clock. The synchronisations slow what they measure, so compression
//! times from a profiled run are not the benchmark's numbers.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use candle_core::Device;

/// Whether `KVBENCH_PROFILE_COMPRESS` is set to something other than `0` (read once).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var("KVBENCH_PROFILE_COMPRESS").is_ok_and(|v| v != "0" && !v.is_empty())
    })
}

/// Totals per phase name: (milliseconds, calls).
fn totals() -> &'static Mutex<BTreeMap<&'static str, (f64, usize)>> {
    static T: OnceLock<Mutex<BTreeMap<&'static str, (f64, usize)>>> = OnceLock::new();
    T.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// Run `f` as phase `name` on `device` (timed when profiling is on).
pub fn phase<T>(name: &'static str, device: &Device, f: impl FnOnce() -> T) -> T {
    if !enabled() {
        return f();
    }
    // A failed synchronisation shows up in `f`'s own device work; the timing is best effort.
    let guard = span(name, device);
    let out = f();
    drop(guard);
    out
}

/// A phase that ends when the returned guard is dropped (or [`Span::end`]), for code whose
/// values flow out of the phase; `None` when profiling is off.
pub fn span(name: &'static str, device: &Device) -> Option<Span> {
    if !enabled() {
        return None;
    }
    let _ = device.synchronize();
    Some(Span {
        name,
        device: device.clone(),
        start: Instant::now(),
    })
}

/// See [`span`].
pub struct Span {
    name: &'static str,
    device: Device,
    start: Instant,
}

impl Span {
    /// End the phase here.
    pub fn end(self) {}
}

impl Drop for Span {
    fn drop(&mut self) {
        let _ = self.device.synchronize();
        let ms = self.start.elapsed().as_secs_f64() * 1e3;
        if let Ok(mut t) = totals().lock() {
            let e = t.entry(self.name).or_insert((0.0, 0));
            e.0 += ms;
            e.1 += 1;
        }
    }
}

/// The totals since the last call, `name total-ms/calls` joined by `, `, largest first; `None`
/// when profiling is off or nothing was timed. Clears them.
pub fn take() -> Option<String> {
    if !enabled() {
        return None;
    }
    let mut t = totals().lock().ok()?;
    let mut rows: Vec<(&'static str, (f64, usize))> = std::mem::take(&mut *t).into_iter().collect();
    if rows.is_empty() {
        return None;
    }
    rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    Some(
        rows.iter()
            .map(|(n, (ms, calls))| format!("{n} {ms:.2} ms/{calls}"))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

#[cfg(test)]
mod tests {
    /// Off by default (the test environment does not set the variable): a phase is a plain call
    /// and nothing is recorded.
    #[test]
    fn off_by_default_a_phase_is_a_plain_call() {
        if super::enabled() {
            return; // someone profiles the tests on purpose
        }
        let dev = candle_core::Device::Cpu;
        assert_eq!(super::phase("x", &dev, || 41 + 1), 42);
        assert_eq!(super::take(), None);
    }
}

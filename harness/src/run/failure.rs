//! Which errors fail one record rather than the run, and the reason a failed record keeps.

use anyhow::Result;

/// An error's text without the backtrace candle appends to device errors when `RUST_BACKTRACE`
/// is set (numbered frame lines and their `at` lines): a failed record keeps the reason only.
pub(super) fn without_backtrace(text: &str) -> String {
    let frame = |l: &str| {
        let t = l.trim_start();
        let numbered = t
            .split_once(": ")
            .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        l.starts_with(' ') && (numbered || t.starts_with("at "))
    };
    let kept: Vec<&str> = text.lines().filter(|l| !frame(l)).collect();
    kept.join("\n").trim_end().to_string()
}

/// A device out of memory: the work of this sample fails, the run goes on.
pub(super) fn is_oom(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}").to_ascii_lowercase();
    text.contains("out of memory") || text.contains("out_of_memory")
}

/// Test hook: `KVBENCH_TEST_OOM=SAMPLE_ID` makes that sample's prefill fail as a device out of
/// memory would, so the failure path can be tested on the CPU. Read only here.
pub(super) fn injected_oom(sample_id: &str) -> Result<()> {
    match std::env::var("KVBENCH_TEST_OOM") {
        Ok(id) if id == sample_id => {
            anyhow::bail!("out of memory (injected by KVBENCH_TEST_OOM={id})")
        }
        _ => Ok(()),
    }
}

//! The bench report as a plain-text table.

use super::BenchReport;

/// The report as a plain-text table.
pub fn render(r: &BenchReport) -> String {
    let mib =
        |b: Option<u64>| b.map_or("-".to_string(), |b| format!("{:.0}", b as f64 / 1048576.0));
    let mut s = format!(
        "kvbench bench — {} on {} ({}), weights {:.0} MiB\n\n",
        r.model,
        r.device,
        r.dtype,
        r.weight_bytes as f64 / 1048576.0
    );
    s += "prefill\n  tokens   median_ms   min_ms   tokens/s   peak_MiB   kv_MiB\n";
    for p in &r.prefill {
        s += &format!(
            "  {:>6}   {:>9.2}   {:>6.2}   {:>8.0}   {:>8}   {:>6.1}\n",
            p.context_tokens,
            p.median_ms,
            p.min_ms,
            p.tokens_per_s,
            mib(p.peak_device_bytes),
            p.kv_bytes as f64 / 1048576.0
        );
    }
    s += "decode (per token)\n  context  median_ms   min_ms   tokens/s   peak_MiB\n";
    for p in &r.decode {
        s += &format!(
            "  {:>6}   {:>9.3}   {:>6.3}   {:>8.0}   {:>8}\n",
            p.context_tokens,
            p.median_ms,
            p.min_ms,
            p.tokens_per_s,
            mib(p.peak_device_bytes)
        );
    }
    s += "compression at ratio 0.5\n  method               median_ms   %prefill   achieved_ratio   peak_MiB\n";
    for m in &r.compression {
        let pct = m
            .prefill_percent
            .map_or("-".to_string(), |p| format!("{p:.1}"));
        s += &format!(
            "  {:<20} {:>9.3}   {:>8}   {:>14.3}   {:>8}\n",
            m.method,
            m.median_ms,
            pct,
            m.achieved_ratio,
            mib(m.peak_device_bytes)
        );
    }
    for m in &r.skipped_methods {
        s += &format!("  skipped: {m}\n");
    }
    s += &format!(
        "one sample end to end: {:.2} ms\nprefill sharing: 8 configs {:.2} ms vs 1 config {:.2} ms = {:.2}x\n",
        r.end_to_end_ms, r.sharing_eight_configs_ms, r.sharing_one_config_ms, r.sharing_ratio
    );
    s += &format!(
        "prefill sharing, batched decoding: 8 configs {:.2} ms vs 1 config {:.2} ms = {:.2}x\n",
        r.sharing_batched_eight_configs_ms, r.sharing_one_config_ms, r.sharing_batched_ratio
    );
    if let Some(d) = &r.batched_decode {
        s += &format!(
            "batched decode: {} sequences at {} tokens: {:.3} ms per step (min {:.3}), {:.0} tokens/s, peak {} MiB\n",
            d.sequences,
            d.context_tokens,
            d.median_step_ms,
            d.min_step_ms,
            d.tokens_per_s,
            mib(d.peak_device_bytes)
        );
    }
    if let Some(p) = &r.peak_full_longest {
        s += &format!(
            "peak memory, full cache at {} tokens: {:.0} MiB (budget weights + 2 x KV + 512 MiB = {:.0} MiB): {}\n",
            p.context_tokens,
            p.peak_device_bytes as f64 / 1048576.0,
            p.budget_bytes as f64 / 1048576.0,
            if p.within_budget { "within" } else { "over" }
        );
    }
    if let Some(p) = &r.long_context {
        s += &format!(
            "long context, full cache: {} tokens prefilled in chunks of {} in {:.0} ms, decode {:.3} ms/token; peak {} MiB (budget weights {:.0} + KV {:.0} + 2048 MiB = {:.0} MiB): {}\n",
            p.context_tokens,
            p.prefill_chunk,
            p.prefill_ms,
            p.decode_ms_per_token,
            mib(p.peak_device_bytes),
            p.weight_bytes as f64 / 1048576.0,
            p.kv_bytes as f64 / 1048576.0,
            p.budget_bytes as f64 / 1048576.0,
            match p.within_budget {
                Some(true) => "within",
                Some(false) => "over",
                None => "not measurable here",
            }
        );
    }
    if let Some(p) = &r.compressed_peak {
        s += &format!(
            "peak memory at {} tokens, compressed layer by layer during prefill: full {} MiB (KV {:.0} MiB) vs {} at ratio {} {} MiB (KV {:.0} MiB): {}\n",
            p.context_tokens,
            mib(p.full_peak_bytes),
            p.full_kv_bytes as f64 / 1048576.0,
            p.method,
            p.compression_ratio,
            mib(p.compressed_peak_bytes),
            p.compressed_kv_bytes as f64 / 1048576.0,
            p.saving_share.map_or("saving not measurable here".to_string(), |x| format!(
                "the peak falls by {:.0}% of the KV bytes saved",
                100.0 * x
            ))
        );
    }
    s
}

//! `kvbench bench`: its options and what it runs (microbenchmarks in `kvbench::bench`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use kvbench::fetch::{resolve, FetchOptions};

#[derive(Args)]
pub struct BenchArgs {
    /// Model to measure: a registry alias, hf:ORG/REPO[@REV], a local path, or
    /// synthetic:SHAPE (random weights of a real model's shape built on the device, nothing
    /// downloaded: synthetic:smollm2-135m, synthetic:llama3-8b, synthetic:qwen3-8b,
    /// synthetic:llama3-70b).
    #[arg(long, default_value = "smollm2-135m-instruct-q4_1")]
    model: String,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Prefill lengths (default: 1k..32k on CUDA, 512..4k on CPU).
    #[arg(long, value_delimiter = ',')]
    lengths: Option<Vec<usize>>,
    /// Context lengths for decode timing (default: 1k, 4k, 32k on CUDA; 512, 2k on CPU).
    #[arg(long, value_delimiter = ',')]
    decode_lengths: Option<Vec<usize>>,
    /// Context length of the per-method, end-to-end and sharing measurements.
    #[arg(long)]
    sample_length: Option<usize>,
    /// Repeats per measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Queries per attention chunk during prefill (bounds the score buffer).
    #[arg(long, default_value_t = 512)]
    attention_chunk: usize,
    /// Skip the compression time per method (slow for some methods on large shapes).
    #[arg(long)]
    skip_compression: bool,
    /// Sequences decoding together in the batched decode measurement (0 skips it).
    #[arg(long, default_value_t = 16)]
    batch_sequences: usize,
    /// Context length of each sequence in the batched decode measurement (default: 4096 on
    /// CUDA, 1024 on CPU).
    #[arg(long)]
    batch_context: Option<usize>,
    /// Also prefill this many tokens with the full cache in chunks of --prefill-chunk and
    /// decode from it: peak memory against weights + KV + 2 GiB (e.g. 131072).
    #[arg(long)]
    long_context: Option<usize>,
    /// Tokens per forward of the --long-context prefill.
    #[arg(long, default_value_t = 4096)]
    prefill_chunk: usize,
    /// Also measure, at this context, the peak of a full-cache prefill + decode against
    /// --memory-method at --memory-ratio compressing each layer during the prefill.
    #[arg(long)]
    memory_context: Option<usize>,
    /// Method (default parameters) of the --memory-context measurement; it must compress
    /// layer by layer (snapkv, knorm, streaming_llm, tova, ...).
    #[arg(long, default_value = "snapkv")]
    memory_method: String,
    /// Compression ratio of the --memory-context measurement.
    #[arg(long, default_value_t = 0.75)]
    memory_ratio: f64,
    /// Attention kernel: `fused` (the CUDA kernel where it applies) or `eager`.
    #[arg(long, default_value = "fused", value_parser = ["fused", "eager"])]
    attention: String,
    /// Only check the fused attention kernel against the eager path on the device (errors
    /// and timings per case); exits non-zero if a case fails.
    #[arg(long)]
    check_attention: bool,
    /// Only check the methods' CUDA kernels (top-k selection, run sums, CaM's cascade, the
    /// Jacobi eigensolver) against their host oracles, with timings; exits non-zero if a case
    /// fails.
    #[arg(long)]
    check_kernels: bool,
    /// Also write the report as JSON here.
    #[arg(long, default_value = "bench.json")]
    output: PathBuf,
}

pub fn bench(args: BenchArgs) -> Result<()> {
    let BenchArgs {
        model,
        device,
        lengths,
        decode_lengths,
        sample_length,
        repeats,
        attention_chunk,
        skip_compression,
        batch_sequences,
        batch_context,
        long_context,
        prefill_chunk,
        memory_context,
        memory_method,
        memory_ratio,
        attention,
        check_attention,
        check_kernels,
        output,
    } = args;
    let device = kvbench::device::select(&device)?;
    kvbench::model::fused::set_enabled(attention == "fused");
    if check_attention {
        let cases = kvbench::bench::attention_check::run(&device, repeats)?;
        print!("{}", kvbench::bench::attention_check::render(&cases));
        kvbench_reports::write_atomic(&output, serde_json::to_string_pretty(&cases)?)?;
        let failed = cases.iter().filter(|c| !c.passed).count();
        anyhow::ensure!(failed == 0, "{failed} attention case(s) failed");
        return Ok(());
    }
    if check_kernels {
        let cases = kvbench::bench::kernel_check::run(&device, repeats)?;
        print!("{}", kvbench::bench::kernel_check::render(&cases));
        kvbench_reports::write_atomic(&output, serde_json::to_string_pretty(&cases)?)?;
        let failed = cases.iter().filter(|c| !c.passed).count();
        anyhow::ensure!(failed == 0, "{failed} kernel case(s) failed");
        return Ok(());
    }
    let gpu = device.is_cuda();
    let opts = kvbench::bench::BenchOptions {
        prefill_lengths: lengths.unwrap_or(if gpu {
            vec![1024, 2048, 4096, 8192, 16384, 32768]
        } else {
            vec![512, 1024, 2048, 4096]
        }),
        decode_lengths: decode_lengths.unwrap_or(if gpu {
            vec![1024, 4096, 8192, 32768]
        } else {
            vec![512, 2048]
        }),
        sample_length: sample_length.unwrap_or(if gpu { 4096 } else { 1024 }),
        repeats: repeats.max(1),
        decode_steps: 32,
        attention_chunk,
        skip_compression,
        batch_sequences,
        batch_context: batch_context.unwrap_or(if gpu { 4096 } else { 1024 }),
        long_context,
        prefill_chunk,
        memory_context,
        memory_method,
        memory_ratio,
    };
    // A bad method name fails here, before the model is built.
    if opts.memory_context.is_some() {
        kvbench::bench::build_layerwise(&opts.memory_method)?;
    }
    let decoder = if model.starts_with(kvbench::model::synthetic::PREFIX) {
        let dtype = kvbench::device::compute_dtype(&device);
        eprintln!("building {model} with random weights ({dtype:?})");
        kvbench::model::synthetic::build(&model, dtype, &device, 0)?
    } else {
        let files = resolve(&model.parse()?, &FetchOptions::from_env())?;
        kvbench::loader::load(&files, &device)?.model
    };
    let report = kvbench::bench::run(&decoder, &device, &model, &opts)?;
    print!("{}", kvbench::bench::render(&report));
    kvbench_reports::write_atomic(&output, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", output.display()))?;
    eprintln!("wrote {}", output.display());
    Ok(())
}

//! `kvbench init [PATH]`: a commented starter experiment that validates as written.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// The starter experiment: small enough to run on a laptop CPU in minutes, every top-level field
/// shown with what it means.
pub const STARTER: &str = r#"# A kvbench experiment. Check it with `kvbench validate experiment.yaml`, look at the
# prompts with `kvbench show-prompt experiment.yaml`, run it with `kvbench run experiment.yaml`.
# Every field, method and dataset option: `kvbench methods NAME`, `kvbench datasets NAME`.

# Name of the run: recorded in every result line, and the default output directory runs/NAME.
experiment: starter

# A registry alias (`kvbench models`), hf:ORG/REPO[@REV] (safetensors checkpoint),
# hf:ORG/REPO[@REV]:FILE.gguf, or a local .gguf file or checkpoint directory.
model: smollm2-135m-instruct-q4_1

# auto (CUDA when present, else CPU), cpu, cuda or cuda:N; `--device` overrides it.
device: auto

# Seed of generated data and of methods that draw at random.
seed: 0

datasets:
  # Generated needle in a haystack: nothing to download.
  - name: niah
    lengths: [512, 1024]          # context lengths in the model's tokens
    depths: [0.1, 0.5, 0.9]       # where the needle sits, 0 = start, 1 = end
    samples_per_cell: 1
  # Your own data: one {"context": ..., "question": ..., "answers": [...]} per line.
  # - name: jsonl
  #   path: data/my_task.jsonl
  # Benchmarks downloaded from the Hugging Face hub (see `kvbench datasets`):
  # - name: ruler
  #   tasks: [niah_single_1, vt]
  #   lengths: [4096]

# Methods to compare. A bare name runs the method with its defaults; a map sets parameters;
# a list composes methods in order (`[snapkv, kivi]`: evict, then quantize).
methods:
  - full                          # the uncompressed baseline: runs once, every fidelity is against it
  - streaming_llm
  - method: snapkv
    window: 32
  # - [snapkv, kivi]

# Every method that takes a budget runs once per budget:
#   compression_ratio: fraction of context entries removed per layer and head (kvpress),
#   tokens: entries kept per layer and head (KVCache-Factory's max_capacity_prompt).
budgets:
  - compression_ratio: 0.5
  - compression_ratio: 0.75
  # - tokens: 256

# [false]: compress the context before the question is seen (default); [true]: compress context
# and question together, as kvpress's query-aware runs; [false, true]: both.
query_aware: [false]
"#;

/// Write the starter to `path` (never over an existing file unless `force`).
pub fn write(path: &Path, force: bool) -> Result<()> {
    if path.exists() && !force {
        bail!(
            "{} exists; choose another path or pass --force to overwrite it",
            path.display()
        );
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, STARTER).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_starter_validates() {
        let plan = kvbench::experiment::Plan::parse(super::STARTER, "starter.yaml".as_ref())
            .unwrap_or_else(|e| panic!("{e:#}"));
        // full once, streaming_llm and snapkv at two budgets each
        assert_eq!(plan.runs.len(), 5);
    }
}

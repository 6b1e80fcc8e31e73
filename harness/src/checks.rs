//! Pre-flight checks of an experiment, run by `kvbench validate` and by `kvbench run` before the
//! model is loaded: everything a run would later reject is an error naming the file and line
//! (the device name, duplicate grid cells, an empty `query_aware`, a grid of 0 runs, dataset
//! options, data files that do not exist, a local model file that is not a readable GGUF or
//! checkpoint), and degenerate settings are warnings.
//!
//! Relative data paths are resolved against the experiment file's directory (falling back to the
//! working directory, as earlier versions read them), and written back as absolute paths.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use kvbench_datasets::DatasetConfig;

use crate::experiment::{at, entry_line, line_of, MethodRun, RawExperiment};
use crate::fetch::{ModelFiles, ModelSpec};

/// A grid of more generations than this gets a warning.
pub const LARGE_GRID: usize = 10_000;

/// The checks before the grid is expanded: device, axes, datasets, data files, model file.
pub(crate) fn before_grid(raw: &RawExperiment, text: &str, path: &Path) -> Result<()> {
    if let Some(d) = &raw.device {
        check_device_name(d).map_err(|e| {
            anyhow::anyhow!(
                "{}: field `device`: {e}",
                at(path, line_of(text, "device:"))
            )
        })?;
    }
    if raw.query_aware.is_empty() {
        bail!(
            "{}: field `query_aware` is empty, so no compressed run would be made; write \
             `[false]` (the default), `[true]` or `[false, true]`",
            at(path, line_of(text, "query_aware"))
        );
    }
    if let Some(q) = duplicate(&raw.query_aware) {
        bail!(
            "{}: field `query_aware` lists {q} twice",
            at(path, line_of(text, "query_aware"))
        );
    }
    if let Some(b) = duplicate(&raw.budgets) {
        bail!(
            "{}: field `budgets` lists {} twice: the same grid cell would run twice",
            at(path, line_of(text, "budgets:")),
            b.label()
        );
    }
    for (j, m) in raw.methods.iter().enumerate() {
        if raw.methods[..j].contains(m) {
            bail!(
                "{}: methods entry {} repeats an earlier entry ({}) with the same parameters: \
                 the same grid cells would run twice",
                at(path, entry_line(text, j)),
                j + 1,
                m.build().name()
            );
        }
    }
    for d in &raw.datasets {
        if let DatasetConfig::Niah(c) = d {
            c.validate().map_err(|e| {
                anyhow::anyhow!(
                    "{}: dataset `niah`: {e}",
                    at(path, line_of(text, "name: niah"))
                )
            })?;
        }
        // No floating default: the parquet export needs its revision written.
        if let DatasetConfig::Longbench(c) = d {
            c.check_pinned().map_err(|e| {
                let line = line_of(text, "source: parquet").or(line_of(text, "name: longbench"));
                anyhow::anyhow!(
                    "{}: dataset `longbench`, field `revision`: {e}",
                    at(path, line)
                )
            })?;
        }
    }
    Ok(())
}

/// The checks that read the file system, for an experiment loaded from `path`: data paths
/// (resolved against the file's directory, else the working directory, and made absolute) and a
/// local model's header.
pub(crate) fn files(
    raw: &mut RawExperiment,
    model: &ModelSpec,
    text: &str,
    path: &Path,
) -> Result<()> {
    let base = path.parent().unwrap_or(Path::new(""));
    for d in raw.datasets.iter_mut() {
        let name = d.name();
        let here = at(path, line_of(text, &format!("name: {name}")));
        for p in data_paths(d) {
            *p = resolve_data_path(p, base)
                .map_err(|e| anyhow::anyhow!("{here}: dataset `{name}`: {e}"))?;
        }
    }
    if let ModelSpec::Local(p) = model {
        check_local_model(p).map_err(|e| {
            anyhow::anyhow!("{}: field `model`: {e}", at(path, line_of(text, "model:")))
        })?;
    }
    Ok(())
}

/// The checks of the expanded grid: 0 runs is an error; degenerate settings are warnings
/// (returned, each starting with `warning: `).
pub(crate) fn grid(
    raw: &RawExperiment,
    runs: &[MethodRun],
    text: &str,
    path: &Path,
) -> Result<Vec<String>> {
    if runs.is_empty() {
        bail!(
            "{}: the grid has 0 runs (datasets x methods x budgets x query_aware); nothing would \
             be measured",
            at(path, line_of(text, "methods:"))
        );
    }
    let mut warnings = Vec::new();
    for d in &raw.datasets {
        let here = at(path, line_of(text, &format!("name: {}", d.name())));
        for f in d.floating_revisions() {
            warnings.push(format!("warning: {here}: dataset `{}`: {f}", d.name()));
        }
    }
    // The shortest context the experiment states (generated datasets' `lengths`).
    let shortest = raw
        .datasets
        .iter()
        .filter_map(|d| match d {
            DatasetConfig::Niah(c) => c.lengths.iter().min().copied(),
            DatasetConfig::Ruler(c) => c.lengths.iter().min().copied(),
            _ => None,
        })
        .min();
    if let Some(context) = shortest {
        for b in &raw.budgets {
            if let kvbench_methods::Budget::Tokens(t) = b {
                if *t >= context {
                    warnings.push(format!(
                        "warning: {}: budget `tokens: {t}` is at or above the shortest context \
                         ({context} tokens): nothing is evicted there",
                        at(path, line_of(text, "tokens:"))
                    ));
                }
            }
        }
        for (i, m) in raw.methods.iter().enumerate() {
            for part in m.parts() {
                let method = part.build();
                let name = method.name().to_string();
                if !matches!(name.as_str(), "kivi" | "quant") {
                    continue;
                }
                let residual = method.params().get("residual").and_then(|r| r.as_u64());
                if let Some(r) = residual.filter(|&r| r as usize >= context) {
                    warnings.push(format!(
                        "warning: {}: method `{name}`: residual {r} covers the whole shortest \
                         context ({context} tokens): nothing is quantized there, yet it is \
                         reported as `{name}`",
                        at(path, entry_line(text, i))
                    ));
                }
            }
        }
    }
    if let Some(samples) = sample_count(raw) {
        let generations = samples.saturating_mul(runs.len());
        if generations > LARGE_GRID {
            warnings.push(format!(
                "warning: {}: the grid is large: {samples} samples x {} runs = {generations} \
                 generations, {}; consider `--limit` or fewer budgets",
                path.display(),
                runs.len(),
                time_estimate(generations, raw.device.as_deref())
            ));
        }
    }
    Ok(warnings)
}

/// Seconds per generation at SmolLM2-135M's speed, as measured: the quickstart (36 generations
/// at 0.5k-1k tokens) takes ~2 minutes on two CPU cores; the GPU sweep (756 generations at 1k-8k
/// tokens) takes 251 s on one H200 (`docs/measurements/h200/issue20.md`).
const CPU_S_PER_GENERATION: f64 = 3.3;
const GPU_S_PER_GENERATION: f64 = 0.33;

/// A rough time for `generations` on the experiment's device (both kinds when it names none),
/// at the smallest model's measured speed: a floor, which the message says.
fn time_estimate(generations: usize, device: Option<&str>) -> String {
    let at = |s_per: f64| {
        crate::run::duration(std::time::Duration::from_secs_f64(
            generations as f64 * s_per,
        ))
    };
    let kind = device.map(|d| d.trim().to_ascii_lowercase());
    let estimate = match kind.as_deref() {
        Some("cpu") => format!("about {} on a CPU", at(CPU_S_PER_GENERATION)),
        Some(d) if d.starts_with("cuda") => {
            format!("about {} on one GPU", at(GPU_S_PER_GENERATION))
        }
        _ => format!(
            "about {} on one GPU or {} on a CPU",
            at(GPU_S_PER_GENERATION),
            at(CPU_S_PER_GENERATION)
        ),
    };
    format!(
        "{estimate} at SmolLM2-135M's measured speed (larger models and longer contexts take \
         proportionally longer)"
    )
}

fn duplicate<T: PartialEq>(items: &[T]) -> Option<&T> {
    items
        .iter()
        .enumerate()
        .find(|(i, x)| items[..*i].contains(x))
        .map(|(_, x)| x)
}

/// `auto`, `cpu`, `cuda` or `cuda:N` (whether the device exists is checked when it is opened).
pub fn check_device_name(spec: &str) -> Result<(), String> {
    match spec.trim() {
        "auto" | "cpu" | "cuda" => Ok(()),
        s if s
            .strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<usize>().is_ok()) =>
        {
            Ok(())
        }
        other => Err(format!(
            "`{other}` is not a device; expected auto, cpu, cuda or cuda:N"
        )),
    }
}

/// The local paths a dataset reads, to resolve and check.
fn data_paths(d: &mut DatasetConfig) -> Vec<&mut PathBuf> {
    use kvbench_datasets::DataSource;
    fn source(s: &mut DataSource) -> Option<&mut PathBuf> {
        match s {
            DataSource::Path(p) => Some(p),
            _ => None,
        }
    }
    match d {
        DatasetConfig::Niah(c) => match &mut c.haystack {
            kvbench_datasets::needle::Haystack::File { path } => vec![path],
            _ => Vec::new(),
        },
        DatasetConfig::Jsonl(c) => vec![&mut c.path],
        DatasetConfig::Longbench(c) => source(&mut c.source).into_iter().collect(),
        DatasetConfig::LongbenchV2(c) => source(&mut c.source).into_iter().collect(),
        DatasetConfig::Scbench(c) => source(&mut c.source).into_iter().collect(),
        DatasetConfig::Ruler(c) => [&mut c.essays, &mut c.words, &mut c.squad, &mut c.hotpotqa]
            .into_iter()
            .filter_map(|f| match f {
                Some(kvbench_datasets::ruler::InputFile::Path(p)) => Some(p),
                _ => None,
            })
            .collect(),
    }
}

/// A relative path against the experiment's directory, else the working directory; an error
/// naming both places when neither has it.
fn resolve_data_path(p: &Path, base: &Path) -> Result<PathBuf, String> {
    let mut tried = Vec::new();
    let candidates: Vec<PathBuf> = if p.is_absolute() {
        vec![p.to_path_buf()]
    } else {
        vec![base.join(p), p.to_path_buf()]
    };
    for c in candidates {
        if c.exists() {
            return Ok(std::path::absolute(&c).unwrap_or(c));
        }
        tried.push(c.display().to_string());
    }
    Err(format!(
        "data path {} does not exist (looked at {})",
        p.display(),
        tried.join(" and ")
    ))
}

/// A local model is a readable GGUF file (its magic) or a checkpoint directory whose
/// `config.json` is JSON and whose safetensors files start with a readable header.
pub fn check_local_model(p: &Path) -> Result<(), String> {
    let files = crate::fetch::resolve(
        &ModelSpec::Local(p.to_path_buf()),
        &crate::fetch::FetchOptions::from_env(),
    )
    .map_err(|e| e.to_string())?;
    let read_head = |f: &Path, n: usize| -> Result<Vec<u8>, String> {
        let mut buf = vec![0u8; n];
        std::fs::File::open(f)
            .and_then(|mut h| h.read_exact(&mut buf))
            .map_err(|e| format!("reading {}: {e}", f.display()))?;
        Ok(buf)
    };
    match files {
        // Only a local path is checked here, never a synthetic model.
        ModelFiles::Synthetic { .. } => {}
        ModelFiles::Gguf { path } => {
            if read_head(&path, 4)? != b"GGUF" {
                return Err(format!(
                    "{} is not a GGUF file (it does not start with the GGUF magic)",
                    path.display()
                ));
            }
        }
        ModelFiles::HfCheckpoint {
            config, weights, ..
        } => {
            let text =
                std::fs::read(&config).map_err(|e| format!("reading {}: {e}", config.display()))?;
            serde_json::from_slice::<serde_json::Value>(&text)
                .map_err(|e| format!("{} is not JSON: {e}", config.display()))?;
            for w in &weights {
                let len = u64::from_le_bytes(read_head(w, 8)?.try_into().expect("8 bytes"));
                let bad = || format!("{} is not a safetensors file (bad header)", w.display());
                if len == 0 || len > 100 << 20 {
                    return Err(bad());
                }
                let head = read_head(w, 8 + len as usize).map_err(|_| bad())?;
                serde_json::from_slice::<serde_json::Value>(&head[8..]).map_err(|_| bad())?;
            }
        }
    }
    Ok(())
}

/// The model's configuration read from its files without loading weights: the GGUF header
/// (metadata and tensor directory) or `config.json`.
pub fn model_config(files: &ModelFiles) -> Result<crate::model::ModelConfig> {
    use anyhow::Context;
    match files {
        ModelFiles::Gguf { path } => {
            let mut f =
                std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
            let content = candle_core::quantized::gguf_file::Content::read(&mut f)
                .with_context(|| format!("reading the GGUF header of {}", path.display()))?;
            crate::model::ModelConfig::from_gguf(&content, &path.display().to_string())
        }
        ModelFiles::HfCheckpoint { config, .. } => crate::model::hf_config::from_hf_config(config),
        ModelFiles::Synthetic { shape, .. } => {
            crate::model::synthetic::config(&format!("{}{shape}", crate::model::synthetic::PREFIX))
        }
    }
}

/// The methods' parameters against the model's shape (`per_layer`'s ratio count, head_dim
/// divisors, ...), from its files, before the weights load. Counts the layers methods compress:
/// sliding-window layers are never compressed (all of them when every layer slides).
pub fn model_shape(plan: &crate::experiment::Plan, files: &ModelFiles) -> Result<()> {
    let c = model_config(files)?;
    let compressible = match c.layer_windows.iter().filter(|w| w.is_none()).count() {
        0 => c.n_layers,
        n => n,
    };
    plan.check_model_shape(compressible, c.n_kv_heads, c.head_dim)
}

/// The number of samples, where the experiment states it (generated datasets, or `limit`).
fn sample_count(raw: &RawExperiment) -> Option<usize> {
    let mut total = 0usize;
    for d in &raw.datasets {
        total += match d {
            DatasetConfig::Niah(c) => c.lengths.len() * c.depths.len() * c.samples_per_cell,
            DatasetConfig::Ruler(c) => c.tasks.len().max(1) * c.lengths.len() * c.samples,
            DatasetConfig::Jsonl(c) => c.limit?,
            DatasetConfig::Longbench(c) => c.limit? * c.tasks.len().max(1),
            DatasetConfig::LongbenchV2(c) => c.limit?,
            DatasetConfig::Scbench(c) => c.limit? * c.tasks.len().max(1),
        };
    }
    Some(total)
}

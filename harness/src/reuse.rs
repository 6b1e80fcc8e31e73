//! The experiment's `reuse:` block: contexts whose cache was stored (the KV store) are reused,
//! and the first token is reached in one of three measured ways (`ttft_mode`).
//!
//! ```yaml
//! reuse:
//!   ttft_mode: [compute, load, cake]   # one mode or a list: a grid axis
//!   chunk_tokens: 512                  # Cake's compute and load chunk
//!   bandwidth_gbps: [1, 4, 16, null]   # read cap in GB/s (10^9 B/s); null: uncapped
//!   store: memory                      # or a directory
//!   prime: true                        # store every context before measuring it
//! ```
//!
//! The first request of a context computes its cache (prefill, then the method's compression)
//! and stores it in its stored form; later requests of the same context, method and budget
//! reach it by their mode. With `prime: true` every context is stored first (untimed), so every
//! request is measured in its mode, which is what the Cake study needs; without it, reuse needs
//! datasets whose requests share contexts (SCBench's multi-request mode, JSONL files).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use kvbench_datasets::DatasetConfig;
use serde::{Deserialize, Serialize};

use crate::experiment::{at, line_of, RawExperiment};

/// How a request with a stored context gets its cache before the question.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TtftMode {
    /// Prefill from scratch (and compress), ignoring the store.
    Compute,
    /// Read every layer's stored entries and move them to the device.
    Load,
    /// Compute chunks from the front while a loader thread reads chunks from the back, until
    /// they meet (Jin et al., arXiv 2410.03065).
    Cake,
}

impl TtftMode {
    pub fn name(self) -> &'static str {
        match self {
            TtftMode::Compute => "compute",
            TtftMode::Load => "load",
            TtftMode::Cake => "cake",
        }
    }
}

/// One value or a list of them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    pub fn to_vec(&self) -> Vec<T> {
        match self {
            OneOrMany::One(x) => vec![x.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReuseConfig {
    /// `compute`, `load`, `cake` or a list of them (read as text, so that an unknown mode is
    /// named with the valid ones).
    #[serde(default = "default_modes")]
    pub ttft_mode: OneOrMany<String>,
    #[serde(default = "default_chunk_tokens")]
    pub chunk_tokens: usize,
    #[serde(default = "uncapped")]
    pub bandwidth_gbps: OneOrMany<Option<f64>>,
    /// `memory`, or a directory for the store's files.
    #[serde(default = "memory")]
    pub store: String,
    #[serde(default)]
    pub prime: bool,
    /// Layers per safetensors file (default: one file per context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers_per_file: Option<usize>,
}

fn default_modes() -> OneOrMany<String> {
    OneOrMany::One("load".into())
}
fn default_chunk_tokens() -> usize {
    512
}
fn uncapped() -> OneOrMany<Option<f64>> {
    OneOrMany::One(None)
}
fn memory() -> String {
    "memory".into()
}

/// `reuse: true` (the defaults: the first request of a context computes and stores, later ones
/// load, in host memory), `reuse: false` (no reuse) or a `reuse:` block.
pub(crate) fn deserialize_option<'de, D>(d: D) -> std::result::Result<Option<ReuseConfig>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum FlagOrBlock {
        Flag(bool),
        Block(ReuseConfig),
    }
    Ok(match Option::<FlagOrBlock>::deserialize(d)? {
        None | Some(FlagOrBlock::Flag(false)) => None,
        Some(FlagOrBlock::Flag(true)) => Some(ReuseConfig::default()),
        Some(FlagOrBlock::Block(c)) => Some(c),
    })
}

impl Default for ReuseConfig {
    fn default() -> Self {
        Self {
            ttft_mode: default_modes(),
            chunk_tokens: default_chunk_tokens(),
            bandwidth_gbps: uncapped(),
            store: memory(),
            prime: false,
            layers_per_file: None,
        }
    }
}

/// How one grid cell reaches its first token.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Access {
    pub ttft_mode: TtftMode,
    /// The read cap for `load` and `cake`; `None` for uncapped (and for `compute`).
    pub bandwidth_gbps: Option<f64>,
}

impl ReuseConfig {
    /// The modes asked for, or the first unknown one with the valid names.
    pub fn modes(&self) -> std::result::Result<Vec<TtftMode>, String> {
        self.ttft_mode
            .to_vec()
            .iter()
            .map(|m| match m.as_str() {
                "compute" => Ok(TtftMode::Compute),
                "load" => Ok(TtftMode::Load),
                "cake" => Ok(TtftMode::Cake),
                other => Err(format!(
                    "unknown ttft_mode `{other}`; valid modes: compute, load, cake"
                )),
            })
            .collect()
    }

    /// The grid's access axis: `compute` once, `load` and `cake` once per bandwidth.
    pub fn accesses(&self) -> Vec<Access> {
        let mut out = Vec::new();
        for mode in self.modes().unwrap_or_default() {
            let caps = match mode {
                TtftMode::Compute => vec![None],
                _ => self.bandwidth_gbps.to_vec(),
            };
            for bandwidth_gbps in caps {
                out.push(Access {
                    ttft_mode: mode,
                    bandwidth_gbps,
                });
            }
        }
        out
    }

    /// The store's directory (`None` for host memory), relative to `base` when relative.
    pub fn directory(&self, base: &Path) -> Option<PathBuf> {
        (self.store != "memory").then(|| base.join(&self.store))
    }
}

/// Whether requests of this dataset can share a context (so that a later one finds the first
/// one's cache stored).
fn shares_contexts(d: &DatasetConfig) -> bool {
    match d {
        DatasetConfig::Scbench(c) => c.mode == kvbench_datasets::ScbenchMode::MultiRequest,
        DatasetConfig::Jsonl(_) => true,
        _ => false,
    }
}

/// Every bad `reuse:` setting, as one error naming the file and line.
pub(crate) fn check(raw: &RawExperiment, text: &str, path: &Path) -> Result<()> {
    let Some(r) = &raw.reuse else {
        return Ok(());
    };
    let modes = r.modes().map_err(|e| {
        anyhow::anyhow!(
            "{}: field `reuse.ttft_mode`: {e}",
            at(path, line_of(text, "ttft_mode"))
        )
    })?;
    if modes.is_empty() {
        bail!(
            "{}: field `reuse.ttft_mode` is empty; write compute, load, cake or a list of them",
            at(path, line_of(text, "ttft_mode"))
        );
    }
    if let Some(m) = modes
        .iter()
        .enumerate()
        .find(|(i, m)| modes[..*i].contains(m))
    {
        bail!(
            "{}: field `reuse.ttft_mode` lists {} twice",
            at(path, line_of(text, "ttft_mode")),
            m.1.name()
        );
    }
    if r.chunk_tokens == 0 {
        bail!(
            "{}: field `reuse.chunk_tokens` must be at least 1",
            at(path, line_of(text, "chunk_tokens"))
        );
    }
    let caps = r.bandwidth_gbps.to_vec();
    if caps.is_empty() {
        bail!(
            "{}: field `reuse.bandwidth_gbps` is empty; write a cap in GB/s or null for none",
            at(path, line_of(text, "bandwidth_gbps"))
        );
    }
    for c in caps.iter().flatten() {
        if !c.is_finite() || *c <= 0.0 {
            bail!(
                "{}: field `reuse.bandwidth_gbps`: {c} is not a positive rate in GB/s (write null \
                 for no cap)",
                at(path, line_of(text, "bandwidth_gbps"))
            );
        }
    }
    if r.layers_per_file == Some(0) {
        bail!(
            "{}: field `reuse.layers_per_file` must be at least 1",
            at(path, line_of(text, "layers_per_file"))
        );
    }
    if !r.prime {
        if let Some(d) = raw.datasets.iter().find(|d| !shares_contexts(d)) {
            bail!(
                "{}: `reuse` without `prime: true` needs datasets whose requests share a context \
                 (scbench with `mode: multi_request`, jsonl); dataset `{}` has none, so every \
                 request would compute. Set `reuse.prime: true` to store each context before \
                 measuring it",
                at(path, line_of(text, "reuse:")),
                d.name()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::experiment::Plan;
    use std::path::Path;

    const STUDY: &str = "experiment: t
model: smollm2-135m-instruct-q4_1
datasets:
  - name: niah
    lengths: [200]
    depths: [0.5]
methods:
  - method: full
reuse:
  ttft_mode: [compute, load, cake]
  bandwidth_gbps: [1, null]
  prime: true
";

    fn err(text: &str) -> String {
        format!("{:#}", Plan::parse(text, Path::new("c.yaml")).unwrap_err())
    }

    #[test]
    fn the_access_axis_is_compute_once_and_load_and_cake_per_bandwidth() {
        let plan = Plan::parse(STUDY, Path::new("c.yaml")).unwrap();
        let cells: Vec<_> = plan
            .runs
            .iter()
            .map(|r| {
                let a = r.access.unwrap();
                (a.ttft_mode.name(), a.bandwidth_gbps)
            })
            .collect();
        assert_eq!(
            cells,
            vec![
                ("compute", None),
                ("load", Some(1.0)),
                ("load", None),
                ("cake", Some(1.0)),
                ("cake", None)
            ]
        );
    }

    #[test]
    fn bad_reuse_settings_are_one_error_with_file_and_line() {
        let e = err(&STUDY.replace("[compute, load, cake]", "[compute, fetch]"));
        assert!(
            e.contains("c.yaml:10") && e.contains("`fetch`") && e.contains("cake"),
            "{e}"
        );
        let e = err(&STUDY.replace("[1, null]", "[0]"));
        assert!(e.contains("c.yaml:11") && e.contains("positive"), "{e}");
        let e = err(&STUDY.replace("[1, null]", "-2"));
        assert!(e.contains("c.yaml:11") && e.contains("-2"), "{e}");
        let e = err(&STUDY.replace("  prime: true\n", ""));
        assert!(
            e.contains("c.yaml:9") && e.contains("niah") && e.contains("prime"),
            "{e}"
        );
        let e = err(&STUDY.replace("  prime: true\n", "  chunk_tokens: 0\n"));
        assert!(e.contains("c.yaml:12") && e.contains("chunk_tokens"), "{e}");
    }
}

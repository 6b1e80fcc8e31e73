//! `HubRepo` against the loopback server in the hub's URL layout: no network is used.

use kvbench_hub::{HubError, HubOptions, HubRepo};
use kvbench_testkit::{dead_endpoint, sha256_hex, Route, Server, TempDir, COMMIT};

fn opts(cache: &std::path::Path, endpoint: &str) -> HubOptions {
    HubOptions {
        cache_dir: cache.to_path_buf(),
        endpoint: endpoint.to_string(),
        progress: false,
    }
}

#[test]
fn model_and_dataset_files_use_their_url_layouts_and_the_cache() {
    let mut s = Server::start();
    let dir = TempDir::new("hub", "layouts");
    let weights = vec![3u8; 4096];
    s.hub_file("org/m", "main", "w.safetensors", &weights, true);
    s.hub_file("datasets/org/d", "main", "data.json", b"[1]", false);
    let o = opts(&dir.0, &s.base);

    let model = HubRepo::model("org/m", "main", &o).unwrap();
    let w = model.get("w.safetensors").unwrap();
    assert_eq!(std::fs::read(&w).unwrap(), weights);
    assert!(
        w.starts_with(dir.0.join("hub/models--org--m/snapshots").join(COMMIT)),
        "{w:?}"
    );
    // the LFS blob was hashed once and marked
    assert!(dir
        .0
        .join("hub-verified")
        .join(sha256_hex(&weights))
        .exists());
    let data = HubRepo::dataset("org/d", "main", &o).unwrap();
    assert_eq!(
        std::fs::read(data.get("data.json").unwrap()).unwrap(),
        b"[1]"
    );
    assert!(s
        .requests()
        .iter()
        .any(|r| r.starts_with("GET /datasets/org/d/resolve/main/data.json")));
    assert!(s
        .requests()
        .iter()
        .any(|r| r.starts_with("GET /org/m/resolve/main/w.safetensors")));

    // optional: a 404 is None, a present file is Some
    assert_eq!(model.optional("absent.json").unwrap(), None);
    assert_eq!(model.optional("w.safetensors").unwrap(), Some(w.clone()));

    // with the hub gone: required files from the cache, optional ones None
    s.stop();
    let gone = HubRepo::model("org/m", "main", &opts(&dir.0, &dead_endpoint())).unwrap();
    assert_eq!(gone.get("w.safetensors").unwrap(), w);
    assert_eq!(gone.optional("generation_config.json").unwrap(), None);
    let e = gone.get("other.json").unwrap_err();
    assert!(e.is_unreachable() && !e.is_not_found(), "{e:?}");
}

#[test]
fn a_missing_file_is_not_found_and_names_its_url() {
    let s = Server::start();
    let dir = TempDir::new("hub", "missing");
    let repo = HubRepo::dataset("org/d", "refs/convert/parquet", &opts(&dir.0, &s.base)).unwrap();
    let e = repo.get("t/test/0000.parquet").unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(
            "downloading t/test/0000.parquet of dataset org/d at revision refs/convert/parquet"
        ) && msg.contains("/datasets/org/d/resolve/refs%2Fconvert%2Fparquet/t/test/0000.parquet"),
        "{msg}"
    );
}

#[test]
fn an_lfs_file_with_the_wrong_hash_is_removed() {
    let s = Server::start();
    let dir = TempDir::new("hub", "badhash");
    let wrong = sha256_hex(b"something else");
    s.route(
        "/org/bad/resolve/main/m.gguf",
        Route::ok(vec![1u8; 1000])
            .header("x-repo-commit", COMMIT)
            .header("x-linked-etag", &format!("\"{wrong}\"")),
    );
    let repo = HubRepo::model("org/bad", "main", &opts(&dir.0, &s.base)).unwrap();
    let e = repo.get("m.gguf").unwrap_err();
    let HubError::HashMismatch {
        expected,
        actual,
        url,
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(expected, &wrong);
    assert_eq!(actual, &sha256_hex(&[1u8; 1000]));
    assert!(url.ends_with("/org/bad/resolve/main/m.gguf"), "{url}");
    let repo_dir = dir.0.join("hub/models--org--bad");
    assert!(!repo_dir.join("blobs").join(&wrong).exists());
    assert!(!repo_dir
        .join("snapshots")
        .join(COMMIT)
        .join("m.gguf")
        .exists());
    assert!(!dir.0.join("hub-verified").join(&wrong).exists());
}

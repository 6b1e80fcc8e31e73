//! Dataset downloads against a local HTTP/1.1 server in the hub's URL layout
//! (`/datasets/{repo}/resolve/{revision}/{path}`): no network is used.

use std::io::Write;
use std::path::Path;

use kvbench_datasets::hub::{dataset_file, HubError, HubOptions};
use kvbench_datasets::{
    DataSource, LoadOptions, LongBenchConfig, ScbenchConfig, ScbenchMode, WhitespaceTokens,
};
use kvbench_testkit::{dead_endpoint, sha256_hex, Route, Server, TempDir, COMMIT};

/// Serves `body` as `path` of dataset `repo` at `revision` (already URL-escaped), in the hub's
/// URL layout; `lfs` gives it a sha256 etag.
fn dataset(s: &Server, repo: &str, revision: &str, path: &str, body: &[u8], lfs: bool) -> Route {
    s.hub_file(&format!("datasets/{repo}"), revision, path, body, lfs)
}

fn opts(cache: &Path, endpoint: &str) -> LoadOptions {
    LoadOptions {
        hub: HubOptions {
            cache_dir: cache.to_path_buf(),
            endpoint: endpoint.to_string(),
            progress: false,
        },
    }
}

fn zip_of(members: &[(&str, &str)]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let o = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, text) in members {
            z.start_file(*name, o).unwrap();
            z.write_all(text.as_bytes()).unwrap();
        }
        z.finish().unwrap();
    }
    buf.into_inner()
}

/// Deterministic bytes that do not compress away.
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn longbench_data_zip_from_the_hub_then_from_the_cache() {
    let mut s = Server::start();
    let dir = TempDir::new("datasets-hub", "zip");
    let records = [
        r#"{"input": "Who?", "context": "Ann wrote it.", "answers": ["Ann"], "length": 3, "dataset": "hotpotqa", "language": "en", "all_classes": null, "_id": "h1"}"#,
        r#"{"input": "Who?", "context": "x"}"#,
    ];
    let zip = zip_of(&[
        ("data/hotpotqa.jsonl", &records.join("\n")),
        ("data/trec.jsonl", ""),
    ]);
    let pinned = kvbench_datasets::longbench::DEFAULT_REVISION;
    dataset(&s, "THUDM/LongBench", pinned, "data.zip", &zip, true);
    let mut c = LongBenchConfig::local("unused", &["hotpotqa"]);
    c.source = DataSource::Hub;
    let loaded = c.load(&WhitespaceTokens, &opts(&dir.0, &s.base)).unwrap();
    assert_eq!(loaded.samples.len(), 1);
    assert_eq!(loaded.samples[0].id, "h1");
    // the archive and the member read, each with its origin and sha256
    let files: Vec<(&str, &str, String, u64)> = loaded
        .files
        .iter()
        .map(|f| {
            assert_eq!(f.repo.as_deref(), Some("THUDM/LongBench"));
            assert_eq!(f.commit.as_deref(), Some(COMMIT));
            (
                f.name.as_str(),
                f.revision.as_deref().unwrap(),
                f.sha256.clone(),
                f.bytes,
            )
        })
        .collect();
    let member = records.join("\n");
    assert_eq!(
        files,
        [
            ("data.zip", pinned, sha256_hex(&zip), zip.len() as u64),
            (
                "data.zip/data/hotpotqa.jsonl",
                pinned,
                sha256_hex(member.as_bytes()),
                member.len() as u64
            ),
        ]
    );
    // the bad record names the archive member, the line and the field
    let e = loaded.errors[0].to_string();
    assert!(e.ends_with("data.zip/data/hotpotqa.jsonl line 2: field `answers` is missing; expected a list of strings"), "{e}");
    assert!(s.requests().iter().any(|r| r.starts_with(&format!(
        "GET /datasets/THUDM/LongBench/resolve/{pinned}/data.zip"
    ))));
    // again with the server gone: from the cache
    s.stop();
    let again = c
        .load(&WhitespaceTokens, &opts(&dir.0, &dead_endpoint()))
        .unwrap();
    assert_eq!(again, loaded);
}

#[test]
fn revision_with_a_slash_is_escaped() {
    let s = Server::start();
    let dir = TempDir::new("datasets-hub", "slash");
    let body = noise(5000);
    dataset(
        &s,
        "org/set",
        "refs%2Fconvert%2Fparquet",
        "task/test/0000.parquet",
        &body,
        true,
    );
    let o = opts(&dir.0, &s.base);
    let path = dataset_file(
        "org/set",
        "refs/convert/parquet",
        "task/test/0000.parquet",
        &o.hub,
    )
    .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert!(
        path.starts_with(dir.0.join("hub/datasets--org--set")),
        "{path:?}"
    );
    assert!(
        s.requests()
            .iter()
            .all(|r| r.starts_with("GET /datasets/org/set/resolve/refs%2Fconvert%2Fparquet/")),
        "{:?}",
        s.requests()
    );
    // the ref file for the slashed revision is in the cache: a second call needs no server
    let o2 = opts(&dir.0, &dead_endpoint());
    assert_eq!(
        dataset_file(
            "org/set",
            "refs/convert/parquet",
            "task/test/0000.parquet",
            &o2.hub
        )
        .unwrap(),
        path
    );
}

#[test]
fn a_download_cut_short_leaves_no_file_and_can_be_retried() {
    let s = Server::start();
    let dir = TempDir::new("datasets-hub", "cut");
    let body = noise(200_000);
    let mut route = dataset(&s, "org/cut", "main", "data/scbench_kv.jsonl", &body, true);
    route.cut_at = Some(60_000);
    s.route(
        "/datasets/org/cut/resolve/main/data/scbench_kv.jsonl",
        route.clone(),
    );
    let o = opts(&dir.0, &s.base);
    let e = dataset_file("org/cut", "main", "data/scbench_kv.jsonl", &o.hub).unwrap_err();
    assert!(matches!(e, HubError::Api { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("/datasets/org/cut/resolve/main/data/scbench_kv.jsonl"),
        "{e}"
    );
    let repo = dir.0.join("hub/datasets--org--cut");
    assert!(!repo
        .join("snapshots")
        .join(COMMIT)
        .join("data/scbench_kv.jsonl")
        .exists());
    let sha = sha256_hex(&body);
    assert!(!repo.join("blobs").join(&sha).exists(), "no complete blob");
    // the server recovers: the retry completes the file
    route.cut_at = None;
    s.route(
        "/datasets/org/cut/resolve/main/data/scbench_kv.jsonl",
        route,
    );
    let p = dataset_file("org/cut", "main", "data/scbench_kv.jsonl", &o.hub).unwrap();
    assert_eq!(std::fs::read(p).unwrap(), body);
}

#[test]
fn a_corrupt_lfs_file_is_removed() {
    let s = Server::start();
    let dir = TempDir::new("datasets-hub", "hash");
    let mut route = dataset(&s, "org/bad", "main", "data.json", b"[]", true);
    // announce the sha256 of other content
    let wrong = sha256_hex(b"something else");
    route.headers = vec![
        ("x-repo-commit".into(), COMMIT.into()),
        ("x-linked-etag".into(), format!("\"{wrong}\"")),
    ];
    s.route("/datasets/org/bad/resolve/main/data.json", route);
    let e = dataset_file("org/bad", "main", "data.json", &opts(&dir.0, &s.base).hub).unwrap_err();
    assert!(matches!(e, HubError::HashMismatch { .. }), "{e:?}");
    assert!(!dir
        .0
        .join("hub/datasets--org--bad/blobs")
        .join(&wrong)
        .exists());
}

#[test]
fn scbench_jsonl_from_the_hub() {
    let s = Server::start();
    let dir = TempDir::new("datasets-hub", "scbench");
    let rec = r#"{"id": 0, "context": "{\"a\": \"1\"}", "multi_turns": [{"input": "Key: \"a\"", "answer": "1"}]}"#;
    let pinned = kvbench_datasets::scbench::DEFAULT_REVISION;
    dataset(
        &s,
        "microsoft/SCBench",
        pinned,
        "data/scbench_kv.jsonl",
        rec.as_bytes(),
        false,
    );
    let mut c = ScbenchConfig::local("unused", &["scbench_kv"], ScbenchMode::MultiRequest);
    c.source = DataSource::Hub;
    let loaded = c.load(&WhitespaceTokens, &opts(&dir.0, &s.base)).unwrap();
    assert_eq!(loaded.samples.len(), 1);
    assert_eq!(loaded.samples[0].turns[0].question, "Key: \"a\"");
    let f = &loaded.files[0];
    assert_eq!(
        (f.name.as_str(), f.revision.as_deref(), f.bytes),
        ("data/scbench_kv.jsonl", Some(pinned), rec.len() as u64)
    );
    assert_eq!(f.sha256, sha256_hex(rec.as_bytes()));
    // `revision:` overrides the pin
    dataset(
        &s,
        "microsoft/SCBench",
        "main",
        "data/scbench_kv.jsonl",
        rec.as_bytes(),
        false,
    );
    let mut on_main = c.clone();
    on_main.revision = Some("main".into());
    let l = on_main
        .load(&WhitespaceTokens, &opts(&dir.0, &s.base))
        .unwrap();
    assert_eq!(l.files[0].revision.as_deref(), Some("main"));
    // a missing file names its URL
    let mut c2 = c.clone();
    c2.tasks = vec!["scbench_vt".into()];
    let e = c2
        .load(&WhitespaceTokens, &opts(&dir.0, &s.base))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!(
            "/datasets/microsoft/SCBench/resolve/{pinned}/data/scbench_vt.jsonl"
        )),
        "{e}"
    );
}

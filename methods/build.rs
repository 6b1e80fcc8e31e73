//! With `--features cuda`, compiles the methods' own kernels (`kernels/*.cu`) to PTX with `nvcc`
//! for `CUDA_COMPUTE_CAP` (default 90), loaded at run time (`kernels`). CPU builds
//! never need nvcc.

include!("kernels/compile.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        compile_kernel("select");
        compile_kernel("compress");
    }
}

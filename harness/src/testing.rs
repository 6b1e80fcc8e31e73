//! Helpers shared by the integration tests: where the real test model and the shared data live.

use std::path::PathBuf;

/// The SmolLM2-135M-Instruct Q4_1 GGUF, fetched through the registry alias (downloaded once into
/// the kvbench cache, `$KVBENCH_CACHE` or the user cache dir, and verified by sha256).
pub fn smollm2_gguf() -> PathBuf {
    let mut opts = crate::fetch::FetchOptions::from_env();
    opts.progress = false;
    let spec = crate::fetch::ModelSpec::Alias("smollm2-135m-instruct-q4_1".to_string());
    match crate::fetch::resolve(&spec, &opts) {
        Ok(crate::fetch::ModelFiles::Gguf { path }) => path,
        Ok(other) => panic!("smollm2-135m-instruct-q4_1 resolved to {other:?}, not a GGUF"),
        Err(e) => panic!("cannot fetch the test model: {e}"),
    }
}

/// `../shared/data` relative to the workspace root (tests run with the crate dir as cwd).
pub fn shared_data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")
}

/// The Gemma 3 270M Q4_K_M GGUF (SentencePiece vocabulary), fetched through the registry alias
/// like [`smollm2_gguf`].
pub fn gemma3_gguf() -> PathBuf {
    let mut opts = crate::fetch::FetchOptions::from_env();
    opts.progress = false;
    let spec = crate::fetch::ModelSpec::Alias("gemma3-270m-q4_k_m".to_string());
    match crate::fetch::resolve(&spec, &opts) {
        Ok(crate::fetch::ModelFiles::Gguf { path }) => path,
        Ok(other) => panic!("gemma3-270m-q4_k_m resolved to {other:?}, not a GGUF"),
        Err(e) => panic!("cannot fetch the Gemma 3 test model: {e}"),
    }
}

/// Run `plan` on the CPU from scratch into `output` (no progress bar; failed records stay
/// failed), as the experiment-level integration tests do.
pub fn run_fresh(
    plan: &crate::experiment::Plan,
    loaded: &crate::loader::LoadedModel,
    output: &std::path::Path,
) -> crate::run::RunOutcome {
    let options = crate::run::RunOptions {
        output: output.to_path_buf(),
        limit: None,
        fresh: true,
        progress: false,
        keep_failed: false,
    };
    crate::run::run(plan, loaded, &candle_core::Device::Cpu, &options)
        .unwrap_or_else(|e| panic!("running {}: {e:#}", plan.raw.experiment))
}

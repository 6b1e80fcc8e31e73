//! `think` scores channels with its own `window` of queries (issue 19 item 2): the shared prefill
//! records the most window queries any method of the experiment asks for, so `think` beside
//! `snapkv` (window 64) sees 64 recorded queries where alone it sees its 32. Its records must not
//! depend on its neighbours: the same prediction, bytes, storage and first-token KL either way.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kvbench_reports::{read_results, Record};

const HEADER: &str = "experiment: think-window
model: smollm2-135m-instruct-q4_1
datasets:
  - name: niah
    lengths: [512]
    depths: [0.5]
    samples_per_cell: 1
budgets:
  - compression_ratio: 0.5
methods:
  - method: full
  - method: think
    key_channel_ratio: 0.5
";

fn think_record(dir: &Path, name: &str, methods: &str) -> Record {
    let exp = dir.join(format!("{name}.yaml"));
    std::fs::write(&exp, format!("{HEADER}{methods}")).unwrap();
    let out: PathBuf = dir.join(name);
    let status = Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .args([
            "run",
            exp.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--device",
            "cpu",
        ])
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{name}");
    read_results(&out.join("results.jsonl"))
        .unwrap()
        .into_iter()
        .find(|r| r.method == "think")
        .expect("a think record")
}

#[test]
fn think_records_do_not_depend_on_the_other_methods() {
    kvbench::testing::smollm2_gguf();
    let dir = std::env::temp_dir().join(format!("kvbench-think-window-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let alone = think_record(&dir, "alone", "");
    let beside = think_record(&dir, "beside", "  - method: snapkv\n    window: 64\n");
    assert_eq!(alone.prediction, beside.prediction);
    assert_eq!(alone.kv_bytes, beside.kv_bytes);
    assert_eq!(alone.kv_storage, beside.kv_storage);
    assert!(
        (alone.kl_first_token - beside.kl_first_token).abs() <= 1e-9,
        "first-token KL alone {} beside snapkv {}",
        alone.kl_first_token,
        beside.kl_first_token
    );
    let _ = std::fs::remove_dir_all(&dir);
}

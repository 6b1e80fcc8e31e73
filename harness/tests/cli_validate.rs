//! `kvbench validate` rejects bad method parameters before any model or dataset work, naming the
//! experiment file, the line of the method's entry, the method, the field and the allowed values.

use std::process::Command;

fn validate(name: &str, yaml: &str) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!("kvbench-cli-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .args(["validate", path.to_str().unwrap()])
        // No network: a validation that reached the hub would fail differently.
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap()
}

const YAML: &str = "experiment: t
model: smollm2-135m-instruct-q4_1
datasets:
  - name: niah
    lengths: [64]
    depths: [0.5]
methods:
  - method: full
  - method: kivi
    bits: 3
budgets:
  - compression_ratio: 0.5
";

#[test]
fn kivi_bits_3_fails_naming_file_line_method_field_and_allowed_values() {
    let o = validate("kivi3.yaml", YAML);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "accepted:\n{err}");
    for want in ["kivi3.yaml:9", "`kivi`", "`bits`", "2 or 4"] {
        assert!(err.contains(want), "{want} missing:\n{err}");
    }
    // The same file with an allowed value validates.
    let o = validate("kivi4.yaml", &YAML.replace("bits: 3", "bits: 4"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

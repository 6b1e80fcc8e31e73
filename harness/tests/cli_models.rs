//! `kvbench models` lists every registry alias, every supported family and every synthetic shape,
//! as text and JSON.

use std::process::Command;

#[test]
fn models_lists_aliases_and_families() {
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_kvbench"))
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let text = run(&["models"]);
    for a in kvbench::fetch::aliases() {
        assert!(text.contains(a.name), "{} missing:\n{text}", a.name);
    }
    for (types, _) in kvbench::model::supported_families() {
        assert!(text.contains(types), "{types} missing:\n{text}");
    }
    for (name, _) in kvbench::model::synthetic::shapes() {
        assert!(
            text.contains(&format!("synthetic:{name}")),
            "{name} missing:\n{text}"
        );
    }
    // `kvbench fetch` without a model prints the same listing.
    assert_eq!(run(&["fetch"]), text);
    let json: serde_json::Value = serde_json::from_str(&run(&["models", "--json"])).unwrap();
    let names: Vec<&str> = json["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = kvbench::fetch::aliases().iter().map(|a| a.name).collect();
    assert_eq!(names, want);
    assert_eq!(
        json["families"].as_array().unwrap().len(),
        kvbench::model::supported_families().len()
    );
    assert_eq!(json["synthetic"][1]["name"], "synthetic:llama3-8b");
    assert!(json["aliases"][0]["sha256"].as_str().unwrap().len() == 64);
}

//! `kvbench datasets NAME`'s option lists (kvbench_datasets::options) agree with the config
//! structs: every option a struct serializes is listed, every listed option is accepted, the
//! listed defaults are the structs' own, and each example entry parses.

use kvbench_datasets::options::{help, DatasetHelp};
use kvbench_datasets::{DatasetConfig, DATASETS};

/// A minimal valid entry per dataset: its example.
fn example(h: &DatasetHelp) -> DatasetConfig {
    let mut list: Vec<DatasetConfig> = serde_yaml_ng::from_str(h.example)
        .unwrap_or_else(|e| panic!("{}: example does not parse: {e}", h.name));
    list.remove(0)
}

#[test]
fn every_dataset_has_help_and_every_option_is_listed_with_its_default() {
    for d in DATASETS {
        let h = help(d.name).unwrap_or_else(|| panic!("{} has no options listed", d.name));
        let config = example(h);
        assert_eq!(config.name(), d.name);
        let json = serde_json::to_value(&config).unwrap();
        let listed: Vec<&str> = h.options.iter().map(|o| o.name).collect();
        for key in json.as_object().unwrap().keys().filter(|k| *k != "name") {
            assert!(
                listed.contains(&key.as_str()),
                "{}: option `{key}` is not listed",
                d.name
            );
        }
        // Every listed option is accepted (deny_unknown_fields would reject it otherwise).
        for opt in h.options {
            let value = json
                .get(opt.name)
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            let mut entry = json.clone();
            entry[opt.name] = value.clone();
            if value.is_null() {
                entry.as_object_mut().unwrap().remove(opt.name);
            }
            serde_json::from_value::<DatasetConfig>(entry)
                .unwrap_or_else(|e| panic!("{}: option `{}`: {e}", d.name, opt.name));
            // Listed defaults are the structs' own, where the example leaves the option out.
            let in_example = h.example.contains(&format!("{}:", opt.name));
            if opt.default.starts_with('(') || in_example || value.is_null() {
                continue;
            }
            let shown = match &value {
                serde_json::Value::String(_) => value.to_string(),
                v => v.to_string().replace(',', ", ").replace(':', ": "),
            };
            let shown = shown.replace('"', "");
            let default = opt.default.replace('"', "");
            assert!(
                default.starts_with(&shown) || value.is_array() || value.is_object(),
                "{}: option `{}` default listed as `{}`, the struct's is `{shown}`",
                d.name,
                opt.name,
                opt.default
            );
        }
    }
}

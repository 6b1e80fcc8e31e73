//! Every experiment in experiments/reproduce validates once its methods and datasets are
//! registered, and cites its source in its header comment.

use std::path::Path;

use kvbench::experiment::Plan;

#[test]
fn reproduce_experiments_validate_or_wait_for_a_registration() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/reproduce");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "{files:?}");
    let (mut ok, mut waiting) = (0, Vec::new());
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let header: String = text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            header.contains("Published numbers"),
            "{}: the header must state the published numbers (or why they are missing)",
            f.display()
        );
        assert!(
            header.contains("arXiv:") || header.contains("kvpress"),
            "{}: the header must cite its source",
            f.display()
        );
        match Plan::load(f) {
            Ok(_) => ok += 1,
            // A dataset loader another change is still adding (longbench, ruler); an unknown
            // method or any other error fails.
            // Or inputs the user must provide (RULER's files): named, not silently accepted.
            Err(e)
                if (e.to_string().contains("datasets[")
                    && e.to_string().contains("unknown variant"))
                    || (e.to_string().contains("data path")
                        && e.to_string().contains("does not exist")) =>
            {
                waiting.push(format!(
                    "{}: {}",
                    f.display(),
                    e.to_string().lines().next().unwrap_or("")
                ))
            }
            Err(e) => panic!("{}: {e:#}", f.display()),
        }
    }
    eprintln!("{ok} reproduce experiment(s) validate; waiting for a registration: {waiting:#?}");
}

/// published.csv's rows use the names kvbench writes in records, so that `--compare` joins them:
/// registered methods and parameters, dataset and task names, budget labels; every row has a
/// source and a provenance, and every model but LongChat (no experiment: it needs FastChat's
/// template) has a reproduce experiment.
#[test]
fn published_rows_name_what_kvbench_writes() {
    use kvbench_datasets::{longbench, ruler};
    use kvbench_methods::Budget;
    use kvbench_reports::compare::{model_key, read_published, MethodSpec};

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/reproduce");
    let rows = read_published(&dir.join("published.csv")).unwrap();
    assert!(rows.len() >= 200, "{} rows", rows.len());
    let models: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        // Parsed without the file checks: RULER's input files are the user's to provide.
        .map(|p| {
            Plan::parse(&std::fs::read_to_string(&p).unwrap(), &p)
                .unwrap()
                .raw
                .model
        })
        .map(|m| model_key(&m))
        .collect();
    for p in &rows {
        let at = format!("{p:?}");
        assert!(!p.source.is_empty(), "{at}");
        assert!(
            ["checked", "transcription"].contains(&p.provenance.as_str()),
            "{at}"
        );
        let spec = MethodSpec::parse(&p.method);
        let method = kvbench_methods::METHODS
            .iter()
            .find(|m| m.name == spec.name)
            .unwrap_or_else(|| panic!("unregistered method: {at}"));
        for (k, _) in &spec.params {
            let top = k.split('.').next().unwrap();
            assert!(
                method.params.iter().any(|d| d.name == top),
                "{}: no parameter {top}: {at}",
                method.name
            );
        }
        let tasks: &[&str] = match p.dataset.as_str() {
            "longbench" => longbench::TASKS,
            "ruler" => ruler::TASKS,
            other => panic!("no published rows expected for {other}: {at}"),
        };
        assert!(
            p.task == "average" || tasks.contains(&p.task.as_str()),
            "{at}"
        );
        assert!(p.tasks.iter().all(|t| tasks.contains(&t.as_str())), "{at}");
        let label = if p.budget == "-" {
            "-".to_string()
        } else if let Some(k) = p.budget.strip_prefix("k=") {
            Budget::Tokens(k.parse().unwrap()).label()
        } else {
            let r = p.budget.strip_prefix("r=").expect("k= or r=");
            Budget::CompressionRatio(r.parse().unwrap()).label()
        };
        assert_eq!(label, p.budget, "{at}");
        assert!(
            models.contains(&model_key(&p.model)) || p.model == "lmsys/longchat-7b-v1.5-32k",
            "no reproduce experiment runs {}",
            p.model
        );
    }
}

/// published.csv's KVCache-Factory rows name what pyramidkv_longbench.yaml's runs record: each
/// SnapKV and PyramidKV row's method (name and dotted parameters) fits exactly one method of the
/// planned grid, a `query_heads` one (KVCache-Factory's per-query-head layout, through
/// `preset: kvcache_factory`), and the budget and query awareness it states are planned. The
/// join itself, through `--compare`'s own matching on real records, is checked by
/// `reproduce_longbench_small::pyramidkv_longbench_small_runs_in_kvcache_factory_layout`.
#[test]
fn kvcache_factory_rows_join_its_per_query_head_runs() {
    use kvbench_reports::compare::{read_published, MethodSpec};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/reproduce");
    let plan = Plan::parse(
        &std::fs::read_to_string(dir.join("pyramidkv_longbench.yaml")).unwrap(),
        &dir.join("pyramidkv_longbench.yaml"),
    )
    .unwrap();
    let rows: Vec<_> = read_published(&dir.join("published.csv"))
        .unwrap()
        .into_iter()
        .filter(|p| p.source.starts_with("KVCache-Factory") && p.method != "full")
        .collect();
    assert_eq!(rows.len(), 12);
    for p in &rows {
        let spec = MethodSpec::parse(&p.method);
        let fits: Vec<String> = plan
            .raw
            .methods
            .iter()
            .map(|m| m.build())
            .filter(|m| m.name() == spec.name)
            .filter(|m| {
                let params = m.params();
                spec.params.iter().all(|(k, want)| {
                    k.split('.')
                        .try_fold(&params, |v, part| v.get(part))
                        .and_then(|v| v.as_str())
                        == Some(want.as_str())
                })
            })
            .map(|m| m.params().to_string())
            .collect();
        assert_eq!(fits.len(), 1, "{}: {fits:?}", p.method);
        assert_eq!(spec.name, "query_heads", "{}", p.method);
        assert!(plan
            .runs
            .iter()
            .any(|r| r.query_aware == (p.query_aware == Some(true))
                && r.budget.map(|b| b.label()) == Some(p.budget.clone())));
    }
}

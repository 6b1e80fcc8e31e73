//! The command that resumes an interrupted `kvbench run`: the same command line without
//! `--fresh` (which would move the kept results aside) and with the output directory named.

use std::path::Path;

/// `args` (the program name first) as a shell command that resumes the run into `output`.
pub fn command(args: &[String], output: &Path) -> String {
    let mut out: Vec<String> = vec!["kvbench".into()];
    let mut has_output = false;
    let mut rest = args.iter().skip(1);
    while let Some(a) = rest.next() {
        match a.as_str() {
            "--fresh" | "--dry-run" => continue,
            "--output" => {
                has_output = true;
                out.push(a.clone());
                if let Some(v) = rest.next() {
                    out.push(v.clone());
                }
            }
            s if s.starts_with("--output=") => {
                has_output = true;
                out.push(a.clone());
            }
            _ => out.push(a.clone()),
        }
    }
    if !has_output {
        out.push("--output".into());
        out.push(output.display().to_string());
    }
    out.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
}

/// Single-quote an argument when the shell would split or expand it.
fn quote(a: &str) -> String {
    let plain = !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=,+@%".contains(c));
    if plain {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_drops_fresh_and_names_the_output() {
        let args: Vec<String> = [
            "/x/kvbench",
            "run",
            "e.yaml",
            "--fresh",
            "--set",
            "datasets.0.lengths=[1, 2]",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            command(&args, Path::new("runs/t")),
            "kvbench run e.yaml --set 'datasets.0.lengths=[1, 2]' --output runs/t"
        );
        let args: Vec<String> = ["kvbench", "run", "e.yaml", "--output", "o"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            command(&args, Path::new("o")),
            "kvbench run e.yaml --output o"
        );
    }
}

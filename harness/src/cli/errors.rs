//! How `kvbench` prints an error: the context chain, outermost first, each cause once.
//!
//! Contexts often quote their source's message (`reading X: No such file or directory`, then the
//! source `No such file or directory`), and some errors repeat their source in their own text: a
//! cause whose message is already contained in the text printed so far is left out.

/// `error: a: b: c` with every cause already said left out; causes that only add text are kept.
pub fn render(e: &anyhow::Error) -> String {
    let mut said = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        let msg = msg.trim();
        if msg.is_empty() || said.contains(msg) {
            continue;
        }
        if !said.is_empty() {
            said += ": ";
        }
        said += msg;
    }
    said
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn a_cause_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let e = Err::<(), _>(io)
            .context("reading x.yaml: No such file or directory")
            .context("loading the experiment")
            .unwrap_err();
        assert_eq!(
            render(&e),
            "loading the experiment: reading x.yaml: No such file or directory"
        );
        let dns = "dns error: failed to lookup address information";
        let e = anyhow::anyhow!("{dns}")
            .context(format!("error sending request: {dns}"))
            .context(format!("GET https://hf.co/x: error sending request: {dns}"))
            .context("fetching model `m`");
        let text = render(&e);
        assert_eq!(text.matches(dns).count(), 1, "{text}");
        let e = anyhow::anyhow!("disk full").context("writing results.jsonl");
        assert_eq!(render(&e), "writing results.jsonl: disk full");
    }
}

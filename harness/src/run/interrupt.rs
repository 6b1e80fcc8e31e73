//! Ctrl-C during a run: the first one lets the record(s) in flight finish (a batch of decoding runs
//! finishes and writes all its records) and stops the run there
//! (the caller says what was kept and how to resume); a second one stops at once. Records are
//! appended one line at a time, so either way every finished record is kept.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

static STOP: AtomicBool = AtomicBool::new(false);
/// Records written by this process's run so far, for the message of a second Ctrl-C.
static WRITTEN: AtomicUsize = AtomicUsize::new(0);
/// What to tell the user when stopping at once: the resume command.
static RESUME: OnceLock<Mutex<String>> = OnceLock::new();

/// Install the handler (once per process); `resume` is the command that continues the run.
pub fn install(resume: String) {
    let slot = RESUME.get_or_init(|| Mutex::new(String::new()));
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = resume;
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _ = ctrlc::set_handler(|| {
            if STOP.swap(true, Ordering::SeqCst) {
                eprintln!(
                    "\ninterrupted again: stopping now; {} record(s) written by this run are kept; \
                     resume with: {}",
                    WRITTEN.load(Ordering::SeqCst),
                    resume_command()
                );
                std::process::exit(130);
            }
            eprintln!(
                "\ninterrupt: finishing the record(s) in flight, then stopping (Ctrl-C again to \
                 stop now; finished records are kept either way)"
            );
        });
    });
}

/// The command that resumes the run (empty before [`install`]).
pub fn resume_command() -> String {
    RESUME
        .get()
        .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()).clone())
        .unwrap_or_default()
}

/// Has the user asked the run to stop?
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

pub(super) fn record_written() {
    WRITTEN.fetch_add(1, Ordering::SeqCst);
}

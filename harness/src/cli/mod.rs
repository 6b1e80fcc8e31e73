//! The command line's own pieces, kept out of `main.rs`: one-entry descriptions of methods and
//! datasets, the starter experiment, the resume command, the error printer and the end-of-run summary.

pub mod bench;
pub mod describe;
pub mod errors;
pub mod init;
pub mod listings;
pub mod report;
pub mod resume;
pub mod summary;

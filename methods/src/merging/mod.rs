//! Merging: evicted entries are merged into the kept ones instead of dropped.

pub mod cam;
pub mod kvmerger;

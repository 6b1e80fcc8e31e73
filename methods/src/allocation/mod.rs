//! Budget allocation: how many entries each layer and head keeps, entries picked by a selection scorer.

pub mod adakv;
pub mod per_layer;
pub mod pyramidkv;

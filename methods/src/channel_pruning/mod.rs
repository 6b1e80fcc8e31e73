//! Channel pruning: key channels removed per head (`storage::ChannelPruned`).

pub mod think;

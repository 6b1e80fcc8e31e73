//! Low rank: keys (and optionally values) stored as codes on a per-head basis (`storage::LowRank`).

pub mod lowrank;

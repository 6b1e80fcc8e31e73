//! Quantization: entries stored as low-bit integers and scales (`storage::Quantized`).

pub mod kivi;
pub mod quant;

//! The per-record quantities tables and plots aggregate, with their units.

use polars::prelude::{DataFrame, PolarsResult};

use crate::Record;

const MIB: f64 = 1024.0 * 1024.0;

/// A per-record quantity that tables and plots aggregate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    Score,
    Agreement,
    Kl,
    AchievedRatio,
    ByteRatio,
    KvMib,
    PeakMib,
    PrefillMs,
    CompressMs,
    QuestionMs,
    TtftMs,
    DecodeTokS,
}

impl Metric {
    pub const ALL: [Metric; 12] = [
        Metric::Score,
        Metric::Agreement,
        Metric::Kl,
        Metric::AchievedRatio,
        Metric::ByteRatio,
        Metric::KvMib,
        Metric::PeakMib,
        Metric::PrefillMs,
        Metric::CompressMs,
        Metric::QuestionMs,
        Metric::TtftMs,
        Metric::DecodeTokS,
    ];

    /// Column name in CSV and Parquet.
    pub fn key(self) -> &'static str {
        match self {
            Metric::Score => "score",
            Metric::Agreement => "agreement",
            Metric::Kl => "kl_nats",
            Metric::AchievedRatio => "achieved_ratio",
            Metric::ByteRatio => "byte_ratio",
            Metric::KvMib => "kv_mib",
            Metric::PeakMib => "peak_mib",
            Metric::PrefillMs => "prefill_ms",
            Metric::CompressMs => "compress_ms",
            Metric::QuestionMs => "question_ms",
            Metric::TtftMs => "ttft_ms",
            Metric::DecodeTokS => "decode_tok_s",
        }
    }

    /// Human header with its unit.
    pub fn label(self) -> &'static str {
        match self {
            Metric::Score => "score",
            Metric::Agreement => "agreement",
            Metric::Kl => "KL (nats)",
            Metric::AchievedRatio => "achieved ratio",
            Metric::ByteRatio => "byte ratio",
            Metric::KvMib => "KV (MiB)",
            Metric::PeakMib => "peak (MiB)",
            Metric::PrefillMs => "prefill (ms)",
            Metric::CompressMs => "compress (ms)",
            Metric::QuestionMs => "question (ms)",
            Metric::TtftMs => "TTFT (ms)",
            Metric::DecodeTokS => "decode (tok/s)",
        }
    }

    pub fn decimals(self) -> usize {
        match self {
            Metric::Score | Metric::Agreement | Metric::AchievedRatio | Metric::ByteRatio => 3,
            Metric::Kl => 4,
            Metric::KvMib | Metric::PeakMib | Metric::DecodeTokS => 2,
            Metric::PrefillMs | Metric::CompressMs | Metric::QuestionMs | Metric::TtftMs => 1,
        }
    }

    /// This record's value; None where it was not measured (peak memory on CPU, decode speed of
    /// a one-token answer).
    pub fn value(self, r: &Record) -> Option<f64> {
        let v = match self {
            Metric::Score => r.score,
            Metric::Agreement => r.agreement_with_full,
            Metric::Kl => r.kl_first_token,
            Metric::AchievedRatio => r.achieved_ratio,
            // Storage-side methods compress bytes without removing entries: 1 - stored / full bytes.
            Metric::ByteRatio if r.kv_bytes_full > 0 => {
                1.0 - r.kv_bytes as f64 / r.kv_bytes_full as f64
            }
            Metric::ByteRatio => return None,
            Metric::KvMib => r.kv_bytes as f64 / MIB,
            Metric::PeakMib => r.peak_device_bytes? as f64 / MIB,
            Metric::PrefillMs => r.prefill_ms,
            Metric::CompressMs => r.compress_ms,
            Metric::QuestionMs => r.question_ms,
            Metric::TtftMs => r.ttft_ms,
            Metric::DecodeTokS if r.decode_ms_per_token > 0.0 => 1000.0 / r.decode_ms_per_token,
            Metric::DecodeTokS => return None,
        };
        v.is_finite().then_some(v)
    }

    /// [`Metric::value`] of every row of a results frame ([`crate::frame`]), from its columns.
    pub fn frame_values(self, df: &DataFrame) -> PolarsResult<Vec<Option<f64>>> {
        let col = |name: &str| crate::frame::floats(df, name);
        let scaled = |name: &str| -> PolarsResult<Vec<Option<f64>>> {
            Ok(col(name)?.into_iter().map(|b| b.map(|b| b / MIB)).collect())
        };
        let v: Vec<Option<f64>> = match self {
            Metric::Score => col("score")?,
            Metric::Agreement => col("agreement_with_full")?,
            Metric::Kl => col("kl_first_token")?,
            Metric::AchievedRatio => col("achieved_ratio")?,
            Metric::ByteRatio => col("kv_bytes")?
                .into_iter()
                .zip(col("kv_bytes_full")?)
                .map(|(b, full)| match (b, full) {
                    (Some(b), Some(full)) if full > 0.0 => Some(1.0 - b / full),
                    _ => None,
                })
                .collect(),
            Metric::KvMib => scaled("kv_bytes")?,
            Metric::PeakMib => scaled("peak_device_bytes")?,
            Metric::PrefillMs => col("prefill_ms")?,
            Metric::CompressMs => col("compress_ms")?,
            Metric::QuestionMs => col("question_ms")?,
            Metric::TtftMs => col("ttft_ms")?,
            Metric::DecodeTokS => col("decode_ms_per_token")?
                .into_iter()
                .map(|d| d.filter(|d| *d > 0.0).map(|d| 1000.0 / d))
                .collect(),
        };
        Ok(v.into_iter().map(|x| x.filter(|x| x.is_finite())).collect())
    }
}

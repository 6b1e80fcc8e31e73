//! kvbench-methods: the compressible KV cache, the `Method` trait, budgets and every registered
//! compression method. Depends on candle-core only: a method never sees a dataset or a model.
//!
//! Token eviction is built from shared parts: `scoring` (the `Scorer` trait, window attention,
//! GQA aggregation, pooling) and `select` (top-k, exact integer budgets, the eviction driver);
//! each method file holds its selection rule, paper and defaults.

//! Layout: the core pieces at the top (cache, `Method` and sessions, budgets, parameters, the
//! registry, composition), the methods in one folder per family following the surveys' taxonomy
//! (declared by the `registry!` block below, one line per method), and the storage forms they
//! produce in `storage/`, separate from the methods.

pub mod budget;
pub mod cache;
pub mod composed;
pub mod describe;
pub mod device_ops;
pub mod full;
pub mod kernels;
pub mod linalg;
pub mod method;
pub mod params;
pub mod profile;
pub mod registry;
pub mod retain;
pub mod sliding;
pub mod storage;

// Every method, one line each in its family's block: `file: Variant(Config) = "yaml_name"`, plus
// `[scorer]` for a token scorer that other methods may use as `scorer:` (see `registry!`). This
// declares `src/<family>/<file>.rs` as `crate::<family>::<file>` (and flat, `crate::<file>`) and
// generates `MethodConfig`, `ScorerConfig`, `SCORER_NAMES` and the descriptions of `METHODS`.
registry::registry! {
    /// Selection (eviction): scorers that rank entries and keep the best, `chunk` (whole chunks
    /// ranked by a scorer) and `decoding` (a scorer applied during generation), plus the
    /// machinery every scorer shares (`scoring`: the `Scorer` trait, window attention, pooling;
    /// `select`: top-k, exact budgets, the eviction driver).
    selection with scoring, select, device_top_k {
        streaming_llm: StreamingLlm(StreamingLlm) = "streaming_llm" [scorer],
        h2o: H2o(H2o) = "h2o" [scorer],
        snapkv: Snapkv(SnapKv) = "snapkv" [scorer],
        tova: Tova(Tova) = "tova" [scorer],
        knorm: Knorm(Knorm) = "knorm" [scorer],
        random: Random(Random) = "random" [scorer],
        expected_attention: ExpectedAttention(ExpectedAttention) = "expected_attention" [scorer],
        keydiff: Keydiff(KeyDiff) = "keydiff" [scorer],
        lagkv: Lagkv(LagKv) = "lagkv" [scorer],
        chunk: Chunk(Chunk) = "chunk",
        decoding: Decoding(Decoding) = "decoding",
    }
    /// Budget allocation: how many entries each layer and head keeps (and at which head
    /// granularity), entries picked by a selection scorer.
    allocation {
        pyramidkv: Pyramidkv(PyramidKv) = "pyramidkv",
        adakv: Adakv(AdaKv) = "adakv",
        per_layer: PerLayer(PerLayer) = "per_layer",
        query_heads: QueryHeads(QueryHeads) = "query_heads",
    }
    /// Merging: evicted entries are merged into the kept ones instead of dropped.
    merging {
        cam: Cam(Cam) = "cam",
        kvmerger: Kvmerger(KvMerger) = "kvmerger",
    }
    /// Cross-layer and cross-head sharing: layers or heads store one shared cache.
    cross_layer {
        minicache: Minicache(MiniCache) = "minicache",
        kvsharer: Kvsharer(KvSharer) = "kvsharer",
        kv_head_merge: KvHeadMerge(KvHeadMerge) = "kv_head_merge",
    }
    /// Channel pruning: key channels removed per head (`storage::ChannelPruned`).
    channel_pruning {
        think: Think(Think) = "think",
    }
    /// Low rank: keys (and optionally values) stored as codes on a per-head basis
    /// (`storage::LowRank`).
    low_rank {
        lowrank: Lowrank(LowRankMethod) = "lowrank",
    }
    /// Quantization: entries stored as low-bit integers and scales (`storage::Quantized`).
    quantization {
        kivi: Kivi(Kivi) = "kivi",
        quant: Quant(Quant) = "quant",
    }
}

#[cfg(test)]
mod testing;

pub use budget::Budget;
pub use cache::{HeadGroup, KvCache, LayerKv, Storage};
pub use describe::{
    AfterDecode, Conformance, Describe, Description, Expect, ExtraSpec, Param, Rows,
};
pub use method::{
    LayerObservation, Method, ObservationNeeds, Observations, Rope, Session, Stateless,
};
pub use params::ParamError;
pub use registry::{method_names, MethodDescription, MethodSpec, METHODS};
pub use scoring::Scorer;
pub use storage::{Form, Stored};

/// Errors from cache operations and methods.
#[derive(Debug, thiserror::Error)]
pub enum MethodError {
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("cache: {0}")]
    Cache(String),
    /// A parameter value the method does not accept (also reported when the plan is built).
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error("{method}: {message}")]
    Config {
        method: &'static str,
        message: String,
    },
}

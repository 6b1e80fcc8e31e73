//! Every registered method: its YAML configuration and its description for `kvbench methods`.

use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::allocation::adakv::AdaKv;
use crate::merging::cam::Cam;
use crate::composed::Composed;
use crate::selection::decoding::Decoding;
use crate::selection::expected_attention::ExpectedAttention;
use crate::selection::h2o::H2o;
use crate::selection::keydiff::KeyDiff;
use crate::quantization::kivi::Kivi;
use crate::selection::knorm::Knorm;
use crate::cross_layer::kv_head_merge::KvHeadMerge;
use crate::merging::kvmerger::KvMerger;
use crate::cross_layer::kvsharer::KvSharer;
use crate::selection::lagkv::LagKv;
use crate::low_rank::lowrank::LowRankMethod;
use crate::cross_layer::minicache::MiniCache;
use crate::allocation::per_layer::PerLayer;
use crate::allocation::pyramidkv::PyramidKv;
use crate::quantization::quant::Quant;
use crate::selection::random::Random;
use crate::selection::scoring::Scorer;
use crate::selection::snapkv::SnapKv;
use crate::channel_pruning::think::Think;
use crate::selection::tova::Tova;
use crate::selection::streaming_llm::StreamingLlm;
use crate::{full::Full, Method, ParamError};

/// A method as written in an experiment (`- method: streaming_llm`, `sinks: 4`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum MethodConfig {
    Full,
    StreamingLlm(StreamingLlm),
    H2o(H2o),
    Snapkv(SnapKv),
    Tova(Tova),
    Knorm(Knorm),
    Random(Random),
    ExpectedAttention(ExpectedAttention),
    Keydiff(KeyDiff),
    Lagkv(LagKv),
    Pyramidkv(PyramidKv),
    Adakv(AdaKv),
    PerLayer(PerLayer),
    Decoding(Decoding),
    Cam(Cam),
    Kvmerger(KvMerger),
    Minicache(MiniCache),
    Think(Think),
    Lowrank(LowRankMethod),
    Kvsharer(KvSharer),
    KvHeadMerge(KvHeadMerge),
    Kivi(Kivi),
    Quant(Quant),
}

impl MethodConfig {
    pub fn build(&self) -> Box<dyn Method> {
        match self {
            MethodConfig::Full => Box::new(Full),
            MethodConfig::StreamingLlm(m) => Box::new(m.clone()),
            MethodConfig::H2o(m) => Box::new(m.clone()),
            MethodConfig::Snapkv(m) => Box::new(m.clone()),
            MethodConfig::Tova(m) => Box::new(m.clone()),
            MethodConfig::Knorm(m) => Box::new(m.clone()),
            MethodConfig::Random(m) => Box::new(m.clone()),
            MethodConfig::ExpectedAttention(m) => Box::new(m.clone()),
            MethodConfig::Keydiff(m) => Box::new(m.clone()),
            MethodConfig::Lagkv(m) => Box::new(m.clone()),
            MethodConfig::Pyramidkv(m) => Box::new(m.clone()),
            MethodConfig::Adakv(m) => Box::new(m.clone()),
            MethodConfig::PerLayer(m) => Box::new(m.clone()),
            MethodConfig::Decoding(m) => Box::new(m.clone()),
            MethodConfig::Cam(m) => Box::new(m.clone()),
            MethodConfig::Kvmerger(m) => Box::new(m.clone()),
            MethodConfig::Minicache(m) => Box::new(m.clone()),
            MethodConfig::Think(m) => Box::new(m.clone()),
            MethodConfig::Lowrank(m) => Box::new(m.clone()),
            MethodConfig::Kvsharer(m) => Box::new(m.clone()),
            MethodConfig::KvHeadMerge(m) => Box::new(m.clone()),
            MethodConfig::Kivi(m) => Box::new(m.clone()),
            MethodConfig::Quant(m) => Box::new(m.clone()),
        }
    }

    /// Check every parameter value (`Method::validate`): call when the plan is built.
    pub fn validate(&self) -> Result<(), ParamError> {
        self.build().validate()
    }

    /// Check the parameters against the loaded model's shape (`Method::check_model_shape`).
    pub fn check_model_shape(
        &self,
        n_layers: usize,
        n_kv_heads: usize,
        head_dim: usize,
    ) -> Result<(), ParamError> {
        self.build()
            .check_model_shape(n_layers, n_kv_heads, head_dim)
    }
}

/// A scorer inside a budget allocator or `decoding` (`scorer: {method: knorm}`): the registered
/// methods that rank entries.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScorerConfig {
    StreamingLlm(StreamingLlm),
    H2o(H2o),
    Snapkv(SnapKv),
    Tova(Tova),
    Knorm(Knorm),
    Random(Random),
    ExpectedAttention(ExpectedAttention),
    Keydiff(KeyDiff),
    Lagkv(LagKv),
}

impl Default for ScorerConfig {
    fn default() -> Self {
        ScorerConfig::Snapkv(SnapKv::default())
    }
}

impl ScorerConfig {
    pub fn scorer(&self) -> &dyn Scorer {
        match self {
            ScorerConfig::StreamingLlm(s) => s,
            ScorerConfig::H2o(s) => s,
            ScorerConfig::Snapkv(s) => s,
            ScorerConfig::Tova(s) => s,
            ScorerConfig::Knorm(s) => s,
            ScorerConfig::Random(s) => s,
            ScorerConfig::ExpectedAttention(s) => s,
            ScorerConfig::Keydiff(s) => s,
            ScorerConfig::Lagkv(s) => s,
        }
    }

    /// Check the scorer's parameters, reported as the field `field` of the method `outer`
    /// (`adakv: scorer.window (snapkv) ...`).
    pub fn validate_within(&self, outer: &'static str, field: &str) -> Result<(), ParamError> {
        self.scorer()
            .validate()
            .map_err(|e| e.within(outer, field))
    }
}

/// One entry of an experiment's `methods:`: a method (`- method: snapkv`) or a composition applied
/// in order (`- [{method: snapkv}, {method: knorm}]`), recorded as `snapkv+knorm`.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(untagged)]
pub enum MethodSpec {
    One(MethodConfig),
    Composed(Vec<MethodConfig>),
}

impl MethodSpec {
    pub fn build(&self) -> Box<dyn Method> {
        match self {
            MethodSpec::One(c) => c.build(),
            MethodSpec::Composed(parts) if parts.len() == 1 => parts[0].build(),
            MethodSpec::Composed(parts) => Box::new(Composed::new(parts)),
        }
    }

    /// The configurations applied in order (one for a single method).
    pub fn parts(&self) -> &[MethodConfig] {
        match self {
            MethodSpec::One(c) => std::slice::from_ref(c),
            MethodSpec::Composed(parts) => parts,
        }
    }

    /// Check every parameter of every part: `Err((i, e))` for part `i` (0 for a single method).
    pub fn validate(&self) -> Result<(), (usize, ParamError)> {
        for (i, c) in self.parts().iter().enumerate() {
            c.validate().map_err(|e| (i, e))?;
        }
        Ok(())
    }

    /// Check every part against the loaded model's shape: `Err((i, e))` for part `i`.
    pub fn check_model_shape(
        &self,
        n_layers: usize,
        n_kv_heads: usize,
        head_dim: usize,
    ) -> Result<(), (usize, ParamError)> {
        for (i, c) in self.parts().iter().enumerate() {
            c.check_model_shape(n_layers, n_kv_heads, head_dim)
                .map_err(|e| (i, e))?;
        }
        Ok(())
    }
}

impl From<MethodConfig> for MethodSpec {
    fn from(c: MethodConfig) -> Self {
        MethodSpec::One(c)
    }
}

/// Deserialized by hand rather than `untagged`, so that a wrong method name still reports the
/// registered names (an untagged enum would only say that no variant matched).
impl<'de> Deserialize<'de> for MethodSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SpecVisitor;
        impl<'de> Visitor<'de> for SpecVisitor {
            type Value = MethodSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a method (`method: NAME` and its parameters) or a list of methods applied in order")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MethodSpec, A::Error> {
                MethodConfig::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(MethodSpec::One)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<MethodSpec, A::Error> {
                let parts =
                    Vec::<MethodConfig>::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                if parts.is_empty() {
                    return Err(de::Error::custom(
                        "an empty list of methods; a composition lists at least one method",
                    ));
                }
                Ok(MethodSpec::Composed(parts))
            }
        }
        deserializer.deserialize_any(SpecVisitor)
    }
}

/// One parameter of a method, for `kvbench methods --json`.
#[derive(Clone, Debug, Serialize)]
pub struct ParamDescription {
    pub name: &'static str,
    pub kind: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

/// A registered method, for `kvbench methods`.
#[derive(Clone, Debug, Serialize)]
pub struct MethodDescription {
    pub name: &'static str,
    pub family: &'static str,
    pub summary: &'static str,
    pub paper: &'static str,
    pub params: &'static [ParamDescription],
}

const fn param(
    name: &'static str,
    kind: &'static str,
    default: &'static str,
    help: &'static str,
) -> ParamDescription {
    ParamDescription {
        name,
        kind,
        default,
        help,
    }
}

const SCORER_HELP: &str = "scorer ranking the entries: {method: NAME, ...} with any of streaming_llm, h2o, snapkv, tova, knorm, random, expected_attention, keydiff, lagkv";

pub static METHODS: &[MethodDescription] = &[
    MethodDescription {
        name: "full",
        family: "baseline",
        summary: "No compression: the full cache every other method is compared with.",
        paper: "",
        params: &[],
    },
    MethodDescription {
        name: "streaming_llm",
        family: "scorer",
        summary: "Attention sinks (first entries) plus the most recent window.",
        paper: "https://arxiv.org/abs/2309.17453",
        params: &[param("sinks", "integer", "4", "entries kept at the start of the sequence")],
    },
    MethodDescription {
        name: "h2o",
        family: "scorer",
        summary: "Heavy hitters by attention accumulated over all prefill queries, plus recent entries; optional decode-phase eviction.",
        paper: "https://arxiv.org/abs/2306.14048",
        params: &[
            param("recent_fraction", "number", "0.5", "share of each head's budget kept for the most recent entries"),
            param("decode", "boolean", "false", "keep evicting while generating: one entry per head and token, holding the cache at its size when generation began"),
        ],
    },
    MethodDescription {
        name: "snapkv",
        family: "scorer",
        summary: "Attention of the last `window` queries, pooled over neighbours, plus the window.",
        paper: "https://arxiv.org/abs/2404.14469",
        params: &[
            param("window", "integer", "32", "observation window: last queries that score the prefix; always kept"),
            param("kernel", "integer", "7", "pooling kernel (odd; 1 disables pooling)"),
            param("pooling", "max|avg", "max", "pooling over neighbouring entries"),
        ],
    },
    MethodDescription {
        name: "tova",
        family: "scorer",
        summary: "Attention of the last query, averaged over all heads of the layer.",
        paper: "https://arxiv.org/abs/2401.06104",
        params: &[],
    },
    MethodDescription {
        name: "knorm",
        family: "scorer",
        summary: "Keys with the lowest L2 norm.",
        paper: "https://arxiv.org/abs/2406.11430",
        params: &[],
    },
    MethodDescription {
        name: "random",
        family: "scorer",
        summary: "Uniformly random entries, seeded per layer and head (baseline).",
        paper: "",
        params: &[param("seed", "integer", "0", "seed of the per-layer, per-head generators")],
    },
    MethodDescription {
        name: "expected_attention",
        family: "scorer",
        summary: "Attention expected from future queries, modelled by the mean and covariance of the prefill's queries rotated to future positions.",
        paper: "https://arxiv.org/abs/2510.00636",
        params: &[
            param("future_positions", "integer", "512", "future positions the RoPE rotation is averaged over"),
            param("sinks", "integer", "4", "leading entries always kept (and queries left out of the statistics)"),
            param("use_covariance", "boolean", "true", "include the query covariance term"),
            param("use_vnorm", "boolean", "true", "multiply scores by the value norm"),
            param("epsilon", "number", "0", "added to scores before the value-norm rescaling"),
        ],
    },
    MethodDescription {
        name: "keydiff",
        family: "scorer",
        summary: "Keys least similar (cosine) to the head's mean key direction.",
        paper: "https://arxiv.org/abs/2504.15364",
        params: &[],
    },
    MethodDescription {
        name: "lagkv",
        family: "scorer",
        summary: "Lag-relative spread of keys and values, each chunk scored against the next; no attention needed.",
        paper: "https://arxiv.org/abs/2504.04704",
        params: &[
            param("sink", "integer", "16", "leading entries always kept"),
            param("lag_size", "integer", "128", "chunk length; each chunk is scored against the next"),
        ],
    },
    MethodDescription {
        name: "pyramidkv",
        family: "allocator",
        summary: "Per-layer budgets decreasing linearly with depth (same total), entries picked by a scorer.",
        paper: "https://arxiv.org/abs/2406.02069",
        params: &[
            param("beta", "number", "20", "steepness: the smallest layer budget is (B - window) / beta + window"),
            param("scorer", "scorer", "{method: snapkv}", SCORER_HELP),
        ],
    },
    MethodDescription {
        name: "adakv",
        family: "allocator",
        summary: "One top-k across the KV heads of a layer with a per-head floor; heads stored ragged.",
        paper: "https://arxiv.org/abs/2407.11550",
        params: &[
            param("floor", "number", "0.2", "share of the uniform budget every head keeps"),
            param("scorer", "scorer", "{method: snapkv}", SCORER_HELP),
        ],
    },
    MethodDescription {
        name: "per_layer",
        family: "allocator",
        summary: "Explicit compression ratio per layer (the ratios are the budget; runs once).",
        paper: "",
        params: &[
            param("ratios", "list of numbers", "(required)", "fraction removed in each layer, one per layer, each in [0, 1)"),
            param("scorer", "scorer", "{method: snapkv}", SCORER_HELP),
        ],
    },
    MethodDescription {
        name: "decoding",
        family: "decoding",
        summary: "During generation, every `interval` tokens, cut every head to `target_size` entries with a scorer (kvpress DecodingPress; runs once).",
        paper: "",
        params: &[
            param("interval", "integer", "512", "generated tokens between two compressions"),
            param("target_size", "integer", "2048", "entries per layer and KV head after a compression"),
            param("buffer", "integer", "256", "generated tokens whose queries attention-based scorers see"),
            param("scorer", "scorer", "{method: knorm}", "scorer ranking the entries (expected_attention excluded)"),
        ],
    },
    MethodDescription {
        name: "cam",
        family: "merging",
        summary: "A scorer picks the kept entries; each evicted value is spread over the next `merge_budget` entries (Bernoulli, probability its accumulated attention over theirs) instead of dropped; keys unchanged.",
        paper: "https://proceedings.mlr.press/v235/zhang24n.html",
        params: &[
            param("scorer", "scorer", "{method: streaming_llm}", SCORER_HELP),
            param("merge_budget", "integer", "0", "entries each evicted value is spread over; 0 = the kept entries after the last evicted one (the scorer's recent window)"),
            param("seed", "integer", "0", "seed of the per-layer, per-head Bernoulli draws"),
        ],
    },
    MethodDescription {
        name: "kvmerger",
        family: "merging",
        summary: "Runs of adjacent entries with similar keys (cosine >= threshold) merged into one entry at the most attended one, Gaussian-kernel weighted; a scorer evicts what merging leaves above the budget.",
        paper: "https://arxiv.org/abs/2407.08454",
        params: &[
            param("threshold", "number", "0.75", "cosine similarity of adjacent keys at or above which their entries may merge"),
            param("skip_first_layers", "integer", "2", "leading layers only evicted, never merged"),
            param("skip_last_layers", "integer", "1", "trailing layers only evicted, never merged"),
            param("scorer", "scorer", "{method: h2o}", SCORER_HELP),
        ],
    },
    MethodDescription {
        name: "minicache",
        family: "cross_layer",
        summary: "Adjacent layers of the second half share their entries' directions (SLERP), each keeping its own lengths; the most distant entries stay whole (runs once).",
        paper: "https://arxiv.org/abs/2405.14366",
        params: &[
            param("start_layer", "integer or null", "null (n_layers / 2)", "first merged layer; layers are merged in pairs from there"),
            param("t", "number", "0.6", "SLERP weight of the deeper layer of a pair"),
            param("gamma", "number", "0.05", "share of the angular-distance range, from the top, whose entries are kept unmerged"),
        ],
    },
    MethodDescription {
        name: "kvsharer",
        family: "cross_layer",
        summary: "Later layers attend to the cache of the most dissimilar earlier layer and store nothing; layers compared on the prefill cache (runs once).",
        paper: "https://arxiv.org/abs/2410.18517",
        params: &[
            param("layers_shared", "integer or null", "null (fraction x n_layers)", "layers made to read another layer's cache"),
            param("fraction", "number", "0.25", "share of the layers that share, when layers_shared is not given"),
        ],
    },
    MethodDescription {
        name: "kv_head_merge",
        family: "cross_head",
        summary: "Groups of consecutive KV heads store the mean of their caches (post-hoc grouped-query attention, no training; runs once).",
        paper: "https://arxiv.org/abs/2305.13245",
        params: &[param("group_size", "integer", "2", "consecutive KV heads averaged into one; the last group may be smaller")],
    },
    MethodDescription {
        name: "think",
        family: "channel_pruning",
        summary: "Key channels pruned per head by query-driven scores (window queries x key magnitudes); the window and generated keys stay whole.",
        paper: "https://arxiv.org/abs/2407.21018",
        params: &[
            param("key_channel_ratio", "number", "0.4", "fraction of each head's key channels removed"),
            param("window", "integer", "32", "observation window: last prefill queries scoring the channels; their keys stay whole"),
        ],
    },
    MethodDescription {
        name: "lowrank",
        family: "low_rank",
        summary: "Keys (optionally values) stored as codes on each head's top singular directions of the prefill keys, plus the basis.",
        paper: "https://arxiv.org/abs/2407.21118",
        params: &[
            param("rank", "integer", "(none)", "rank per head; exclusive with energy"),
            param("energy", "number", "0.9 when rank is not given", "fraction of the spectrum kept; a layer's heads share the largest rank needed"),
            param("values", "boolean", "false", "also store values in low rank with their own basis"),
        ],
    },
    MethodDescription {
        name: "kivi",
        family: "quantization",
        summary: "Asymmetric low-bit quantization, keys per channel and values per token; the most recent entries stay full precision (runs once).",
        paper: "https://arxiv.org/abs/2402.02750",
        params: &[
            param("bits", "integer", "2", "bits per stored key and value: 2 or 4"),
            param("group", "integer", "32", "entries per key group (per channel), channels per value group (per token)"),
            param("residual", "integer", "128", "recent values kept full precision; keys are quantized this many at a time (a multiple of group)"),
        ],
    },
    MethodDescription {
        name: "quant",
        family: "quantization",
        summary: "Per-token quantization of keys and values in channel groups, generated entries quantized once `residual` accumulate (Hugging Face QuantizedCache; runs once).",
        paper: "https://huggingface.co/docs/transformers/kv_cache#quantized-cache",
        params: &[
            param("bits", "integer", "4", "bits per stored key and value: 2, 4 or 8"),
            param("group", "integer", "64", "consecutive channels of one entry sharing a scale (divides head_dim)"),
            param("residual", "integer", "128", "generated entries kept full precision until this many accumulate"),
            param("symmetric", "boolean", "false", "scale only (codes centred), no zero point"),
        ],
    },
];

/// Registered method names, in registry order.
pub fn method_names() -> Vec<&'static str> {
    METHODS.iter().map(|m| m.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_described_method_builds_from_its_defaults_and_back() {
        for d in METHODS {
            let mut json = serde_json::json!({ "method": d.name });
            if d.name == "per_layer" {
                json["ratios"] = serde_json::json!([0.5]);
            }
            let c: MethodConfig =
                serde_json::from_value(json).unwrap_or_else(|e| panic!("{}: {e}", d.name));
            assert_eq!(c.build().name(), d.name);
            // Every parameter of the description is a field of the config, and vice versa.
            let params = c.build().params();
            let fields: Vec<&str> = params
                .as_object()
                .map(|o| o.keys().map(|k| k.as_str()).collect())
                .unwrap_or_default();
            let described: Vec<&str> = d.params.iter().map(|p| p.name).collect();
            let mut f = fields.clone();
            f.sort();
            let mut g = described.clone();
            g.sort();
            assert_eq!(f, g, "{}: params vs description", d.name);
        }
        assert_eq!(METHODS.len(), 23);
    }

    #[test]
    fn every_registered_method_validates_with_its_defaults() {
        for d in METHODS {
            let mut json = serde_json::json!({ "method": d.name });
            if d.name == "per_layer" {
                json["ratios"] = serde_json::json!([0.5]);
            }
            let c: MethodConfig = serde_json::from_value(json).unwrap();
            c.validate()
                .unwrap_or_else(|e| panic!("{}: defaults rejected: {e}", d.name));
        }
    }

    /// Each bad value is rejected when the plan is built, naming the method and the field, and
    /// the message gives the allowed values.
    #[test]
    fn bad_parameter_values_are_rejected_naming_method_and_field() {
        let cases: &[(&str, &str, &str, &str)] = &[
            // (config, method, field, part of the allowed values)
            (r#"{"method":"kivi","bits":3}"#, "kivi", "bits", "2 or 4"),
            (r#"{"method":"kivi","group":0}"#, "kivi", "group", "at least 1"),
            (r#"{"method":"kivi","residual":100}"#, "kivi", "residual", "multiple of group"),
            (r#"{"method":"quant","bits":5}"#, "quant", "bits", "2, 4 or 8"),
            (r#"{"method":"quant","group":0}"#, "quant", "group", "at least 1"),
            (r#"{"method":"h2o","recent_fraction":-0.1}"#, "h2o", "recent_fraction", "[0, 1]"),
            (r#"{"method":"h2o","recent_fraction":1.5}"#, "h2o", "recent_fraction", "[0, 1]"),
            (r#"{"method":"adakv","floor":1.5}"#, "adakv", "floor", "[0, 1]"),
            (r#"{"method":"think","key_channel_ratio":1.0}"#, "think", "key_channel_ratio", "[0, 1)"),
            (r#"{"method":"think","key_channel_ratio":-0.5}"#, "think", "key_channel_ratio", "[0, 1)"),
            (r#"{"method":"kvsharer","fraction":1.2}"#, "kvsharer", "fraction", "[0, 1)"),
            (r#"{"method":"minicache","t":-1}"#, "minicache", "t", "[0, 1]"),
            (r#"{"method":"minicache","gamma":2}"#, "minicache", "gamma", "[0, 1]"),
            (r#"{"method":"snapkv","window":0}"#, "snapkv", "window", "at least 1"),
            (r#"{"method":"snapkv","kernel":4}"#, "snapkv", "kernel", "odd"),
            (r#"{"method":"think","window":0}"#, "think", "window", "at least 1"),
            (r#"{"method":"lagkv","lag_size":0}"#, "lagkv", "lag_size", "at least 1"),
            (r#"{"method":"kv_head_merge","group_size":0}"#, "kv_head_merge", "group_size", "at least 1"),
            (r#"{"method":"lowrank","rank":4,"energy":0.5}"#, "lowrank", "rank", "not both"),
            (r#"{"method":"lowrank","rank":0}"#, "lowrank", "rank", "at least 1"),
            (r#"{"method":"lowrank","energy":1.5}"#, "lowrank", "energy", "(0, 1]"),
            (r#"{"method":"pyramidkv","beta":0.5}"#, "pyramidkv", "beta", ">= 1"),
            (r#"{"method":"kvmerger","threshold":".nan"}"#, "kvmerger", "threshold", "[-1, 1]"),
            (r#"{"method":"adakv","scorer":{"method":"snapkv","window":0}}"#, "adakv", "scorer.window (snapkv)", "at least 1"),
            (r#"{"method":"pyramidkv","scorer":{"method":"h2o","recent_fraction":2}}"#, "pyramidkv", "scorer.recent_fraction (h2o)", "[0, 1]"),
            (r#"{"method":"cam","scorer":{"method":"lagkv","lag_size":0}}"#, "cam", "scorer.lag_size (lagkv)", "at least 1"),
            (r#"{"method":"per_layer","ratios":[0.5],"scorer":{"method":"snapkv","kernel":2}}"#, "per_layer", "scorer.kernel (snapkv)", "odd"),
        ];
        for &(json, method, field, allowed) in cases {
            let c: MethodConfig = if json.contains(".nan") {
                MethodConfig::Kvmerger(crate::merging::kvmerger::KvMerger {
                    threshold: f64::NAN,
                    ..Default::default()
                })
            } else {
                serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
            };
            let e = c.validate().expect_err(json);
            assert_eq!((e.method, e.field.as_str()), (method, field), "{json}: {e}");
            let msg = e.to_string();
            assert!(msg.starts_with(&format!("{method}: {field} ")) && msg.contains(allowed), "{json}: {msg}");
            // The run-time error of the method is the same error.
            assert!(c.build().validate().is_err());
        }
        // per_layer ratios out of range are rejected when parsed (with the YAML line) and by
        // validation for configurations built in code.
        let p = MethodConfig::PerLayer(crate::allocation::per_layer::PerLayer {
            ratios: vec![0.5, 1.5],
            scorer: ScorerConfig::default(),
        });
        let e = p.validate().unwrap_err();
        assert_eq!(e.field, "ratios[1]", "{e}");
        assert!(e.to_string().contains("[0, 1)"), "{e}");
        // A composition reports its bad part.
        let spec: MethodSpec =
            serde_json::from_str(r#"[{"method":"snapkv"},{"method":"kivi","bits":3}]"#).unwrap();
        let (part, e) = spec.validate().unwrap_err();
        assert_eq!((part, e.method, e.field.as_str()), (1, "kivi", "bits"));
    }

    #[test]
    fn shape_dependent_values_are_checked_against_the_model() {
        let check = |json: &str, shape: (usize, usize, usize)| {
            let c: MethodConfig = serde_json::from_str(json).unwrap();
            c.validate().unwrap();
            c.check_model_shape(shape.0, shape.1, shape.2)
        };
        let e = check(r#"{"method":"quant","group":64}"#, (4, 2, 32)).unwrap_err();
        assert_eq!((e.method, e.field.as_str()), ("quant", "group"));
        assert!(e.to_string().contains("must divide head_dim (32)"), "{e}");
        check(r#"{"method":"quant","group":64}"#, (4, 2, 128)).unwrap();
        let e = check(r#"{"method":"kivi"}"#, (4, 2, 16)).unwrap_err();
        assert_eq!(e.field, "group");
        let e = check(r#"{"method":"lowrank","rank":65}"#, (4, 2, 64)).unwrap_err();
        assert_eq!(e.field, "rank");
        let e = check(r#"{"method":"per_layer","ratios":[0.5,0.5]}"#, (4, 2, 64)).unwrap_err();
        assert_eq!(e.field, "ratios");
        check(r#"{"method":"per_layer","ratios":[0.5,0.5]}"#, (2, 2, 64)).unwrap();
        let e = check(r#"{"method":"minicache","start_layer":4}"#, (4, 2, 64)).unwrap_err();
        assert_eq!(e.field, "start_layer");
        let e = check(r#"{"method":"kvsharer","layers_shared":4}"#, (4, 2, 64)).unwrap_err();
        assert_eq!((e.method, e.field.as_str()), ("kvsharer", "layers_shared"));
        for d in METHODS {
            let mut json = serde_json::json!({ "method": d.name });
            if d.name == "per_layer" {
                json["ratios"] = serde_json::json!(vec![0.5; 16]);
            }
            let c: MethodConfig = serde_json::from_value(json).unwrap();
            c.check_model_shape(16, 8, 128)
                .unwrap_or_else(|e| panic!("{}: defaults rejected on a 16-layer model: {e}", d.name));
        }
    }

    #[test]
    fn unknown_method_lists_valid_names() {
        let err = serde_json::from_str::<MethodConfig>(r#"{"method":"nope"}"#).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("streaming_llm") && msg.contains("full"),
            "{msg}"
        );
    }

    #[test]
    fn spec_is_one_method_or_a_list() {
        let one: MethodSpec = serde_json::from_str(r#"{"method":"snapkv","window":8}"#).unwrap();
        assert!(matches!(
            one,
            MethodSpec::One(MethodConfig::Snapkv(SnapKv { window: 8, .. }))
        ));
        let two: MethodSpec =
            serde_json::from_str(r#"[{"method":"snapkv"},{"method":"knorm"}]"#).unwrap();
        assert_eq!(two.build().name(), "snapkv+knorm");
        // Serialized as written, so a single method's record key is unchanged.
        assert_eq!(serde_json::to_value(&one).unwrap()["method"], "snapkv");
        assert!(serde_json::to_value(&two).unwrap().is_array());
        // Errors inside either form still name the registered methods and the bad field.
        let err = serde_json::from_str::<MethodSpec>(r#"[{"method":"snapkv"},{"method":"nope"}]"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope") && err.contains("adakv"), "{err}");
        let err = serde_json::from_str::<MethodSpec>(r#"{"method":"snapkv","windw":3}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("windw"), "{err}");
        assert!(serde_json::from_str::<MethodSpec>("[]").is_err());
    }

    #[test]
    fn nested_scorers_default_and_parse() {
        let p: MethodConfig =
            serde_json::from_str(r#"{"method":"adakv","scorer":{"method":"knorm"}}"#).unwrap();
        assert!(matches!(
            p,
            MethodConfig::Adakv(AdaKv {
                scorer: ScorerConfig::Knorm(_),
                ..
            })
        ));
        let p: MethodConfig = serde_json::from_str(r#"{"method":"pyramidkv"}"#).unwrap();
        assert!(matches!(
            p,
            MethodConfig::Pyramidkv(PyramidKv {
                scorer: ScorerConfig::Snapkv(_),
                ..
            })
        ));
        assert!(serde_json::from_str::<MethodConfig>(
            r#"{"method":"adakv","scorer":{"method":"adakv"}}"#
        )
        .is_err());
    }
}

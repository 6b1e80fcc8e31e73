//! Compositions: an experiment's `methods:` entry is one method or a list of methods applied in
//! order (`[snapkv, kivi]` evicts then quantizes), recorded as `snapkv+kivi`.

use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::composed::Composed;
use crate::{Method, MethodConfig, ParamError};

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

//! The registry: every method's file, variant, YAML name and role, one line each, written in
//! `lib.rs`'s `registry!` block. From those lines the macro declares the family modules,
//! re-exports them flat, and generates the `MethodConfig` enum (`- method: snapkv` in an
//! experiment) with its `build`, the `ScorerConfig` enum of the methods marked `[scorer]`, and the
//! descriptions behind [`METHODS`] (`kvbench methods`), assembled from each method's own
//! [`Describe`](crate::describe::Describe) impl. The generated items are defined at the crate root
//! (where the block is) and re-exported here. Compositions of methods are in [`spec`].

use std::sync::LazyLock;

pub use crate::describe::{MethodDescription, ParamDescription};
use crate::selection::snapkv::SnapKv;
use crate::ParamError;
pub use crate::{MethodConfig, ScorerConfig, SCORER_NAMES};

pub mod spec;
pub use spec::MethodSpec;

#[cfg(test)]
mod tests;

/// Declares every method, from one line per method grouped in family blocks:
///
/// ```text
/// /// Family doc comment.
/// family with support, modules {
///     file: Variant(ConfigType) = "yaml_name" [scorer],
///     ...
/// }
/// ```
///
/// - `family { .. }`: the module `crate::family` (the folder `src/family/`), with the doc
///   comments written above it; `with a, b` adds modules of the folder that are not methods
///   (`selection`'s `scoring` and `select`);
/// - `file`: the method's file, `src/family/file.rs`, declared as `pub mod file` and re-exported
///   flat (`crate::snapkv` as well as `crate::selection::snapkv`);
/// - `Variant(ConfigType)`: the `MethodConfig` variant and the config struct of that file;
/// - `"yaml_name"`: the name an experiment writes (`- method: yaml_name`);
/// - `[scorer]` (optional): the method is also a token scorer, usable as `scorer:` inside
///   allocators, `chunk`, `cam`, `kvmerger` and `decoding` (a `ScorerConfig` variant).
///
/// Generated at the invocation site: the family modules, `MethodConfig` (with `Full`, the
/// baseline, first), `ScorerConfig`, `SCORER_NAMES` and the function `METHODS` is built from.
macro_rules! registry {
    // The `[scorer]` lines, picked one at a time into the list `ScorerConfig` is generated from.
    (@scorers [$($done:tt)*]) => {
        $crate::registry::registry!(@scorer_config $($done)*);
    };
    (@scorers [$($done:tt)*] $v:ident($t:ty) = $n:literal [scorer]; $($rest:tt)*) => {
        $crate::registry::registry!(@scorers [$($done)* $v($t) = $n;] $($rest)*);
    };
    (@scorers [$($done:tt)*] $v:ident($t:ty) = $n:literal; $($rest:tt)*) => {
        $crate::registry::registry!(@scorers [$($done)*] $($rest)*);
    };
    (@scorer_config $($v:ident($t:ty) = $n:literal;)*) => {
        /// A scorer inside a budget allocator or `decoding` (`scorer: {method: knorm}`): the
        /// registered methods that rank entries (marked `[scorer]` in the registry).
        #[derive(Clone, Debug, ::serde::Serialize, ::serde::Deserialize, PartialEq)]
        #[serde(tag = "method", deny_unknown_fields)]
        pub enum ScorerConfig {
            $( #[serde(rename = $n)] $v($t), )*
        }

        impl ScorerConfig {
            pub fn scorer(&self) -> &dyn $crate::selection::scoring::Scorer {
                match self {
                    $( ScorerConfig::$v(s) => s, )*
                }
            }
        }

        /// The names `scorer:` accepts, in registry order.
        pub const SCORER_NAMES: &[&str] = &[$($n),*];
    };

    (
        $(
            $(#[$family_attr:meta])*
            $family:ident $(with $($support:ident),+)? {
                $( $file:ident: $variant:ident($ty:ident) = $name:literal $([$role:ident])?, )*
            }
        )*
    ) => {
        $(
            $(#[$family_attr])*
            pub mod $family {
                $($( pub mod $support; )+)?
                $( pub mod $file; )*
            }
            pub use $family::{$($($support,)+)? $($file,)*};
        )*

        /// A method as written in an experiment (`- method: streaming_llm`, `sinks: 4`).
        #[derive(Clone, Debug, ::serde::Serialize, ::serde::Deserialize, PartialEq)]
        #[serde(tag = "method", deny_unknown_fields)]
        pub enum MethodConfig {
            #[serde(rename = "full")]
            Full,
            $($( #[serde(rename = $name)] $variant($family::$file::$ty), )*)*
        }

        impl MethodConfig {
            pub fn build(&self) -> Box<dyn $crate::Method> {
                match self {
                    MethodConfig::Full => Box::new($crate::full::Full),
                    $($( MethodConfig::$variant(m) => Box::new(m.clone()), )*)*
                }
            }

            /// Every registered method with its `Default` configuration, in registry order (the
            /// configurations `kvbench methods` documents).
            pub fn registered_defaults() -> Vec<MethodConfig> {
                vec![
                    MethodConfig::Full,
                    $($( MethodConfig::$variant(<$family::$file::$ty as Default>::default()), )*)*
                ]
            }
        }

        $crate::registry::registry!(
            @scorers [] $($( $variant($family::$file::$ty) = $name $([$role])?; )*)*
        );

        /// Every registered method's description, in registry order (behind `registry::METHODS`).
        fn registered_descriptions() -> Vec<$crate::describe::MethodDescription> {
            use $crate::describe::{assemble, Describe};
            let none = serde_json::json!({});
            let mut all = vec![assemble(
                "full",
                &<$crate::full::Full as Describe>::DESCRIPTION,
                <$crate::full::Full as Describe>::conformance(),
                &none,
                SCORER_NAMES,
            )];
            $($(
                let defaults = serde_json::to_value(<$family::$file::$ty as Default>::default())
                    .expect("a method's default configuration serializes");
                all.push(assemble(
                    $name,
                    &<$family::$file::$ty as Describe>::DESCRIPTION,
                    <$family::$file::$ty as Describe>::conformance(),
                    &defaults,
                    SCORER_NAMES,
                ));
            )*)*
            all
        }
    };
}
pub(crate) use registry;

/// Every registered method's description, in registry order, for `kvbench methods`.
pub static METHODS: LazyLock<Vec<MethodDescription>> =
    LazyLock::new(crate::registered_descriptions);

/// Registered method names, in registry order.
pub fn method_names() -> Vec<&'static str> {
    METHODS.iter().map(|m| m.name).collect()
}

impl MethodConfig {
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

impl Default for ScorerConfig {
    fn default() -> Self {
        ScorerConfig::Snapkv(SnapKv::default())
    }
}

impl ScorerConfig {
    /// Check the scorer's parameters, reported as the field `field` of the method `outer`
    /// (`adakv: scorer.window (snapkv) ...`).
    pub fn validate_within(&self, outer: &'static str, field: &str) -> Result<(), ParamError> {
        self.scorer().validate().map_err(|e| e.within(outer, field))
    }
}

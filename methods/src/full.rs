//! `full`: no compression. The baseline every other method is compared with.

use crate::describe::{Conformance, Describe, Description, Expect};
use crate::{Budget, KvCache, Method, MethodError, Observations};

#[derive(Clone, Debug, Default)]
pub struct Full;

impl Method for Full {
    fn name(&self) -> &str {
        "full"
    }
    fn params(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    fn uses_budget(&self) -> bool {
        false
    }
    fn compress(&self, _: &mut KvCache, _: &Observations, _: &Budget) -> Result<(), MethodError> {
        Ok(())
    }
    fn compresses_by_layer(&self) -> bool {
        true
    }
    fn compress_layer(
        &self,
        _: &mut KvCache,
        _: usize,
        _: &Observations,
        _: &Budget,
    ) -> Result<(), MethodError> {
        Ok(())
    }
}

impl Describe for Full {
    const DESCRIPTION: Description = Description {
        family: "baseline",
        summary: "No compression: the full cache every other method is compared with.",
        paper: "",
        params: &[],
    };

    fn conformance() -> Conformance {
        Conformance::expect(Expect::Unchanged)
    }
}

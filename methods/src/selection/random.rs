//! `random`: keep uniformly random entries, seeded: the baseline every table needs.
//!
//! No paper; kvpress's `RandomPress` is the reference. Each layer and KV head draws its own
//! uniform scores from a generator seeded by (`seed`, layer, head), so runs are reproducible and
//! heads differ. kvpress reseeds one generator per layer with the same seed (every layer then
//! draws the same scores) and leaves the seed unset (irreproducible) by default; here `seed = 0`.

use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::describe::{Describe, Description, Param};
use crate::selection::scoring::{LayerInput, Scorer};
use crate::MethodError;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Random {
    /// Seed of the per-layer, per-head generators.
    #[serde(default)]
    pub seed: u64,
}

impl Scorer for Random {
    fn scorer_name(&self) -> &'static str {
        "random"
    }
    fn score(&self, input: &LayerInput) -> Result<Vec<Vec<f32>>, MethodError> {
        Ok(input
            .layer
            .head_lens()
            .iter()
            .enumerate()
            .map(|(h, &len)| {
                let stream = self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    ^ ((input.index as u64) << 20)
                    ^ h as u64;
                let mut rng = rand::rngs::StdRng::seed_from_u64(stream);
                (0..len).map(|_| rng.gen::<f32>()).collect()
            })
            .collect())
    }
    /// The host's draws, uploaded once per group so that the top-k runs on the device.
    fn score_groups(&self, input: &LayerInput) -> Result<Option<Vec<Tensor>>, MethodError> {
        let scores = self.score(input)?;
        let mut out = Vec::new();
        for g in input.layer.groups() {
            let rows = scores[g.first_head..g.first_head + g.n_heads()].concat();
            out.push(Tensor::from_vec(rows, (g.n_heads(), g.len()), &g.storage.device())?);
        }
        Ok(Some(out))
    }
}

crate::selection::select::uniform_scorer_method!(Random, "random");

impl Describe for Random {
    const DESCRIPTION: Description = Description {
        family: "scorer",
        summary: "Uniformly random entries, seeded per layer and head (baseline).",
        paper: "",
        params: &[Param::new(
            "seed",
            "integer",
            "seed of the per-layer, per-head generators",
        )],
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{cache_with_keys, keep_of};
    #[allow(unused_imports)]
    use crate::{Budget, KvCache, Method, ObservationNeeds, Observations};

    #[test]
    fn seeded_uniform_choice_is_reproducible_and_seed_dependent() {
        let keys: Vec<Vec<f32>> = (0..64).map(|i| vec![i as f32]).collect();
        let base = cache_with_keys(&[keys.clone(), keys]);
        let run = |seed| {
            let mut c = base.fork();
            Random { seed }
                .compress(&mut c, &Observations::default(), &Budget::Tokens(16))
                .unwrap();
            keep_of(&c, 0)
        };
        let a = run(0);
        assert_eq!(a, run(0));
        assert_ne!(a, run(1));
        // Heads draw independently.
        assert_ne!(a[0], a[1]);
        // Not a contiguous block (what a recency or norm rule on these keys would keep).
        assert!(a[0].windows(2).any(|w| w[1] - w[0] > 1));
        assert_eq!(a[0].len(), 16);
    }
}

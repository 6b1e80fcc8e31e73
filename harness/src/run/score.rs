//! Score stage: the task metric on the decoded prediction, and fidelity to the full-cache
//! reference run on the same turn (greedy token agreement, first-token KL divergence).

use super::generate::Generation;
use super::TurnRef;

/// What the score stage adds to one generation.
pub(super) struct Scored {
    pub prediction: String,
    pub score: f64,
    pub agreement_with_full: f64,
    pub kl_first_token: f64,
}

impl Scored {
    /// Score `prediction` (the decoded `generation`) with the turn's metric and against the
    /// reference generation.
    pub fn new(
        turn: &TurnRef,
        prediction: String,
        generation: &Generation,
        reference: &Generation,
    ) -> Self {
        Self {
            score: turn.sample.score(turn.index, &prediction),
            prediction,
            agreement_with_full: agreement(&reference.tokens, &generation.tokens),
            kl_first_token: kl_divergence(&reference.first_logprobs, &generation.first_logprobs),
        }
    }
}

/// KL(p || q) in nats from log-probabilities.
pub fn kl_divergence(logp: &[f64], logq: &[f64]) -> f64 {
    logp.iter()
        .zip(logq)
        .map(|(&a, &b)| {
            if a.is_finite() {
                a.exp() * (a - b)
            } else {
                0.0
            }
        })
        .sum::<f64>()
        .max(0.0)
}

/// Fraction of the reference's tokens reproduced at the same positions.
pub fn agreement(reference: &[u32], tokens: &[u32]) -> f64 {
    if reference.is_empty() {
        return if tokens.is_empty() { 1.0 } else { 0.0 };
    }
    let same = reference.iter().zip(tokens).filter(|(a, b)| a == b).count();
    same as f64 / reference.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_is_zero_for_identical_and_positive_otherwise() {
        let p = [0.5f64.ln(), 0.5f64.ln()];
        let q = [0.9f64.ln(), 0.1f64.ln()];
        assert!(kl_divergence(&p, &p).abs() < 1e-12);
        // 0.5 ln(0.5/0.9) + 0.5 ln(0.5/0.1) = 0.5108...
        assert!((kl_divergence(&p, &q) - 0.510_825_6).abs() < 1e-6);
    }

    #[test]
    fn agreement_counts_positions() {
        assert_eq!(agreement(&[1, 2, 3, 4], &[1, 2, 9, 4]), 0.75);
        assert_eq!(agreement(&[1, 2], &[1]), 0.5);
        assert_eq!(agreement(&[], &[]), 1.0);
    }
}

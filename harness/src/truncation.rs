//! Prompts longer than the model can take: LongBench's middle truncation (`pred.py`: keep the
//! first and the last `int(max_length / 2)` tokens) applied to the context's token ids, so the
//! question always stays whole.
//!
//! By default a prompt must fit the model's context window (`max_position_embeddings`) with the
//! turn's decode budget: `context + question + max_new_tokens <= window`. A dataset's explicit
//! `max_length` wins: the dataset truncates its prompts to it as the benchmark's code does
//! (before the chat template, as `pred.py`), and the harness does not cut again.

use serde::Serialize;

/// How a dataset's prompts are kept within bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "policy")]
pub enum TruncationPolicy {
    /// Middle-truncate the context so the prompt and the decode budget fit `window` tokens.
    Middle { window: usize },
    /// The dataset's own `max_length` (the dataset truncated already).
    MaxLength { max_length: usize },
}

#[derive(thiserror::Error, Debug, PartialEq, Eq)]
#[error(
    "the question alone is {question} tokens, and {max_new_tokens} more are decoded, but the \
     model's context window is {window} tokens; nothing of the context would be left (set a \
     smaller `max_new_tokens` or use a model with a longer context)"
)]
pub struct TooLong {
    pub question: usize,
    pub max_new_tokens: usize,
    pub window: usize,
}

impl TruncationPolicy {
    /// `max_length` if the dataset sets one, else middle truncation to `window`.
    pub fn new(max_length: Option<usize>, window: usize) -> Self {
        match max_length {
            Some(max_length) => Self::MaxLength { max_length },
            None => Self::Middle { window },
        }
    }

    /// `middle (window 8192 - max_new_tokens)` or `max_length 31500`.
    pub fn label(&self) -> String {
        match self {
            Self::Middle { window } => format!("middle (window {window} - max_new_tokens)"),
            Self::MaxLength { max_length } => format!("max_length {max_length}"),
        }
    }

    /// Truncate `context` in place so that the prompt fits; returns the number of tokens cut.
    pub fn apply(
        &self,
        context: &mut Vec<u32>,
        question_len: usize,
        max_new_tokens: usize,
    ) -> Result<usize, TooLong> {
        let Self::Middle { window } = *self else {
            return Ok(0);
        };
        let budget = window
            .checked_sub(question_len + max_new_tokens)
            .filter(|&b| b > 0)
            .ok_or(TooLong {
                question: question_len,
                max_new_tokens,
                window,
            })?;
        Ok(truncate_middle_ids(context, budget))
    }
}

/// LongBench's rule on ids: if there are more than `max` ids, keep the first and the last
/// `max / 2` (so an odd `max` keeps `max - 1`). Returns how many ids were removed.
pub fn truncate_middle_ids(ids: &mut Vec<u32>, max: usize) -> usize {
    if ids.len() <= max {
        return 0;
    }
    let half = max / 2;
    let before = ids.len();
    ids.drain(half..before - half);
    before - ids.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn middle_keeps_head_and_tail_halves() {
        let mut ids: Vec<u32> = (0..10).collect();
        assert_eq!(truncate_middle_ids(&mut ids, 6), 4);
        assert_eq!(ids, vec![0, 1, 2, 7, 8, 9]);
        // odd max: int(7 / 2) = 3 each side, as pred.py
        let mut ids: Vec<u32> = (0..10).collect();
        assert_eq!(truncate_middle_ids(&mut ids, 7), 4);
        assert_eq!(ids, vec![0, 1, 2, 7, 8, 9]);
        let mut ids: Vec<u32> = (0..5).collect();
        assert_eq!(truncate_middle_ids(&mut ids, 5), 0);
        assert_eq!(ids.len(), 5);
    }

    #[test]
    fn the_window_holds_prompt_and_decode_budget() {
        let p = TruncationPolicy::new(None, 20);
        let mut ctx: Vec<u32> = (100..130).collect();
        // 20 - 4 (question) - 6 (decode) = 10 context tokens: 5 + 5
        assert_eq!(p.apply(&mut ctx, 4, 6), Ok(20));
        assert_eq!(ctx, vec![100, 101, 102, 103, 104, 125, 126, 127, 128, 129]);
        let mut short: Vec<u32> = (0..10).collect();
        assert_eq!(p.apply(&mut short, 4, 6), Ok(0));
        let err = p.apply(&mut short, 15, 5).unwrap_err();
        assert!(err.to_string().contains("context window is 20"), "{err}");
    }

    #[test]
    fn explicit_max_length_leaves_the_harness_out() {
        let p = TruncationPolicy::new(Some(8), 20);
        assert_eq!(p.label(), "max_length 8");
        let mut ctx: Vec<u32> = (0..100).collect();
        assert_eq!(p.apply(&mut ctx, 4, 6), Ok(0));
        assert_eq!(ctx.len(), 100);
        assert_eq!(
            TruncationPolicy::new(None, 8192).label(),
            "middle (window 8192 - max_new_tokens)"
        );
    }
}

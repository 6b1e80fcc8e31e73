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
    /// The dataset's own `max_length` (the dataset truncated already); a prompt still longer
    /// than the model's `window` is middle-truncated to it (with a warning naming the sample).
    MaxLength {
        max_length: usize,
        #[serde(skip)]
        window: usize,
    },
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
            Some(max_length) => Self::MaxLength { max_length, window },
            None => Self::Middle { window },
        }
    }

    /// `middle (window 8192 - max_new_tokens)` or `max_length 31500`.
    pub fn label(&self) -> String {
        match self {
            Self::Middle { window } => format!("middle (window {window} - max_new_tokens)"),
            Self::MaxLength { max_length, .. } => format!("max_length {max_length}"),
        }
    }

    /// The model's context window (positions) the prompt and the decode budget must fit.
    pub fn window(&self) -> usize {
        match *self {
            Self::Middle { window } | Self::MaxLength { window, .. } => window,
        }
    }

    /// A turn's `max_new_tokens`, capped so that the question, at least one context token and
    /// the generated tokens fit the window: `min(asked, window - question_len - 1)` (0 when not
    /// even the question fits).
    pub fn cap_new_tokens(&self, asked: usize, question_len: usize) -> usize {
        asked.min(self.window().saturating_sub(question_len + 1))
    }

    /// Truncate `context` in place so that the prompt fits; returns the number of tokens cut.
    /// Under `MaxLength` the dataset truncated already, and only a prompt that still does not
    /// fit the model's window is cut (middle truncation, as `Middle`).
    pub fn apply(
        &self,
        context: &mut Vec<u32>,
        question_len: usize,
        max_new_tokens: usize,
    ) -> Result<usize, TooLong> {
        let window = self.window();
        if let Self::MaxLength { .. } = self {
            if context.len() + question_len + max_new_tokens <= window {
                return Ok(0);
            }
        }
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
        let mut ctx: Vec<u32> = (0..10).collect();
        assert_eq!(p.apply(&mut ctx, 4, 6), Ok(0));
        assert_eq!(ctx.len(), 10);
        assert_eq!(
            TruncationPolicy::new(None, 8192).label(),
            "middle (window 8192 - max_new_tokens)"
        );
    }

    /// Issue 17 item 7: a prompt longer than the model's positions is middle-truncated even
    /// when the dataset's own `max_length` is larger than the window; `max_new_tokens` is
    /// capped by the window.
    #[test]
    fn a_prompt_beyond_the_models_positions_is_cut_even_under_max_length() {
        let p = TruncationPolicy::new(Some(31_500), 20);
        let mut ctx: Vec<u32> = (0..100).collect();
        assert_eq!(p.apply(&mut ctx, 4, 6), Ok(90));
        assert_eq!(ctx, vec![0, 1, 2, 3, 4, 95, 96, 97, 98, 99]);
        assert_eq!(p.window(), 20);
        assert_eq!(p.cap_new_tokens(500, 4), 15);
        assert_eq!(p.cap_new_tokens(6, 4), 6);
        assert_eq!(p.cap_new_tokens(6, 25), 0);
        // run.json keeps its shape: the window is not serialised under `max_length`.
        assert_eq!(
            serde_json::to_value(p).unwrap(),
            serde_json::json!({"policy": "max_length", "max_length": 31500})
        );
    }
}

//! Parameter checks done when an experiment's plan is built, before any model or dataset work:
//! every method checks its own configuration values ([`Method::validate`](crate::Method::validate))
//! and, once the model is loaded and before the first sample, whether they fit the model's shape
//! ([`Method::check_model_shape`](crate::Method::check_model_shape)). The run-time checks of the
//! methods call the same functions, so a validated plan never fails them.

/// A parameter value a method does not accept: the method, the field (`scorer.window` inside a
/// nested scorer) and what is wrong, with the allowed values. Displayed `kivi: bits must be 2 or 4
/// (KIVI-2 or KIVI-4), got 3`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{method}: {field} {message}")]
pub struct ParamError {
    /// Registered name of the method whose entry holds the field.
    pub method: &'static str,
    /// The field, dotted inside nested configurations (`scorer.window`).
    pub field: String,
    /// What is wrong and the allowed values.
    pub message: String,
}

impl ParamError {
    pub fn new(method: &'static str, field: &str, message: impl Into<String>) -> Self {
        Self {
            method,
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// The same error as seen from the method `outer`, whose field `outer_field` holds the
    /// configuration that failed (a scorer inside an allocator: `adakv: scorer.window ...`).
    pub fn within(self, outer: &'static str, outer_field: &str) -> Self {
        Self {
            method: outer,
            field: format!("{outer_field}.{} ({})", self.field, self.method),
            message: self.message,
        }
    }
}

/// `Ok` when `value` lies in `[lo, hi)` (`hi_inclusive`: `[lo, hi]`), else an error naming the
/// field and the interval. NaN is always rejected.
pub(crate) fn check_range(
    method: &'static str,
    field: &str,
    value: f64,
    lo: f64,
    hi: f64,
    hi_inclusive: bool,
    meaning: &str,
) -> Result<(), ParamError> {
    let ok = value >= lo
        && if hi_inclusive {
            value <= hi
        } else {
            value < hi
        };
    if ok {
        return Ok(());
    }
    let close = if hi_inclusive { "]" } else { ")" };
    Err(ParamError::new(
        method,
        field,
        format!("= {value} must be in [{lo}, {hi}{close} ({meaning})"),
    ))
}

/// `Ok` when `value` is at least 1, else an error naming the field.
pub(crate) fn check_positive(
    method: &'static str,
    field: &str,
    value: usize,
    meaning: &str,
) -> Result<(), ParamError> {
    if value >= 1 {
        return Ok(());
    }
    Err(ParamError::new(
        method,
        field,
        format!("= 0 must be at least 1 ({meaning})"),
    ))
}

//! What the test expects of a configuration, read from the declarations of the registered methods
//! (`Describe::conformance`, through `METHODS`): a method's own, or for a composition
//! (`snapkv+knorm`), what follows from its parts'. No method is named here.

use kvbench_methods::{AfterDecode, Conformance, Expect, Method, Rows, METHODS};

/// The registered method `name`'s conformance expectations (declared in its file).
pub fn conformance(name: &str) -> &'static Conformance {
    &METHODS
        .iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("`{name}` is not registered"))
        .conformance
}

/// How many entries a configuration keeps at prefill.
pub enum Want {
    One(Expect),
    /// Parts applied in turn, each with the budget: `kept(kept(len))`.
    Composed(usize),
}

pub struct Expected {
    pub kept: Want,
    /// Whether the stored keys and values are compared with the original rows.
    pub keys_compared: bool,
    pub values_compared: bool,
    /// For methods that store rounded values, the largest reconstruction error allowed (`None`:
    /// bit for bit, in exactly the bytes dense rows need).
    pub tol: Option<f32>,
    pub after_decode: AfterDecode,
}

/// Half a quantization step of values spanning [-1, 1] (random entries) at `bits` bits, plus f16
/// slack.
fn half_step(bits: &serde_json::Value) -> f32 {
    let bits = bits.as_u64().expect("a bit width") as i32;
    1.0 / (2f32.powi(bits) - 1.0) + 1e-3
}

/// `method`'s expectations; `after_decode` replaces the declared one (an extra spec's own).
pub fn expected(method: &dyn Method, after_decode: Option<AfterDecode>) -> Expected {
    let name = method.name();
    let parts: Vec<&Conformance> = name.split('+').map(conformance).collect();
    // A composition's params are its parts' configs, in order.
    let params = match method.params() {
        serde_json::Value::Array(parts) => parts,
        one => vec![one],
    };
    let kept = if parts.len() == 1 {
        Want::One(parts[0].expect.clone())
    } else if parts.iter().all(|c| c.expect == Expect::Storage) {
        Want::One(Expect::Storage)
    } else {
        Want::Composed(parts.len())
    };
    // Rounding errors of several rounded parts add up.
    let tol = parts
        .iter()
        .zip(&params)
        .filter_map(|(c, p)| match c.rows {
            Rows::Quantized { bits } => Some(half_step(&p[bits])),
            _ => None,
        })
        .reduce(|a, b| a + b);
    let after_decode = after_decode.unwrap_or_else(|| {
        if parts.len() == 1 {
            parts[0].after_decode.clone()
        } else {
            assert!(
                parts.iter().all(|c| c.after_decode == AfterDecode::Appends),
                "{name}: compositions whose parts evict while decoding are not covered"
            );
            AfterDecode::Appends
        }
    });
    Expected {
        kept,
        keys_compared: parts.iter().all(|c| c.rows.keys_compared()),
        values_compared: parts.iter().all(|c| c.rows.values_compared()),
        tol,
        after_decode,
    }
}

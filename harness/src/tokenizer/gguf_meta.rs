//! Typed access to GGUF tokenizer metadata (`tokenizer.ggml.*`), shared by the BPE and
//! SentencePiece builders: every malformed value is an error naming its key.

use candle_core::quantized::gguf_file;

use super::TokenizerError;

pub(crate) struct Meta<'a>(pub(crate) &'a gguf_file::Content);

impl<'a> Meta<'a> {
    pub(crate) fn get(&self, key: &str) -> Option<&'a gguf_file::Value> {
        self.0.metadata.get(key)
    }

    pub(crate) fn bad(key: &str, problem: impl std::fmt::Display) -> TokenizerError {
        TokenizerError::BadMetadata {
            key: key.to_string(),
            problem: problem.to_string(),
        }
    }

    pub(crate) fn string(&self, key: &str) -> Result<Option<&'a str>, TokenizerError> {
        self.get(key)
            .map(|v| {
                v.to_string()
                    .map(|s| s.as_str())
                    .map_err(|e| Self::bad(key, e))
            })
            .transpose()
    }

    pub(crate) fn required_array(
        &self,
        key: &str,
    ) -> Result<&'a [gguf_file::Value], TokenizerError> {
        let v = self
            .get(key)
            .ok_or_else(|| TokenizerError::MissingKey(key.to_string()))?;
        v.to_vec()
            .map(|v| v.as_slice())
            .map_err(|e| Self::bad(key, e))
    }

    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>, TokenizerError> {
        match self.get(key) {
            None => Ok(None),
            Some(gguf_file::Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => match int_value(v) {
                Some(0) => Ok(Some(false)),
                Some(1) => Ok(Some(true)),
                _ => Err(Self::bad(key, format!("expected a bool, found {v:?}"))),
            },
        }
    }

    /// A token id, checked against the vocabulary size.
    pub(crate) fn token_id(
        &self,
        key: &str,
        n_tokens: usize,
    ) -> Result<Option<u32>, TokenizerError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let id = int_value(v)
            .ok_or_else(|| Self::bad(key, format!("expected a token id, found {v:?}")))?;
        if id < 0 || id as u128 >= n_tokens as u128 {
            return Err(Self::bad(
                key,
                format!("token id {id} outside the vocabulary of {n_tokens} tokens"),
            ));
        }
        Ok(Some(id as u32))
    }
}

/// Any GGUF integer (ids are u32 by convention, token types i32), widened.
pub(crate) fn int_value(v: &gguf_file::Value) -> Option<i128> {
    use gguf_file::Value as V;
    Some(match v {
        V::U8(x) => *x as i128,
        V::I8(x) => *x as i128,
        V::U16(x) => *x as i128,
        V::I16(x) => *x as i128,
        V::U32(x) => *x as i128,
        V::I32(x) => *x as i128,
        V::U64(x) => *x as i128,
        V::I64(x) => *x as i128,
        _ => return None,
    })
}

/// GGUF token types (llama.cpp `llama_token_type`).
pub(crate) const TOKEN_TYPE_CONTROL: i128 = 3;
pub(crate) const TOKEN_TYPE_USER_DEFINED: i128 = 4;

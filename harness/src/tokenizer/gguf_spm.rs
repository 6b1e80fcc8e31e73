//! SentencePiece vocabularies from GGUF metadata (`tokenizer.ggml.model = "llama"`: Llama 2,
//! Mistral up to v0.3, Gemma, ...), as a Hugging Face `tokenizers` BPE.
//!
//! The GGUF holds the pieces (`tokenizer.ggml.tokens`), their scores and types, but no merges.
//! Encoding follows llama.cpp's `llm_tokenizer_spm`, which is SentencePiece's BPE encoding:
//!
//! 1. Control (type 3) and user-defined (type 4) pieces are cut out of the raw text first, whole
//!    (`<start_of_turn>`, `<bos>`, and Gemma's `\n`, `\n\n`, runs of spaces, HTML tags).
//!    Hugging Face's added-token matcher takes the leftmost-longest match, llama.cpp the longest
//!    piece first; they cut the same way unless two pieces overlap (Gemma's overlap only as runs
//!    of one character, `\n\n` in `\n\n\n`, where both take the longest run from the left).
//! 2. Each remaining piece of text has its spaces replaced by `▁` (and, when
//!    `tokenizer.ggml.add_space_prefix` is true, a `▁` prepended), then is split into characters.
//! 3. Repeatedly, of all adjacent pairs whose concatenation is a vocabulary piece, the one whose
//!    piece has the highest score is merged (the leftmost among equal ones).
//! 4. A character that is no piece becomes its UTF-8 bytes, as the `<0xXX>` pieces.
//!
//! Step 3 is a BPE whose merge list is every pair `(a, b)` of normal pieces whose concatenation is
//! a normal piece, ranked by that piece's score, highest first: what transformers'
//! `SentencePieceExtractor` / GGUF converters derive. Only normal pieces (type 1) take part; the
//! others are never inside a piece of text (1) or never formed by merging (bytes). Two pairs that
//! make the same piece, or pieces of equal score, are ordered by id, where llama.cpp takes the
//! leftmost in the text: the two differ only when both such pairs are present at once.
//!
//! The rest is Hugging Face's tokenizer.json for these models: normalizer `Replace(" ", "▁")`
//! (with `Prepend("▁")` first when `add_space_prefix`, as Llama 2's and as llama.cpp, which adds
//! it to every piece of text after a special token), decoder `Replace("▁", " ")`, `ByteFallback`,
//! `Fuse` (and `Strip` of one leading space when `add_space_prefix`). Gemma 3 says
//! `add_space_prefix = false`. Control pieces are special tokens (skipped when decoding);
//! user-defined ones decode as their text. Generation stops at eos, the GGUF's eot/eom ids, and
//! at every control piece named in `tokenizer::STOP_CANDIDATES` (llama.cpp's end-of-generation
//! rule, which gives Gemma's `<end_of_turn>`; this GGUF has no chat template to look them up in).

use std::collections::HashMap;

use candle_core::quantized::gguf_file;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::prepend::Prepend;
use tokenizers::normalizers::replace::Replace;
use tokenizers::normalizers::utils::Sequence as NormalizerSequence;
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, Tokenizer};

use super::{
    dedup, int_value, post_processor, tk_err, Meta, TextTokenizer, TokenizerError, STOP_CANDIDATES,
    TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED,
};

/// SentencePiece's meta symbol for a space.
const SPACE: &str = "\u{2581}";

/// GGUF token type of an ordinary piece (llama.cpp `LLAMA_TOKEN_TYPE_NORMAL`).
const TOKEN_TYPE_NORMAL: i128 = 1;

const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_TYPES: &str = "tokenizer.ggml.token_type";

/// The pieces of a SentencePiece vocabulary: text, score and GGUF type, indexed by id.
#[derive(Debug, Clone)]
pub struct SpmVocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<i128>,
}

impl SpmVocab {
    /// Read `tokenizer.ggml.tokens`, `.scores` and `.token_type` (types default to normal when the
    /// key is absent, as llama.cpp does); lengths must agree.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Self, TokenizerError> {
        let meta = Meta(content);
        let tokens_v = meta.required_array(KEY_TOKENS)?;
        let n = tokens_v.len();
        if n == 0 {
            return Err(Meta::bad(KEY_TOKENS, "empty vocabulary"));
        }
        if n > u32::MAX as usize {
            return Err(Meta::bad(KEY_TOKENS, "vocabulary too large"));
        }
        let mut tokens = Vec::with_capacity(n);
        for (i, v) in tokens_v.iter().enumerate() {
            let s = v
                .to_string()
                .map_err(|e| Meta::bad(KEY_TOKENS, format!("entry {i}: {e}")))?;
            // As llama.cpp: an empty entry cannot be looked up, give it a unique placeholder.
            tokens.push(if s.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                s.clone()
            });
        }

        let scores_v = meta.required_array(KEY_SCORES).map_err(|e| match e {
            TokenizerError::MissingKey(k) => Meta::bad(
                &k,
                "missing: a SentencePiece (`llama`) vocabulary needs its scores to rank merges; \
                 re-convert the model with llama.cpp's convert_hf_to_gguf.py",
            ),
            other => other,
        })?;
        let scores = length_checked(KEY_SCORES, scores_v, n)?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                float_value(v).ok_or_else(|| {
                    Meta::bad(KEY_SCORES, format!("entry {i} is not a number: {v:?}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let types = match meta.get(KEY_TYPES) {
            None => vec![TOKEN_TYPE_NORMAL; n],
            Some(_) => length_checked(KEY_TYPES, meta.required_array(KEY_TYPES)?, n)?
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    int_value(v).ok_or_else(|| {
                        Meta::bad(KEY_TYPES, format!("entry {i} is not an integer: {v:?}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        Ok(Self {
            tokens,
            scores,
            types,
        })
    }

    /// The BPE merge list equivalent to SentencePiece's greedy highest-score merging: every pair
    /// of normal pieces whose concatenation is a normal piece, best-scoring result first (ties:
    /// lower result id, then lower left id, then lower right id).
    pub fn merges(&self) -> Vec<(String, String)> {
        let normal: HashMap<&str, u32> = self
            .tokens
            .iter()
            .enumerate()
            .filter(|(i, _)| self.types[*i] == TOKEN_TYPE_NORMAL)
            .map(|(i, t)| (t.as_str(), i as u32))
            .collect();
        // (merged, left, right) ids.
        let mut found: Vec<(u32, u32, u32)> = Vec::new();
        for (id, piece) in self.tokens.iter().enumerate() {
            if self.types[id] != TOKEN_TYPE_NORMAL {
                continue;
            }
            for (at, _) in piece.char_indices().skip(1) {
                let (l, r) = piece.split_at(at);
                if let (Some(&li), Some(&ri)) = (normal.get(l), normal.get(r)) {
                    found.push((id as u32, li, ri));
                }
            }
        }
        let score = |id: u32| self.scores[id as usize];
        found.sort_unstable_by(|a, b| {
            score(b.0)
                .total_cmp(&score(a.0))
                .then(a.0.cmp(&b.0))
                .then(a.1.cmp(&b.1))
                .then(a.2.cmp(&b.2))
        });
        found
            .into_iter()
            .map(|(_, l, r)| {
                (
                    self.tokens[l as usize].clone(),
                    self.tokens[r as usize].clone(),
                )
            })
            .collect()
    }

    fn of_type(&self, kind: i128) -> impl Iterator<Item = (u32, &str)> + '_ {
        self.tokens
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.types[*i] == kind)
            .map(|(i, t)| (i as u32, t.as_str()))
    }
}

fn length_checked<'a>(
    key: &str,
    values: &'a [gguf_file::Value],
    n: usize,
) -> Result<&'a [gguf_file::Value], TokenizerError> {
    if values.len() != n {
        return Err(Meta::bad(
            key,
            format!(
                "{} entries for {n} tokens (tokenizer.ggml.tokens); the file is inconsistent, \
                 re-convert it",
                values.len()
            ),
        ));
    }
    Ok(values)
}

fn float_value(v: &gguf_file::Value) -> Option<f32> {
    match v {
        gguf_file::Value::F32(x) => Some(*x),
        gguf_file::Value::F64(x) => Some(*x as f32),
        other => int_value(other).map(|i| i as f32),
    }
}

/// Spaces become `▁`; with `add_space_prefix`, each piece of text between special tokens starts
/// with one.
fn normalizer(add_space_prefix: bool) -> Result<NormalizerWrapper, TokenizerError> {
    let replace: NormalizerWrapper = Replace::new(" ", SPACE).map_err(tk_err)?.into();
    Ok(if add_space_prefix {
        NormalizerWrapper::Sequence(NormalizerSequence::new(vec![
            Prepend::new(SPACE.to_string()).into(),
            replace,
        ]))
    } else {
        replace
    })
}

/// `▁` back to spaces, `<0xXX>` pieces back to bytes; the prefix space removed when one is added.
fn decoder(add_space_prefix: bool) -> Result<DecoderWrapper, TokenizerError> {
    let mut steps: Vec<DecoderWrapper> = vec![
        Replace::new(SPACE, " ").map_err(tk_err)?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        steps.push(Strip::new(' ', 1, 0).into());
    }
    Ok(DecoderSequence::new(steps).into())
}

/// Build a [`TextTokenizer`] from a GGUF whose `tokenizer.ggml.model` is `llama`.
///
/// Reads `tokenizer.ggml.tokens`, `.scores`, `.token_type`, bos/eos/eot/eom/unknown/padding ids,
/// `add_bos_token` (default true), `add_eos_token` (default false), `add_space_prefix` (default
/// true, llama.cpp's defaults for SentencePiece) and `tokenizer.chat_template`.
pub fn from_gguf(content: &gguf_file::Content) -> Result<TextTokenizer, TokenizerError> {
    let meta = Meta(content);
    let vocab = SpmVocab::from_gguf(content)?;
    let n = vocab.tokens.len();

    let bos_id = meta.token_id("tokenizer.ggml.bos_token_id", n)?;
    let eos_id = meta.token_id("tokenizer.ggml.eos_token_id", n)?;
    let eot_id = meta.token_id("tokenizer.ggml.eot_token_id", n)?;
    let eom_id = meta.token_id("tokenizer.ggml.eom_token_id", n)?;
    let unk_id = meta.token_id("tokenizer.ggml.unknown_token_id", n)?;
    let pad_id = meta.token_id("tokenizer.ggml.padding_token_id", n)?;
    let add_bos = meta.bool("tokenizer.ggml.add_bos_token")?.unwrap_or(true);
    let add_eos = meta.bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
    let add_space_prefix = meta
        .bool("tokenizer.ggml.add_space_prefix")?
        .unwrap_or(true);
    let chat_template = meta.string("tokenizer.chat_template")?.map(str::to_string);

    let merges = vocab.merges();
    let bpe_vocab: Vocab = vocab
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let mut builder = BPE::builder()
        .vocab_and_merges(bpe_vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(id) = unk_id {
        builder = builder.unk_token(vocab.tokens[id as usize].clone());
    }
    let bpe = builder.build().map_err(|e| {
        TokenizerError::Tokenizers(format!(
            "building BPE from the GGUF SentencePiece vocabulary: {e}"
        ))
    })?;

    let mut inner = Tokenizer::new(bpe);
    inner
        .with_normalizer(Some(normalizer(add_space_prefix)?))
        .map_err(tk_err)?;
    inner.with_decoder(Some(decoder(add_space_prefix)?));
    let token = |id: u32| vocab.tokens[id as usize].as_str();
    let bos_pp = bos_id.filter(|_| add_bos).map(|id| (id, token(id)));
    let eos_pp = eos_id.filter(|_| add_eos).map(|id| (id, token(id)));
    if bos_pp.is_some() || eos_pp.is_some() {
        inner.with_post_processor(Some(post_processor(bos_pp, eos_pp)?));
    }

    // Both kinds are matched whole in the raw text, before normalization (as llama.cpp does).
    let control: Vec<AddedToken> = vocab
        .of_type(TOKEN_TYPE_CONTROL)
        .map(|(_, t)| AddedToken::from(t.to_string(), true))
        .collect();
    let user: Vec<AddedToken> = vocab
        .of_type(TOKEN_TYPE_USER_DEFINED)
        .map(|(_, t)| AddedToken::from(t.to_string(), false).normalized(false))
        .collect();
    inner.add_special_tokens(control).map_err(tk_err)?;
    inner.add_tokens(user).map_err(tk_err)?;

    let mut stop: Vec<u32> = [eos_id, eot_id, eom_id].into_iter().flatten().collect();
    stop.extend(
        vocab
            .of_type(TOKEN_TYPE_CONTROL)
            .filter(|(_, t)| STOP_CANDIDATES.contains(t))
            .map(|(id, _)| id),
    );

    Ok(TextTokenizer {
        bos_token: bos_id.map(|id| token(id).to_string()),
        eos_token: eos_id.map(|id| token(id).to_string()),
        inner,
        bos_id,
        eos_ids: dedup(stop),
        pad_id,
        unk_id,
        add_bos: add_bos && bos_id.is_some(),
        vocab_size: n,
        chat_template,
    })
}

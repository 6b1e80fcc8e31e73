//! Byte-level BPE tokenizers from GGUF metadata (`tokenizer.ggml.model = "gpt2"`: Llama 3,
//! Qwen 2.5/3, SmolLM, ...), as a Hugging Face `tokenizers` BPE.
//!
//! The pre-tokenizer is chosen from `tokenizer.ggml.pre` the way llama.cpp does, and written the
//! way the model's own `tokenizer.json` writes it, so that ids match Hugging Face transformers
//! exactly. An unknown `pre` value is an error, never a guess: a wrong pre-tokenizer still
//! produces plausible ids, only different ones.

use candle_core::quantized::gguf_file;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use super::{
    dedup, int_value, post_processor, template_stop_ids, tk_err, Meta, TextTokenizer,
    TokenizerError, TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED,
};

/// The `tokenizer.ggml.pre` values understood, each with the pre-tokenizer of the model family's
/// own tokenizer.json. Aliases are those llama.cpp maps to the same regexes.
const PRE_TOKENIZERS: &[(&str, PreKind)] = &[
    ("smollm", PreKind::DigitsByteLevel),
    ("llama-bpe", PreKind::Llama3),
    ("llama3", PreKind::Llama3),
    ("llama-v3", PreKind::Llama3),
    ("qwen2", PreKind::Qwen2),
    ("deepseek-r1-qwen", PreKind::Qwen2),
    ("gpt2", PreKind::Gpt2),
    ("gpt-2", PreKind::Gpt2),
    ("default", PreKind::Gpt2),
];

/// Llama 3's split regex (tokenizer.json of Meta-Llama-3).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split regex: Llama 3's with single digits.
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PreKind {
    /// Digits(individual) then GPT-2 byte-level regex (SmolLM, StarCoder).
    DigitsByteLevel,
    /// Llama 3 regex split, then byte-level without regex.
    Llama3,
    /// Qwen2 regex split, then byte-level without regex.
    Qwen2,
    /// Plain GPT-2 byte-level with its regex.
    Gpt2,
}

impl PreKind {
    /// llama.cpp's defaults for these families, used when the GGUF carries no
    /// `tokenizer.ggml.add_bos_token`: Llama 3 adds `<|begin_of_text|>`.
    fn default_add_bos(self) -> bool {
        matches!(self, PreKind::Llama3)
    }

    /// Llama 3's tokenizer.json sets `ignore_merges` (a pre-token that is a whole vocabulary entry
    /// is taken as is); llama.cpp does the same for this pre-tokenizer.
    fn ignore_merges(self) -> bool {
        matches!(self, PreKind::Llama3)
    }
}

fn supported_pre_tokenizers() -> String {
    PRE_TOKENIZERS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Resolve a `tokenizer.ggml.pre` value; unknown values are an error naming the supported ones.
fn pre_kind(name: &str) -> Result<PreKind, TokenizerError> {
    PRE_TOKENIZERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| *k)
        .ok_or_else(|| TokenizerError::UnknownPreTokenizer {
            name: name.to_string(),
            supported: supported_pre_tokenizers(),
        })
}

fn build_pre_tokenizer(kind: PreKind) -> Result<PreTokenizerWrapper, TokenizerError> {
    let regex_split = |re: &str| -> Result<PreTokenizerWrapper, TokenizerError> {
        let split = Split::new(
            SplitPattern::Regex(re.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(tk_err)?;
        Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
            split.into(),
            ByteLevel::new(false, true, false).into(),
        ])))
    };
    Ok(match kind {
        PreKind::DigitsByteLevel => PreTokenizerWrapper::Sequence(Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])),
        PreKind::Llama3 => regex_split(LLAMA3_REGEX)?,
        PreKind::Qwen2 => regex_split(QWEN2_REGEX)?,
        PreKind::Gpt2 => ByteLevel::new(false, true, true).into(),
    })
}

/// Build a `gpt2`-model tokenizer: `.pre`, `.tokens`, `.token_type`, `.merges`,
/// bos/eos/eot/eom/unknown/padding ids, `add_bos_token` and `tokenizer.chat_template`.
pub(super) fn from_gguf(content: &gguf_file::Content) -> Result<TextTokenizer, TokenizerError> {
    let meta = Meta(content);
    // llama.cpp falls back to `default` when the key is absent (old conversions).
    let pre_name = meta.string("tokenizer.ggml.pre")?.unwrap_or("default");
    let kind = pre_kind(pre_name)?;

    let tokens_v = meta.required_array("tokenizer.ggml.tokens")?;
    let mut tokens = Vec::with_capacity(tokens_v.len());
    for (i, v) in tokens_v.iter().enumerate() {
        let s = v
            .to_string()
            .map_err(|e| Meta::bad("tokenizer.ggml.tokens", format!("entry {i}: {e}")))?;
        // As llama.cpp: an empty entry cannot be looked up, give it a unique placeholder.
        tokens.push(if s.is_empty() {
            format!("[EMPTY_{i}]")
        } else {
            s.clone()
        });
    }
    let n = tokens.len();
    if n == 0 {
        return Err(Meta::bad("tokenizer.ggml.tokens", "empty vocabulary"));
    }
    if n > u32::MAX as usize {
        return Err(Meta::bad("tokenizer.ggml.tokens", "vocabulary too large"));
    }

    let types: Vec<i128> = match meta.get("tokenizer.ggml.token_type") {
        None => vec![1; n],
        Some(_) => {
            let tv = meta.required_array("tokenizer.ggml.token_type")?;
            if tv.len() != n {
                return Err(Meta::bad(
                    "tokenizer.ggml.token_type",
                    format!("{} entries for {n} tokens", tv.len()),
                ));
            }
            tv.iter()
                .enumerate()
                .map(|(i, v)| {
                    int_value(v).ok_or_else(|| {
                        Meta::bad(
                            "tokenizer.ggml.token_type",
                            format!("entry {i} is not an integer: {v:?}"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?
        }
    };

    let merges_v = meta.required_array("tokenizer.ggml.merges")?;
    let mut merges = Vec::with_capacity(merges_v.len());
    for (i, v) in merges_v.iter().enumerate() {
        let s = v
            .to_string()
            .map_err(|e| Meta::bad("tokenizer.ggml.merges", format!("entry {i}: {e}")))?;
        let (a, b) = s.split_once(' ').ok_or_else(|| {
            Meta::bad(
                "tokenizer.ggml.merges",
                format!("entry {i} `{s}` is not two tokens separated by a space"),
            )
        })?;
        merges.push((a.to_string(), b.to_string()));
    }

    let bos_id = meta.token_id("tokenizer.ggml.bos_token_id", n)?;
    let eos_id = meta.token_id("tokenizer.ggml.eos_token_id", n)?;
    let eot_id = meta.token_id("tokenizer.ggml.eot_token_id", n)?;
    let eom_id = meta.token_id("tokenizer.ggml.eom_token_id", n)?;
    let unk_id = meta.token_id("tokenizer.ggml.unknown_token_id", n)?;
    let pad_id = meta.token_id("tokenizer.ggml.padding_token_id", n)?;
    let add_bos = meta
        .bool("tokenizer.ggml.add_bos_token")?
        .unwrap_or(kind.default_add_bos());
    let add_eos = meta.bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
    let chat_template = meta.string("tokenizer.chat_template")?.map(str::to_string);

    // Byte-level BPE over the GGUF vocabulary; ids are the GGUF indices.
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(kind.ignore_merges())
        .build()
        .map_err(|e| TokenizerError::Tokenizers(format!("building BPE from GGUF: {e}")))?;

    let mut inner = Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(build_pre_tokenizer(kind)?));
    inner.with_decoder(Some(ByteLevelDecoder::new(true, true, true)));
    let bos_pp = bos_id
        .filter(|_| add_bos)
        .map(|id| (id, tokens[id as usize].as_str()));
    let eos_pp = eos_id
        .filter(|_| add_eos)
        .map(|id| (id, tokens[id as usize].as_str()));
    inner.with_post_processor(Some(post_processor(bos_pp, eos_pp)?));

    // Control tokens are special (split out of text, skipped when decoding); user-defined
    // tokens are split out of text but decoded as text.
    let control: Vec<AddedToken> = (0..n)
        .filter(|&i| types[i] == TOKEN_TYPE_CONTROL)
        .map(|i| AddedToken::from(tokens[i].clone(), true))
        .collect();
    let user: Vec<AddedToken> = (0..n)
        .filter(|&i| types[i] == TOKEN_TYPE_USER_DEFINED)
        .map(|i| AddedToken::from(tokens[i].clone(), false).normalized(false))
        .collect();
    inner.add_special_tokens(control).map_err(tk_err)?;
    inner.add_tokens(user).map_err(tk_err)?;

    let mut stop: Vec<u32> = [eos_id, eot_id, eom_id].into_iter().flatten().collect();
    stop.extend(template_stop_ids(&inner, chat_template.as_deref()));

    Ok(TextTokenizer {
        bos_token: bos_id.map(|id| tokens[id as usize].clone()),
        eos_token: eos_id.map(|id| tokens[id as usize].clone()),
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tokenizer::ChatMessage;
    use std::collections::HashMap;

    #[test]
    fn unknown_pre_tokenizer_lists_supported_names() {
        let err = pre_kind("mystery-bpe").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("mystery-bpe"), "{msg}");
        for name in ["smollm", "llama-bpe", "llama3", "qwen2", "gpt2", "default"] {
            assert!(msg.contains(name), "`{name}` missing from: {msg}");
        }
    }

    /// A GGUF content with a tiny byte-level vocabulary, `pre` as given.
    pub(crate) fn tiny_content(pre: &str) -> gguf_file::Content {
        use gguf_file::Value as V;
        let tokens: Vec<&str> = vec!["<|im_end|>", "a", "b", "ab", "Ġ", "Ġab"];
        let mut metadata = HashMap::new();
        metadata.insert("tokenizer.ggml.model".into(), V::String("gpt2".into()));
        metadata.insert("tokenizer.ggml.pre".into(), V::String(pre.into()));
        metadata.insert(
            "tokenizer.ggml.tokens".into(),
            V::Array(tokens.iter().map(|t| V::String(t.to_string())).collect()),
        );
        metadata.insert(
            "tokenizer.ggml.token_type".into(),
            V::Array(vec![
                V::I32(3),
                V::I32(1),
                V::I32(1),
                V::I32(1),
                V::I32(1),
                V::I32(1),
            ]),
        );
        metadata.insert(
            "tokenizer.ggml.merges".into(),
            V::Array(vec![V::String("a b".into()), V::String("Ġ ab".into())]),
        );
        metadata.insert("tokenizer.ggml.eos_token_id".into(), V::U32(0));
        metadata.insert(
            "tokenizer.chat_template".into(),
            V::String(
                "{% for m in messages %}{{ m.content.strip() }}<|im_end|>{% endfor %}".into(),
            ),
        );
        gguf_file::Content {
            magic: gguf_file::VersionedMagic::GgufV3,
            metadata,
            tensor_infos: HashMap::new(),
            tensor_data_offset: 0,
        }
    }

    #[test]
    fn unknown_pre_tokenizer_in_gguf_errors() {
        let err = TextTokenizer::from_gguf(&tiny_content("mystery-bpe")).unwrap_err();
        assert!(matches!(err, TokenizerError::UnknownPreTokenizer { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("mystery-bpe") && msg.contains("smollm"),
            "{msg}"
        );
    }

    #[test]
    fn tiny_gguf_tokenizer_works() {
        for pre in ["smollm", "llama-bpe", "qwen2", "gpt2"] {
            let tok = TextTokenizer::from_gguf(&tiny_content(pre)).unwrap();
            assert_eq!(
                tok.encode("ab ab<|im_end|>").unwrap(),
                vec![3, 5, 0],
                "{pre}"
            );
            assert_eq!(tok.decode(&[3, 5, 0]).unwrap(), "ab ab");
            assert_eq!(tok.eos_ids(), &[0]);
            assert_eq!(tok.vocab_size(), 6);
            let out = tok
                .render_chat(&[ChatMessage::new("user", "  ab ")], false)
                .unwrap();
            assert_eq!(out, "ab<|im_end|>");
        }
    }

    #[test]
    fn unsupported_model_errors() {
        let mut c = tiny_content("smollm");
        c.metadata.insert(
            "tokenizer.ggml.model".into(),
            gguf_file::Value::String("rwkv".into()),
        );
        let err = TextTokenizer::from_gguf(&c).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, TokenizerError::UnsupportedModel(_)), "{msg}");
        assert!(msg.contains("`rwkv`") && msg.contains("`llama`"), "{msg}");
    }

    #[test]
    fn pre_tokenizer_regexes_compile() {
        for (_, kind) in PRE_TOKENIZERS {
            build_pre_tokenizer(*kind).unwrap();
        }
    }

    /// `tiny_content` plus the end-of-turn tokens of several families (control tokens, ids 6..).
    pub(crate) fn content_with_turn_ends(template: &str) -> gguf_file::Content {
        use gguf_file::Value as V;
        let mut c = tiny_content("smollm");
        let extra = ["<|eot_id|>", "<end_of_turn>", "<|end|>", "<|eom_id|>"];
        for (key, push) in [
            ("tokenizer.ggml.tokens", true),
            ("tokenizer.ggml.token_type", false),
        ] {
            let Some(V::Array(a)) = c.metadata.get_mut(key) else {
                unreachable!()
            };
            for t in extra {
                a.push(if push { V::String(t.into()) } else { V::I32(3) });
            }
        }
        c.metadata
            .insert("tokenizer.chat_template".into(), V::String(template.into()));
        c
    }

    #[test]
    fn gguf_stop_ids_are_eos_eot_and_the_template_turn_ends() {
        use gguf_file::Value as V;
        // Gemma-style template: <end_of_turn> ends turns; <|end|> is special but unused.
        let mut c = content_with_turn_ends(
            "{% for m in messages %}{{ m.content }}<end_of_turn>{% endfor %}",
        );
        c.metadata
            .insert("tokenizer.ggml.eot_token_id".into(), V::U32(6));
        let tok = TextTokenizer::from_gguf(&c).unwrap();
        // eos (0), eot (6: <|eot_id|>), <end_of_turn> (7) from the template; not <|end|> (8).
        assert_eq!(tok.eos_ids(), &[0, 6, 7]);
    }
}

//! Tokenizers from GGUF metadata or tokenizer.json, with their stop ids and chat template source.
//!
//! Two sources give the same [`TextTokenizer`]:
//!
//! - [`TextTokenizer::from_gguf`] rebuilds a Hugging Face `tokenizers` byte-level BPE from the GGUF
//!   metadata (`tokenizer.ggml.*`). The pre-tokenizer is chosen from `tokenizer.ggml.pre` the way
//!   llama.cpp does, and written the way the model's own `tokenizer.json` writes it, so that ids
//!   match Hugging Face transformers exactly. An unknown `pre` value is an error, never a guess: a
//!   wrong pre-tokenizer still produces plausible ids, only different ones.
//! - [`TextTokenizer::from_hf_files`] loads `tokenizer.json`, with the chat template, special
//!   tokens and `add_bos_token` from `tokenizer_config.json` and the stop ids from
//!   `generation_config.json`.
//!
//! Chat templates are rendered by [`crate::chat_template`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::{SpecialToken, TemplateProcessing, Tokens};
use tokenizers::{
    AddedToken, PostProcessorWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer,
};

pub use crate::chat_template::{ChatMessage, ChatTemplate};

#[derive(thiserror::Error, Debug)]
pub enum TokenizerError {
    #[error("GGUF tokenizer metadata: missing key `{0}`")]
    MissingKey(String),
    #[error("GGUF tokenizer metadata: `{key}`: {problem}")]
    BadMetadata { key: String, problem: String },
    #[error(
        "unsupported tokenizer model `{0}` (tokenizer.ggml.model): only `gpt2` (byte-level BPE) \
         and `llama` (SentencePiece) are supported; load the model's tokenizer.json instead"
    )]
    UnsupportedModel(String),
    #[error(
        "unknown pre-tokenizer `{name}` (tokenizer.ggml.pre); supported: {supported}. \
         Load the model's tokenizer.json instead, or add the pre-tokenizer to kvbench::tokenizer"
    )]
    UnknownPreTokenizer { name: String, supported: String },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("tokenizer: {0}")]
    Tokenizers(String),
    #[error("the model has no chat template (neither in its GGUF metadata nor in tokenizer_config.json)")]
    NoChatTemplate,
    #[error("chat template: {0}")]
    Template(String),
}

pub(crate) fn tk_err(e: tokenizers::Error) -> TokenizerError {
    TokenizerError::Tokenizers(e.to_string())
}

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

/// Post-processor that prepends `bos` (and appends `eos`) when asked; byte-level offsets otherwise.
pub(crate) fn post_processor(
    bos: Option<(u32, &str)>,
    eos: Option<(u32, &str)>,
) -> Result<PostProcessorWrapper, TokenizerError> {
    if bos.is_none() && eos.is_none() {
        return Ok(ByteLevel::new(false, false, true).into());
    }
    let mut single = Vec::new();
    let mut specials = Vec::new();
    // Template pieces are parsed on ':' and whitespace; name the specials safely.
    if let Some((id, content)) = bos {
        single.push("BOS".to_string());
        specials.push(
            SpecialToken::new("BOS".into(), vec![id], vec![content.to_string()]).map_err(tk_err)?,
        );
    }
    single.push("$A".to_string());
    if let Some((id, content)) = eos {
        single.push("EOS".to_string());
        specials.push(
            SpecialToken::new("EOS".into(), vec![id], vec![content.to_string()]).map_err(tk_err)?,
        );
    }
    let mut pair = single.clone();
    pair.extend(single.iter().map(|p| {
        if p == "$A" {
            "$B:1".to_string()
        } else {
            format!("{p}:1")
        }
    }));
    let tp = TemplateProcessing::builder()
        .try_single(single)
        .map_err(TokenizerError::Tokenizers)?
        .try_pair(pair)
        .map_err(TokenizerError::Tokenizers)?
        .special_tokens(Tokens::from(specials))
        .build()
        .map_err(|e| TokenizerError::Tokenizers(e.to_string()))?;
    Ok(tp.into())
}

/// Turn tokens that may end generation, if the model marks them special and its template uses
/// them (the model's eos is always a stop id).
pub(crate) const STOP_CANDIDATES: &[&str] = &[
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|end_of_text|>",
    "<EOT>",
];

/// A text tokenizer with the model's special ids and chat template.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    pub(crate) inner: Tokenizer,
    pub(crate) bos_id: Option<u32>,
    pub(crate) eos_ids: Vec<u32>,
    pub(crate) pad_id: Option<u32>,
    pub(crate) unk_id: Option<u32>,
    pub(crate) add_bos: bool,
    pub(crate) vocab_size: usize,
    pub(crate) bos_token: Option<String>,
    pub(crate) eos_token: Option<String>,
    pub(crate) chat_template: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// GGUF metadata access

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

impl TextTokenizer {
    /// Build from GGUF metadata: `tokenizer.ggml.model` (`gpt2` here, `llama` in
    /// [`crate::tokenizer_spm`]), `.pre`, `.tokens`,
    /// `.token_type`, `.merges`, bos/eos/eot/eom/unknown/padding ids, `add_bos_token` and
    /// `tokenizer.chat_template`.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Self, TokenizerError> {
        let meta = Meta(content);
        let model = meta
            .string("tokenizer.ggml.model")?
            .ok_or_else(|| TokenizerError::MissingKey("tokenizer.ggml.model".into()))?;
        if model == "llama" {
            return crate::tokenizer_spm::from_gguf(content);
        }
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model.to_string()));
        }
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

        Ok(Self {
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

    /// Build from a Hugging Face `tokenizer.json`, with optional `tokenizer_config.json`
    /// (`chat_template`, `bos_token`, `eos_token`, `add_bos_token`, `add_eos_token`) and optional
    /// `generation_config.json` (`eos_token_id`, int or list; `bos_token_id`).
    ///
    /// Without a template in `tokenizer_config.json`, a `chat_template.jinja` beside it (or beside
    /// `tokenizer.json`) is used, as recent transformers versions save it there. BOS follows the
    /// tokenizer.json post-processor unless `tokenizer_config.json` sets `add_bos_token`.
    pub fn from_hf_files(
        tokenizer_json: &Path,
        tokenizer_config: Option<&Path>,
        generation_config: Option<&Path>,
    ) -> Result<Self, TokenizerError> {
        let bytes = std::fs::read(tokenizer_json).map_err(|source| TokenizerError::Io {
            path: tokenizer_json.to_path_buf(),
            source,
        })?;
        let mut inner = Tokenizer::from_bytes(&bytes).map_err(|e| TokenizerError::Parse {
            path: tokenizer_json.to_path_buf(),
            message: e.to_string(),
        })?;

        let config = tokenizer_config.map(read_json).transpose()?;
        let gen = generation_config.map(read_json).transpose()?;
        let cfg = |k: &str| config.as_ref().and_then(|c| c.get(k));
        let genk = |k: &str| gen.as_ref().and_then(|c| c.get(k));

        let token_id = |key: &str| -> Result<Option<(u32, String)>, TokenizerError> {
            let Some(v) = cfg(key) else { return Ok(None) };
            let content = match v {
                serde_json::Value::Null => return Ok(None),
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Object(o) => match o.get("content") {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    _ => return Err(config_err(tokenizer_config, key, "no string `content`")),
                },
                other => {
                    return Err(config_err(
                        tokenizer_config,
                        key,
                        format!("expected a string, found {other}"),
                    ))
                }
            };
            let id = inner.token_to_id(&content).ok_or_else(|| {
                config_err(
                    tokenizer_config,
                    key,
                    format!("`{content}` is not in the vocabulary"),
                )
            })?;
            Ok(Some((id, content)))
        };
        let bos = token_id("bos_token")?;
        let eos = token_id("eos_token")?;

        let gen_ids = |key: &str| -> Result<Vec<u32>, TokenizerError> {
            let Some(v) = genk(key) else {
                return Ok(vec![]);
            };
            let one = |x: &serde_json::Value| {
                x.as_u64()
                    .and_then(|i| u32::try_from(i).ok())
                    .ok_or_else(|| {
                        config_err(
                            generation_config,
                            key,
                            format!("expected a token id, found {x}"),
                        )
                    })
            };
            match v {
                serde_json::Value::Null => Ok(vec![]),
                serde_json::Value::Array(a) => a.iter().map(one).collect(),
                x => Ok(vec![one(x)?]),
            }
        };
        let gen_eos = gen_ids("eos_token_id")?;
        let gen_bos = gen_ids("bos_token_id")?;

        let bos_id = bos.as_ref().map(|b| b.0).or(gen_bos.first().copied());
        let bos_token = bos
            .as_ref()
            .map(|b| b.1.clone())
            .or_else(|| bos_id.and_then(|id| inner.id_to_token(id)));
        let eos_token = eos
            .as_ref()
            .map(|e| e.1.clone())
            .or_else(|| gen_eos.first().and_then(|&id| inner.id_to_token(id)));

        let cfg_bool = |key: &str| -> Result<Option<bool>, TokenizerError> {
            match cfg(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::Bool(b)) => Ok(Some(*b)),
                Some(other) => Err(config_err(
                    tokenizer_config,
                    key,
                    format!("expected a bool, found {other}"),
                )),
            }
        };
        // What the tokenizer.json post-processor does today.
        let probe = inner.encode("", true).map_err(tk_err)?;
        let adds_bos = bos_id.is_some() && probe.get_ids().first() == bos_id.as_ref();
        let mut add_bos = adds_bos;
        if let Some(want) = cfg_bool("add_bos_token")? {
            if want != adds_bos {
                // As transformers' Llama tokenizers do: the config flags rebuild the post-processor.
                let want_eos = cfg_bool("add_eos_token")?.unwrap_or(false);
                let bos_pp = match (&bos_id, &bos_token) {
                    (Some(id), Some(t)) if want => Some((*id, t.as_str())),
                    _ => None,
                };
                let eos_pp = match (&eos, want_eos) {
                    (Some((id, t)), true) => Some((*id, t.as_str())),
                    _ => None,
                };
                inner.with_post_processor(Some(post_processor(bos_pp, eos_pp)?));
                add_bos = bos_pp.is_some();
            }
        }

        let mut chat_template = match cfg("chat_template") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Array(list)) => {
                // Named templates: [{name, template}], use "default" (else the first).
                let pick = list
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .or(list.first());
                pick.and_then(|t| t.get("template"))
                    .and_then(|t| t.as_str())
                    .map(str::to_string)
            }
            Some(other) => {
                return Err(config_err(
                    tokenizer_config,
                    "chat_template",
                    format!("expected a string or a list, found {other}"),
                ))
            }
        };
        if chat_template.is_none() {
            let dirs = [tokenizer_config, Some(tokenizer_json)];
            for dir in dirs.into_iter().flatten().filter_map(|p| p.parent()) {
                let p = dir.join("chat_template.jinja");
                if p.is_file() {
                    chat_template =
                        Some(
                            std::fs::read_to_string(&p).map_err(|source| TokenizerError::Io {
                                path: p.clone(),
                                source,
                            })?,
                        );
                    break;
                }
            }
        }

        let mut stop: Vec<u32> = eos.as_ref().map(|e| e.0).into_iter().collect();
        stop.extend(gen_eos);
        stop.extend(template_stop_ids(&inner, chat_template.as_deref()));

        let vocab_size = inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&m| m as usize + 1);
        Ok(Self {
            inner,
            bos_id,
            eos_ids: dedup(stop),
            pad_id: None,
            unk_id: None,
            add_bos,
            vocab_size,
            bos_token,
            eos_token,
            chat_template,
        })
    }

    /// Token ids of `text`. Special tokens written in the text (`<|im_start|>`) become their ids;
    /// BOS is prepended only if the model asks for it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let enc = self.inner.encode(text, true).map_err(tk_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of `text` without the post-processor (no BOS/EOS added), as transformers'
    /// `encode(text, add_special_tokens=False)`; special tokens written in the text still map to
    /// their ids.
    pub fn encode_raw(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let enc = self.inner.encode(text, false).map_err(tk_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner.decode(ids, true).map_err(tk_err)
    }

    /// Every id that ends generation: eos, plus the model's turn-end tokens (`<|im_end|>`,
    /// `<|eot_id|>`, ...) when they are special tokens and the chat template uses them.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// Whether [`encode`](Self::encode) prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    pub fn unk_id(&self) -> Option<u32> {
        self.unk_id
    }

    /// Number of token ids (largest id + 1), the embedding rows the model needs.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The wrapped Hugging Face tokenizer (e.g. to save it as tokenizer.json).
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// The model's chat template with its bos/eos tokens, if it has one.
    pub fn template(&self) -> Option<ChatTemplate> {
        self.chat_template.as_ref().map(|source| {
            ChatTemplate::new(
                source.clone(),
                self.bos_token.clone(),
                self.eos_token.clone(),
            )
        })
    }

    /// Render the model's own chat template, as transformers' `apply_chat_template(...,
    /// tokenize=False)` does. Errors if the model has no template or the template raises.
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let template = self.template().ok_or(TokenizerError::NoChatTemplate)?;
        template
            .render(messages, add_generation_prompt, &serde_json::Map::new())
            .map_err(|e| TokenizerError::Template(e.to_string()))
    }
}

pub(crate) fn dedup(ids: Vec<u32>) -> Vec<u32> {
    let mut seen = BTreeSet::new();
    ids.into_iter().filter(|id| seen.insert(*id)).collect()
}

/// Ids of the known turn-end tokens that are special in `tok` and appear in `template`.
fn template_stop_ids(tok: &Tokenizer, template: Option<&str>) -> Vec<u32> {
    let Some(template) = template else {
        return vec![];
    };
    let added = tok.get_added_tokens_decoder();
    STOP_CANDIDATES
        .iter()
        .filter(|t| template.contains(**t))
        .filter_map(|t| {
            let id = tok.token_to_id(t)?;
            added.get(&id).filter(|a| a.special).map(|_| id)
        })
        .collect()
}

fn read_json(path: &Path) -> Result<serde_json::Value, TokenizerError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| TokenizerError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn config_err(path: Option<&Path>, key: &str, problem: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Parse {
        path: path.map(Path::to_path_buf).unwrap_or_default(),
        message: format!("`{key}`: {problem}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn tiny_content(pre: &str) -> gguf_file::Content {
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
    fn content_with_turn_ends(template: &str) -> gguf_file::Content {
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
                a.push(if push {
                    V::String(t.into())
                } else {
                    V::I32(3)
                });
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
        let mut c = content_with_turn_ends("{% for m in messages %}{{ m.content }}<end_of_turn>{% endfor %}");
        c.metadata
            .insert("tokenizer.ggml.eot_token_id".into(), V::U32(6));
        let tok = TextTokenizer::from_gguf(&c).unwrap();
        // eos (0), eot (6: <|eot_id|>), <end_of_turn> (7) from the template; not <|end|> (8).
        assert_eq!(tok.eos_ids(), &[0, 6, 7]);
    }

    #[test]
    fn hf_stop_ids_include_generation_config_lists_and_turn_ends() {
        let c = content_with_turn_ends(
            "{% for m in messages %}<|start_header_id|>{{ m.content }}<|eot_id|>{% endfor %}",
        );
        let gguf = TextTokenizer::from_gguf(&c).unwrap();
        let dir = std::env::temp_dir().join(format!("kvbench-tok-stop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tj = dir.join("tokenizer.json");
        gguf.inner().save(&tj, false).unwrap();
        let tc = dir.join("tokenizer_config.json");
        std::fs::write(
            &tc,
            serde_json::json!({
                "eos_token": "<|im_end|>",
                "chat_template": gguf.chat_template().unwrap(),
            })
            .to_string(),
        )
        .unwrap();
        let gc = dir.join("generation_config.json");
        // Llama 3.1 style: a list of eos ids (here <|end|> = 8 and <|eom_id|> = 9).
        std::fs::write(&gc, r#"{"eos_token_id": [8, 9]}"#).unwrap();
        let tok = TextTokenizer::from_hf_files(&tj, Some(&tc), Some(&gc)).unwrap();
        assert_eq!(tok.eos_ids(), &[0, 8, 9, 6]);
        // An int instead of a list works too.
        std::fs::write(&gc, r#"{"eos_token_id": 7}"#).unwrap();
        let tok = TextTokenizer::from_hf_files(&tj, Some(&tc), Some(&gc)).unwrap();
        assert_eq!(tok.eos_ids(), &[0, 7, 6]);
    }
}

//! Tokenizers from GGUF metadata or tokenizer.json, with their stop ids and chat template source.
//!
//! Two sources give the same [`TextTokenizer`]:
//!
//! - [`TextTokenizer::from_gguf`] rebuilds a Hugging Face `tokenizers` tokenizer from the GGUF
//!   metadata (`tokenizer.ggml.*`): a byte-level BPE for `gpt2` vocabularies (`gguf_bpe`,
//!   pre-tokenizer chosen from `tokenizer.ggml.pre`), a SentencePiece BPE for `llama` ones
//!   ([`gguf_spm`]).
//! - [`TextTokenizer::from_hf_files`] loads `tokenizer.json`, with the chat template, special
//!   tokens and `add_bos_token` from `tokenizer_config.json` and the stop ids from
//!   `generation_config.json` (`hf_files`).
//!
//! This file holds the type, its API and what the sources share (errors, post-processor, stop
//! ids). Chat templates are rendered by [`crate::chat_template`].

mod gguf_bpe;
mod gguf_meta;
pub mod gguf_spm;
mod hf_files;

use std::collections::BTreeSet;
use std::path::PathBuf;

use candle_core::quantized::gguf_file;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::{SpecialToken, TemplateProcessing, Tokens};
use tokenizers::{PostProcessorWrapper, Tokenizer};

pub use crate::chat_template::{ChatMessage, ChatTemplate};
pub(crate) use gguf_meta::{int_value, Meta, TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED};

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

impl TextTokenizer {
    /// Build from GGUF metadata: `tokenizer.ggml.model` (`gpt2` in `gguf_bpe`, `llama` in
    /// [`gguf_spm`]), `.pre`, `.tokens`,
    /// `.token_type`, `.merges`, bos/eos/eot/eom/unknown/padding ids, `add_bos_token` and
    /// `tokenizer.chat_template`.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Self, TokenizerError> {
        let model = Meta(content)
            .string("tokenizer.ggml.model")?
            .ok_or_else(|| TokenizerError::MissingKey("tokenizer.ggml.model".into()))?;
        match model {
            "gpt2" => gguf_bpe::from_gguf(content),
            "llama" => gguf_spm::from_gguf(content),
            other => Err(TokenizerError::UnsupportedModel(other.to_string())),
        }
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

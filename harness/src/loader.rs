//! From resolved model files to a ready decoder and tokenizer.

use anyhow::{bail, Context, Result};
use candle_core::Device;

use crate::device::compute_dtype;
use crate::fetch::ModelFiles;
use crate::model::{Decoder, ModelConfig, WeightSource};
use crate::tokenizer::TextTokenizer;

pub struct LoadedModel {
    pub model: Decoder,
    pub tokenizer: TextTokenizer,
}

/// Load weights (dequantized to the device's compute dtype) and the tokenizer.
pub fn load(files: &ModelFiles, device: &Device) -> Result<LoadedModel> {
    let dtype = compute_dtype(device);
    match files {
        ModelFiles::Synthetic { shape, tokenizer } => {
            let spec = format!("{}{shape}", crate::model::synthetic::PREFIX);
            let tokenizer = load_tokenizer(tokenizer)?;
            let vocab = crate::model::synthetic::config(&spec)?.vocab_size;
            if tokenizer.vocab_size() > vocab {
                bail!(
                    "{spec} has {vocab} token embeddings but the tokenizer has {} tokens; name \
                     a tokenizer whose vocabulary fits (`tokenizer:` in the experiment)",
                    tokenizer.vocab_size()
                );
            }
            let model = crate::model::synthetic::build(&spec, dtype, device, 0)?;
            Ok(LoadedModel { model, tokenizer })
        }
        ModelFiles::Gguf { path } => {
            let mut src = WeightSource::open_gguf(path)?;
            let content = src.gguf_content().expect("gguf source has content");
            let source = path.display().to_string();
            let cfg = ModelConfig::from_gguf(content, &source)?;
            let tokenizer = TextTokenizer::from_gguf(content)
                .with_context(|| format!("{source}: tokenizer"))?;
            let model = Decoder::load(cfg, &mut src, dtype, device)?;
            Ok(LoadedModel { model, tokenizer })
        }
        ModelFiles::HfCheckpoint {
            config,
            weights,
            tokenizer,
            tokenizer_config,
            generation_config,
        } => {
            // The model's shape is checked before the tokenizer and any weight is read.
            let cfg = ModelConfig::from_hf_config(config)?;
            let tokenizer = TextTokenizer::from_hf_files(
                tokenizer,
                tokenizer_config.as_deref(),
                generation_config.as_deref(),
            )
            .with_context(|| format!("{}: tokenizer", tokenizer.display()))?;
            let mut src = WeightSource::open_safetensors(weights, cfg.sandwich_norms)?;
            let model = Decoder::load(cfg, &mut src, dtype, device)?;
            Ok(LoadedModel { model, tokenizer })
        }
    }
}

/// Only the tokenizer (and chat template) of `files`, without reading any weight.
fn load_tokenizer(files: &ModelFiles) -> Result<TextTokenizer> {
    match files {
        ModelFiles::Gguf { path } => {
            let mut f =
                std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
            let content = candle_core::quantized::gguf_file::Content::read(&mut f)
                .with_context(|| format!("reading the GGUF header of {}", path.display()))?;
            TextTokenizer::from_gguf(&content)
                .with_context(|| format!("{}: tokenizer", path.display()))
        }
        ModelFiles::HfCheckpoint {
            tokenizer,
            tokenizer_config,
            generation_config,
            ..
        } => TextTokenizer::from_hf_files(
            tokenizer,
            tokenizer_config.as_deref(),
            generation_config.as_deref(),
        )
        .with_context(|| format!("{}: tokenizer", tokenizer.display())),
        ModelFiles::Synthetic { tokenizer, .. } => load_tokenizer(tokenizer),
    }
}

//! From resolved model files to a ready decoder and tokenizer.

use anyhow::{Context, Result};
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

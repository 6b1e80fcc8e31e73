//! Tokenizers from a Hugging Face checkout: `tokenizer.json`, with the chat template, special
//! tokens and `add_bos_token` from `tokenizer_config.json` and the stop ids from
//! `generation_config.json`.

use std::path::Path;

use tokenizers::Tokenizer;

use super::{dedup, post_processor, template_stop_ids, tk_err, TextTokenizer, TokenizerError};

impl TextTokenizer {
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
    use crate::tokenizer::gguf_bpe::tests::content_with_turn_ends;

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

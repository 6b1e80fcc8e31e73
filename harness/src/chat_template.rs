//! Chat templates rendered as transformers renders them.
//!
//! transformers' `render_jinja_template` (what `apply_chat_template` calls) compiles a template in
//! a jinja2 `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)` with the
//! `loopcontrols` extension and a `{% generation %}` tag, replaces `tojson` with
//! `json.dumps(x, ensure_ascii=False, indent=..., separators=..., sort_keys=...)`, adds the
//! globals `raise_exception`, `strftime_now`, `dict` and `namespace`, and renders with
//! `messages`, `tools=None`, `documents=None`, `add_generation_prompt`, the caller's keyword
//! arguments, and `bos_token` / `eos_token` where the tokenizer has them.
//!
//! [`ChatTemplate`] does the same with minijinja: the same whitespace rules (one trailing newline
//! of the template dropped), python string methods (`minijinja_contrib::pycompat`), python's
//! `str.strip` whitespace for `trim`, and a python `json.dumps` for `tojson`. The fixture test
//! `tests/chat_templates_reference.rs` holds it to transformers' output byte for byte.

use minijinja::value::{Kwargs, Value as JValue};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// One chat turn, as chat templates expect it (`message['role']`, `message['content']`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

#[derive(thiserror::Error, Debug)]
pub enum ChatTemplateError {
    /// The template does not compile.
    #[error("chat template does not compile: {0}")]
    Syntax(String),
    /// The template raised (`raise_exception(...)`) or failed while rendering.
    #[error("chat template: {0}")]
    Render(String),
}

/// A model's chat template with the special tokens it is rendered with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatTemplate {
    source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl ChatTemplate {
    /// `source` is the Jinja text (GGUF `tokenizer.chat_template`, `tokenizer_config.json`'s
    /// `chat_template` or `chat_template.jinja`); a token that is `None` is not passed at all
    /// (the template sees it undefined), as transformers does for a null token.
    pub fn new(
        source: impl Into<String>,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Self {
        Self {
            source: source.into(),
            bos_token,
            eos_token,
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// Hex sha256 of the template source (recorded in `run.json`).
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.source.as_bytes()))
    }

    /// Render `messages` as transformers' `apply_chat_template(messages, tokenize=False,
    /// add_generation_prompt=..., **extra)`. `extra` holds the template's keyword arguments
    /// (`enable_thinking`, `date_string`, ...).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        extra: &Map<String, Value>,
    ) -> Result<String, ChatTemplateError> {
        self.render_values(messages, add_generation_prompt, extra)
    }

    /// As [`render`](Self::render), with messages of any shape (`tool_calls`, list contents).
    pub fn render_values<M: Serialize>(
        &self,
        messages: &[M],
        add_generation_prompt: bool,
        extra: &Map<String, Value>,
    ) -> Result<String, ChatTemplateError> {
        let env = environment();
        let source = generation_tag_as_block(&self.source);
        let tmpl = env
            .template_from_str(&source)
            .map_err(|e| ChatTemplateError::Syntax(format!("{e:#}")))?;
        // Same order as transformers: messages, tools, documents, add_generation_prompt, then
        // the keyword arguments (bos/eos last).
        let mut ctx: Vec<(String, JValue)> = vec![
            ("messages".into(), JValue::from_serialize(messages)),
            ("tools".into(), JValue::from(())),
            ("documents".into(), JValue::from(())),
            (
                "add_generation_prompt".into(),
                JValue::from(add_generation_prompt),
            ),
        ];
        for (k, v) in extra {
            ctx.push((k.clone(), JValue::from_serialize(v)));
        }
        if let Some(b) = &self.bos_token {
            ctx.push(("bos_token".into(), JValue::from(b.as_str())));
        }
        if let Some(e) = &self.eos_token {
            ctx.push(("eos_token".into(), JValue::from(e.as_str())));
        }
        let ctx: JValue = ctx.into_iter().collect();
        tmpl.render(ctx)
            .map_err(|e| ChatTemplateError::Render(format!("{e:#}")))
    }
}

/// The environment transformers builds, in minijinja.
fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_unknown_method_callback(crate::chat_pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env.add_filter("tojson", tojson);
    env.add_filter("trim", crate::chat_pycompat::trim_filter);
    env
}

/// transformers' `{% generation %}...{% endgeneration %}` marks assistant tokens and renders its
/// body unchanged; as a block tag it takes part in trim_blocks/lstrip_blocks like `{% if %}`.
fn generation_tag_as_block(source: &str) -> String {
    if !source.contains("generation") {
        return source.to_string();
    }
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        let trimmed = inner.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        let replacement = match trimmed {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(r) => {
                // Keep the whitespace-control markers around the tag name.
                let lead = &inner[..inner.find(trimmed).unwrap_or(0)];
                let trail = &inner[inner.find(trimmed).unwrap_or(0) + trimmed.len()..];
                out.push_str("{%");
                out.push_str(lead);
                out.push_str(r);
                out.push_str(trail);
                out.push_str("%}");
            }
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

/// `raise_exception(msg)`: jinja2's `TemplateError(msg)`.
fn raise_exception(msg: String) -> Result<String, minijinja::Error> {
    Err(minijinja::Error::new(
        minijinja::ErrorKind::InvalidOperation,
        format!("raise_exception: {msg}"),
    ))
}

/// `strftime_now(format)`: `datetime.now().strftime(format)`, in UTC.
fn strftime_now(format: String) -> Result<String, minijinja::Error> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    crate::chat_pycompat::strftime(secs, &format)
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=indent,
/// separators=separators, sort_keys=sort_keys)`, python's separators and dict order.
fn tojson(value: JValue, kwargs: Kwargs) -> Result<JValue, minijinja::Error> {
    let opts = crate::chat_pycompat::JsonOptions::from_kwargs(&kwargs)?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    crate::chat_pycompat::py_json(&value, &opts, 0, &mut out)?;
    Ok(JValue::from_safe_string(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, msgs: &[ChatMessage], gen: bool) -> String {
        ChatTemplate::new(src, Some("<s>".into()), None)
            .render(msgs, gen, &Map::new())
            .unwrap()
    }

    #[test]
    fn one_trailing_newline_is_dropped() {
        assert_eq!(render("a\n\n", &[], false), "a\n");
        assert_eq!(render("a\n", &[], false), "a");
    }

    #[test]
    fn tools_is_defined_and_none_and_null_tokens_are_undefined() {
        let out = render(
            "{{ tools is defined }}|{{ tools is none }}|{{ bos_token }}|{{ eos_token is defined }}",
            &[],
            false,
        );
        // jinja2 prints python booleans.
        assert_eq!(out, "True|True|<s>|False");
    }

    #[test]
    fn generation_tag_renders_its_body() {
        let src = "{% for m in messages %}{% generation %}\n[{{ m.content }}]\n{%- endgeneration %}{% endfor %}";
        let out = render(src, &[ChatMessage::new("assistant", "x")], false);
        assert_eq!(out, "[x]");
    }

    #[test]
    fn loop_controls_work() {
        let src = "{% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}";
        assert_eq!(render(src, &[], false), "02");
    }

    #[test]
    fn raise_exception_is_an_error() {
        let err = ChatTemplate::new("{{ raise_exception('no system') }}", None, None)
            .render(&[], false, &Map::new())
            .unwrap_err();
        assert!(err.to_string().contains("no system"), "{err}");
    }

    #[test]
    fn sha256_is_of_the_source() {
        // echo -n abc | sha256sum
        assert_eq!(
            ChatTemplate::new("abc", None, None).sha256(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

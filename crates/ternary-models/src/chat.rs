//! The model's chat template: the Jinja program in GGUF `tokenizer.chat_template` or in
//! `tokenizer_config.json`'s `chat_template`, rendered with `minijinja` the way transformers'
//! `apply_chat_template` does (`trim_blocks`, `lstrip_blocks`; variables `messages`,
//! `add_generation_prompt`, `bos_token`, `eos_token`; the function `raise_exception`; Python
//! string methods such as `.strip()` through `minijinja-contrib`'s pycompat).

use crate::error::{ModelError, Result};
use minijinja::{Environment, Error, ErrorKind, context};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text of the turn.
    pub content: String,
}

impl ChatMessage {
    /// A turn of `role` saying `content`.
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

fn chat_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(format!("chat template: {e}"))
}

/// Renders `template` for `messages`; with `add_generation_prompt` the text ends where the
/// assistant's answer starts.
pub fn render(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        },
    );
    env.add_template("chat", template).map_err(chat_err)?;
    let tmpl = env.get_template("chat").map_err(chat_err)?;
    let messages: Vec<BTreeMap<&str, &str>> = messages
        .iter()
        .map(|m| BTreeMap::from([("role", m.role.as_str()), ("content", m.content.as_str())]))
        .collect();
    tmpl.render(context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
    })
    .map_err(chat_err)
}

/// The chat template of a `tokenizer_config.json` (a string, or a list of
/// `{"name", "template"}` from which `default` is taken), if it has one.
pub fn template_from_tokenizer_config(path: impl AsRef<Path>) -> Result<Option<String>> {
    let path = path.as_ref();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ModelError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let doc: Value = serde_json::from_str(&text)
        .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
    Ok(match doc.get("chat_template") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(list)) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .or_else(|| list.first())
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-Instruct's template (ChatML with a default system prompt).
    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    /// A Llama-2 style template: BOS, `[INST]`, `.strip()`, `raise_exception`.
    const LLAMA2: &str = "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + message['content'].strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'].strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

    #[test]
    fn chatml_should_render_like_transformers() {
        let m = [ChatMessage::new("user", "Hi!")];
        let got = render(CHATML, &m, true, "", "<|im_end|>").unwrap();
        assert_eq!(
            got,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
        );
        let got = render(CHATML, &m, false, "", "").unwrap();
        assert!(got.ends_with("Hi!<|im_end|>\n"), "{got:?}");
    }

    #[test]
    fn bos_strip_and_raise_exception_should_work() {
        let m = [
            ChatMessage::new("user", "  a  "),
            ChatMessage::new("assistant", "b "),
            ChatMessage::new("user", "c"),
        ];
        assert_eq!(
            render(LLAMA2, &m, true, "<s>", "</s>").unwrap(),
            "<s>[INST] a [/INST] b </s><s>[INST] c [/INST]"
        );
        let bad = [ChatMessage::new("assistant", "x")];
        let e = render(LLAMA2, &bad, true, "<s>", "</s>")
            .unwrap_err()
            .to_string();
        assert!(e.contains("must alternate"), "{e}");
        assert!(render("{% if %}", &m, true, "", "").is_err());
    }

    #[test]
    fn tokenizer_config_templates_should_be_found() {
        let d = ternary_testkit::TempDir::new("chat-config");
        let p = d.path("tokenizer_config.json");
        assert_eq!(template_from_tokenizer_config(&p).unwrap(), None);
        std::fs::write(&p, r#"{"chat_template": "{{ 1 }}"}"#).unwrap();
        assert_eq!(
            template_from_tokenizer_config(&p).unwrap().as_deref(),
            Some("{{ 1 }}")
        );
        std::fs::write(
            &p,
            r#"{"chat_template": [{"name": "tool_use", "template": "t"}, {"name": "default", "template": "d"}]}"#,
        )
        .unwrap();
        assert_eq!(
            template_from_tokenizer_config(&p).unwrap().as_deref(),
            Some("d")
        );
        std::fs::write(&p, "{").unwrap();
        assert!(template_from_tokenizer_config(&p).is_err());
    }
}

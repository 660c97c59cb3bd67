//! The chat template of a model directory, rendered as HF transformers (5.x) renders it.
//!
//! Where the template comes from (transformers `PreTrainedTokenizerBase._from_pretrained` + `get_chat_template`):
//! `chat_template.jinja` and `chat_templates/*.jinja`, when present, replace whatever `tokenizer_config.json`
//! says; otherwise `tokenizer_config.json`'s `chat_template`, a string or a list of `{name, template}`. With
//! several named templates and no tools, the one named `default` is used.
//!
//! How it is rendered (`_cached_compile_jinja_template` + `apply_chat_template`): trim_blocks and lstrip_blocks
//! on, keep_trailing_newline off (Jinja's default), loop controls, `raise_exception`, `strftime_now`, a `tojson`
//! that is `json.dumps(ensure_ascii=False, ...)`; the variables are `messages`, `tools=None`, `documents=None`,
//! `add_generation_prompt` and the named special tokens (`bos_token`, `eos_token`, `unk_token`, `sep_token`,
//! `pad_token`, `cls_token`, `mask_token`) that are set, as strings. Python string methods come from
//! minijinja-contrib's pycompat, except strip/lstrip/rstrip and the `trim` filter, which use Python's whitespace.

use std::collections::BTreeMap;
use std::path::Path;

use minijinja::{AutoEscape, Environment, Value};
use serde_json::Value as Json;

use super::jinja_compat;
use super::message::Message;
use crate::error::{LarkError, Result};

/// The named special tokens HF passes to the template (`special_tokens_map`), as strings.
pub const SPECIAL_TOKEN_NAMES: [&str; 7] =
    ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

const TEMPLATE_NAME: &str = "chat_template";
/// A `[start, end)` range of bytes of a rendering.
pub type ByteRange = (usize, usize);
/// The same template writing marks around its `{% generation %}` blocks (when it has any).
const MARKED_NAME: &str = "chat_template_marked";

pub struct ChatTemplate {
    source: String,
    origin: String,
    special_tokens: BTreeMap<String, String>,
    env: Environment<'static>,
    /// The template has `{% generation %}` blocks.
    marked: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("special_tokens", &self.special_tokens)
            .finish_non_exhaustive()
    }
}

fn read_json(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path).map_err(|e| LarkError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| LarkError::input(path.display().to_string(), format!("invalid JSON: {e}")))
}

/// A special-token entry: a plain string, an AddedToken dict (`{"content": ...}`) or null.
fn token_string(v: &Json, path: &Path, key: &str) -> Result<Option<String>> {
    match v {
        Json::Null => Ok(None),
        Json::String(s) => Ok(Some(s.clone())),
        Json::Object(o) => match o.get("content") {
            Some(Json::String(s)) => Ok(Some(s.clone())),
            _ => Err(LarkError::input(
                format!("{}: {key}", path.display()),
                "an AddedToken object needs a string `content`",
            )),
        },
        _ => Err(LarkError::input(format!("{}: {key}", path.display()), "expected a string, an object or null")),
    }
}

/// The special tokens HF would expose in `special_tokens_map` for this directory: `tokenizer_config.json`'s
/// entries; the legacy `special_tokens_map.json` overrides them only when the config has no
/// `added_tokens_decoder` (as transformers does).
pub fn load_special_tokens(dir: &Path, config: Option<&Json>) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let config_path = dir.join("tokenizer_config.json");
    if let Some(cfg) = config {
        for key in SPECIAL_TOKEN_NAMES {
            if let Some(v) = cfg.get(key) {
                if let Some(s) = token_string(v, &config_path, key)? {
                    out.insert(key.to_string(), s);
                }
            }
        }
    }
    let legacy = dir.join("special_tokens_map.json");
    let has_decoder = config.is_some_and(|c| c.get("added_tokens_decoder").is_some());
    if !has_decoder && legacy.is_file() {
        let map = read_json(&legacy)?;
        for key in SPECIAL_TOKEN_NAMES {
            match map.get(key).map(|v| token_string(v, &legacy, key)).transpose()?.flatten() {
                Some(s) => {
                    out.insert(key.to_string(), s);
                }
                None if map.get(key).is_some_and(Json::is_null) => {
                    out.remove(key);
                }
                None => {}
            }
        }
    }
    Ok(out)
}

/// The template text and where it came from, following transformers' precedence (module doc).
fn find_template(dir: &Path, config: Option<&Json>) -> Result<(String, String)> {
    let config_path = dir.join("tokenizer_config.json");
    let mut named: BTreeMap<String, (String, String)> = BTreeMap::new();
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        let text = std::fs::read_to_string(&jinja).map_err(|e| LarkError::io(&jinja, e))?;
        named.insert("default".into(), (text, jinja.display().to_string()));
    }
    let extra_dir = dir.join("chat_templates");
    if extra_dir.is_dir() {
        let entries = std::fs::read_dir(&extra_dir).map_err(|e| LarkError::io(&extra_dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| LarkError::io(&extra_dir, e))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".jinja")) else {
                continue;
            };
            let text = std::fs::read_to_string(&path).map_err(|e| LarkError::io(&path, e))?;
            named.insert(name.to_string(), (text, path.display().to_string()));
        }
    }
    if named.is_empty() {
        match config.and_then(|c| c.get("chat_template")) {
            None | Some(Json::Null) => {}
            Some(Json::String(s)) => return Ok((s.clone(), format!("{}: chat_template", config_path.display()))),
            Some(Json::Array(list)) => {
                for (i, item) in list.iter().enumerate() {
                    let loc = format!("{}: chat_template[{i}]", config_path.display());
                    let name = item.get("name").and_then(Json::as_str);
                    let template = item.get("template").and_then(Json::as_str);
                    match (name, template) {
                        (Some(n), Some(t)) => {
                            named.insert(n.to_string(), (t.to_string(), format!("{loc} ({n})")));
                        }
                        _ => return Err(LarkError::input(loc, "expected {\"name\": string, \"template\": string}")),
                    }
                }
            }
            Some(_) => {
                return Err(LarkError::input(
                    format!("{}: chat_template", config_path.display()),
                    "expected a string or a list of {name, template}",
                ));
            }
        }
    }
    if named.is_empty() {
        return Err(LarkError::input(
            dir.display().to_string(),
            "no chat template: looked for chat_template.jinja, chat_templates/*.jinja and `chat_template` in \
             tokenizer_config.json",
        ));
    }
    if named.len() == 1 && named.contains_key("default") {
        return Ok(named.remove("default").expect("checked above"));
    }
    match named.remove("default") {
        Some(t) => Ok(t),
        None => Err(LarkError::input(
            dir.display().to_string(),
            format!(
                "several chat templates and none named `default`: {}",
                named.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

impl ChatTemplate {
    /// Load the chat template and special tokens of a model or tokenizer directory.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.is_file() { Some(read_json(&config_path)?) } else { None };
        let (source, origin) = find_template(dir, config.as_ref())?;
        let special = load_special_tokens(dir, config.as_ref())?;
        Self::from_source(source, origin, special)
    }

    /// Compile `source`; `origin` names it in errors (a file, or `file: field`).
    pub fn from_source(
        source: impl Into<String>,
        origin: impl Into<String>,
        special_tokens: BTreeMap<String, String>,
    ) -> Result<Self> {
        let source = source.into();
        let origin = origin.into();
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_formatter(jinja_compat::python_formatter);
        env.set_unknown_method_callback(jinja_compat::method_callback);
        env.add_filter("trim", jinja_compat::trim_filter);
        env.add_filter("tojson", jinja_compat::tojson);
        env.add_function("raise_exception", jinja_compat::raise_exception);
        env.add_function("strftime_now", jinja_compat::strftime_now);
        env.add_template_owned(TEMPLATE_NAME, jinja_compat::rewrite_generation_tags(&source)).map_err(|e| {
            LarkError::input(origin.clone(), format!("chat template does not compile: {}", error_text(&e)))
        })?;
        let marked = match jinja_compat::rewrite_generation_tags_marked(&source) {
            Some(m) => {
                env.add_template_owned(MARKED_NAME, m).map_err(|e| {
                    LarkError::input(origin.clone(), format!("chat template does not compile: {}", error_text(&e)))
                })?;
                true
            }
            None => false,
        };
        Ok(ChatTemplate { source, origin, special_tokens, env, marked })
    }

    /// Whether the template marks assistant text with `{% generation %}` blocks.
    pub fn has_generation_blocks(&self) -> bool {
        self.marked
    }

    /// The rendering of [`ChatTemplate::render_with_tools`] and the byte ranges of its text that `{% generation %}`
    /// blocks wrote (what HF's `return_assistant_tokens_mask` marks), in order. `None` without such blocks.
    pub fn render_generation_ranges(
        &self,
        messages: &[Message],
        tools: Option<&[Json]>,
    ) -> Result<Option<(String, Vec<ByteRange>)>> {
        if !self.marked {
            return Ok(None);
        }
        let plain = self.render_with_tools(messages, tools, false)?;
        let marked = self.render_named(MARKED_NAME, messages, tools, false, true)?;
        let (open, close) = (jinja_compat::GEN_OPEN, jinja_compat::GEN_CLOSE);
        let refuse = |why: &str| {
            LarkError::Unsupported(format!(
                "{}: the {{% generation %}} blocks of this template cannot be located in its rendering: {why}",
                self.origin
            ))
        };
        if plain.contains(open) || plain.contains(close) {
            return Err(refuse("the conversation contains lark's marker text"));
        }
        let (mut text, mut ranges) = (String::with_capacity(plain.len()), Vec::<usize>::new());
        let mut rest = marked.as_str();
        loop {
            let next_open = rest.find(open);
            let next_close = rest.find(close);
            match (next_open, next_close) {
                (None, None) => {
                    text.push_str(rest);
                    break;
                }
                (Some(o), c) if c.is_none_or(|c| o < c) => {
                    if ranges.len() % 2 == 1 {
                        return Err(refuse("nested blocks"));
                    }
                    text.push_str(&rest[..o]);
                    ranges.push(text.len());
                    rest = &rest[o + open.len()..];
                }
                (_, Some(c)) => {
                    if ranges.len() % 2 == 0 {
                        return Err(refuse("an end without a start"));
                    }
                    text.push_str(&rest[..c]);
                    ranges.push(text.len());
                    rest = &rest[c + close.len()..];
                }
                (Some(_), None) => unreachable!("covered by the arm above"),
            }
        }
        if ranges.len() % 2 == 1 {
            return Err(refuse("a start without an end"));
        }
        if text != plain {
            return Err(refuse("the marked rendering differs from the plain one"));
        }
        let ranges = ranges.chunks(2).map(|p| (p[0], p[1])).filter(|(a, b)| a < b).collect();
        Ok(Some((plain, ranges)))
    }

    /// The template text as stored.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Where the template came from (file, or `tokenizer_config.json: chat_template`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The special-token strings passed to the template (`bos_token`, `eos_token`, ...).
    pub fn special_tokens(&self) -> &BTreeMap<String, String> {
        &self.special_tokens
    }

    /// `tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// `tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=...)`; `None`
    /// renders `tools` as none; an empty list stays an empty list (as HF passes it: Llama 3.1's template tells
    /// the two apart).
    pub fn render_with_tools(
        &self,
        messages: &[Message],
        tools: Option<&[Json]>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.render_named(TEMPLATE_NAME, messages, tools, add_generation_prompt, false)
    }

    fn render_named(
        &self,
        name: &str,
        messages: &[Message],
        tools: Option<&[Json]>,
        add_generation_prompt: bool,
        marks: bool,
    ) -> Result<String> {
        let mut ctx: BTreeMap<&str, Value> = BTreeMap::new();
        for (k, v) in &self.special_tokens {
            ctx.insert(k.as_str(), Value::from(v.as_str()));
        }
        ctx.insert("messages", Value::from_serialize(messages));
        ctx.insert("tools", tools.map_or(Value::from(()), Value::from_serialize));
        ctx.insert("documents", Value::from(()));
        ctx.insert("add_generation_prompt", Value::from(add_generation_prompt));
        if marks {
            ctx.insert("__lark_generation_open", Value::from(jinja_compat::GEN_OPEN));
            ctx.insert("__lark_generation_close", Value::from(jinja_compat::GEN_CLOSE));
        }
        let tmpl = self.env.get_template(name).map_err(|e| LarkError::Other(e.to_string()))?;
        tmpl.render(ctx)
            .map_err(|e| LarkError::input(self.origin.clone(), format!("rendering failed: {}", error_text(&e))))
    }
}

/// minijinja's message plus the chain of causes (a filter's error sits in the source).
fn error_text(e: &minijinja::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tmpl(src: &str) -> ChatTemplate {
        let mut sp = BTreeMap::new();
        sp.insert("bos_token".to_string(), "<s>".to_string());
        sp.insert("eos_token".to_string(), "</s>".to_string());
        ChatTemplate::from_source(src, "test", sp).unwrap()
    }

    fn chat() -> Vec<Message> {
        vec![Message::system("S"), Message::user("Hi \"there\" ü"), Message::assistant("A")]
    }

    #[test]
    fn trim_and_lstrip_blocks_like_hf() {
        // With trim_blocks the newline after a block tag goes; with lstrip_blocks the indentation before it.
        let t = tmpl("{% for m in messages %}\n    {% if m.role == 'user' %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}\n");
        assert_eq!(t.render(&chat(), false).unwrap(), "[Hi \"there\" ü]\n");
    }

    #[test]
    fn variables_and_generation_prompt() {
        let t = tmpl("{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}|{{ tools }}|{{ unk_token }}|{{ documents is none }}");
        assert_eq!(
            t.render(&chat()[..2], true).unwrap(),
            "<s><system>S</s><user>Hi \"there\" ü</s><assistant>|None||True"
        );
    }

    #[test]
    fn python_string_methods_and_loop_controls() {
        let t = tmpl("{%- for m in messages -%}{%- if m.role == 'system' -%}{%- continue -%}{%- endif -%}{{ m.content.split('\"')[-1].strip().upper() }}{%- if m.role == 'user' -%}{%- break -%}{%- endif -%}{%- endfor -%}");
        assert_eq!(t.render(&chat(), false).unwrap(), "Ü");
        let t = tmpl(
            "{{ messages[::-1][0].content.startswith('A') }} {{ '  x\\n'.rstrip() }}|{{ 'a-b'.replace('-', '+') }}",
        );
        assert_eq!(t.render(&chat(), false).unwrap(), "True   x|a+b");
    }

    #[test]
    fn namespace_and_defined_tests() {
        let t = tmpl("{% set ns = namespace(n=0) %}{% for m in messages %}{% if m.reasoning_content is defined %}R{% endif %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}");
        let mut m = chat();
        m[2].extra.insert("reasoning_content".into(), json!("r"));
        assert_eq!(t.render(&m, false).unwrap(), "R3");
    }

    #[test]
    fn tojson_is_python_json_dumps() {
        let t = tmpl("{{ messages[1].content | tojson }}|{{ [1, 2.5, none, true] | tojson }}|{{ {'b': 1} | tojson(indent=2) }}|{{ 'é' | tojson(ensure_ascii=true) }}|{{ [] | tojson(indent=4) }}|{{ [1,[2]] | tojson(indent=1, separators=(',', '=')) }}");
        assert_eq!(
            t.render(&chat(), false).unwrap(),
            "\"Hi \\\"there\\\" ü\"|[1, 2.5, null, true]|{\n  \"b\": 1\n}|\"\\u00e9\"|[]|[\n 1,\n [\n  2\n ]\n]"
        );
        let t = tmpl("{{ {'b': 1, 'a': [1e-5, 3.0]} | tojson(sort_keys=true) }}");
        assert_eq!(t.render(&chat(), false).unwrap(), "{\"a\": [1e-05, 3.0], \"b\": 1}");
    }

    #[test]
    fn raise_exception_is_an_error_naming_the_template() {
        let t = tmpl(
            "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation must start with user') }}{% endif %}",
        );
        let e = t.render(&chat(), false).unwrap_err().to_string();
        assert!(e.starts_with("test: rendering failed") && e.contains("Conversation must start with user"), "{e}");
    }

    #[test]
    fn syntax_error_names_the_origin() {
        let e = ChatTemplate::from_source("{% for %}", "/d/tokenizer_config.json: chat_template", BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/d/tokenizer_config.json: chat_template: chat template does not compile"), "{e}");
    }

    #[test]
    fn generation_blocks_are_located_with_the_same_whitespace() {
        let src = "{% for m in messages %}<{{ m.role }}>\n  {%- if m.role == 'assistant' %}\n    {%- generation -%}\n  [{{ m.content }}]\n  {%- endgeneration %}\n!{% else %}{{ m.content }}{% endif %}{% endfor %}";
        let t = tmpl(src);
        let (text, blocks) = t.render_generation_ranges(&chat(), None).unwrap().unwrap();
        assert_eq!(text, t.render(&chat(), false).unwrap());
        assert_eq!(blocks.len(), 1);
        assert_eq!(&text[blocks[0].0..blocks[0].1], "[A]");
        assert!(tmpl("{{ messages[0].content }}").render_generation_ranges(&chat(), None).unwrap().is_none());
        // The conversation may not carry lark's marks.
        let mut m = chat();
        m[1].content = Some(jinja_compat::GEN_OPEN.to_string());
        assert!(t.render_generation_ranges(&m, None).unwrap_err().to_string().contains("marker text"));
    }

    #[test]
    fn trailing_newline_dropped_and_generation_tag_accepted() {
        let t = tmpl("{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}\n");
        assert_eq!(t.render(&chat(), false).unwrap(), "SHi \"there\" üA");
        // Scalars print as Python's str() does (expected values from HF's environment).
        let t = tmpl("{{ 1.5e-7 }} {{ none }} {{ 3 / 2 }} {{ 4 / 2 }} {{ false }}");
        assert_eq!(t.render(&chat(), false).unwrap(), "1.5e-07 None 1.5 2.0 False");
        let t = tmpl("{{ strftime_now('%Y') | length }}");
        assert_eq!(t.render(&chat(), false).unwrap(), "4");
    }

    fn write(dir: &Path, name: &str, text: &str) {
        if let Some(p) = dir.join(name).parent() {
            std::fs::create_dir_all(p).unwrap();
        }
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn sources_follow_transformers_precedence() {
        let d = tempfile::tempdir().unwrap();
        let cfg = json!({
            "chat_template": "CONFIG",
            "bos_token": {"content": "<|bos|>", "lstrip": false, "special": true, "__type": "AddedToken"},
            "eos_token": "<|eos|>",
            "pad_token": null,
            "added_tokens_decoder": {}
        });
        write(d.path(), "tokenizer_config.json", &cfg.to_string());
        let t = ChatTemplate::open(d.path()).unwrap();
        assert_eq!(t.source(), "CONFIG");
        assert!(t.origin().ends_with("tokenizer_config.json: chat_template"));
        assert_eq!(t.special_tokens().get("bos_token").map(String::as_str), Some("<|bos|>"));
        assert_eq!(t.special_tokens().get("eos_token").map(String::as_str), Some("<|eos|>"));
        assert!(!t.special_tokens().contains_key("pad_token"));

        // chat_template.jinja wins over the config.
        write(d.path(), "chat_template.jinja", "JINJA {{ bos_token }}\n");
        let t = ChatTemplate::open(d.path()).unwrap();
        assert_eq!(t.render(&[Message::user("u")], false).unwrap(), "JINJA <|bos|>");
        assert!(t.origin().ends_with("chat_template.jinja"));
    }

    #[test]
    fn list_form_picks_default() {
        let d = tempfile::tempdir().unwrap();
        let cfg = json!({"chat_template": [
            {"name": "tool_use", "template": "TOOLS"},
            {"name": "default", "template": "DEFAULT"}
        ]});
        write(d.path(), "tokenizer_config.json", &cfg.to_string());
        assert_eq!(ChatTemplate::open(d.path()).unwrap().source(), "DEFAULT");

        let cfg =
            json!({"chat_template": [{"name": "tool_use", "template": "TOOLS"}, {"name": "rag", "template": "R"}]});
        write(d.path(), "tokenizer_config.json", &cfg.to_string());
        let e = ChatTemplate::open(d.path()).unwrap_err().to_string();
        assert!(e.contains("none named `default`: rag, tool_use"), "{e}");

        let cfg = json!({"chat_template": [{"name": "default"}]});
        write(d.path(), "tokenizer_config.json", &cfg.to_string());
        let e = ChatTemplate::open(d.path()).unwrap_err().to_string();
        assert!(e.contains("tokenizer_config.json: chat_template[0]"), "{e}");
    }

    #[test]
    fn missing_template_and_legacy_special_tokens_map() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "tokenizer_config.json", "{\"eos_token\": \"</s>\"}");
        let e = ChatTemplate::open(d.path()).unwrap_err().to_string();
        assert!(e.contains("no chat template"), "{e}");

        // Without added_tokens_decoder in the config, special_tokens_map.json overrides it.
        write(d.path(), "chat_template.jinja", "{{ bos_token }}{{ eos_token }}");
        write(d.path(), "special_tokens_map.json", "{\"bos_token\": {\"content\": \"<B>\"}, \"eos_token\": \"<E>\"}");
        let t = ChatTemplate::open(d.path()).unwrap();
        assert_eq!(t.render(&[Message::user("u")], false).unwrap(), "<B><E>");

        write(d.path(), "tokenizer_config.json", "{\"eos_token\": \"</s>\", \"added_tokens_decoder\": {}}");
        let t = ChatTemplate::open(d.path()).unwrap();
        assert_eq!(t.render(&[Message::user("u")], false).unwrap(), "</s>");

        write(d.path(), "tokenizer_config.json", "{\"eos_token\": 5}");
        let e = ChatTemplate::open(d.path()).unwrap_err().to_string();
        assert!(e.contains("tokenizer_config.json: eos_token"), "{e}");
    }
}

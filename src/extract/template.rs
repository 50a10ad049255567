//! Document templates: literal text with `{path}` placeholders filled from a record.
//!
//! A path is a field name, optionally followed by steps into nested values:
//!
//! ```text
//! {problem}                          the field `problem`
//! {messages[0].content}              `content` of the first element of the list `messages`
//! {messages[-1].content}             ... of the last element (negative counts from the end)
//! {messages[role=user][-1].content}  ... of the last element whose `role` is `user`
//! {meta.source}                      the key `source` of the object `meta`
//! {{ and }}                          a literal brace
//! ```
//!
//! A placeholder whose whole text is a field name (`{Problem Text}`, `{a.b}` when the record has
//! a key `a.b`) is that field. Strings are inserted as they are, numbers and booleans written
//! out, null as nothing, lists and objects as compact JSON. A string that holds a JSON list or
//! object (a CSV cell, a passed-through shard column) is stepped into like the value it holds.

use serde_json::{Map, Value};

/// One step of a path after its field name.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    /// Position in a list; negative counts from the end.
    Index(i64),
    /// Keep the list elements whose `key` is `value` (as text).
    Filter(String, String),
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    /// The placeholder as written, and its parsed path (None: only a plain field name).
    Field(String, Option<(String, Vec<Step>)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

/// A rendered record: the text, and the placeholders (by position) that found nothing.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub text: String,
    pub missing: Vec<usize>,
}

impl Template {
    pub fn parse(template: &str) -> Self {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = template;
        while let Some(i) = rest.find(['{', '}']) {
            text.push_str(&rest[..i]);
            let (c, after) = (&rest[i..i + 1], &rest[i + 1..]);
            if after.starts_with(c) {
                text.push_str(c); // `{{` or `}}`
                rest = &after[1..];
                continue;
            }
            let end = (c == "{").then(|| after.find('}')).flatten();
            match end {
                Some(end) if end > 0 => {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                    let inner = &after[..end];
                    parts.push(Part::Field(inner.to_string(), parse_path(inner)));
                    rest = &after[end + 1..];
                }
                _ => {
                    // A lone brace, or `{}`: literal text, as templates always treated it.
                    text.push_str(c);
                    rest = after;
                }
            }
        }
        text.push_str(rest);
        parts.push(Part::Text(text));
        parts.retain(|p| !matches!(p, Part::Text(t) if t.is_empty()));
        Self { parts }
    }

    /// The placeholders as written, in order.
    pub fn placeholders(&self) -> Vec<String> {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Field(name, _) => Some(name.clone()),
                Part::Text(_) => None,
            })
            .collect()
    }

    pub fn render(&self, fields: &Map<String, Value>) -> Rendered {
        let mut text = String::new();
        let mut missing = Vec::new();
        let mut k = 0;
        for part in &self.parts {
            match part {
                Part::Text(t) => text.push_str(t),
                Part::Field(name, path) => {
                    match lookup(fields, name, path.as_ref()) {
                        Some(v) => text.push_str(&value_text(&v)),
                        None => missing.push(k),
                    }
                    k += 1;
                }
            }
        }
        Rendered { text, missing }
    }
}

/// `name(.key|[N]|[key=value])*`, or None when the text is not such a path.
fn parse_path(s: &str) -> Option<(String, Vec<Step>)> {
    let root_end = s.find(['.', '[']).unwrap_or(s.len());
    let (root, mut rest) = (&s[..root_end], &s[root_end..]);
    if root.is_empty() {
        return None;
    }
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            if end == 0 {
                return None;
            }
            steps.push(Step::Key(after[..end].to_string()));
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            let inner = after[..end].trim();
            steps.push(match inner.split_once('=') {
                Some((k, v)) => Step::Filter(k.trim().to_string(), unquote(v.trim()).to_string()),
                None => Step::Index(inner.parse().ok()?),
            });
            rest = &after[end + 1..];
        } else {
            return None;
        }
    }
    Some((root.to_string(), steps))
}

fn unquote(s: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return inner;
        }
    }
    s
}

/// The value a placeholder names in a record, if any: the whole text as a field name first.
fn lookup(
    fields: &Map<String, Value>,
    name: &str,
    path: Option<&(String, Vec<Step>)>,
) -> Option<Value> {
    if let Some(v) = fields.get(name) {
        return Some(v.clone());
    }
    let (root, steps) = path?;
    let mut v = fields.get(root)?.clone();
    for step in steps {
        v = apply_step(nested(v), step)?;
    }
    Some(v)
}

/// A string holding a JSON list or object, as that value; anything else as it is.
fn nested(v: Value) -> Value {
    match &v {
        Value::String(s) if s.trim_start().starts_with(['[', '{']) => {
            serde_json::from_str(s).unwrap_or(v)
        }
        _ => v,
    }
}

fn apply_step(v: Value, step: &Step) -> Option<Value> {
    match (step, v) {
        (Step::Key(k), Value::Object(mut o)) => o.remove(k),
        (Step::Index(i), Value::Array(mut a)) => {
            let n = a.len() as i64;
            let i = if *i < 0 { n + i } else { *i };
            (0..n).contains(&i).then(|| a.swap_remove(i as usize))
        }
        (Step::Filter(k, want), Value::Array(a)) => Some(Value::Array(
            a.into_iter()
                .filter(|e| e.get(k).and_then(scalar_text).as_deref() == Some(want.as_str()))
                .collect(),
        )),
        _ => None,
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// How a value is written into the text.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => scalar_text(other).unwrap_or_else(|| other.to_string()),
    }
}

/// The path that picks the last user turn of a chat list in `value` (`{role, content}` or
/// ShareGPT's `{from, value}`), if it is one.
pub fn chat_path(name: &str, value: &Value) -> Option<String> {
    let Value::Array(turns) = nested(value.clone()) else {
        return None;
    };
    let has = |key: &str, who: &str, text: &str| {
        turns.iter().any(|t| {
            t.get(key).and_then(Value::as_str) == Some(who)
                && t.get(text).is_some_and(Value::is_string)
        })
    };
    if has("role", "user", "content") {
        Some(format!("{{{name}[role=user][-1].content}}"))
    } else if has("from", "human", "value") {
        Some(format!("{{{name}[from=human][-1].value}}"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn paths_pick_nested_values() {
        let r = rec(r#"{"messages": [{"role": "system", "content": "be brief"},
                {"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "second"}], "meta": {"n": 3}, "a.b": "dotted"}"#);
        let cases = [
            ("{messages[0].content}", "be brief"),
            ("{messages[-1].content}", "second"),
            ("{messages[role=user][0].content}", "first"),
            ("{messages[role=\"user\"][-1].content}", "second"),
            ("{meta.n}/{meta}", "3/{\"n\":3}"),
            ("{a.b}", "dotted"),
            ("{{literal}} {} x", "{literal} {} x"),
        ];
        for (t, want) in cases {
            let out = Template::parse(t).render(&r);
            assert_eq!((out.text.as_str(), out.missing.len()), (want, 0), "{t}");
        }
        let out = Template::parse("{messages[9].content}|{nope}|{meta.n}").render(&r);
        assert_eq!((out.text.as_str(), out.missing), ("||3", vec![0, 1]));
        assert_eq!(
            chat_path("messages", &r["messages"]).unwrap(),
            "{messages[role=user][-1].content}"
        );
    }

    #[test]
    fn json_text_cells_are_stepped_into() {
        let r = rec(r#"{"conv": "[{\"from\": \"human\", \"value\": \"hi\"}]"}"#);
        let path = chat_path("conv", &r["conv"]).unwrap();
        assert_eq!(Template::parse(&path).render(&r).text, "hi");
    }
}

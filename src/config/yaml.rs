//! YAML (and JSON) → `serde_json::Value`, with the position of every node by path.
//!
//! sluice reads configuration through this one function so that every later error —
//! a type error from serde or a semantic one from validation — can name the line and
//! column it refers to. Positions are found on the first error that asks for one (by a
//! second parse of the kept text): a valid document never pays for them. Anything YAML
//! allows but a reviewed config should not contain is refused here: duplicate keys, anchors
//! and aliases, custom tags, several documents.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

use super::ConfigError;

/// Deepest nesting accepted; deeper documents are refused rather than risking the stack.
const MAX_DEPTH: usize = 128;

/// Line (1-based) and column (1-based) of a node in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

/// Positions by path, in the notation errors use: `routes[2].to.upstream`.
#[derive(Debug, Default, Clone)]
pub struct Spans {
    /// The source, parsed again for positions on the first [`find`](Spans::find).
    text: Arc<str>,
    by_path: OnceLock<HashMap<String, Pos>>,
}

/// A parsed document and where each of its nodes came from.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The document as JSON.
    pub value: Value,
    /// The position of each node, by path.
    pub spans: Spans,
}

// === impl Spans ===

impl Spans {
    /// The position of `path`, or of its nearest recorded ancestor.
    pub fn find(&self, path: &str) -> Option<Pos> {
        let by_path = self.by_path.get_or_init(|| positions(&self.text));
        let mut p = path;
        loop {
            if let Some(pos) = by_path.get(p) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
            if p.is_empty() {
                return by_path.get("").copied();
            }
        }
    }
}

/// The position of every node of `text` (as far as it parses).
fn positions(text: &str) -> HashMap<String, Pos> {
    let mut b = Builder {
        parser: Parser::new_from_str(text),
        spans: Some(HashMap::new()),
    };
    let _ = b.document();
    b.spans.unwrap_or_default()
}

/// A node's path, rendered only when something needs it as text.
#[derive(Clone, Copy)]
enum NodePath<'p> {
    Root,
    Key(&'p NodePath<'p>, &'p str),
    Index(&'p NodePath<'p>, usize),
}

impl NodePath<'_> {
    fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            NodePath::Root => {}
            NodePath::Key(parent, key) => {
                parent.write(out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            NodePath::Index(parent, i) => {
                parent.write(out);
                let _ = write!(out, "[{i}]");
            }
        }
    }
}

/// Parses a YAML (or JSON) document.
pub fn parse(text: &str) -> Result<Parsed, ConfigError> {
    let mut b = Builder {
        parser: Parser::new_from_str(text),
        spans: None,
    };
    Ok(Parsed {
        value: b.document()?,
        spans: Spans {
            text: text.into(),
            by_path: OnceLock::new(),
        },
    })
}

struct Builder<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    /// Positions, when asked for.
    spans: Option<HashMap<String, Pos>>,
}

fn pos(span: &Span) -> Pos {
    Pos {
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

fn err_at(path: &NodePath<'_>, p: Pos, msg: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.render(),
        line: Some(p.line),
        col: Some(p.col),
        message: msg.into(),
    }
}

// === impl Builder ===

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), ConfigError> {
        match self.parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => {
                let m = e.marker();
                Err(err_at(
                    &NodePath::Root,
                    Pos {
                        line: m.line(),
                        col: m.col() + 1,
                    },
                    format!("YAML syntax: {}", e.info()),
                ))
            }
            None => Err(ConfigError::plain("", "unexpected end of YAML stream")),
        }
    }

    fn document(&mut self) -> Result<Value, ConfigError> {
        let mut value = None;
        loop {
            let (ev, span) = self.next()?;
            match ev {
                Event::StreamStart | Event::DocumentEnd => {}
                Event::DocumentStart(_) => {
                    if value.is_some() {
                        return Err(err_at(
                            &NodePath::Root,
                            pos(&span),
                            "only one YAML document is allowed",
                        ));
                    }
                    let (ev, span) = self.next()?;
                    value = Some(self.node(ev, span, &NodePath::Root, 0)?);
                }
                Event::StreamEnd => break,
                _ => return Err(err_at(&NodePath::Root, pos(&span), "unexpected YAML event")),
            }
        }
        let value = value.unwrap_or(Value::Null);
        if value.is_null() {
            return Err(ConfigError::plain("", "the document is empty"));
        }
        Ok(value)
    }

    fn node(
        &mut self,
        ev: Event<'a>,
        span: Span,
        path: &NodePath<'_>,
        depth: usize,
    ) -> Result<Value, ConfigError> {
        let p = pos(&span);
        if depth > MAX_DEPTH {
            return Err(err_at(
                path,
                p,
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ));
        }
        if let Some(spans) = &mut self.spans {
            spans.entry(path.render()).or_insert(p);
        }
        match ev {
            Event::Alias(_) => Err(err_at(path, p, "YAML aliases are not allowed")),
            Event::Scalar(text, style, anchor, tag) => {
                check_props(path, p, anchor, tag.is_some())?;
                Ok(scalar(&text, style))
            }
            Event::SequenceStart(anchor, tag) => {
                check_props(path, p, anchor, tag.is_some())?;
                let mut items = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    let child = NodePath::Index(path, items.len());
                    items.push(self.node(ev, span, &child, depth + 1)?);
                }
                Ok(Value::Array(items))
            }
            Event::MappingStart(anchor, tag) => {
                check_props(path, p, anchor, tag.is_some())?;
                let mut map = Map::new();
                loop {
                    let (ev, kspan) = self.next()?;
                    let key = match ev {
                        Event::MappingEnd => break,
                        Event::Scalar(text, _, anchor, tag) => {
                            check_props(path, pos(&kspan), anchor, tag.is_some())?;
                            text.into_owned()
                        }
                        Event::Alias(_) => {
                            return Err(err_at(path, pos(&kspan), "YAML aliases are not allowed"));
                        }
                        _ => {
                            return Err(err_at(
                                path,
                                pos(&kspan),
                                "mapping keys must be plain strings",
                            ));
                        }
                    };
                    let child = NodePath::Key(path, &key);
                    if map.contains_key(&key) {
                        return Err(err_at(
                            &child,
                            pos(&kspan),
                            format!("duplicate key `{key}`"),
                        ));
                    }
                    if let Some(spans) = &mut self.spans {
                        spans.insert(child.render(), pos(&kspan));
                    }
                    let (ev, vspan) = self.next()?;
                    let v = self.node(ev, vspan, &child, depth + 1)?;
                    map.insert(key, v);
                }
                Ok(Value::Object(map))
            }
            _ => Err(err_at(path, p, "unexpected YAML event")),
        }
    }
}

fn check_props(
    path: &NodePath<'_>,
    p: Pos,
    anchor: usize,
    tagged: bool,
) -> Result<(), ConfigError> {
    if anchor != 0 {
        return Err(err_at(path, p, "YAML anchors are not allowed"));
    }
    if tagged {
        return Err(err_at(path, p, "YAML tags are not allowed"));
    }
    Ok(())
}

/// Resolves a scalar by the YAML 1.2 core schema; quoted and block scalars are strings.
fn scalar(text: &str, style: ScalarStyle) -> Value {
    if style != ScalarStyle::Plain {
        return Value::String(text.to_string());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => {
            // JSON has no infinities or NaN: keep the text so a typed field reports it.
            return Value::String(text.to_string());
        }
        _ => {}
    }
    if let Some(n) = int(text) {
        return Value::Number(n);
    }
    if is_float(text)
        && let Ok(f) = text.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(text.to_string())
}

fn int(text: &str) -> Option<Number> {
    let (neg, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (radix, digits) = if let Some(h) = digits.strip_prefix("0x") {
        (16, h)
    } else if let Some(o) = digits.strip_prefix("0o") {
        (8, o)
    } else {
        (10, digits)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let mag = u64::from_str_radix(digits, radix).ok()?;
    if neg {
        let v = i64::try_from(mag).ok()?;
        Some(Number::from(-v))
    } else {
        Some(Number::from(mag))
    }
}

fn is_float(text: &str) -> bool {
    let t = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mant, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let mant_ok = match mant.split_once('.') {
        Some((a, b)) => {
            (!a.is_empty() || !b.is_empty())
                && a.chars().all(|c| c.is_ascii_digit())
                && b.chars().all(|c| c.is_ascii_digit())
        }
        None => !mant.is_empty() && mant.chars().all(|c| c.is_ascii_digit()),
    };
    let exp_ok = match exp {
        None => true,
        Some(e) => {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
        }
    };
    mant_ok && exp_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_follow_the_core_schema() {
        let p =
            parse("a: 1\nb: 1.5\nc: true\nd: ~\ne: '1'\nf: on\ng: -3\nh: 0x1f\ni: 1e3\n").unwrap();
        assert_eq!(
            p.value,
            json!({"a": 1, "b": 1.5, "c": true, "d": null, "e": "1", "f": "on", "g": -3, "h": 31, "i": 1000.0})
        );
    }

    #[test]
    fn positions_by_path() {
        let p = parse("routes:\n  - name: a\n    to:\n      upstream: x\n").unwrap();
        assert_eq!(
            p.spans.find("routes[0].to.upstream"),
            Some(Pos { line: 4, col: 7 })
        );
        assert_eq!(
            p.spans.find("routes[0].to.missing"),
            Some(Pos { line: 3, col: 5 })
        );
    }

    #[test]
    fn refuses_duplicates_anchors_aliases_tags() {
        let e = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert!(e.message.contains("duplicate key `a`"), "{e}");
        assert_eq!(e.line, Some(3));
        assert!(
            parse("a: &x 1\nb: *x\n")
                .unwrap_err()
                .message
                .contains("anchors")
        );
        assert!(
            parse("a: !custom 1\n")
                .unwrap_err()
                .message
                .contains("tags")
        );
        assert!(
            parse("a: 1\n---\nb: 2\n")
                .unwrap_err()
                .message
                .contains("one YAML document")
        );
    }

    #[test]
    fn json_is_accepted() {
        let p = parse(r#"{"version": 3, "flags": {"f": {"state": "ENABLED"}}}"#).unwrap();
        assert_eq!(p.value["flags"]["f"]["state"], "ENABLED");
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.line.is_some(), "{e}");
    }
}

//! YAML (and JSON) → `serde_json::Value`, with the position of every node by path.
//!
//! sluice reads configuration through this one function so that every later error —
//! a type error from serde or a semantic one from validation — can name the line and
//! column it refers to. Positions are found on the first error that asks for one (by a
//! second parse of the kept text): a valid document never pays for them. Anything YAML
//! allows but a reviewed config should not contain is refused here: duplicate keys, anchors
//! and aliases, custom tags, several documents.

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
    by_path: OnceLock<PathIndex>,
}

/// The position of every node, keyed by a hash of its path as errors render it.
///
/// Paths are never rendered while indexing: a node's hash continues its parent's over the
/// one segment it adds, so indexing is linear in the input (rendering every path costs the
/// sum of all path lengths — key length × depth × node count, gigabytes for a small document
/// of long nested keys). A hash collision can only give an error a wrong line number.
#[derive(Debug, Default, Clone)]
struct PathIndex {
    /// (path hash, line, column), sorted by hash; the first recorded position of a path wins.
    entries: Vec<(u64, u32, u32)>,
}

/// A polynomial hash of a path, extended one byte at a time (mod 2^61 - 1).
#[derive(Debug, Clone, Copy, Default)]
struct PathHash {
    h: u64,
    /// Length in bytes of the path hashed so far.
    len: usize,
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
        let index = self.by_path.get_or_init(|| positions(&self.text));
        // The hash of every ancestor candidate (cut before each `.` and `[`), in one pass.
        let mut cuts = Vec::new();
        let mut h = PathHash::default();
        for &b in path.as_bytes() {
            if (b == b'.' || b == b'[') && h.len > 0 {
                cuts.push(h.h);
            }
            h.push(b);
        }
        cuts.push(h.h);
        cuts.iter()
            .rev()
            .find_map(|c| index.get(*c))
            .or_else(|| index.get(PathHash::default().h))
    }
}

// === impl PathIndex ===

impl PathIndex {
    fn get(&self, hash: u64) -> Option<Pos> {
        let i = self.entries.partition_point(|e| e.0 < hash);
        self.entries
            .get(i)
            .filter(|e| e.0 == hash)
            .map(|&(_, line, col)| Pos {
                line: line as usize,
                col: col as usize,
            })
    }
}

// === impl PathHash ===

impl PathHash {
    const P: u64 = (1 << 61) - 1;
    const B: u64 = 0x1f3d_5b79_a2c4_e601 % Self::P;

    fn push(&mut self, byte: u8) {
        let v =
            (u128::from(self.h) * u128::from(Self::B) + u128::from(byte) + 1) % u128::from(Self::P);
        self.h = v as u64;
        self.len += 1;
    }

    fn extend(mut self, bytes: &[u8]) -> Self {
        bytes.iter().for_each(|b| self.push(*b));
        self
    }

    /// The path of a mapping's child `key` (`parent.key`, or `key` under an empty path).
    fn key(self, key: &str) -> Self {
        let dotted = if self.len > 0 {
            self.extend(b".")
        } else {
            self
        };
        dotted.extend(key.as_bytes())
    }

    /// The path of a sequence's item `i` (`parent[i]`).
    fn index(self, i: usize) -> Self {
        let mut buf = [0u8; 24];
        let mut w = std::io::Cursor::new(&mut buf[..]);
        let _ = std::io::Write::write_fmt(&mut w, format_args!("[{i}]"));
        let n = w.position() as usize;
        self.extend(&buf[..n])
    }
}

/// The position of every node of `text` (as far as it parses).
fn positions(text: &str) -> PathIndex {
    let mut b = Builder {
        parser: Parser::new_from_str(text),
        spans: Some(Vec::new()),
    };
    let _ = b.document();
    let mut entries = b.spans.unwrap_or_default();
    // Stable: of two records for one path, the first (a mapping key's own position) wins.
    entries.sort_by_key(|e| e.0);
    entries.dedup_by_key(|e| e.0);
    entries.shrink_to_fit();
    PathIndex { entries }
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
    /// Positions by path hash, when asked for.
    spans: Option<Vec<(u64, u32, u32)>>,
}

fn pos(span: &Span) -> Pos {
    Pos {
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

fn record(h: PathHash, p: Pos) -> (u64, u32, u32) {
    let clamp = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    (h.h, clamp(p.line), clamp(p.col))
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
                    value = Some(self.node(ev, span, &NodePath::Root, PathHash::default(), 0)?);
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
        hash: PathHash,
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
            spans.push(record(hash, p));
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
                    let h = match self.spans {
                        Some(_) => hash.index(items.len()),
                        None => hash,
                    };
                    items.push(self.node(ev, span, &child, h, depth + 1)?);
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
                    let h = match &mut self.spans {
                        Some(spans) => {
                            let h = hash.key(&key);
                            spans.push(record(h, pos(&kspan)));
                            h
                        }
                        None => hash,
                    };
                    let (ev, vspan) = self.next()?;
                    let v = self.node(ev, vspan, &child, h, depth + 1)?;
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

//! JSON Pointer globs for the change policy: matched segment by segment, `*` is exactly one
//! segment, `**` is any number of segments (zero included). Segments are compared in their
//! escaped RFC 6901 form, so `/flags/a~1b/state` names the flag `a/b`.

use std::fmt;

/// A compiled JSON Pointer glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    segments: Vec<Seg>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Literal(String),
    One,
    Any,
}

// === impl Glob ===

impl Glob {
    /// Compiles a glob such as `/flags/*/state` or `/upstreams/*/tls/**`.
    pub fn parse(text: &str) -> Result<Glob, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("`{text}` must start with `/` (a JSON Pointer)"));
        };
        let segments = rest
            .split('/')
            .map(|s| match s {
                "*" => Ok(Seg::One),
                "**" => Ok(Seg::Any),
                lit => check_escapes(lit).map(|()| Seg::Literal(lit.to_string())),
            })
            .collect::<Result<Vec<_>, String>>()
            .map_err(|e| format!("`{text}`: {e}"))?;
        Ok(Glob {
            text: text.to_string(),
            segments,
        })
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the JSON Pointer `path` (escaped, starting with `/`) matches.
    pub fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        self.matches_segments(&parts)
    }

    /// Whether the escaped pointer segments match; one dynamic-programming pass, so a
    /// pattern full of `**` stays linear in the path per pattern segment.
    pub fn matches_segments(&self, parts: &[&str]) -> bool {
        // reach[j]: the pattern prefix seen so far can consume exactly parts[..j].
        let mut reach = vec![false; parts.len() + 1];
        reach[0] = true;
        for seg in &self.segments {
            let mut next = vec![false; parts.len() + 1];
            match seg {
                Seg::Any => {
                    let mut any = false;
                    for j in 0..=parts.len() {
                        any |= reach[j];
                        next[j] = any;
                    }
                }
                Seg::One => next[1..].copy_from_slice(&reach[..parts.len()]),
                Seg::Literal(lit) => {
                    for j in 0..parts.len() {
                        next[j + 1] = reach[j] && parts[j] == lit;
                    }
                }
            }
            reach = next;
        }
        reach[parts.len()]
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// RFC 6901 allows `~` only as `~0` or `~1`; anything else could never match a real path.
fn check_escapes(seg: &str) -> Result<(), String> {
    let mut chars = seg.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "segment `{seg}` has a `~` that is not `~0` or `~1`"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(glob: &str, path: &str) -> bool {
        Glob::parse(glob).unwrap().matches(path)
    }

    #[test]
    fn star_is_one_segment() {
        assert!(m("/flags/*/state", "/flags/new-checkout/state"));
        assert!(!m("/flags/*/state", "/flags/state"));
        assert!(!m("/flags/*/state", "/flags/a/b/state"));
        assert!(!m("/flags/*/state", "/flags/a/state/x"));
        assert!(m("/flags/*/state", "/flags//state"));
    }

    #[test]
    fn double_star_is_any_number() {
        assert!(m("/upstreams/*/tls/**", "/upstreams/a/tls"));
        assert!(m("/upstreams/*/tls/**", "/upstreams/a/tls/ca_file"));
        assert!(m("/upstreams/*/tls/**", "/upstreams/a/tls/x/y/z"));
        assert!(!m("/upstreams/*/tls/**", "/upstreams/a/tlsx"));
        assert!(m("/**", "/anything/at/all"));
        assert!(m("/**/state", "/state"));
        assert!(m("/a/**/b/**/c", "/a/x/b/y/z/c"));
        assert!(!m("/a/**/b/**/c", "/a/x/c"));
    }

    #[test]
    fn escapes_compare_escaped() {
        assert!(m("/flags/a~1b/state", "/flags/a~1b/state"));
        assert!(!m("/flags/a/b/state", "/flags/a~1b/state"));
        assert!(Glob::parse("flags/*").is_err());
        assert!(Glob::parse("/flags/a~2").is_err());
        // A `*` inside a segment is literal: globs work on whole segments only.
        assert!(!m("/flags/beta-*/state", "/flags/beta-x/state"));
    }
}

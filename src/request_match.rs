//! Request matchers (SPEC §2.2): conditions on headers, cookies and query parameters, each
//! an exact value, a prefix, a regular expression or mere presence. One compiled form serves
//! route `match`, `canary_match` and `preview_match`: built once per activation, evaluated
//! per request without allocating (a query value is only decoded into a buffer when it
//! holds a `%` escape).
//!
//! Semantics, as Envoy's route matchers:
//! - all conditions must hold; a header holds when **any** of its values does, a cookie
//!   when any cookie of that name does, a query parameter when any occurrence does;
//! - `regex` must match the **whole** value (it is anchored), with the `regex` crate: linear
//!   time in the value's length, whatever the pattern, and a bounded compiled size;
//! - query names and values are compared percent-decoded (`+` is kept as is).

use std::borrow::Cow;

use http::{HeaderMap, HeaderName};
use regex::bytes::{Regex, RegexBuilder};
use thiserror::Error;

/// Longest regex pattern accepted, in bytes.
pub const MAX_PATTERN: usize = 1024;

/// Largest compiled regex (bytes of the `regex` crate's program), so that a pattern such as
/// `a{1000}{1000}` is refused rather than built.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// A compiled request matcher: every condition must hold (none: matches everything).
#[derive(Debug, Clone, Default)]
pub struct RequestMatcher {
    conds: Box<[Cond]>,
}

/// One condition: where the value comes from and what it must be.
#[derive(Debug, Clone)]
pub struct Cond {
    source: Source,
    test: ValueTest,
}

/// Where a condition reads its value.
#[derive(Debug, Clone)]
pub enum Source {
    /// A request header.
    Header(HeaderName),
    /// A cookie of the `Cookie` headers.
    Cookie(Box<str>),
    /// A query parameter (name compared decoded).
    Query(Box<str>),
}

/// What a value must be.
#[derive(Debug, Clone)]
pub enum ValueTest {
    /// Exactly these bytes.
    Exact(Box<[u8]>),
    /// Starting with these bytes.
    Prefix(Box<[u8]>),
    /// Wholly matching this (anchored) expression.
    Regex(Regex),
    /// Present, whatever the value.
    Present,
}

/// Why a regex was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PatternError {
    /// Longer than [`MAX_PATTERN`].
    #[error("the pattern is longer than {MAX_PATTERN} bytes")]
    TooLong,
    /// Does not parse, or compiles too large.
    #[error("{0}")]
    Invalid(String),
}

// === impl RequestMatcher ===

impl RequestMatcher {
    /// A matcher of these conditions.
    pub fn new(conds: Vec<Cond>) -> Self {
        RequestMatcher {
            conds: conds.into_boxed_slice(),
        }
    }

    /// Whether there is no condition.
    pub fn is_empty(&self) -> bool {
        self.conds.is_empty()
    }

    /// Whether the request's headers and query string satisfy every condition.
    #[inline]
    pub fn matches(&self, headers: &HeaderMap, query: Option<&str>) -> bool {
        self.conds.iter().all(|c| c.holds(headers, query))
    }
}

// === impl Cond ===

impl Cond {
    /// A condition on `source`.
    pub fn new(source: Source, test: ValueTest) -> Self {
        Cond { source, test }
    }

    fn holds(&self, headers: &HeaderMap, query: Option<&str>) -> bool {
        match &self.source {
            Source::Header(name) => headers
                .get_all(name)
                .iter()
                .any(|v| self.test.accepts(v.as_bytes())),
            Source::Cookie(name) => cookies(headers, name).any(|v| self.test.accepts(v)),
            Source::Query(name) => {
                query.is_some_and(|q| query_values(q, name).any(|v| self.test.accepts(&v)))
            }
        }
    }
}

// === impl ValueTest ===

impl ValueTest {
    /// An anchored regex test, refused when too long, invalid or too large once compiled.
    pub fn regex(pattern: &str) -> Result<ValueTest, PatternError> {
        if pattern.len() > MAX_PATTERN {
            return Err(PatternError::TooLong);
        }
        RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(ValueTest::Regex)
            .map_err(|e| PatternError::Invalid(e.to_string()))
    }

    #[inline]
    fn accepts(&self, v: &[u8]) -> bool {
        match self {
            ValueTest::Exact(want) => v == &**want,
            ValueTest::Prefix(p) => v.starts_with(p),
            ValueTest::Regex(re) => re.is_match(v),
            ValueTest::Present => true,
        }
    }
}

/// The values of every cookie named `name` in the request's `Cookie` headers.
pub fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .filter_map(move |pair| {
            pair.trim_ascii()
                .strip_prefix(name.as_bytes())?
                .strip_prefix(b"=")
        })
}

/// The (percent-decoded) values of query parameter `name` in `query` (the part after `?`);
/// a parameter without `=` has the empty value.
pub fn query_values<'a>(query: &'a str, name: &'a str) -> impl Iterator<Item = Cow<'a, [u8]>> {
    query.split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k.as_bytes()) == name.as_bytes()).then(|| decode(v.as_bytes()))
    })
}

/// Percent-decodes `s`, borrowing it when it has no escape; a malformed escape stays as is.
fn decode(s: &[u8]) -> Cow<'_, [u8]> {
    if !s.contains(&b'%') {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && let (Some(h), Some(l)) = (
                s.get(i + 1).and_then(|c| hex(*c)),
                s.get(i + 2).and_then(|c| hex(*c)),
            )
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Cow::Owned(out)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn one(source: Source, test: ValueTest) -> RequestMatcher {
        RequestMatcher::new(vec![Cond::new(source, test)])
    }

    #[test]
    fn headers_match_any_value() {
        let m = one(
            Source::Header(HeaderName::from_static("x-canary")),
            ValueTest::Exact((*b"always").into()),
        );
        assert!(m.matches(
            &headers(&[("x-canary", "no"), ("x-canary", "always")]),
            None
        ));
        assert!(!m.matches(&headers(&[("x-canary", "always!")]), None));
        assert!(!m.matches(&headers(&[]), None));
        let p = one(
            Source::Header(HeaderName::from_static("x-canary")),
            ValueTest::Present,
        );
        assert!(p.matches(&headers(&[("x-canary", "")]), None));
        assert!(!p.matches(&headers(&[("x-other", "1")]), None));
    }

    #[test]
    fn cookies_by_name_prefix_and_regex() {
        let h = headers(&[("cookie", "a=1; beta=tester-7"), ("cookie", "zbeta=no")]);
        let m = |t| one(Source::Cookie("beta".into()), t);
        assert!(m(ValueTest::Exact((*b"tester-7").into())).matches(&h, None));
        assert!(m(ValueTest::Prefix((*b"tester-").into())).matches(&h, None));
        assert!(m(ValueTest::regex("tester-[0-9]+").unwrap()).matches(&h, None));
        // Anchored: a partial match is not a match.
        assert!(!m(ValueTest::regex("tester").unwrap()).matches(&h, None));
        assert!(!one(Source::Cookie("eta".into()), ValueTest::Present).matches(&h, None));
    }

    #[test]
    fn query_parameters_decoded() {
        let m = |name: &str, t| one(Source::Query(name.into()), t);
        let q = Some("x=1&canary&name=J%C3%B6rg&a%20b=c+d");
        assert!(m("canary", ValueTest::Present).matches(&HeaderMap::new(), q));
        assert!(m("canary", ValueTest::Exact((*b"").into())).matches(&HeaderMap::new(), q));
        assert!(
            m("name", ValueTest::Exact("Jörg".as_bytes().into())).matches(&HeaderMap::new(), q)
        );
        assert!(m("a b", ValueTest::Exact((*b"c+d").into())).matches(&HeaderMap::new(), q));
        assert!(!m("x", ValueTest::Exact((*b"2").into())).matches(&HeaderMap::new(), q));
        assert!(!m("canary", ValueTest::Present).matches(&HeaderMap::new(), None));
        assert_eq!(&*decode(b"%zz%4"), b"%zz%4");
    }

    #[test]
    fn all_conditions_must_hold() {
        let m = RequestMatcher::new(vec![
            Cond::new(
                Source::Header(HeaderName::from_static("x-env")),
                ValueTest::Exact((*b"prod").into()),
            ),
            Cond::new(Source::Query("canary".into()), ValueTest::Present),
        ]);
        let h = headers(&[("x-env", "prod")]);
        assert!(m.matches(&h, Some("canary=1")));
        assert!(!m.matches(&h, Some("other=1")));
        assert!(RequestMatcher::default().matches(&HeaderMap::new(), None));
    }

    #[test]
    fn patterns_are_bounded() {
        assert_eq!(
            ValueTest::regex(&"a".repeat(MAX_PATTERN + 1)).unwrap_err(),
            PatternError::TooLong
        );
        assert!(matches!(
            ValueTest::regex("a{1000}{1000}"),
            Err(PatternError::Invalid(_))
        ));
        assert!(matches!(
            ValueTest::regex("("),
            Err(PatternError::Invalid(_))
        ));
        // Linear time: a pathological pattern for backtracking engines on a long input.
        let re = ValueTest::regex("(a+)+b").unwrap();
        let input = "a".repeat(100_000);
        let start = std::time::Instant::now();
        assert!(!re.accepts(input.as_bytes()));
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }
}

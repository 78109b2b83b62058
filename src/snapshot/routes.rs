//! The compiled route table and request matching (SPEC §2.2 `match`).
//!
//! Routes keep document order (first match wins). Requests for a known exact host consider
//! only the routes that could match that host; others the wildcard and host-less routes.
//! Within such a list, large tables are indexed by path segment: a request considers the
//! routes whose prefix is a segment-prefix of its path, not every route.

use std::collections::HashMap;

use http::{HeaderMap, Method};

use crate::proxy::client::ClientCert;
use crate::request_match::RequestMatcher;

/// How a route matches the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Any host.
    Any,
    /// This host exactly (lowercase).
    Exact(Box<str>),
    /// Any subdomain of this suffix; stored with its leading dot (`.example.com`).
    Suffix(Box<str>),
}

/// The match part of a compiled route.
#[derive(Debug, Clone)]
pub struct RouteMatcher {
    /// Listener index, when restricted.
    pub listener: Option<usize>,
    /// Host rule.
    pub host: HostMatch,
    /// Path prefix on whole segments.
    pub path_prefix: Option<Box<str>>,
    /// Header, cookie and query conditions.
    pub request: RequestMatcher,
    /// Methods accepted (empty: any).
    pub methods: Vec<Method>,
    /// A verified client certificate is required (mTLS listeners), with this subject or
    /// SAN when given.
    pub client_cert: Option<CertRule>,
}

/// What a request's connection tells routing: its listener and verified client certificate.
#[derive(Debug, Clone, Copy)]
pub struct FromConn<'a> {
    /// Index of the listener in `sluice.yaml`.
    pub listener: usize,
    /// The verified client certificate (mTLS listeners).
    pub client_cert: Option<&'a ClientCert>,
}

/// `match.client_cert`, compiled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertRule {
    /// The subject exactly.
    pub subject: Option<Box<str>>,
    /// One of the SANs exactly.
    pub san: Option<Box<str>>,
}

/// A route table over routes of type `R`.
#[derive(Debug)]
pub struct RouteTable<R> {
    routes: Vec<(RouteMatcher, R)>,
    by_host: HashMap<Box<str>, Candidates>,
    others: Candidates,
}

/// Longest host looked up in the exact-host index without allocating.
const HOST_BUF: usize = 255;

/// Lists up to this long are scanned; longer ones get a path index.
const SCAN_MAX: usize = 16;

/// The routes one request may match, in document order.
#[derive(Debug)]
enum Candidates {
    Scan(Box<[u32]>),
    Paths(PathNode),
}

/// A path-segment trie: `here` holds the routes whose prefix ends at this node (at the root:
/// routes without a segment to pin, such as `/` or no prefix), ascending.
#[derive(Debug, Default)]
struct PathNode {
    here: Vec<u32>,
    children: HashMap<Box<str>, PathNode>,
}

// === impl RouteMatcher ===

impl RouteMatcher {
    fn host_matches(&self, host: &[u8]) -> bool {
        match &self.host {
            HostMatch::Any => true,
            HostMatch::Exact(h) => h.as_bytes().eq_ignore_ascii_case(host),
            HostMatch::Suffix(s) => {
                host.len() > s.len()
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
        }
    }

    fn rest_matches(
        &self,
        listener: usize,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
        query: Option<&str>,
        client: Option<&ClientCert>,
    ) -> bool {
        if let Some(rule) = &self.client_cert {
            let Some(c) = client else { return false };
            if rule.subject.as_ref().is_some_and(|s| *s != c.subject)
                || rule.san.as_ref().is_some_and(|s| !c.sans.contains(s))
            {
                return false;
            }
        }
        if let Some(l) = self.listener
            && l != listener
        {
            return false;
        }
        if let Some(p) = &self.path_prefix
            && !path_has_prefix(path, p)
        {
            return false;
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == method) {
            return false;
        }
        self.request.is_empty() || self.request.matches(headers, query)
    }
}

/// Whether `path` starts with `prefix` on a whole-segment boundary.
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// The segments a prefix pins (`/api/v1/` → `api`, `v1`); none for `/` or an odd prefix.
fn prefix_segments(prefix: Option<&str>) -> Option<std::str::Split<'_, char>> {
    let p = prefix?.strip_prefix('/')?;
    let p = p.strip_suffix('/').unwrap_or(p);
    (!p.is_empty()).then(|| p.split('/'))
}

// === impl Candidates ===

impl Candidates {
    fn new<R>(list: Vec<u32>, routes: &[(RouteMatcher, R)]) -> Self {
        if list.len() <= SCAN_MAX {
            return Candidates::Scan(list.into_boxed_slice());
        }
        let mut root = PathNode::default();
        for i in list {
            let mut node = &mut root;
            for seg in prefix_segments(routes[i as usize].0.path_prefix.as_deref())
                .into_iter()
                .flatten()
            {
                node = node.children.entry(seg.into()).or_default();
            }
            node.here.push(i);
        }
        Candidates::Paths(root)
    }

    /// The first route (lowest index) of these for which `ok` holds.
    fn first(&self, path: &str, mut ok: impl FnMut(u32) -> bool) -> Option<u32> {
        match self {
            Candidates::Scan(list) => list.iter().copied().find(|&i| ok(i)),
            Candidates::Paths(root) => {
                let mut best = None;
                let mut consider = |list: &[u32]| {
                    // Ascending: nothing after a found route can beat it.
                    for &i in list {
                        if best.is_some_and(|b| i >= b) {
                            break;
                        }
                        if ok(i) {
                            best = Some(i);
                            break;
                        }
                    }
                };
                consider(&root.here);
                let mut node = root;
                if let Some(rest) = path.strip_prefix('/') {
                    for seg in rest.split('/') {
                        match node.children.get(seg) {
                            Some(next) => {
                                node = next;
                                consider(&node.here);
                            }
                            None => break,
                        }
                    }
                }
                best
            }
        }
    }
}

/// The host of a request without its port, as given (case preserved).
pub fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // IPv6 literal: keep the brackets' content.
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

// === impl RouteTable ===

impl<R> RouteTable<R> {
    /// Compiles routes in document order.
    pub fn new(routes: Vec<(RouteMatcher, R)>) -> Self {
        let mut by_host: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        for (m, _) in &routes {
            if let HostMatch::Exact(h) = &m.host {
                by_host.entry(h.clone()).or_default();
            }
        }
        let mut others = Vec::new();
        for (i, (m, _)) in routes.iter().enumerate() {
            let i = i as u32;
            match &m.host {
                HostMatch::Exact(h) => by_host.get_mut(h).into_iter().for_each(|v| v.push(i)),
                HostMatch::Any => {
                    others.push(i);
                    by_host.values_mut().for_each(|v| v.push(i));
                }
                HostMatch::Suffix(_) => {
                    others.push(i);
                    for (h, v) in by_host.iter_mut() {
                        if m.host_matches(h.as_bytes()) {
                            v.push(i);
                        }
                    }
                }
            }
        }
        RouteTable {
            by_host: by_host
                .into_iter()
                .map(|(k, v)| (k, Candidates::new(v, &routes)))
                .collect(),
            others: Candidates::new(others, &routes),
            routes,
        }
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The routes in order.
    pub fn iter(&self) -> impl Iterator<Item = &R> {
        self.routes.iter().map(|(_, r)| r)
    }

    /// The first route matching the request; `host` is without port, any case; `query` is
    /// the request's query string, for `match.query`.
    pub fn find(
        &self,
        listener: usize,
        host: &str,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Option<&R> {
        let conn = FromConn {
            listener,
            client_cert: None,
        };
        self.find_for(conn, host, path, method, headers, query)
    }

    /// [`find`](Self::find) for a connection that presented `client` (mTLS), which routes
    /// with `match.client_cert` need.
    pub fn find_for(
        &self,
        conn: FromConn<'_>,
        host: &str,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Option<&R> {
        let FromConn {
            listener,
            client_cert: client,
        } = conn;
        let host = host.as_bytes();
        let mut buf = [0u8; HOST_BUF];
        let candidates: &Candidates = if host.len() <= HOST_BUF && !self.by_host.is_empty() {
            let lower = &mut buf[..host.len()];
            lower.copy_from_slice(host);
            lower.make_ascii_lowercase();
            match std::str::from_utf8(lower)
                .ok()
                .and_then(|h| self.by_host.get(h))
            {
                Some(list) => list,
                None => &self.others,
            }
        } else {
            &self.others
        };
        let i = candidates.first(path, |i| {
            let m = &self.routes[i as usize].0;
            m.host_matches(host) && m.rest_matches(listener, path, method, headers, query, client)
        })?;
        Some(&self.routes[i as usize].1)
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderName, HeaderValue};

    use super::*;
    use crate::request_match::{Cond, Source, ValueTest};

    fn m(host: HostMatch, prefix: Option<&str>) -> RouteMatcher {
        RouteMatcher {
            listener: None,
            host,
            path_prefix: prefix.map(Into::into),
            request: RequestMatcher::default(),
            methods: vec![],
            client_cert: None,
        }
    }

    #[test]
    fn first_match_wins_across_host_kinds() {
        let t = RouteTable::new(vec![
            (m(HostMatch::Any, Some("/health")), "health"),
            (m(HostMatch::Suffix(".example.com".into()), None), "wild"),
            (m(HostMatch::Exact("shop.example.com".into()), None), "shop"),
            (
                m(HostMatch::Exact("apex.com".into()), Some("/checkout")),
                "apex-checkout",
            ),
            (m(HostMatch::Any, None), "default"),
        ]);
        let h = HeaderMap::new();
        let get = Method::GET;
        assert_eq!(
            t.find(0, "Shop.Example.com", "/", &get, &h, None),
            Some(&"wild")
        );
        assert_eq!(
            t.find(0, "example.com", "/", &get, &h, None),
            Some(&"default")
        );
        assert_eq!(
            t.find(0, "x.example.com", "/health", &get, &h, None),
            Some(&"health")
        );
        assert_eq!(
            t.find(0, "apex.com", "/checkout/x", &get, &h, None),
            Some(&"apex-checkout")
        );
        assert_eq!(
            t.find(0, "apex.com", "/checkouts", &get, &h, None),
            Some(&"default")
        );
        assert_eq!(
            t.find(0, "other.org", "/", &get, &h, None),
            Some(&"default")
        );
    }

    /// The path index and the host index answer exactly as a scan of every route in order.
    #[test]
    fn indexes_agree_with_a_scan() {
        let prefixes = [
            None,
            Some("/"),
            Some("/api"),
            Some("/api/"),
            Some("/api/v1"),
            Some("/api/v1/"),
            Some("/api/v10"),
            Some("/app"),
            Some("//x"),
            Some("/a//b"),
            Some("odd"),
        ];
        let hosts = [
            HostMatch::Any,
            HostMatch::Exact("a.example.com".into()),
            HostMatch::Exact("b.example.com".into()),
            HostMatch::Suffix(".example.com".into()),
        ];
        let paths = [
            "",
            "*",
            "/",
            "/api",
            "/api/",
            "/api/v1",
            "/api/v1/x",
            "/api/v10",
            "/api/v1x",
            "/apix",
            "/app/z",
            "//x",
            "//x/y",
            "/a//b",
            "/a/b",
            "odd",
            "/other",
        ];
        let req_hosts = [
            "a.example.com",
            "B.Example.com",
            "c.example.com",
            "other.org",
        ];
        // Deterministic pseudo-random tables of 40 routes (above SCAN_MAX, so indexed).
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..50 {
            let routes: Vec<(RouteMatcher, usize)> = (0..40)
                .map(|i| {
                    let mut rm = m(
                        hosts[next(hosts.len())].clone(),
                        prefixes[next(prefixes.len())],
                    );
                    if next(4) == 0 {
                        rm.methods = vec![Method::POST];
                    }
                    (rm, i)
                })
                .collect();
            let scan: Vec<(RouteMatcher, usize)> = routes.clone();
            let t = RouteTable::new(routes);
            let h = HeaderMap::new();
            for host in req_hosts {
                for path in paths {
                    for method in [Method::GET, Method::POST] {
                        let want = scan.iter().find_map(|(rm, r)| {
                            (rm.host_matches(strip_port(host).as_bytes())
                                && rm.rest_matches(0, path, &method, &h, None, None))
                            .then_some(r)
                        });
                        assert_eq!(
                            t.find(0, host, path, &method, &h, None),
                            want,
                            "{host} {path}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn whole_segment_prefixes() {
        assert!(path_has_prefix("/checkout", "/checkout"));
        assert!(path_has_prefix("/checkout/x", "/checkout"));
        assert!(!path_has_prefix("/checkouts", "/checkout"));
        assert!(path_has_prefix("/api/x", "/api/"));
        assert!(!path_has_prefix("/api", "/api/"));
        assert!(path_has_prefix("/anything", "/"));
    }

    #[test]
    fn headers_methods_listener() {
        let mut rm = m(HostMatch::Any, None);
        rm.request = RequestMatcher::new(vec![Cond::new(
            Source::Header(HeaderName::from_static("x-env")),
            ValueTest::Exact((*b"prod").into()),
        )]);
        rm.methods = vec![Method::POST];
        rm.listener = Some(1);
        let t = RouteTable::new(vec![(rm, "r")]);
        let mut h = HeaderMap::new();
        h.insert("x-env", HeaderValue::from_static("prod"));
        assert_eq!(t.find(1, "a", "/", &Method::POST, &h, None), Some(&"r"));
        assert_eq!(t.find(0, "a", "/", &Method::POST, &h, None), None);
        assert_eq!(t.find(1, "a", "/", &Method::GET, &h, None), None);
        assert_eq!(
            t.find(1, "a", "/", &Method::POST, &HeaderMap::new(), None),
            None
        );
    }

    #[test]
    fn ports_are_ignored() {
        assert_eq!(strip_port("shop.example.com:8080"), "shop.example.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("shop"), "shop");
    }
}

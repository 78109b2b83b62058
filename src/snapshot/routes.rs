//! The compiled route table and request matching (SPEC §2.2 `match`).
//!
//! Routes keep document order (first match wins). Requests for a known exact host scan only
//! the routes that could match that host; others scan the wildcard and host-less routes.

use std::collections::HashMap;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

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
    /// Exact header values.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Methods accepted (empty: any).
    pub methods: Vec<Method>,
}

/// A route table over routes of type `R`.
#[derive(Debug)]
pub struct RouteTable<R> {
    routes: Vec<(RouteMatcher, R)>,
    by_host: HashMap<Box<str>, Box<[u32]>>,
    others: Box<[u32]>,
}

/// Longest host looked up in the exact-host index without allocating.
const HOST_BUF: usize = 255;

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
    ) -> bool {
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
        self.headers
            .iter()
            .all(|(name, want)| headers.get_all(name).iter().any(|v| v == want))
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
            routes,
            by_host: by_host
                .into_iter()
                .map(|(k, v)| (k, v.into_boxed_slice()))
                .collect(),
            others: others.into_boxed_slice(),
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

    /// The first route matching the request; `host` is without port, any case.
    pub fn find(
        &self,
        listener: usize,
        host: &str,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<&R> {
        let host = host.as_bytes();
        let mut buf = [0u8; HOST_BUF];
        let candidates: &[u32] = if host.len() <= HOST_BUF && !self.by_host.is_empty() {
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
        candidates.iter().find_map(|&i| {
            let (m, r) = &self.routes[i as usize];
            (m.host_matches(host) && m.rest_matches(listener, path, method, headers)).then_some(r)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(host: HostMatch, prefix: Option<&str>) -> RouteMatcher {
        RouteMatcher {
            listener: None,
            host,
            path_prefix: prefix.map(Into::into),
            headers: vec![],
            methods: vec![],
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
        assert_eq!(t.find(0, "Shop.Example.com", "/", &get, &h), Some(&"wild"));
        assert_eq!(t.find(0, "example.com", "/", &get, &h), Some(&"default"));
        assert_eq!(
            t.find(0, "x.example.com", "/health", &get, &h),
            Some(&"health")
        );
        assert_eq!(
            t.find(0, "apex.com", "/checkout/x", &get, &h),
            Some(&"apex-checkout")
        );
        assert_eq!(
            t.find(0, "apex.com", "/checkouts", &get, &h),
            Some(&"default")
        );
        assert_eq!(t.find(0, "other.org", "/", &get, &h), Some(&"default"));
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
        rm.headers = vec![(
            HeaderName::from_static("x-env"),
            HeaderValue::from_static("prod"),
        )];
        rm.methods = vec![Method::POST];
        rm.listener = Some(1);
        let t = RouteTable::new(vec![(rm, "r")]);
        let mut h = HeaderMap::new();
        h.insert("x-env", HeaderValue::from_static("prod"));
        assert_eq!(t.find(1, "a", "/", &Method::POST, &h), Some(&"r"));
        assert_eq!(t.find(0, "a", "/", &Method::POST, &h), None);
        assert_eq!(t.find(1, "a", "/", &Method::GET, &h), None);
        assert_eq!(t.find(1, "a", "/", &Method::POST, &HeaderMap::new()), None);
    }

    #[test]
    fn ports_are_ignored() {
        assert_eq!(strip_port("shop.example.com:8080"), "shop.example.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("shop"), "shop");
    }
}

//! Header hygiene (SPEC §9): hop-by-hop removal, `x-sluice-*` anti-spoofing, forwarding
//! headers, and dot-segment removal for paths.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::IpAddr;

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

/// `x-sluice-route`.
pub static X_SLUICE_ROUTE: HeaderName = HeaderName::from_static("x-sluice-route");
/// `x-sluice-variant`.
pub static X_SLUICE_VARIANT: HeaderName = HeaderName::from_static("x-sluice-variant");
/// `x-sluice-error`.
pub static X_SLUICE_ERROR: HeaderName = HeaderName::from_static("x-sluice-error");
/// `x-forwarded-for`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-forwarded-host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `x-request-id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

const HOP_BY_HOP: [&HeaderName; 8] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
];

/// Removes every header whose name starts with `x-sluice-` (clients cannot set them).
pub fn remove_sluice_headers(headers: &mut HeaderMap) {
    let is_ours = |n: &HeaderName| n.as_str().starts_with("x-sluice-");
    if !headers.keys().any(is_ours) {
        return;
    }
    let ours: Vec<HeaderName> = headers.keys().filter(|n| is_ours(n)).cloned().collect();
    for n in ours {
        headers.remove(&n);
    }
}

/// Removes hop-by-hop headers and every header named in `Connection`, plus `Upgrade`
/// (upgrades are handled apart), but keeps `te: trailers`. Used on requests and responses.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of these: one pass over the names (standard names compare
    // as enum tags) is cheaper than a hashed removal for each of the nine.
    let is_hop = |n: &HeaderName| HOP_BY_HOP.contains(&n) || n == header::UPGRADE;
    if !headers.keys().any(is_hop) {
        return;
    }
    // `te: trailers` is the one TE value that travels: gRPC requires it (SPEC §9).
    let te_trailers = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"))
        && headers.get_all(header::TE).iter().count() == 1;
    if headers.contains_key(header::CONNECTION) {
        // Names listed in Connection are hop-by-hop too (RFC 9110 §7.6.1).
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .map(str::trim)
            // `keep-alive`/`close` are the usual tokens: no header to look up beyond the fixed list.
            .filter(|t| !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("close"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for n in listed {
            headers.remove(&n);
        }
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
    headers.remove(header::UPGRADE);
    if te_trailers {
        headers.insert(header::TE, TRAILERS.clone());
    }
}

static TRAILERS: HeaderValue = HeaderValue::from_static("trailers");

thread_local! {
    /// The last client address formatted on this worker: connections make many requests.
    static LAST_CLIENT: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> = const { std::cell::RefCell::new(None) };
    /// This worker's request-id prefix (random) and counter.
    static REQUEST_IDS: std::cell::Cell<(u64, u64)> = std::cell::Cell::new((rand::random(), 0));
}

/// Appends the client address to `x-forwarded-for`.
pub fn append_forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    // One lookup for both cases (an entry, not a `get` then an `insert`).
    match headers.entry(&X_FORWARDED_FOR) {
        Entry::Vacant(e) => {
            let v = LAST_CLIENT.with(|c| {
                let mut c = c.borrow_mut();
                match &*c {
                    Some((ip, v)) if *ip == client => Some(v.clone()),
                    _ => {
                        let v = HeaderValue::from_str(&client.to_string()).ok()?;
                        *c = Some((client, v.clone()));
                        Some(v)
                    }
                }
            });
            if let Some(v) = v {
                e.insert(v);
            }
        }
        Entry::Occupied(mut e) => {
            let prior = e.get();
            let mut s = String::with_capacity(prior.len() + 48);
            s.push_str(&String::from_utf8_lossy(prior.as_bytes()));
            s.push_str(", ");
            let _ = write!(s, "{client}");
            if let Ok(v) = HeaderValue::from_str(&s) {
                // `insert` replaces every value the name had, like the map's insert.
                e.insert(v);
            }
        }
    }
}

/// A fresh request id: 32 lowercase hex digits, a random per-worker prefix and a counter
/// (unique without drawing randomness per request).
pub fn new_request_id() -> HeaderValue {
    let (prefix, n) = REQUEST_IDS.with(|c| {
        let (p, n) = c.get();
        c.set((p, n.wrapping_add(1)));
        (p, n)
    });
    let mut buf = [0u8; 32];
    hex64(prefix, &mut buf[..16]);
    hex64(n, &mut buf[16..]);
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

fn hex64(v: u64, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, o) in out.iter_mut().enumerate() {
        *o = HEX[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// Removes dot segments (RFC 3986 §5.2.4); borrows when there are none. `%2F` stays encoded.
pub fn remove_dot_segments(path: &str) -> Cow<'_, str> {
    let has_dots = path.split('/').any(|s| s == "." || s == "..");
    if !has_dots {
        return Cow::Borrowed(path);
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate().skip(1) {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() {
        s.push('/');
    }
    Cow::Owned(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments() {
        for (i, o) in [
            ("/a/b/c/./../../g", "/a/g"),
            ("/a/./b", "/a/b"),
            ("/../a", "/a"),
            ("/a/..", "/"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/", "/"),
            ("/checkout/../admin", "/admin"),
            ("/a%2F..%2Fb", "/a%2F..%2Fb"),
            ("/a/..b/c", "/a/..b/c"),
        ] {
            assert_eq!(remove_dot_segments(i), o, "{i}");
        }
        assert!(matches!(
            remove_dot_segments("/plain/path"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn hop_by_hop_and_connection_listed() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("gzip"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));

        let mut h = HeaderMap::new();
        h.insert("te", HeaderValue::from_static("Trailers"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h["te"], "trailers", "gRPC's te: trailers is kept");
        h.append("te", HeaderValue::from_static("gzip"));
        remove_hop_by_hop(&mut h);
        assert!(!h.contains_key("te"));
    }

    #[test]
    fn sluice_headers_and_xff() {
        let mut h = HeaderMap::new();
        h.insert("x-sluice-variant", HeaderValue::from_static("canary"));
        h.insert("x-sluice-flag-a", HeaderValue::from_static("on"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        remove_sluice_headers(&mut h);
        append_forwarded_for(&mut h, "127.0.0.1".parse().unwrap());
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(new_request_id().len(), 32);
        assert_ne!(new_request_id(), new_request_id());
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "10.1.2.3".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "10.1.2.4".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "10.1.2.4");
    }
}

//! Header hygiene (SPEC §9): hop-by-hop removal, `x-sluice-*` anti-spoofing, forwarding
//! headers, and dot-segment removal for paths.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::IpAddr;

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

use super::error::ProxyError;

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

/// Removes every header whose name starts with `x-sluice-` (clients cannot set them), and
/// every header that *becomes* one of sluice's own when `_` is read as `-`: CGI and WSGI
/// (and so PHP, Python, Ruby apps) pass `x_sluice_flag_beta` as `HTTP_X_SLUICE_FLAG_BETA`,
/// the very variable of sluice's `x-sluice-flag-beta`. The same goes for the forwarding
/// headers sluice sets (`x_forwarded_for`, `x_forwarded_host`, `x_forwarded_proto`, `via`).
pub fn remove_sluice_headers(headers: &mut HeaderMap) {
    let is_ours = |n: &HeaderName| {
        let n = n.as_str();
        n.starts_with("x-sluice-") || (n.contains('_') && spoofs_ours(n))
    };
    if !headers.keys().any(is_ours) {
        return;
    }
    let ours: Vec<HeaderName> = headers.keys().filter(|n| is_ours(n)).cloned().collect();
    for n in ours {
        headers.remove(&n);
    }
}

/// Refuses what must not be proxied at all: `CONNECT`, and a request whose host is missing,
/// doubled or invalid (RFC 9112 §3.2: "a server MUST respond with a 400 … to any HTTP/1.1
/// request message that lacks a Host header field and to any request message that contains
/// more than one Host header field line or a Host header field with an invalid value").
pub fn check_request<B>(req: &http::Request<B>) -> Result<(), ProxyError> {
    if req.method() == http::Method::CONNECT {
        return Err(ProxyError::ConnectRefused);
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err(ProxyError::InvalidHost),
        (Some(h), None) if !is_host(h.as_bytes()) => Err(ProxyError::InvalidHost),
        (None, _) if req.version() == http::Version::HTTP_11 => Err(ProxyError::InvalidHost),
        _ => Ok(()),
    }
}

/// The bytes of a reg-name (RFC 3986 §3.2.2: unreserved, sub-delims, `%`), one lookup
/// per byte on every request's `Host`.
static REG_NAME: [bool; 256] = byte_set(b"-._~%!$&'()*+,;=");
/// The bytes inside an IP literal's brackets.
static IP_LITERAL: [bool; 256] = byte_set(b":.%-_~");

/// ASCII letters and digits, and `extra`.
const fn byte_set(extra: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
}

/// `uri-host [":" port]` (RFC 9110 §7.2, RFC 3986 §3.2.2): a reg-name or an IP literal in
/// brackets, then digits after a colon; no userinfo. Checked in place: parsing it as an
/// `Authority` would copy it, an allocation on every request.
fn is_host(h: &[u8]) -> bool {
    let (host, port) = match h.first() {
        Some(b'[') => match h.iter().position(|b| *b == b']') {
            Some(i) => (&h[1..i], &h[i + 1..]),
            None => return false,
        },
        _ => match h.iter().position(|b| *b == b':') {
            Some(i) => (&h[..i], &h[i..]),
            None => (h, &h[h.len()..]),
        },
    };
    let allowed = if h.first() == Some(&b'[') {
        &IP_LITERAL
    } else {
        &REG_NAME
    };
    let host_ok = !host.is_empty() && host.iter().all(|b| allowed[usize::from(*b)]);
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    host_ok && port_ok
}

/// Joins the `cookie` fields an HTTP/2 client split (RFC 9113 §8.2.3) into one, with `; `,
/// as an HTTP/1.1 message must carry them.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    if values.next().is_none() || values.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for v in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// Whether `name` (holding a `_`) reads as a header sluice sets once `_` is taken for `-`.
fn spoofs_ours(name: &str) -> bool {
    let folded = |want: &str| {
        name.len() >= want.len()
            && name
                .bytes()
                .zip(want.bytes())
                .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
    };
    folded("x-sluice-")
        || [
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "via",
        ]
        .iter()
        .any(|w| name.len() == w.len() && folded(w))
}

/// Removes hop-by-hop headers and every header named in `Connection`, plus `Upgrade`
/// (upgrades are handled apart), but keeps `te: trailers`. Used on requests and responses.
/// Returns whether the message had any (and so may have lost others named in `Connection`).
pub fn remove_hop_by_hop(headers: &mut HeaderMap) -> bool {
    // Most messages carry none of these, and most of the rest one (`Connection:
    // keep-alive` on nearly every upstream response): one pass over the names (standard
    // names compare as enum tags) says which are there, and only those get a hashed
    // removal — not one for each of the nine.
    let mut found = 0u16;
    for n in headers.keys() {
        // The lengths of the nine names: most names are none of them by length alone.
        if !matches!(n.as_str().len(), 2 | 7 | 10 | 16..=19) {
            continue;
        }
        if let Some(i) = HOP_BY_HOP.iter().position(|h| *h == n) {
            found |= 1 << i;
        } else if n == header::UPGRADE {
            found |= 1 << HOP_BY_HOP.len();
        }
    }
    if found == 0 {
        return false;
    }
    let has = |n: &HeaderName| {
        HOP_BY_HOP
            .iter()
            .position(|h| *h == n)
            .is_some_and(|i| found & (1 << i) != 0)
    };
    // `te: trailers` is the one TE value that travels: gRPC requires it (SPEC §9).
    let te_trailers = has(&header::TE)
        && headers
            .get(header::TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"))
        && headers.get_all(header::TE).iter().count() == 1;
    if has(&header::CONNECTION) && !only_keep_alive_or_close(headers) {
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
    for (i, n) in HOP_BY_HOP.iter().enumerate() {
        if found & (1 << i) != 0 {
            headers.remove(*n);
        }
    }
    if found & (1 << HOP_BY_HOP.len()) != 0 {
        headers.remove(header::UPGRADE);
    }
    if te_trailers {
        headers.insert(header::TE, TRAILERS.clone());
    }
    true
}

/// Whether `Connection` is one `keep-alive` or `close` (nearly every upstream response):
/// it names no other header.
fn only_keep_alive_or_close(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::CONNECTION).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => {
            let v = v.as_bytes();
            v.eq_ignore_ascii_case(b"keep-alive") || v.eq_ignore_ascii_case(b"close")
        }
        _ => false,
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

/// The path sluice routes and forwards: percent-encoded unreserved characters decoded (RFC
/// 3986 §6.2.2.2: `%2E` *is* `.`, so `/public/%2e%2e/admin` is `/admin`), then dot segments
/// removed (§5.2.4), as Envoy's `normalize_path` does. Reserved characters stay encoded
/// (`%2F` is not a segment separator). Borrows when there is nothing to change.
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    if !path.as_bytes().contains(&b'%') {
        return remove_dot_segments(path);
    }
    let decoded = decode_unreserved(path);
    match remove_dot_segments(&decoded) {
        Cow::Borrowed(_) => decoded,
        Cow::Owned(s) => Cow::Owned(s),
    }
}

/// Decodes `%XX` where XX names an unreserved character (ALPHA, DIGIT, `-`, `.`, `_`, `~`),
/// and writes a `%` that starts no valid escape as `%25`: otherwise `%%32e` would decode to
/// `%2e`, a dot one decoding later, and the result would not be a fixed point.
fn decode_unreserved(path: &str) -> Cow<'_, str> {
    #[derive(PartialEq)]
    enum At {
        Byte,
        Unreserved(u8),
        Escape,
        Lone,
    }
    let b = path.as_bytes();
    let hex = |c: Option<&u8>| c.and_then(|c| (*c as char).to_digit(16)).map(|d| d as u8);
    let at = |i: usize| -> At {
        if b[i] != b'%' {
            return At::Byte;
        }
        match (hex(b.get(i + 1)), hex(b.get(i + 2))) {
            (Some(h), Some(l)) => {
                let v = h << 4 | l;
                if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                    At::Unreserved(v)
                } else {
                    At::Escape
                }
            }
            _ => At::Lone,
        }
    };
    if !(0..b.len()).any(|i| matches!(at(i), At::Unreserved(_) | At::Lone)) {
        return Cow::Borrowed(path);
    }
    let mut out = Vec::with_capacity(b.len() + 2);
    let mut i = 0;
    while i < b.len() {
        match at(i) {
            At::Unreserved(v) => {
                out.push(v);
                i += 3;
            }
            At::Lone => {
                out.extend_from_slice(b"%25");
                i += 1;
            }
            At::Byte | At::Escape => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    // Only ASCII bytes replaced ASCII escapes: still UTF-8.
    Cow::Owned(String::from_utf8(out).unwrap_or_else(|_| path.to_string()))
}

/// Whether a normalised `path` holds a dot segment glued to an encoded slash or to a
/// backslash (`..%2F`, `%5C..`, `..\\`). sluice keeps `%2F` encoded, so it sees no dot segment
/// there; an upstream that decodes `%2F`, or takes `\\` for `/` (IIS, many frameworks), sees
/// one and resolves a path sluice never routed. Neither reading is safe, so such a path is
/// refused (as Envoy's `path_with_escaped_slashes_action: REJECT_REQUEST` would, limited to
/// the paths where the two readings differ in their segments).
pub fn ambiguous_path(path: &str) -> bool {
    let b = path.as_bytes();
    if !b.contains(&b'\\') && !b.contains(&b'%') {
        return false;
    }
    let separator =
        |w: &[u8]| w[0] == b'%' && matches!((w[1], w[2] | 0x20), (b'2', b'f') | (b'5', b'c'));
    path.split('/').any(|seg| {
        if !seg.contains('\\') && !seg.as_bytes().windows(3).any(separator) {
            return false;
        }
        // Rare: only a segment holding a separator is copied.
        seg.to_ascii_lowercase()
            .replace("%2f", "/")
            .replace("%5c", "/")
            .replace('\\', "/")
            .split('/')
            .any(|s| s == "." || s == "..")
    })
}

/// Removes dot segments (RFC 3986 §5.2.4); borrows when there are none. `%2F` stays encoded.
pub fn remove_dot_segments(path: &str) -> Cow<'_, str> {
    // Most paths hold no dot at all: one byte scan, not a split into segments.
    if !path.as_bytes().contains(&b'.') {
        return Cow::Borrowed(path);
    }
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
    fn encoded_dots_are_dots() {
        for (i, o) in [
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2E/admin", "/admin"),
            ("/public/.%2e/admin", "/admin"),
            ("/public/%2e./admin", "/admin"),
            ("/a/%2e/b", "/a/b"),
            ("/a/%2e%2e", "/"),
            ("/%7euser/%41", "/~user/A"),
            ("/a%2F..%2Fb", "/a%2F..%2Fb"),
            ("/a/%2F%2e%2e", "/a/%2F.."),
            ("/a/%zz/%2", "/a/%25zz/%252"),
            ("/a/%25%32%65", "/a/%252e"),
            ("/%%32e%%32e/x", "/%252e%252e/x"),
        ] {
            assert_eq!(normalize_path(i), o, "{i}");
        }
        assert!(matches!(normalize_path("/plain/%20x"), Cow::Borrowed(_)));
    }

    #[test]
    fn dots_glued_to_encoded_slashes_are_ambiguous() {
        for p in [
            "/public/..%2Fadmin",
            "/public/..%2fadmin",
            "/a/%2F../b",
            "/a/..%5Cadmin",
            "/a/..\\admin",
            "/a/.%2Fb",
            "/a/x%2F..",
        ] {
            assert!(ambiguous_path(p), "{p}");
        }
        for p in [
            "/a/b%2Fc",
            "/a/..b%2Fc",
            "/a%20b/c",
            "/files/v1.2%2F",
            "/a/b\\c",
            "/",
        ] {
            assert!(!ambiguous_path(p), "{p}");
        }
    }

    #[test]
    fn hosts() {
        for h in [
            "a",
            "shop.example:8080",
            "127.0.0.1",
            "[::1]:443",
            "[fe80::1%25eth0]",
            "a:",
        ] {
            assert!(is_host(h.as_bytes()), "{h}");
        }
        for h in [
            "", "a b", "user@a", "a:80:81", "a:x", "[::1", "[::1]x", ":80", "a/b",
        ] {
            assert!(!is_host(h.as_bytes()), "{h}");
        }
        // The tables hold exactly the bytes RFC 3986 allows there.
        for b in 0..=255u8 {
            let alnum = b.is_ascii_alphanumeric();
            assert_eq!(
                REG_NAME[usize::from(b)],
                alnum || b"-._~%!$&'()*+,;=".contains(&b),
                "{b}"
            );
            assert_eq!(
                IP_LITERAL[usize::from(b)],
                alnum || b":.%-_~".contains(&b),
                "{b}"
            );
        }
    }

    #[test]
    fn underscore_spellings_of_our_headers_go() {
        let mut h = HeaderMap::new();
        for n in [
            "x_sluice_flag_beta",
            "x-sluice_variant",
            "x_forwarded_for",
            "x_forwarded_host",
            "x_forwarded_proto",
        ] {
            h.insert(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_static("1"),
            );
        }
        h.insert("x_user_id", HeaderValue::from_static("1"));
        h.insert("x_forwarded_forx", HeaderValue::from_static("1"));
        remove_sluice_headers(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(h.contains_key("x_user_id") && h.contains_key("x_forwarded_forx"));
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

        // Each name alone goes (only the names present are removed), and says so.
        for n in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            let mut h = HeaderMap::new();
            h.insert(n, HeaderValue::from_static("x"));
            h.insert("x-keep", HeaderValue::from_static("1"));
            assert!(remove_hop_by_hop(&mut h), "{n}");
            assert_eq!(h.len(), 1, "{n}");
            assert!(h.contains_key("x-keep"), "{n}");
        }
        let mut h = HeaderMap::new();
        h.insert("x-keep", HeaderValue::from_static("1"));
        assert!(!remove_hop_by_hop(&mut h));
        assert_eq!(h.len(), 1);
        // `Connection: close` alone (any case) names nothing else; a second line does.
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Close"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        assert!(remove_hop_by_hop(&mut h));
        assert_eq!(h.len(), 1);
        let mut h = HeaderMap::new();
        h.append("connection", HeaderValue::from_static("keep-alive"));
        h.append("connection", HeaderValue::from_static("x-b"));
        h.insert("x-b", HeaderValue::from_static("1"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        assert!(remove_hop_by_hop(&mut h));
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
        // `Connection` naming a hop-by-hop header and a custom one.
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("upgrade, x-a"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("host", HeaderValue::from_static("example.com"));
        assert!(remove_hop_by_hop(&mut h));
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("host"));
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

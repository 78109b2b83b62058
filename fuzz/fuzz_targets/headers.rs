//! Header hygiene and path normalisation: no panic, and the invariants the proxy relies on.
#![no_main]

use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sluice::proxy::headers;

fuzz_target!(|data: &[u8]| {
    // The path: dot segments removed, idempotently, never escaping the root.
    if let Ok(path) = std::str::from_utf8(data) {
        let path = path.lines().next().unwrap_or("");
        if path.starts_with('/') {
            let once = headers::remove_dot_segments(path);
            assert!(once.starts_with('/'), "{path:?} -> {once:?}");
            let twice = headers::remove_dot_segments(&once);
            assert_eq!(once, twice, "not idempotent for {path:?}");
            assert!(
                !once.split('/').any(|s| s == "." || s == ".."),
                "{path:?} -> {once:?}"
            );
            // What the proxy routes and forwards: encoded dots are dots (`%2e%2e` is `..`).
            let norm = headers::normalize_path(path);
            assert!(norm.starts_with('/'), "{path:?} -> {norm:?}");
            assert_eq!(
                norm,
                headers::normalize_path(&norm),
                "not a fixed point for {path:?}"
            );
            assert!(
                !norm.split('/').any(|s| s == "." || s == ".."),
                "{path:?} -> {norm:?}"
            );
            assert!(
                !norm.to_ascii_lowercase().contains("%2e"),
                "an encoded dot survived: {path:?} -> {norm:?}"
            );
            // Unless refused, no upstream decoding `%2F`/`%5C` or reading `\` as `/` finds a
            // dot segment sluice did not see.
            if !headers::ambiguous_path(&norm) {
                let decoded = norm
                    .to_ascii_lowercase()
                    .replace("%2f", "/")
                    .replace("%5c", "/")
                    .replace('\\', "/");
                assert!(
                    !decoded.split('/').any(|s| s == "." || s == ".."),
                    "{path:?} -> {norm:?} hides a dot segment"
                );
            }
        }
    }
    // A header block: `name: value` lines.
    let mut h = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(i) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&line[..i]),
            HeaderValue::from_bytes(line[i + 1..].trim_ascii()),
        ) else {
            continue;
        };
        h.append(n, v);
    }
    let connection_listed: Vec<HeaderName> = h
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| n != http::header::TE)
        .collect();
    headers::remove_sluice_headers(&mut h);
    // Nor a name that reads as one once `_` is taken for `-` (CGI/WSGI fold both to `_`).
    assert!(
        !h.keys()
            .any(|k| k.as_str().replace('_', "-").starts_with("x-sluice-"))
    );
    headers::remove_hop_by_hop(&mut h);
    for gone in [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "trailer",
    ] {
        assert!(!h.contains_key(gone), "{gone} survived");
    }
    for n in connection_listed {
        assert!(!h.contains_key(&n), "{n} named in Connection survived");
    }
    if let Some(te) = h.get(http::header::TE) {
        assert_eq!(te, "trailers");
    }
    headers::append_forwarded_for(&mut h, "192.0.2.1".parse().expect("ip"));
    assert!(h.contains_key("x-forwarded-for"));
});

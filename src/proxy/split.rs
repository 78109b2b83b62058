//! Sticky traffic splitting (SPEC §3): which side of a rollout a request goes to.

use http::HeaderMap;

use crate::bucket;
use crate::snapshot::RolloutRt;

/// The side of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Stable (blue-green: active).
    Stable,
    /// Canary (blue-green: preview).
    Canary,
}

/// A split decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Where the request goes.
    pub side: Side,
    /// The sticky key drawn for a keyless client, to be set as a cookie.
    pub drawn: Option<DrawnId>,
}

/// A freshly drawn 128-bit id, as 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrawnId([u8; 32]);

// === impl DrawnId ===

impl DrawnId {
    fn new() -> Self {
        let v: u128 = rand::random();
        let mut b = [0u8; 32];
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, out) in b.iter_mut().enumerate() {
            *out = HEX[((v >> (124 - 4 * i)) & 0xf) as usize];
        }
        DrawnId(b)
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        // Only hex digits are ever written.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// The value of cookie `name` among the request's `Cookie` headers (the first, when several).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &'a str) -> Option<&'a [u8]> {
    crate::request_match::cookies(headers, name).next()
}

/// Decides the side: `canary_match`/`preview_match` first (headers, cookies, `query`: the
/// request's query string), then the sticky key's bucket.
pub fn decide(ro: &RolloutRt, headers: &HeaderMap, query: Option<&str>) -> Assignment {
    let forced = ro
        .force_canary
        .as_ref()
        .is_some_and(|m| m.matches(headers, query));
    let header_key = ro
        .sticky_header
        .as_ref()
        .and_then(|h| headers.get(h))
        .map(|v| v.as_bytes())
        .filter(|v| !v.is_empty());
    let key = header_key.or_else(|| {
        ro.sticky_cookie
            .as_deref()
            .and_then(|c| cookie(headers, c))
            .filter(|v| !v.is_empty())
    });
    let (drawn, key_bytes): (Option<DrawnId>, Option<&[u8]>) = match key {
        Some(k) => (None, Some(k)),
        None => (Some(DrawnId::new()), None),
    };
    let side = if forced {
        Side::Canary
    } else {
        let w = ro.weight();
        let in_canary = match w {
            0 => false,
            w if w >= bucket::BASIS_POINTS as u32 => true,
            w => {
                let k = match (&drawn, key_bytes) {
                    (_, Some(k)) => k,
                    (Some(d), None) => &d.0[..],
                    (None, None) => &[][..],
                };
                bucket::rollout_bucket_from(&ro.bucket_prefix, k) < w
            }
        };
        if in_canary {
            Side::Canary
        } else {
            Side::Stable
        }
    };
    Assignment { side, drawn }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http::header::COOKIE;

    #[test]
    fn cookies_by_name() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; sluice_uid=abc; b=2"));
        assert_eq!(cookie(&h, "sluice_uid"), Some(&b"abc"[..]));
        assert_eq!(cookie(&h, "sluice"), None);
        assert_eq!(cookie(&h, "b"), Some(&b"2"[..]));
    }

    #[test]
    fn drawn_ids_are_hex() {
        let d = DrawnId::new();
        assert_eq!(d.as_str().len(), 32);
        assert!(d.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(d, DrawnId::new());
    }
}

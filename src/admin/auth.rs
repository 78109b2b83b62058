//! `/api/v1` access: a loopback or allowed `Host` (against DNS rebinding) and the bearer
//! token, compared in constant time.

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;

use super::error;
use crate::snapshot::routes::strip_port;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// 401 or 403.
    pub status: StatusCode,
    /// Error code.
    pub code: &'static str,
    /// Sentence for people.
    pub detail: String,
}

impl Denied {
    /// The JSON error response.
    pub fn response(&self) -> Response<Full<Bytes>> {
        error(self.status, self.code, self.detail.clone())
    }
}

/// Constant-time equality of two byte strings (the length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `host` (without port) is a loopback name or an IP literal.
fn loopback_or_ip(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host.parse::<std::net::IpAddr>().is_ok()
}

/// Checks Host and bearer token; the error is the response to send.
pub fn check<B>(req: &Request<B>, token: &str, allowed_hosts: &[String]) -> Result<(), Denied> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    let bare = strip_port(host);
    if !(loopback_or_ip(bare)
        || allowed_hosts
            .iter()
            .any(|a| a.eq_ignore_ascii_case(bare) || a.eq_ignore_ascii_case(host)))
    {
        return Err(Denied {
            status: StatusCode::FORBIDDEN,
            code: "host_not_allowed",
            detail: format!(
                "Host `{host}` is neither loopback, an IP literal, nor in admin.allowed_hosts"
            ),
        });
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        None => Err(Denied {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            detail: "missing `Authorization: Bearer <admin token>`".into(),
        }),
        Some(t) if ct_eq(t.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(Denied {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            detail: "wrong admin token".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(host: &str, auth: Option<&str>) -> Request<()> {
        let mut b = Request::builder()
            .uri("/api/v1/status")
            .header("host", host);
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn host_and_token() {
        let ok = |h: &str, a: Option<&str>| {
            check(
                &req(h, a),
                "s3cret-token-value",
                &["admin.example.com".into()],
            )
        };
        assert!(ok("127.0.0.1:9901", Some("Bearer s3cret-token-value")).is_ok());
        assert!(ok("localhost:9901", Some("Bearer s3cret-token-value")).is_ok());
        assert!(ok("[::1]:9901", Some("Bearer s3cret-token-value")).is_ok());
        assert!(ok("admin.example.com", Some("Bearer s3cret-token-value")).is_ok());
        assert_eq!(
            ok("evil.example.net", Some("Bearer s3cret-token-value"))
                .unwrap_err()
                .status,
            403
        );
        assert_eq!(ok("127.0.0.1", None).unwrap_err().status, 401);
        assert_eq!(
            ok("127.0.0.1", Some("Bearer wrong")).unwrap_err().status,
            401
        );
        assert!(ct_eq(b"abc", b"abc") && !ct_eq(b"abc", b"abd") && !ct_eq(b"ab", b"abc"));
    }
}

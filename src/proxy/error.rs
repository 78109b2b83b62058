//! Responses sluice produces itself (SPEC §9), each with `x-sluice-error`.
//!
//! Two families: the upstream's side (502/503/504: counted against the upstream, its health
//! and a rollout's variant) and the client's side (400/408/499, as Envoy and NGINX answer
//! them: counted as `sluice_client_errors_total{kind}` and nothing else).

use http::{HeaderValue, Response, StatusCode, header};

use super::body::{ClientFault, DownBody};
use super::headers::X_SLUICE_ERROR;

/// Why sluice answered instead of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// Nothing is active yet.
    NoConfig,
    /// No route matched.
    NoRoute,
    /// The pool has no endpoint to send to.
    NoHealthyEndpoint,
    /// The upstream could not be reached.
    UpstreamConnect,
    /// The upstream connection broke before a response.
    UpstreamReset,
    /// The upstream TLS handshake failed.
    UpstreamTls,
    /// No response head within `request_timeout`.
    UpstreamTimeout,
    /// The request failed by the client's doing.
    Client(ClientFault),
    /// An HTTP/1.1 request without `Host`, with two, or with one that is no authority
    /// (RFC 9112 §3.2: 400).
    InvalidHost,
    /// `CONNECT`: sluice is a reverse proxy, not a tunnel to anywhere.
    ConnectRefused,
    /// A path that cannot be normalised safely: a dot segment glued to an encoded slash
    /// or a backslash (see [`super::headers::ambiguous_path`]).
    InvalidPath,
}

/// NGINX's "client closed request": logged, never seen by the client that left.
const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Every variant (for [`ProxyError::static_code`]).
const ALL: [ProxyError; 13] = [
    ProxyError::NoConfig,
    ProxyError::NoRoute,
    ProxyError::NoHealthyEndpoint,
    ProxyError::UpstreamConnect,
    ProxyError::UpstreamReset,
    ProxyError::UpstreamTls,
    ProxyError::UpstreamTimeout,
    ProxyError::Client(ClientFault::Aborted),
    ProxyError::Client(ClientFault::Malformed),
    ProxyError::Client(ClientFault::Timeout),
    ProxyError::InvalidHost,
    ProxyError::ConnectRefused,
    ProxyError::InvalidPath,
];

// === impl ProxyError ===

impl ProxyError {
    /// Status code.
    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::NoConfig | ProxyError::NoHealthyEndpoint => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::UpstreamConnect | ProxyError::UpstreamReset | ProxyError::UpstreamTls => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Client(ClientFault::Aborted) => {
                StatusCode::from_u16(CLIENT_CLOSED_REQUEST).unwrap_or(StatusCode::BAD_REQUEST)
            }
            ProxyError::Client(ClientFault::Malformed) => StatusCode::BAD_REQUEST,
            ProxyError::Client(ClientFault::Timeout) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::InvalidHost | ProxyError::InvalidPath => StatusCode::BAD_REQUEST,
            ProxyError::ConnectRefused => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The client's fault, when it is one.
    pub fn client_fault(self) -> Option<ClientFault> {
        match self {
            ProxyError::Client(f) => Some(f),
            ProxyError::InvalidHost | ProxyError::InvalidPath => Some(ClientFault::Malformed),
            _ => None,
        }
    }

    /// The `x-sluice-error` code.
    pub fn code(self) -> &'static str {
        match self {
            ProxyError::NoConfig => "no_config",
            ProxyError::NoRoute => "no_route",
            ProxyError::NoHealthyEndpoint => "no_healthy_endpoint",
            ProxyError::UpstreamConnect => "upstream_connect",
            ProxyError::UpstreamReset => "upstream_reset",
            ProxyError::UpstreamTls => "upstream_tls",
            ProxyError::UpstreamTimeout => "upstream_timeout",
            ProxyError::Client(ClientFault::Aborted) => "client_aborted",
            ProxyError::Client(ClientFault::Malformed) => "client_body_invalid",
            ProxyError::Client(ClientFault::Timeout) => "client_timeout",
            ProxyError::InvalidHost => "invalid_host",
            ProxyError::ConnectRefused => "connect_refused",
            ProxyError::InvalidPath => "invalid_path",
        }
    }

    /// The code of a variant, from its text (the access log reads it off a response).
    pub fn static_code(code: &str) -> Option<&'static str> {
        ALL.into_iter().map(ProxyError::code).find(|c| *c == code)
    }

    fn text(self) -> &'static str {
        match self {
            ProxyError::NoConfig => "no configuration is active\n",
            ProxyError::NoRoute => "no route matches this request\n",
            ProxyError::NoHealthyEndpoint => "the upstream has no endpoint to send to\n",
            ProxyError::UpstreamConnect => "the upstream could not be reached\n",
            ProxyError::UpstreamReset => "the upstream connection broke before a response\n",
            ProxyError::UpstreamTls => "the upstream TLS handshake failed\n",
            ProxyError::UpstreamTimeout => "the upstream did not answer in time\n",
            ProxyError::Client(ClientFault::Aborted) => {
                "the client closed the request before its body ended\n"
            }
            ProxyError::Client(ClientFault::Malformed) => "the request body is malformed\n",
            ProxyError::Client(ClientFault::Timeout) => "the request body did not arrive in time\n",
            ProxyError::InvalidHost => {
                "an HTTP/1.1 request needs exactly one Host header with a valid authority\n"
            }
            ProxyError::ConnectRefused => "CONNECT is not served: sluice is a reverse proxy\n",
            ProxyError::InvalidPath => {
                "the path has a dot segment next to an encoded slash or a backslash\n"
            }
        }
    }

    /// The response sent to the client.
    pub fn response(self) -> Response<DownBody> {
        let mut r = Response::new(DownBody::full(self.text()));
        *r.status_mut() = self.status();
        let h = r.headers_mut();
        h.insert(
            X_SLUICE_ERROR.clone(),
            HeaderValue::from_static(self.code()),
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if self == ProxyError::ConnectRefused {
            h.insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE"),
            );
        }
        r
    }
}

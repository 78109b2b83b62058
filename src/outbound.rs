//! Plain-http requests the control plane makes: notifications, rollout hooks and `web`
//! metric providers. One connection per request (HTTP/1.1), answers read with a bound.

use bytes::Bytes;
use http::uri::Authority;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// A connection to `url`'s host (port 80 when none), its authority and request target.
async fn connect<B>(url: &str) -> Result<(SendRequest<B>, Authority, String), String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
    let authority = uri
        .authority()
        .ok_or_else(|| format!("no host in {url}"))?
        .clone();
    let addr = match authority.port_u16() {
        Some(_) => authority.as_str().to_string(),
        None => format!("{}:80", authority.host()),
    };
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let target = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    Ok((tx, authority, target))
}

/// One JSON POST with extra `headers`; the answer's status (its body is read, at most
/// 64 KiB, and dropped).
pub(crate) async fn post(
    url: &str,
    body: &Bytes,
    headers: &[(&str, &str)],
    agent: &str,
) -> Result<http::StatusCode, String> {
    let (mut tx, authority, target) = connect(url).await?;
    let mut req = Request::post(target)
        .header(http::header::HOST, authority.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, agent);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(body.clone()))
        .map_err(|e| e.to_string())?;
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let _ = Limited::new(resp.into_body(), 64 * 1024).collect().await;
    Ok(status)
}

/// GETs `url` as `agent`, reading at most `max_body` bytes; non-2xx is an error.
pub(crate) async fn get(url: &str, agent: &str, max_body: usize) -> Result<Bytes, String> {
    let (mut tx, authority, target) = connect(url).await?;
    let req = Request::get(target)
        .header(http::header::HOST, authority.as_str())
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, agent)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = tx
        .send_request(req)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), max_body)
        .collect()
        .await
        .map_err(|e| format!("{url}: reading the answer: {e}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
    }
    Ok(body)
}

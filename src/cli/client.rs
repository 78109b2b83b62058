//! Commands that talk to a running sluice's admin API: `push`, `status` (and the request
//! helper `revert` uses).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use clap::Args;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::{EXIT_INVALID, EXIT_OK, EXIT_PENDING, EXIT_REFUSED};

/// `sluice push` arguments.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The admin API to talk to.
    #[command(flatten)]
    pub admin: AdminTarget,
    /// Publish straight into a fleet's etcd instead (SPEC §12).
    #[command(flatten)]
    pub fleet: super::fleet::EtcdArgs,
    /// With --etcd: how long to wait for every node's judgement.
    #[arg(long, default_value = "30s", value_parser = crate::config::Dur::parse)]
    pub wait: crate::config::Dur,
    /// Admin bearer token file.
    #[arg(long, default_value = "state/admin.token")]
    pub token_file: PathBuf,
    /// The traffic document.
    pub traffic: PathBuf,
    /// Approval token files.
    pub tokens: Vec<PathBuf>,
}

/// `sluice status` arguments.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The admin API to talk to.
    #[command(flatten)]
    pub admin: AdminTarget,
    /// Read the fleet's table straight from its etcd instead (SPEC §12).
    #[command(flatten)]
    pub fleet: super::fleet::EtcdArgs,
    /// Admin bearer token file.
    #[arg(long, default_value = "state/admin.token")]
    pub token_file: PathBuf,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
    /// Print again every `--interval` until interrupted (admin errors are shown, not fatal).
    #[arg(long)]
    pub watch: bool,
    /// Time between two prints with `--watch`.
    #[arg(long, default_value = "2s", value_parser = crate::config::Dur::parse)]
    pub interval: crate::config::Dur,
}

/// Where the admin API is: `--admin` (else `SLUICE_ADMIN`, else the default admin bind)
/// and, for `https://`, the CA that verifies it.
#[derive(Debug, Clone, Args)]
pub struct AdminTarget {
    /// Admin URL, `http://` or `https://` (default: `SLUICE_ADMIN`, else
    /// http://127.0.0.1:9901).
    #[arg(long = "admin")]
    pub url: Option<String>,
    /// PEM CA certificates that verify an `https://` admin URL (default: the Web PKI roots).
    #[arg(long = "admin-ca")]
    pub ca_file: Option<PathBuf>,
}

/// The admin listener's default address (`admin.bind`'s default).
pub const DEFAULT_ADMIN: &str = "http://127.0.0.1:9901";

/// A parsed admin URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AdminUrl {
    tls: bool,
    /// `host:port`, as connected to and sent as `Host`.
    authority: String,
    /// The host alone, for SNI and certificate checks.
    host: String,
}

// === impl AdminTarget ===

impl AdminTarget {
    fn url(&self) -> String {
        self.url
            .clone()
            .or_else(|| std::env::var("SLUICE_ADMIN").ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| DEFAULT_ADMIN.to_string())
    }
}

// === impl AdminUrl ===

impl AdminUrl {
    fn parse(url: &str) -> Result<AdminUrl, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!(
                "admin URL `{url}` must start with http:// or https://"
            ));
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "admin URL `{url}`: scheme, host and port only, no path"
            ));
        }
        let uri: http::uri::Authority = rest
            .parse()
            .map_err(|e| format!("admin URL `{url}`: {e}"))?;
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let host = uri.host().trim_start_matches('[').trim_end_matches(']');
        let authority = match uri.port_u16() {
            Some(_) => rest.to_string(),
            None if host.contains(':') => format!("[{host}]:{port}"),
            None => format!("{host}:{port}"),
        };
        Ok(AdminUrl {
            tls,
            authority,
            host: host.to_string(),
        })
    }
}

/// A TLS client config for an `https://` admin URL.
fn tls_config(ca_file: Option<&Path>) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(p) => {
            let certs = crate::proxy::tls::read_certs(p).map_err(|e| format!("--admin-ca: {e}"))?;
            for c in certs {
                roots.add(c).map_err(|e| {
                    format!("--admin-ca {}: unusable CA certificate: {e}", p.display())
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let cfg = rustls::ClientConfig::builder_with_provider(crate::proxy::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(cfg))
}

/// Sends one request to the admin API; returns status and body.
pub fn admin_request(
    admin: &AdminTarget,
    token_file: &Path,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<(StatusCode, Bytes), String> {
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| format!("cannot read the admin token {}: {e}", token_file.display()))?;
    let url = AdminUrl::parse(&admin.url())?;
    let tls = match url.tls {
        true => Some(tls_config(admin.ca_file.as_deref())?),
        false => None,
    };
    let authority = url.authority.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let stream = tokio::net::TcpStream::connect(&authority)
            .await
            .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
        let mut tx = match tls {
            None => {
                let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                tx
            }
            Some(cfg) => {
                let name = rustls_pki_types::ServerName::try_from(url.host.clone())
                    .map_err(|e| format!("admin URL host `{}`: {e}", url.host))?;
                let stream = tokio_rustls::TlsConnector::from(cfg)
                    .connect(name, stream)
                    .await
                    .map_err(|e| format!("TLS with {authority}: {e}"))?;
                let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                tx
            }
        };
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &authority)
            .header("authorization", format!("Bearer {}", token.trim()));
        for (k, v) in headers {
            b = b.header(*k, v);
        }
        let req = b
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    })
}

/// Runs `sluice push`.
pub fn push(a: PushArgs) -> i32 {
    let doc = match std::fs::read(&a.traffic) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{}: {e}", a.traffic.display());
            return EXIT_INVALID;
        }
    };
    let mut headers = Vec::new();
    for t in &a.tokens {
        match std::fs::read_to_string(t) {
            Ok(s) => headers.push(("sluice-approval", s.trim().to_string())),
            Err(e) => {
                eprintln!("{}: {e}", t.display());
                return EXIT_INVALID;
            }
        }
    }
    if a.fleet.given() {
        if a.admin.url.is_some() {
            eprintln!("sluice push: give --admin or --etcd, not both");
            return EXIT_INVALID;
        }
        let tokens: Vec<String> = headers.into_iter().map(|(_, t)| t).collect();
        return super::fleet::push(&a.fleet, &doc, &tokens, a.wait);
    }
    match admin_request(
        &a.admin,
        &a.token_file,
        Method::PUT,
        "/api/v1/traffic",
        &headers,
        doc,
    ) {
        Ok((status, body)) => {
            println!("{}", String::from_utf8_lossy(&body).trim_end());
            exit_for(status)
        }
        Err(e) => {
            eprintln!("sluice push: {e}");
            EXIT_REFUSED
        }
    }
}

/// The exit status for an admin API answer (SPEC §7): 0 done (200), 3 pending (202),
/// 2 invalid input (400), 1 refused (anything else: 401, 403, 409, 5xx).
pub fn exit_for(status: StatusCode) -> i32 {
    match status.as_u16() {
        200 => EXIT_OK,
        202 => EXIT_PENDING,
        400 => EXIT_INVALID,
        _ => EXIT_REFUSED,
    }
}

/// Runs `sluice status` (once, or with `--watch` until interrupted).
pub fn status(a: StatusArgs) -> i32 {
    if !a.watch {
        return status_once(&a);
    }
    use std::io::{IsTerminal as _, Write as _};
    let tty = std::io::stdout().is_terminal();
    loop {
        if tty {
            // Home and clear: the table redraws in place, as `watch` does.
            print!("\x1b[H\x1b[2J");
        } else {
            println!(
                "--- {}",
                httpdate::fmt_http_date(std::time::SystemTime::now())
            );
        }
        status_once(&a);
        let _ = std::io::stdout().flush();
        std::thread::sleep(a.interval.0);
    }
}

fn status_once(a: &StatusArgs) -> i32 {
    if a.fleet.given() {
        if a.admin.url.is_some() {
            eprintln!("sluice status: give --admin or --etcd, not both");
            return EXIT_INVALID;
        }
        return super::fleet::status(&a.fleet, a.json);
    }
    match admin_request(
        &a.admin,
        &a.token_file,
        Method::GET,
        "/api/v1/status",
        &[],
        Vec::new(),
    ) {
        Ok((s, body)) if s == StatusCode::OK => {
            if a.json {
                println!("{}", String::from_utf8_lossy(&body));
            } else {
                match serde_json::from_slice::<serde_json::Value>(&body) {
                    Ok(v) => print!("{}", render_status(&v)),
                    Err(_) => println!("{}", String::from_utf8_lossy(&body)),
                }
            }
            EXIT_OK
        }
        Ok((s, body)) => {
            eprintln!("sluice status: {s}: {}", String::from_utf8_lossy(&body));
            EXIT_REFUSED
        }
        Err(e) => {
            eprintln!("sluice status: {e}");
            EXIT_REFUSED
        }
    }
}

/// A readable rendering of the status document.
pub fn render_status(v: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    match v.get("active").filter(|a| !a.is_null()) {
        Some(a) => {
            let _ = writeln!(
                out,
                "active   version {} ({}) {} by {}, class {}, activated {}",
                a["version"],
                a["id"].as_str().unwrap_or(""),
                a["digest"].as_str().unwrap_or(""),
                a["author"].as_str().unwrap_or(""),
                a["class"].as_str().unwrap_or(""),
                a["activated_at"].as_str().unwrap_or("")
            );
        }
        None => {
            let _ = writeln!(out, "active   none");
        }
    }
    if let Some(p) = v["pending"].as_array() {
        for p in p {
            let _ = writeln!(
                out,
                "pending  version {} {}: {}",
                p["version"],
                p["digest"].as_str().unwrap_or(""),
                p["missing"].as_str().unwrap_or("")
            );
        }
    }
    if let Some(rs) = v["emergency_reviews"].as_array() {
        for r in rs {
            let _ = writeln!(
                out,
                "review   version {} by {} due {}{}: {}",
                r["version"],
                r["author"].as_str().unwrap_or(""),
                r["review_due"].as_str().unwrap_or(""),
                if r["overdue"] == true {
                    " (OVERDUE)"
                } else {
                    ""
                },
                r["missing"].as_str().unwrap_or("")
            );
        }
    }
    if let Some(rs) = v["rollouts"].as_array()
        && !rs.is_empty()
    {
        let _ = writeln!(
            out,
            "{:<16} {:<22} {:>5} {:>8}  last verdict",
            "ROLLOUT", "PHASE", "STEP", "WEIGHT"
        );
        for r in rs {
            let _ = writeln!(
                out,
                "{:<16} {:<22} {:>5} {:>7}%  {}",
                r["name"].as_str().unwrap_or(""),
                r["phase"].as_str().unwrap_or("-"),
                r["step"]
                    .as_u64()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                r["weight"],
                r["last_verdict"].as_str().unwrap_or("-"),
            );
        }
    }
    let _ = writeln!(
        out,
        "audit    seq {} head {}",
        v["audit"]["seq"],
        v["audit"]["head"].as_str().unwrap_or("")
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_urls() {
        let u = AdminUrl::parse("https://sluice.internal/").unwrap();
        assert_eq!((u.tls, u.authority.as_str()), (true, "sluice.internal:443"));
        let u = AdminUrl::parse("http://127.0.0.1:9901").unwrap();
        assert_eq!((u.tls, u.authority.as_str()), (false, "127.0.0.1:9901"));
        let u = AdminUrl::parse("https://[::1]:8443").unwrap();
        assert_eq!(
            (u.host.as_str(), u.authority.as_str()),
            ("::1", "[::1]:8443")
        );
        for bad in ["127.0.0.1:9901", "http://", "https://h/api", "http://u@h"] {
            assert!(AdminUrl::parse(bad).is_err(), "{bad}");
        }
    }
}

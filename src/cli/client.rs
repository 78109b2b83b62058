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
    /// Admin URL, e.g. http://127.0.0.1:9901.
    #[arg(long, required_unless_present = "etcd", conflicts_with = "etcd")]
    pub admin: Option<String>,
    /// Publish straight into a fleet's etcd instead (SPEC §12).
    #[command(flatten)]
    pub fleet: super::fleet::EtcdArgs,
    /// With --etcd: how long to wait for every node's judgement.
    #[arg(long, default_value = "30s", value_parser = parse_dur)]
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
    /// Admin URL, e.g. http://127.0.0.1:9901.
    #[arg(long, required_unless_present = "etcd", conflicts_with = "etcd")]
    pub admin: Option<String>,
    /// Read the fleet's table straight from its etcd instead (SPEC §12).
    #[command(flatten)]
    pub fleet: super::fleet::EtcdArgs,
    /// Admin bearer token file.
    #[arg(long, default_value = "state/admin.token")]
    pub token_file: PathBuf,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

/// Sends one request to the admin API; returns status and body.
pub fn admin_request(
    admin: &str,
    token_file: &Path,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<(StatusCode, Bytes), String> {
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| format!("cannot read the admin token {}: {e}", token_file.display()))?;
    let authority = admin
        .strip_prefix("http://")
        .ok_or_else(|| format!("admin URL `{admin}` must start with http://"))?
        .trim_end_matches('/')
        .to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let stream = tokio::net::TcpStream::connect(&authority)
            .await
            .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
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
    let Some(admin) = &a.admin else {
        let tokens: Vec<String> = headers.into_iter().map(|(_, t)| t).collect();
        return super::fleet::push(&a.fleet, &doc, &tokens, a.wait);
    };
    match admin_request(
        admin,
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

fn parse_dur(s: &str) -> Result<crate::config::Dur, String> {
    crate::config::Dur::parse(s)
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

/// Runs `sluice status`.
pub fn status(a: StatusArgs) -> i32 {
    let Some(admin) = &a.admin else {
        return super::fleet::status(&a.fleet, a.json);
    };
    match admin_request(
        admin,
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

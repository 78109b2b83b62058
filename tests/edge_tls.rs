//! TLS over real sockets: SNI, ALPN, certificate reload, handshake timeout, `https` headers,
//! upstream TLS (server name, CA, mTLS), upstream h2c and ALPN `auto`, and curl as a second
//! client. Client identity: listener mTLS (`client_auth`) with rustls and curl clients,
//! `network.trusted_proxies` and the PROXY protocol.

mod common;

use std::time::Duration;

use common::edge::{
    self, Ca, H2, MiniUp, UpTls, client_config, get, read_to_close, tls_connect, write,
};
use common::{Client, Sluice, Upstream, traffic};

/// A sluice with one TLS listener serving `a.test` and `b.test` (two certificates).
fn start_tls(ca: &Ca, doc: &str) -> Sluice {
    let a = ca.leaf(&["a.test"]);
    let b = ca.leaf(&["b.test", "*.b.test"]);
    let sb = Sluice::builder();
    let dir = sb.dir();
    let (ac, ak) = (write(dir, "a.pem", &a.cert), write(dir, "a.key", &a.key));
    let (bc, bk) = (write(dir, "b.pem", &b.cert), write(dir, "b.key", &b.key));
    sb.traffic(doc)
        .listener(&format!(
            "bind: \"127.0.0.1:0\", tls: {{ certs: [{{ cert: \"{}\", key: \"{}\" }}, {{ cert: \"{}\", key: \"{}\" }}] }}",
            ac.display(),
            ak.display(),
            bc.display(),
            bk.display()
        ))
        .limits("handshake_timeout: 1s")
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_alpn_https_headers_and_secure_cookies() {
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let ca = Ca::new("test CA");
    let s = start_tls(&ca, &traffic(1, v1.addr, v2.addr, "[{ weight: 50 }]"));

    // Each name verifies only if sluice picked its certificate by SNI.
    for sni in ["a.test", "b.test", "x.b.test"] {
        let tls = tls_connect(s.proxy(), sni, client_config(ca.roots(), &[b"http/1.1"]))
            .await
            .unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let mut c = Client::over(tls).await;
        let r = c.send(get("/api/x", &[("host", sni)])).await.unwrap();
        assert_eq!(r.status, 200);
        let j = r.json();
        assert_eq!(j["headers"]["x-forwarded-proto"][0], "https");
        assert_eq!(j["headers"]["x-forwarded-host"][0], sni);
    }
    // No ALPN offered: HTTP/1.1.
    let tls = tls_connect(s.proxy(), "a.test", client_config(ca.roots(), &[]))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);

    // ALPN h2.
    let tls = tls_connect(
        s.proxy(),
        "a.test",
        client_config(ca.roots(), &[b"h2", b"http/1.1"]),
    )
    .await
    .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut c = H2::over(tls).await;
    let r = c.send(get("https://a.test/api/x", &[])).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-forwarded-proto"][0], "https");
    // The rollout route draws a sticky id for a keyless client: the cookie is Secure on TLS.
    let r = c.send(get("https://a.test/", &[])).await.unwrap();
    let cookie = r.headers["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with("sluice_uid="), "{cookie}");
    assert!(cookie.ends_with("; Secure"), "{cookie}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_without_dropping_connections() {
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let ca = Ca::new("old CA");
    let s = start_tls(&ca, &traffic(1, v1.addr, v2.addr, "[{ weight: 0 }]"));
    let tls = tls_connect(
        s.proxy(),
        "a.test",
        client_config(ca.roots(), &[b"http/1.1"]),
    )
    .await
    .unwrap();
    let mut open = Client::over(tls).await;
    assert_eq!(
        open.send(get("/api/x", &[("host", "a.test")]))
            .await
            .unwrap()
            .status,
        200
    );

    // A new certificate from another CA replaces a.test's, as cert-manager would.
    let ca2 = Ca::new("new CA");
    let leaf = ca2.leaf(&["a.test"]);
    write(s.dir.path(), "a.key", &leaf.key);
    write(s.dir.path(), "a.pem", &leaf.cert);
    let mut reloaded = false;
    for _ in 0..100 {
        if tls_connect(s.proxy(), "a.test", client_config(ca2.roots(), &[]))
            .await
            .is_ok()
        {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reloaded, "the new certificate was never served");
    // New handshakes no longer get the old certificate...
    assert!(
        tls_connect(s.proxy(), "a.test", client_config(ca.roots(), &[]))
            .await
            .is_err()
    );
    // ...b.test is untouched, and the connection opened before the reload still serves.
    assert!(
        tls_connect(s.proxy(), "b.test", client_config(ca.roots(), &[]))
            .await
            .is_ok()
    );
    let r = open
        .send(get("/api/x", &[("host", "a.test")]))
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    // A broken file is refused and the current certificate keeps serving.
    write(s.dir.path(), "a.pem", "not a certificate");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        tls_connect(s.proxy(), "a.test", client_config(ca2.roots(), &[]))
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_cut_off_by_handshake_timeout() {
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let ca = Ca::new("test CA");
    let doc = traffic(1, v1.addr, v2.addr, "[{ weight: 0 }]");
    let s = start_tls(&ca, &doc);
    // TLS: connect and say nothing.
    let mut raw = tokio::net::TcpStream::connect(s.proxy()).await.unwrap();
    let (_, closed) = read_to_close(&mut raw, Duration::from_secs(20)).await;
    assert!(closed, "a silent TLS client was never cut off");

    // Plaintext: protocol detection is bounded the same way.
    let p = Sluice::builder()
        .traffic(&doc)
        .limits("handshake_timeout: 1s")
        .start();
    let mut raw = tokio::net::TcpStream::connect(p.proxy()).await.unwrap();
    let (got, closed) = read_to_close(&mut raw, Duration::from_secs(20)).await;
    assert!(
        closed && got.is_empty(),
        "a silent client was never cut off"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_mtls_alpn_auto_and_h2c() {
    let ca = Ca::new("upstream CA");
    let client_ca = Ca::new("client CA");
    let server = ca.leaf(&["up.internal"]);
    let secure = MiniUp::start(
        "secure",
        Some(UpTls {
            cert: server.cert.clone(),
            key: server.key.clone(),
            client_ca: Some(client_ca.roots()),
        }),
    );
    let h2c = MiniUp::start("h2c", None);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let client = client_ca.leaf(&["sluice.client"]);
    let (cc, ck) = (
        write(dir.path(), "client.pem", &client.cert),
        write(dir.path(), "client.key", &client.key),
    );
    let doc = format!(
        r#"version: 1
change: {{ id: C1, author: alice }}
upstreams:
  mtls: {{ endpoints: ["{a}"], protocol: auto, tls: {{ server_name: up.internal, ca_file: "{ca}", client_cert: "{cc}", client_key: "{ck}" }} }}
  mtls-h1: {{ endpoints: ["{a}"], tls: {{ server_name: up.internal, ca_file: "{ca}", client_cert: "{cc}", client_key: "{ck}" }} }}
  no-client-cert: {{ endpoints: ["{a}"], tls: {{ server_name: up.internal, ca_file: "{ca}" }} }}
  wrong-name: {{ endpoints: ["{a}"], tls: {{ server_name: other.internal, ca_file: "{ca}", client_cert: "{cc}", client_key: "{ck}" }} }}
  h2c: {{ endpoints: ["{h}"], protocol: h2c }}
routes:
  - {{ name: mtls, match: {{ path_prefix: /mtls }}, to: {{ upstream: mtls }} }}
  - {{ name: mtls-h1, match: {{ path_prefix: /h1 }}, to: {{ upstream: mtls-h1 }} }}
  - {{ name: anon, match: {{ path_prefix: /anon }}, to: {{ upstream: no-client-cert }} }}
  - {{ name: wrong, match: {{ path_prefix: /wrong }}, to: {{ upstream: wrong-name }} }}
  - {{ name: h2c, match: {{ path_prefix: /h2c }}, to: {{ upstream: h2c }} }}
"#,
        a = secure.addr,
        h = h2c.addr,
        ca = ca_file.display(),
        cc = cc.display(),
        ck = ck.display(),
    );
    let s = Sluice::builder().traffic(&doc).start();
    let mut c = common::Client::connect(s.proxy()).await;

    let r = c.get("/mtls/x", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["version"],
        "HTTP/2.0",
        "auto negotiates h2 by ALPN"
    );
    assert_eq!(r.json()["name"], "secure");
    let r = c.get("/h1/x", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["version"], "HTTP/1.1");

    let r = c.get("/h2c/x", &[("te", "trailers")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["version"],
        "HTTP/2.0",
        "h2c is HTTP/2 prior knowledge"
    );
    assert_eq!(r.json()["headers"]["x-sluice-route"][0], "h2c");

    for path in ["/wrong/x", "/anon/x"] {
        let r = c.get(path, &[]).await;
        assert_eq!(r.status, 502, "{path}");
        assert_eq!(r.headers["x-sluice-error"], "upstream_tls", "{path}");
    }
    let m = common::get(s.admin(), "/metrics", &[]).await.text();
    assert!(
        m.contains("sluice_upstream_errors_total{upstream=\"wrong-name\",kind=\"tls\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_speaks_h2_and_http11_over_tls() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "curl is required in CI (.ci/run installs it)"
        );
        eprintln!("curl not installed; skipping");
        return;
    }
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let ca = Ca::new("test CA");
    let s = start_tls(&ca, &traffic(1, v1.addr, v2.addr, "[{ weight: 0 }]"));
    let ca_file = write(s.dir.path(), "ca.pem", &ca.pem);
    let port = s.proxy().port();
    for (flag, want) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(&ca_file)
            .args(["--resolve", &format!("b.test:{port}:127.0.0.1"), flag])
            .args(["-o", "/dev/null", "-w", "%{http_version} %{http_code}"])
            .arg(format!("https://b.test:{port}/api/x"))
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text,
            format!("{want} 200"),
            "curl {flag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Routes and flags that read the client's identity: the certificate's SAN routes, its
/// subject and the client address feed `flag_context`.
fn identity_doc(v1: std::net::SocketAddr, v2: std::net::SocketAddr) -> String {
    format!(
        r#"version: 1
change: {{ id: C1, author: alice }}
upstreams:
  v1: {{ endpoints: ["{v1}"] }}
  v2: {{ endpoints: ["{v2}"] }}
routes:
  - name: ops
    match: {{ path_prefix: /api, client_cert: {{ san: "spiffe://test/ops-bot" }} }}
    to: {{ upstream: v2 }}
    flags: [who, where]
  - name: api
    match: {{ path_prefix: /api }}
    to: {{ upstream: v1 }}
    flags: [who, where]
flag_context:
  targeting_key: [{{ request: client_ip }}]
  attributes:
    subject: {{ request: client_subject }}
    san: {{ request: client_san }}
    ip: {{ request: client_ip }}
flags:
  who:
    state: ENABLED
    variants: {{ ops: "ops", other: "other" }}
    defaultVariant: other
    targeting: {{ if: [ {{ "==": [ {{ var: subject }}, "CN=ops-bot,O=Example" ] }}, ops, other ] }}
  where:
    state: ENABLED
    variants: {{ real: "real", lb: "lb", other: "other" }}
    defaultVariant: other
    targeting:
      if:
        - {{ "==": [ {{ var: ip }}, "203.0.113.9" ] }}
        - real
        - {{ if: [ {{ "==": [ {{ var: ip }}, "198.51.100.7" ] }}, lb, other ] }}
"#
    )
}

/// Waits until the access log at `path` has `n` lines; returns them parsed.
async fn access_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..200 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the access log never had {n} lines");
}

/// Whether a request over `tls` (maybe refused already) gets no response.
async fn refused(
    tls: std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
) -> bool {
    let Ok(tls) = tls else { return true };
    let mut c = Client::over(tls).await;
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        c.send(get("/api/x", &[("host", "a.test")])),
    )
    .await
    .expect("a refused handshake ends the connection");
    r.is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_client_identity_routes_flags_and_logs() {
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let stranger = Ca::new("stranger CA");
    let bot = clients.client_leaf("ops-bot", "Example", "spiffe://test/ops-bot");
    let dev = clients.client_leaf("dev", "Example", "spiffe://test/dev");
    let forged = stranger.client_leaf("ops-bot", "Example", "spiffe://test/ops-bot");
    let sb = Sluice::builder();
    let dir = sb.dir();
    let leaf = ca.leaf(&["a.test"]);
    let (c, k) = (
        write(dir, "a.pem", &leaf.cert),
        write(dir, "a.key", &leaf.key),
    );
    let cas = write(dir, "clients.pem", &clients.pem);
    let tls = |mode: &str| {
        format!(
            "bind: \"127.0.0.1:0\", tls: {{ certs: [{{ cert: \"{}\", key: \"{}\" }}], client_auth: {{ ca_file: \"{}\", mode: {mode} }} }}",
            c.display(),
            k.display(),
            cas.display()
        )
    };
    let access_log = format!(
        "access_log: {{ enabled: true, path: \"{}/access.log\" }}\n",
        dir.display()
    );
    let s = sb
        .traffic(&identity_doc(v1.addr, v2.addr))
        .listener(&tls("required"))
        .add_listener("optional", &tls("optional"))
        .settings(&access_log)
        .start();
    let (required, optional) = (s.inst().listeners[0], s.inst().listeners[1]);
    let with = |leaf| edge::client_config_with_cert(ca.roots(), leaf);

    // A verified certificate: its SAN picks the route, its subject the flag variant.
    let tls = tls_connect(required, "a.test", with(&bot)).await.unwrap();
    let r = Client::over(tls)
        .await
        .send(get("/api/x", &[("host", "a.test")]))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["name"], "v2", "{j}");
    assert_eq!(j["headers"]["x-sluice-flag-who"][0], "ops", "{j}");
    // Another client of the same CA: admitted, routed and flagged as itself.
    let tls = tls_connect(required, "a.test", with(&dev)).await.unwrap();
    let r = Client::over(tls)
        .await
        .send(get("/api/x", &[("host", "a.test")]))
        .await
        .unwrap();
    assert_eq!(
        (r.json()["name"].clone(), r.status.as_u16()),
        ("v1".into(), 200)
    );
    assert_eq!(r.json()["headers"]["x-sluice-flag-who"][0], "other");

    // Required: no certificate, or one from another CA with the same names, is refused.
    let anonymous = client_config(ca.roots(), &[]);
    assert!(refused(tls_connect(required, "a.test", anonymous.clone()).await).await);
    assert!(refused(tls_connect(required, "a.test", with(&forged)).await).await);
    // A client header cannot claim an identity.
    let tls = tls_connect(optional, "a.test", anonymous.clone())
        .await
        .unwrap();
    let r = Client::over(tls)
        .await
        .send(get(
            "/api/x",
            &[
                ("host", "a.test"),
                ("x-client-cert", "CN=ops-bot,O=Example"),
            ],
        ))
        .await
        .unwrap();
    // Optional: no certificate is served without an identity; a verified one has it.
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], "v1");
    assert_eq!(r.json()["headers"]["x-sluice-flag-who"][0], "other");
    let tls = tls_connect(optional, "a.test", with(&bot)).await.unwrap();
    let r = Client::over(tls)
        .await
        .send(get("/api/x", &[("host", "a.test")]))
        .await
        .unwrap();
    assert_eq!(r.json()["name"], "v2");
    // Optional still refuses a certificate that does not verify.
    assert!(refused(tls_connect(optional, "a.test", with(&forged)).await).await);

    // The access log names the identity of the requests that had one.
    let lines = access_lines(&s.path("access.log"), 4).await;
    let subjects: Vec<(&str, &str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["route"].as_str().unwrap(),
                l["client_subject"].as_str().unwrap(),
                l["client_san"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        subjects,
        [
            ("ops", "CN=ops-bot,O=Example", "spiffe://test/ops-bot"),
            ("api", "CN=dev,O=Example", "spiffe://test/dev"),
            ("api", "", ""),
            ("ops", "CN=ops-bot,O=Example", "spiffe://test/ops-bot"),
        ]
    );
    let m = s.inst().registry.render();
    for (listener, n) in [("public", 2), ("optional", 1)] {
        let series = format!(
            "sluice_connections_refused_total{{listener=\"{listener}\",reason=\"client_cert\"}} {n}"
        );
        assert!(m.contains(&series), "{series}: {m}");
    }

    // curl, a second client: with the certificate it is ops-bot, without it is refused.
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(std::env::var_os("CI").is_none(), "curl is required in CI");
        eprintln!("curl not installed; skipping the curl part");
        return;
    }
    let dir = s.dir.path();
    let ca_file = write(dir, "ca.pem", &ca.pem);
    let (cert, key) = (
        write(dir, "bot.pem", &bot.cert),
        write(dir, "bot.key", &bot.key),
    );
    let port = required.port();
    let curl = |client: bool| {
        let mut c = std::process::Command::new("curl");
        c.args(["-sS", "--cacert"]).arg(&ca_file);
        if client {
            c.arg("--cert").arg(&cert).arg("--key").arg(&key);
        }
        c.args(["--resolve", &format!("a.test:{port}:127.0.0.1")])
            .arg(format!("https://a.test:{port}/api/x"))
            .output()
            .unwrap()
    };
    let out = curl(true);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(j["name"], "v2");
    assert_eq!(j["headers"]["x-sluice-flag-who"][0], "ops");
    let out = curl(false);
    assert!(
        !out.status.success(),
        "curl without a certificate was served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ca_file_that_does_not_parse_names_the_setting() {
    let sb = Sluice::builder();
    let ca = Ca::new("server CA");
    let leaf = ca.leaf(&["a.test"]);
    let (c, k) = (
        write(sb.dir(), "a.pem", &leaf.cert),
        write(sb.dir(), "a.key", &leaf.key),
    );
    let bad = write(sb.dir(), "clients.pem", "not a certificate\n");
    let sb = sb.listener(&format!(
            "bind: \"127.0.0.1:0\", tls: {{ certs: [{{ cert: \"{}\", key: \"{}\" }}], client_auth: {{ ca_file: \"{}\" }} }}",
            c.display(),
            k.display(),
            bad.display()
        ));
    let yaml = sb.settings_yaml();
    let settings = sluice::config::Settings::parse(&yaml).unwrap();
    let err = match sluice::instance::Instance::start(settings, Default::default()) {
        Ok(_) => panic!("started with a CA file that does not parse"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("listener public")
            && err.contains("tls.client_auth.ca_file")
            && err.contains("clients.pem"),
        "{err}"
    );
}

/// The client CA file reloads as certificates do: once it names another CA, a client
/// certificate from the new CA is admitted and one from the old CA is not, while the
/// connection verified before the change keeps serving; a file that does not parse leaves
/// the CAs in use (the reason is logged: `proxy::tls` unit test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_ca_reloads_without_dropping_connections() {
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let ca = Ca::new("server CA");
    let old = Ca::new("old client CA");
    let new = Ca::new("new client CA");
    let alice = old.client_leaf("alice", "Example", "spiffe://test/alice");
    let bob = new.client_leaf("bob", "Example", "spiffe://test/bob");
    // Weight 0: every request goes to v1, whichever connection it comes on.
    let sb = Sluice::builder();
    let dir = sb.dir();
    let leaf = ca.leaf(&["a.test"]);
    let (c, k) = (
        write(dir, "a.pem", &leaf.cert),
        write(dir, "a.key", &leaf.key),
    );
    let cas = write(dir, "clients.pem", &old.pem);
    let s = sb
        .traffic(&traffic(1, v1.addr, v2.addr, "[{ weight: 0 }]"))
        .listener(&format!(
            "bind: \"127.0.0.1:0\", tls: {{ certs: [{{ cert: \"{}\", key: \"{}\" }}], client_auth: {{ ca_file: \"{}\" }} }}",
            c.display(),
            k.display(),
            cas.display()
        ))
        .start();
    let with = |leaf| edge::client_config_with_cert(ca.roots(), leaf);
    let served = |leaf| {
        let cfg = with(leaf);
        let addr = s.proxy();
        async move {
            let Ok(tls) = tls_connect(addr, "a.test", cfg).await else {
                return false;
            };
            let mut c = Client::over(tls).await;
            let r = tokio::time::timeout(
                Duration::from_secs(10),
                c.send(get("/api/x", &[("host", "a.test")])),
            )
            .await
            .expect("a refused handshake ends the connection");
            r.is_ok_and(|r| r.status == 200)
        }
    };
    let tls = tls_connect(s.proxy(), "a.test", with(&alice))
        .await
        .unwrap();
    let mut open = Client::over(tls).await;
    let r = open
        .send(get("/api/x", &[("host", "a.test")]))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(!served(&bob).await, "a client of an unknown CA was served");

    // The CA file now names the new CA (as a secret update would).
    write(s.dir.path(), "clients.pem", &new.pem);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !served(&bob).await {
        assert!(
            std::time::Instant::now() < deadline,
            "the new client CA was never used"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !served(&alice).await,
        "the old CA still admits new connections"
    );
    // The connection verified before the change was not dropped.
    let r = open
        .send(get("/api/x", &[("host", "a.test")]))
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    // A broken file is refused: the new CA keeps verifying.
    write(s.dir.path(), "clients.pem", "not a certificate");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(served(&bob).await);
    assert!(!served(&alice).await);
}

/// Writes `head` then an HTTP/1.1 request for `path` on a fresh connection; returns the
/// raw reply (until the connection closes or the response ends).
async fn raw(addr: std::net::SocketAddr, head: &[u8], path: &str, xff: Option<&str>) -> String {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = head.to_vec();
    req.extend_from_slice(
        format!("GET {path} HTTP/1.1\r\nhost: test.local\r\nconnection: close\r\n").as_bytes(),
    );
    if let Some(x) = xff {
        req.extend_from_slice(format!("x-forwarded-for: {x}\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    let _ = tcp.write_all(&req).await;
    let (bytes, closed) = read_to_close(&mut tcp, Duration::from_secs(10)).await;
    assert!(closed, "the connection stayed open");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The JSON body of a raw HTTP/1.1 response.
fn body_json(reply: &str) -> serde_json::Value {
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let body = reply.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {reply}"))
}

/// PROXY protocol v2 header for a TCP over IPv4 connection from `src`.
fn proxy_v2(src: std::net::SocketAddrV4) -> Vec<u8> {
    let mut b = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    b.extend_from_slice(&[0x21, 0x11, 0, 12]);
    b.extend_from_slice(&src.ip().octets());
    b.extend_from_slice(&[127, 0, 0, 1]);
    b.extend_from_slice(&src.port().to_be_bytes());
    b.extend_from_slice(&80u16.to_be_bytes());
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_and_proxy_protocol_name_the_real_client() {
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let sb = Sluice::builder();
    let access_log = format!(
        "access_log: {{ enabled: true, path: \"{}/access.log\" }}\n",
        sb.dir().display()
    );
    let s = sb
        .traffic(&identity_doc(v1.addr, v2.addr))
        .add_listener("lb", "bind: \"127.0.0.1:0\", proxy_protocol: true")
        .limits("handshake_timeout: 2s")
        .settings("network: { trusted_proxies: [\"127.0.0.1/32\", \"10.0.0.0/8\"] }\n")
        .settings(&access_log)
        .start();
    let (public, lb) = (s.inst().listeners[0], s.inst().listeners[1]);
    // (listener, PROXY header, X-Forwarded-For, client, chain upstream, `where` variant)
    type Case<'a> = (
        std::net::SocketAddr,
        Vec<u8>,
        Option<&'a str>,
        &'a str,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        // The peer (127.0.0.1) is trusted: the right-most untrusted address is the client,
        // and the forged entry left of it is not sent upstream.
        (
            public,
            vec![],
            Some("6.6.6.6, 203.0.113.9"),
            "203.0.113.9",
            "203.0.113.9, 127.0.0.1",
            "real",
        ),
        // Trusted hops to the right of the client are kept.
        (
            public,
            vec![],
            Some("203.0.113.9, 10.1.2.3"),
            "203.0.113.9",
            "203.0.113.9, 10.1.2.3, 127.0.0.1",
            "real",
        ),
        // A PROXY header names an untrusted client: its X-Forwarded-For claims nothing.
        (
            lb,
            b"PROXY TCP4 198.51.100.7 127.0.0.1 5555 80\r\n".to_vec(),
            Some("203.0.113.9"),
            "198.51.100.7",
            "198.51.100.7",
            "lb",
        ),
        (
            lb,
            proxy_v2("198.51.100.7:5555".parse().unwrap()),
            None,
            "198.51.100.7",
            "198.51.100.7",
            "lb",
        ),
        // A PROXY header names a trusted internal proxy: its X-Forwarded-For is believed.
        (
            lb,
            proxy_v2("10.9.9.9:5555".parse().unwrap()),
            Some("6.6.6.6, 203.0.113.9"),
            "203.0.113.9",
            "203.0.113.9, 10.9.9.9",
            "real",
        ),
        // The balancer's own health check (LOCAL): the TCP peer stands.
        (
            lb,
            b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec(),
            None,
            "127.0.0.1",
            "127.0.0.1",
            "other",
        ),
    ];
    for (i, (addr, head, xff, client, chain, variant)) in cases.iter().enumerate() {
        let j = body_json(&raw(*addr, head, "/api/x", *xff).await);
        assert_eq!(j["headers"]["x-forwarded-for"][0], *chain, "case {i}: {j}");
        assert_eq!(
            j["headers"]["x-sluice-flag-where"][0], *variant,
            "case {i}: {j}"
        );
        let lines = access_lines(&s.path("access.log"), i + 1).await;
        assert_eq!(lines[i]["client"], *client, "case {i}");
    }

    // A listener with proxy_protocol closes connections without a valid header...
    for bad in [
        &b""[..],
        b"PROXY TCP4 nonsense\r\n",
        b"PROXY TCP4 198.51.100.7 127.0.0.1 5555\r\n",
    ] {
        let reply = raw(lb, bad, "/api/x", None).await;
        assert_eq!(reply, "", "{:?} was served", String::from_utf8_lossy(bad));
    }
    let m = s.inst().registry.render();
    assert!(
        m.contains("sluice_connections_refused_total{listener=\"lb\",reason=\"proxy_protocol\"} 3"),
        "{m}"
    );
    // ...and a silent one once handshake_timeout passes.
    let mut idle = tokio::net::TcpStream::connect(lb).await.unwrap();
    let (_, closed) = read_to_close(&mut idle, Duration::from_secs(15)).await;
    assert!(closed, "a connection that never sent a header stayed open");
    // The other listeners never take a PROXY header: the client does not get to name itself.
    let reply = raw(
        public,
        b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\n",
        "/api/x",
        None,
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(
        access_lines(&s.path("access.log"), cases.len()).await.len(),
        cases.len()
    );
}

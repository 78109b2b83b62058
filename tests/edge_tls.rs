//! TLS over real sockets: SNI, ALPN, certificate reload, handshake timeout, `https` headers,
//! upstream TLS (server name, CA, mTLS), upstream h2c and ALPN `auto`, and curl as a second
//! client.

mod common;

use std::time::Duration;

use common::edge::{
    self, Ca, H2, MiniUp, UpTls, client_config, get, read_to_close, tls_connect, write,
};
use common::{Client, Upstream, traffic};

/// A sluice with one TLS listener serving `a.test` and `b.test` (two certificates).
fn start_tls(ca: &Ca, doc: &str) -> common::Sluice {
    let a = ca.leaf(&["a.test"]);
    let b = ca.leaf(&["b.test", "*.b.test"]);
    edge::start_with(doc, |dir| {
        let (ac, ak) = (write(dir, "a.pem", &a.cert), write(dir, "a.key", &a.key));
        let (bc, bk) = (write(dir, "b.pem", &b.cert), write(dir, "b.key", &b.key));
        edge::settings(
            dir,
            &format!(
                "bind: \"127.0.0.1:0\", tls: {{ certs: [{{ cert: \"{}\", key: \"{}\" }}, {{ cert: \"{}\", key: \"{}\" }}] }}",
                ac.display(),
                ak.display(),
                bc.display(),
                bk.display()
            ),
            "limits: { handshake_timeout: 1s }\n",
        )
    })
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
    let p = edge::start_with(&doc, |dir| {
        edge::settings(
            dir,
            "bind: \"127.0.0.1:0\"",
            "limits: { handshake_timeout: 1s }\n",
        )
    });
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
    let s = common::Sluice::start(&doc);
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

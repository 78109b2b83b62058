//! The approval workflow with the `sluice` binary, as an operator runs it: keygen, approve,
//! validate (class, what is missing, exit codes), push (exit codes 0/1/2/3), revert,
//! status, audit verify — against a sluice serving on real sockets.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::Sluice;

fn sluice(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[track_caller]
fn expect(out: &Output, code: i32, needle: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(code), "{text}");
    assert!(text.contains(needle), "expected {needle:?} in:\n{text}");
    text
}

fn doc(version: u64, port: u16) -> String {
    format!(
        r#"version: {version}
change: {{ id: CHG-{version}, author: alice, summary: "cli change" }}
upstreams:
  v1: {{ endpoints: ["127.0.0.1:{port}"] }}
routes:
  - name: api
    to: {{ upstream: v1 }}
"#
    )
}

#[test]
fn keygen_approve_validate_push_revert_with_the_binary() {
    let sb = Sluice::builder();
    let dir = &sb.dir().to_path_buf();
    std::fs::create_dir_all(dir.join("tok")).unwrap();

    // keygen: one line on stdout, the private key 0600, never overwritten.
    let mut principals = String::new();
    for (who, role) in [
        ("alice", "developer"),
        ("bob", "release-manager"),
        ("carol", "release-manager"),
    ] {
        let out = sluice(&["keygen", "--principal", who, "--out", "keys"], dir);
        let line = expect(&out, 0, "ed25519:");
        let public = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            public.starts_with("ed25519:") && !public.contains('\n'),
            "{line}"
        );
        principals.push_str(&format!(
            "    {who}: {{ keys: [\"{public}\"], roles: [{role}] }}\n"
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(format!("keys/{who}.pem")))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
    expect(
        &sluice(&["keygen", "--principal", "alice", "--out", "keys"], dir),
        2,
        "already exists",
    );
    let trust = format!(
        "trust:\n  environment: prod\n  principals:\n{principals}  policy:\n    normal:\n      require: [{{ count: 2, roles: [release-manager] }}]\n"
    );
    let sb = sb.trust(&trust);
    std::fs::write(dir.join("sluice.yaml"), sb.settings_yaml()).unwrap();
    let mut s = sb.start();
    let inst = s.inst();
    let admin = format!("http://{}", inst.admin);
    let token_file = dir.join("state/admin.token");
    let token_file = token_file.to_str().unwrap();

    std::fs::write(dir.join("v1.yaml"), doc(1, 9)).unwrap();
    std::fs::write(dir.join("v2.yaml"), doc(2, 10)).unwrap();
    let approve = |who: &str, act: &str, file: &str, out: &str| {
        let o = sluice(
            &[
                "approve",
                "--key",
                &format!("keys/{who}.pem"),
                "--principal",
                who,
                "--env",
                "prod",
                "--act",
                act,
                "--ttl",
                "1h",
                file,
            ],
            dir,
        );
        expect(&o, 0, "");
        std::fs::write(dir.join(out), &o.stdout).unwrap();
    };
    approve("alice", "author", "v1.yaml", "tok/alice1.jwt");
    approve("bob", "approve", "v1.yaml", "tok/bob1.jwt");
    approve("carol", "approve", "v1.yaml", "tok/carol1.jwt");
    // Bob's promote tokens: `approve … --act promote`, then `extra`.
    let bob_promote = |extra: &[&str]| {
        let mut args = vec![
            "approve",
            "--key",
            "keys/bob.pem",
            "--principal",
            "bob",
            "--env",
            "prod",
            "--act",
            "promote",
        ];
        args.extend_from_slice(extra);
        sluice(&args, dir)
    };
    expect(&bob_promote(&["v1.yaml"]), 2, "--rollout");
    // A full-promotion token (`promote --full`) carries `full: true` beside its target;
    // `--full` needs the target.
    let full = bob_promote(&["--rollout", "web", "--step", "1", "--full", "v1.yaml"]);
    expect(&full, 0, "");
    let jwt = String::from_utf8_lossy(&full.stdout).trim().to_string();
    let payload = jwt.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (
            &claims["act"],
            &claims["rollout"],
            &claims["step"],
            &claims["full"]
        ),
        (&"promote".into(), &"web".into(), &1.into(), &true.into()),
        "{claims}"
    );
    expect(&bob_promote(&["--full", "v1.yaml"]), 2, "--rollout");

    // validate: nothing active, no tokens → refused (1); the author's token in the folder →
    // pending (3) with what is missing; an invalid document → 2.
    let v = |extra: &[&str]| {
        let mut args = vec!["validate", "-c", "sluice.yaml"];
        args.extend_from_slice(extra);
        sluice(&args, dir)
    };
    expect(&v(&["v1.yaml"]), 1, "missing_author");
    std::fs::copy(dir.join("tok/alice1.jwt"), dir.join("approvals/alice1.jwt")).unwrap();
    let text = expect(
        &v(&["v1.yaml"]),
        3,
        "needs 2 more approvals from role release-manager",
    );
    assert!(text.contains("nothing is active yet"), "{text}");
    std::fs::write(dir.join("bad.yaml"), "version: 1\nchange: {}\n").unwrap();
    expect(&v(&["bad.yaml"]), 2, "error");

    // push: pending (3), then activated (0); bad input (2); bad bearer (1).
    let push = |args: &[&str]| {
        let mut a = vec!["push", "--admin", &admin, "--token-file", token_file];
        a.extend_from_slice(args);
        sluice(&a, dir)
    };
    expect(&push(&["v1.yaml", "tok/bob1.jwt"]), 3, "\"pending\"");
    expect(&push(&["v1.yaml", "tok/carol1.jwt"]), 0, "\"activated\"");
    expect(&push(&["bad.yaml"]), 2, "invalid_document");
    std::fs::write(dir.join("wrong.token"), "not-the-admin-token-at-all").unwrap();
    expect(
        &sluice(
            &[
                "push",
                "--admin",
                &admin,
                "--token-file",
                "wrong.token",
                "v1.yaml",
            ],
            dir,
        ),
        1,
        "unauthorized",
    );

    // validate diffs against the persisted active document, or --against.
    expect(&v(&["v1.yaml"]), 0, "no-op");
    let text = expect(&v(&["v2.yaml"]), 1, "missing_author");
    assert!(text.contains("diff against version 1"), "{text}");
    assert!(text.contains("/upstreams/v1/endpoints/0"), "{text}");
    std::fs::write(dir.join("v3.yaml"), doc(3, 11)).unwrap();
    let text = expect(
        &v(&["--against", "v2.yaml", "v3.yaml"]),
        1,
        "missing_author",
    );
    assert!(text.contains("diff against version 2 (v2.yaml)"), "{text}");

    approve("alice", "author", "v2.yaml", "tok/alice2.jwt");
    approve("bob", "approve", "v2.yaml", "tok/bob2.jwt");
    approve("carol", "approve", "v2.yaml", "tok/carol2.jwt");
    expect(
        &push(&[
            "v2.yaml",
            "tok/alice2.jwt",
            "tok/bob2.jwt",
            "tok/carol2.jwt",
        ]),
        0,
        "\"activated\"",
    );

    // revert to v1 with any principal's revert token; a version never activated is refused.
    approve("carol", "revert", "v1.yaml", "tok/revert1.jwt");
    let revert = |to: &str| {
        sluice(
            &[
                "revert",
                "--to-version",
                to,
                "--admin",
                &admin,
                "--token-file",
                token_file,
                "--approval",
                "tok/revert1.jwt",
            ],
            dir,
        )
    };
    expect(&revert("7"), 1, "not_activated");
    expect(&revert("1"), 0, "\"reverted\"");
    assert_eq!(
        inst.shared.snapshot.load().as_ref().map(|s| s.version),
        Some(1)
    );
    let status = sluice(
        &["status", "--admin", &admin, "--token-file", token_file],
        dir,
    );
    expect(&status, 0, "active   version 1");
    expect(
        &sluice(&["audit", "verify", "state/audit.jsonl"], dir),
        0,
        "chain intact",
    );
    s.stop();
}

/// A token from `sluice approve` (the binary) verifies in PyJWT with the key line from
/// `sluice keygen`. Skipped without python3 + pyjwt + cryptography, unless
/// `SLUICE_REQUIRE_PYJWT=1` (CI).
#[test]
fn sluice_approve_tokens_verify_in_pyjwt() {
    let ready = Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ready {
        assert!(
            std::env::var("SLUICE_REQUIRE_PYJWT").map_or(true, |v| v != "1"),
            "SLUICE_REQUIRE_PYJWT=1 but python3 lacks jwt or cryptography"
        );
        println!("SKIPPED: python3 with jwt and cryptography not found");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let line = sluice(&["keygen", "--principal", "bob", "--out", "keys"], dir);
    let line = String::from_utf8(line.stdout).unwrap().trim().to_string();
    std::fs::write(dir.join("v1.yaml"), doc(1, 9)).unwrap();
    let out = sluice(
        &[
            "approve",
            "--key",
            "keys/bob.pem",
            "--principal",
            "bob",
            "--env",
            "staging",
            "--act",
            "approve",
            "--ttl",
            "2h",
            "v1.yaml",
        ],
        dir,
    );
    expect(&out, 0, "");
    let token = String::from_utf8(out.stdout).unwrap();
    let check = r#"
import sys, json, base64, jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
line, token = sys.argv[1], sys.argv[2]
b64 = line.split(":", 1)[1]
pub = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)))
claims = jwt.decode(token, pub, algorithms=["EdDSA"], audience="staging")
print(json.dumps(claims))
"#;
    let py = Command::new("python3")
        .args(["-c", check, &line, token.trim()])
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let claims: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    let text = doc(1, 9);
    assert_eq!(claims["sub"], sluice::change::digest(text.as_bytes()));
    assert_eq!(claims["iss"], "bob");
    assert_eq!(claims["ver"], 1);
    assert_eq!(claims["act"], "approve");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        7200
    );
}

/// The admin CLI over `https://` (here: sluice's own TLS listener in front of its admin
/// API, verified with `--admin-ca`), its address from `SLUICE_ADMIN`, and `status --watch`.
#[test]
fn admin_cli_over_https_from_sluice_admin_and_status_watch() {
    use std::io::{BufRead, BufReader};
    let sb = Sluice::builder();
    let dir = &sb.dir().to_path_buf();
    let ca = common::edge::Ca::new("admin test CA");
    let leaf = ca.leaf(&["localhost"]);
    let cert = common::edge::write(dir, "admin.pem", &leaf.cert);
    let key = common::edge::write(dir, "admin.key", &leaf.key);
    common::edge::write(dir, "ca.pem", &ca.pem);
    let mut s = sb
        .listener(&format!(
            "bind: \"127.0.0.1:0\", tls: {{ certs: [{{ cert: \"{}\", key: \"{}\" }}] }}",
            cert.display(),
            key.display()
        ))
        .start();
    let inst = s.inst();
    // The TLS listener routes everything to the admin listener.
    std::fs::write(
        dir.join("traffic.yaml"),
        format!(
            "version: 1\nchange: {{ id: CHG-1, author: alice, summary: admin }}\n\
             upstreams: {{ admin: {{ endpoints: [\"{}\"] }} }}\n\
             routes: [{{ name: admin, to: {{ upstream: admin }} }}]\n",
            inst.admin
        ),
    )
    .unwrap();
    s.wait_version(1);
    let url = format!("https://localhost:{}", inst.listeners[0].port());
    let token_file = dir.join("state/admin.token");
    let token_file = token_file.to_str().unwrap();

    let status = |env: Option<&str>, args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
        c.arg("status").args(args).current_dir(dir);
        c.env_remove("SLUICE_ADMIN");
        if let Some(u) = env {
            c.env("SLUICE_ADMIN", u);
        }
        c.output().unwrap()
    };
    expect(
        &status(
            None,
            &[
                "--admin",
                &url,
                "--admin-ca",
                "ca.pem",
                "--token-file",
                token_file,
            ],
        ),
        0,
        "active   version 1",
    );
    expect(
        &status(
            Some(&url),
            &["--admin-ca", "ca.pem", "--token-file", token_file],
        ),
        0,
        "active   version 1",
    );
    // Without the private CA the Web PKI roots do not vouch for it.
    expect(
        &status(Some(&url), &["--token-file", token_file]),
        1,
        "UnknownIssuer",
    );
    expect(
        &status(None, &["--admin", "ftp://x", "--token-file", token_file]),
        1,
        "must start with http:// or https://",
    );

    // --watch prints again and again until interrupted.
    let admin = format!("http://{}", inst.admin);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "status",
            "--watch",
            "--interval",
            "100ms",
            "--admin",
            &admin,
        ])
        .args(["--token-file", token_file])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut frames = 0;
    for line in out.lines().map_while(Result::ok) {
        if line.starts_with("active   version 1") {
            frames += 1;
            if frames == 3 {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(frames, 3);
    s.stop();
}

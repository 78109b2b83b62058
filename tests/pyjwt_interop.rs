//! Interoperability with PyJWT (EdDSA): a token PyJWT mints verifies in sluice, and a token
//! sluice mints verifies in PyJWT. Needs `python3` with `jwt` and `cryptography`
//! (`pip install pyjwt cryptography`). Without them the test reports a skip — unless
//! `SLUICE_REQUIRE_PYJWT=1` is set (CI), where missing modules are a failure.

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use sluice::change::keys::{keygen, load_signing_key};
use sluice::change::token::{Act, Claims, Expected, sign, verify_for};
use sluice::change::{Reason, TrustStore, digest};
use sluice::config::settings::{Principal, Trust};

const MINT: &str = r#"
import sys, time, jwt
from cryptography.hazmat.primitives import serialization
key_path, kid, sub = sys.argv[1], sys.argv[2], sys.argv[3]
key = serialization.load_pem_private_key(open(key_path, "rb").read(), password=None)
now = int(time.time())
claims = {"iss": "alice", "aud": "prod", "sub": sub, "ver": 7, "act": "approve",
          "iat": now, "exp": now + 3600, "jti": "pyjwt-1"}
print(jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid}))
"#;

const CHECK: &str = r#"
import sys, json, base64, jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
line, token = sys.argv[1], sys.argv[2]
b64 = line.split(":", 1)[1]
pub = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)))
header = jwt.get_unverified_header(token)
claims = jwt.decode(token, pub, algorithms=["EdDSA"], audience="prod",
                    options={"require": ["iss", "aud", "sub", "iat", "exp", "jti"]})
tampered = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
try:
    jwt.decode(tampered, pub, algorithms=["EdDSA"], audience="prod")
    rejected = False
except jwt.InvalidSignatureError:
    rejected = True
print(json.dumps({"header": header, "claims": claims, "tampered_rejected": rejected}))
"#;

fn python_ready() -> bool {
    Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[test]
fn pyjwt_interop() {
    if !python_ready() {
        let required = std::env::var("SLUICE_REQUIRE_PYJWT").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "SLUICE_REQUIRE_PYJWT=1 but `python3 -c \"import jwt, cryptography\"` fails: pip install pyjwt cryptography"
        );
        println!(
            "SKIPPED pyjwt_interop: python3 with jwt and cryptography not found (pip install pyjwt cryptography)"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let made = keygen("alice", dir.path()).expect("keygen");
    let mut trust = Trust::default();
    trust.principals.insert(
        "alice".into(),
        Principal {
            keys: vec![made.public_line.clone()],
            roles: vec!["release-manager".into()],
        },
    );
    let store = TrustStore::new(&trust).expect("trust");
    let document = b"version: 7\nchange: { id: CHG-7, author: bob }\n";
    let sub = digest(document);
    let expected = Expected {
        acts: &[Act::Approve],
        digest: &sub,
        version: 7,
        target: None,
    };

    // PyJWT mints, sluice verifies.
    let py_token = python(MINT, &[path(&made.private_key), &made.kid, &sub]);
    let t = verify_for(&py_token, &store, &expected, now())
        .expect("sluice verifies a PyJWT EdDSA token");
    assert_eq!(
        (t.principal.as_str(), t.kid.as_str(), t.jti.as_str()),
        ("alice", made.kid.as_str(), "pyjwt-1")
    );
    // ... and still refuses it for another document.
    let other = digest(b"other");
    let wrong = Expected {
        digest: &other,
        ..expected
    };
    assert_eq!(
        verify_for(&py_token, &store, &wrong, now())
            .unwrap_err()
            .reason,
        Reason::WrongDigest
    );

    // sluice mints, PyJWT verifies.
    let key = load_signing_key(&made.private_key).expect("load key");
    let claims = Claims::new("alice", "prod", document, 7, Act::Approve, now(), 3600);
    let ours = sign(&claims, &key);
    let seen: serde_json::Value =
        serde_json::from_str(&python(CHECK, &[&made.public_line, &ours])).expect("json");
    assert_eq!(seen["header"]["alg"], "EdDSA");
    assert_eq!(seen["header"]["kid"], made.kid.as_str());
    assert_eq!(seen["claims"]["sub"], sub.as_str());
    assert_eq!(seen["claims"]["ver"], 7);
    assert_eq!(seen["claims"]["act"], "approve");
    assert_eq!(seen["claims"]["jti"], claims.jti.as_str());
    assert_eq!(seen["tampered_rejected"], true);
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

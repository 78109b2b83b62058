//! Adversarial table for change approval: every way a token, a change or a version can be
//! wrong, each with the reason code it must be refused with; then the good paths.

mod change_support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use change_support::*;
use ed25519_dalek::SigningKey;
use serde_json::json;
use sha2::{Digest, Sha256};
use sluice::change::keys::kid;
use sluice::change::policy::evaluate_review;
use sluice::change::token::{Act, Expected, check_fresh, sign, verify, verify_for};
use sluice::change::{
    Assessment, ChangeInput, HighWater, Reason, Refusal, Ruling, assess, check_version, classify,
    digest,
};
use sluice::config::traffic::ChangeClass;

/// What a case did: `Ok` with a note when nothing was refused.
type Outcome = Result<String, Refusal>;

fn verify_doc(tok: &str, text: &str, version: u64) -> Outcome {
    let d = digest(text.as_bytes());
    let expected = Expected {
        acts: &[Act::Author, Act::Approve],
        digest: &d,
        version,
        target: None,
    };
    verify_for(tok, &store(), &expected, T0).map(|t| format!("verified token of {}", t.principal))
}

/// Runs the whole assessment; `active` is the active document text (its version is the mark).
fn run(text: &str, tokens: &[String], active: Option<&str>, overdue: bool) -> Assessment {
    let store = store();
    let cand = parse(text);
    let act = active.map(parse);
    let mark = act.as_ref().map(|a| HighWater {
        version: a.doc.version,
        digest: digest(active.unwrap_or_default().as_bytes()),
    });
    assess(
        &store,
        &ChangeInput {
            bytes: text.as_bytes(),
            doc: &cand.doc,
            json: &cand.json,
            active: act.as_ref().map(|a| &a.json),
            high_water: mark.as_ref(),
            tokens,
            author_review_overdue: overdue,
            now: T0,
        },
    )
}

/// The refusal a whole change ends in (a pending change reports what it lacks).
fn outcome(a: &Assessment) -> Outcome {
    match &a.ruling {
        Ruling::Refused(r) => Err(r.clone()),
        Ruling::Pending(d) => Err(d.refusal().expect("pending has a shortfall")),
        Ruling::Activate(d) => Ok(format!("activated as {:?}", d.class)),
        Ruling::NoOp => Ok("no-op".into()),
    }
}

/// The active v7 document by alice, and a v8 candidate with a flag default changed.
fn v7() -> String {
    doc(7, "alice", "normal")
}
fn v8_normal() -> String {
    doc(8, "alice", "normal")
        .replace("defaultVariant: \"off\"", "defaultVariant: \"on\"")
        .replace(
            "checkout-v2: { endpoints: [\"10.0.0.7:8080\"] }",
            "checkout-v2: { endpoints: [\"10.0.0.8:8080\"] }",
        )
}

fn tamper_signature(tok: &str) -> String {
    let (rest, sig) = tok.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
    bytes[10] ^= 0x01;
    format!("{rest}.{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// A token whose header is `header` and whose "signature" is `sig` bytes (no Ed25519).
fn forged(header: serde_json::Value, claims: &serde_json::Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

fn signed_claims(k: &SigningKey, claims: &serde_json::Value) -> String {
    raw(k, &header(k), &claims.to_string())
}

fn with_header_field(k: &SigningKey, field: &str, value: serde_json::Value, text: &str) -> String {
    let mut h = json!({"alg": "EdDSA", "kid": kid(&k.verifying_key())});
    h[field] = value;
    raw(
        k,
        &h.to_string(),
        &claims_json("bob", text, 7, "approve").to_string(),
    )
}

fn cases() -> Vec<(&'static str, Reason, Outcome)> {
    let t7 = v7();
    let t8 = v8_normal();
    let bob7 = token(&key("bob"), "bob", &t7, 7, Act::Approve);
    let c7 = claims_json("bob", &t7, 7, "approve");
    let mut out: Vec<(&'static str, Reason, Outcome)> = Vec::new();
    let mut case = |name, want, got| out.push((name, want, got));

    // --- signatures and keys
    case(
        "signature bit flipped",
        Reason::BadSignature,
        verify_doc(&tamper_signature(&bob7), &t7, 7),
    );
    case("claims edited after signing", Reason::BadSignature, {
        let (h, _) = bob7.split_once('.').unwrap();
        let sig = bob7.rsplit_once('.').unwrap().1;
        let mut c = c7.clone();
        c["ver"] = json!(8);
        verify_doc(
            &format!("{h}.{}.{sig}", URL_SAFE_NO_PAD.encode(c.to_string())),
            &t7,
            7,
        )
    });
    case("signature of 63 bytes", Reason::BadSignature, {
        let (rest, _) = bob7.rsplit_once('.').unwrap();
        verify_doc(
            &format!("{rest}.{}", URL_SAFE_NO_PAD.encode([7u8; 63])),
            &t7,
            7,
        )
    });
    case(
        "unknown kid (key not in trust)",
        Reason::UnknownKey,
        verify_doc(&token(&key("mallory"), "bob", &t7, 7, Act::Approve), &t7, 7),
    );
    case("kid of bob, signed by carol's key", Reason::BadSignature, {
        verify_doc(
            &raw(&key("carol"), &header(&key("bob")), &c7.to_string()),
            &t7,
            7,
        )
    });
    case(
        "iss bob, signed by carol's key under carol's kid",
        Reason::IssuerMismatch,
        verify_doc(&signed_claims(&key("carol"), &c7), &t7, 7),
    );
    case(
        "iss a principal that does not exist",
        Reason::IssuerMismatch,
        {
            let mut c = c7.clone();
            c["iss"] = json!("mallory");
            verify_doc(&signed_claims(&key("bob"), &c), &t7, 7)
        },
    );

    // --- claims against the use
    case("aud of another environment", Reason::WrongAudience, {
        let mut c = c7.clone();
        c["aud"] = json!("staging");
        verify_doc(&signed_claims(&key("bob"), &c), &t7, 7)
    });
    case(
        "sub: one byte of the document changed",
        Reason::WrongDigest,
        {
            let changed = t7.replacen("test change", "test chango", 1);
            assert_eq!(changed.len(), t7.len());
            verify_doc(&bob7, &changed, 7)
        },
    );
    case("ver other than the document's", Reason::WrongVersion, {
        let mut c = c7.clone();
        c["ver"] = json!(6);
        verify_doc(&signed_claims(&key("bob"), &c), &t7, 7)
    });
    case(
        "token replayed from an earlier change",
        Reason::WrongDigest,
        verify_doc(&bob7, &t8, 8),
    );
    case(
        "review token offered as an approval",
        Reason::WrongAction,
        verify_doc(&token(&key("bob"), "bob", &t7, 7, Act::Review), &t7, 7),
    );
    case("act nobody knows", Reason::WrongAction, {
        let mut c = c7.clone();
        c["act"] = json!("superuser");
        verify_doc(&signed_claims(&key("bob"), &c), &t7, 7)
    });
    case("promote for another step", Reason::WrongTarget, {
        let d = digest(t7.as_bytes());
        let t = sign(
            &claims("bob", &t7, 7, Act::Promote).with_target("checkout", 1),
            &key("bob"),
        );
        let e = Expected {
            acts: &[Act::Promote],
            digest: &d,
            version: 7,
            target: Some(("checkout", 2)),
        };
        verify_for(&t, &store(), &e, T0).map(|_| "verified".into())
    });

    // --- time
    case("expired", Reason::Expired, {
        let mut c = c7.clone();
        c["iat"] = json!(T0 - 3 * HOUR);
        c["exp"] = json!(T0 - 2 * HOUR);
        verify_doc(&signed_claims(&key("bob"), &c), &t7, 7)
    });
    case("expired just beyond skew", Reason::Expired, {
        let mut c = c7.clone();
        c["iat"] = json!(T0 - HOUR);
        c["exp"] = json!(T0 - 60);
        verify_doc(&signed_claims(&key("bob"), &c), &t7, 7)
    });
    case("exp before iat", Reason::Expired, {
        let mut c = c7.clone();
        c["exp"] = json!(T0 - 1);
        verify_doc(&signed_claims(&key("bob"), &c), &t7, 7)
    });
    case(
        "lifetime above max_token_lifetime",
        Reason::LifetimeTooLong,
        {
            let mut c = c7.clone();
            c["exp"] = json!(T0 + 72 * HOUR + 1);
            verify_doc(&signed_claims(&key("bob"), &c), &t7, 7)
        },
    );
    case("issued in the future beyond skew", Reason::NotYetValid, {
        let mut c = c7.clone();
        c["iat"] = json!(T0 + 61);
        c["exp"] = json!(T0 + HOUR);
        verify_doc(&signed_claims(&key("bob"), &c), &t7, 7)
    });
    case("nbf in the future", Reason::NotYetValid, {
        let mut c = c7.clone();
        c["nbf"] = json!(T0 + 600);
        verify_doc(&signed_claims(&key("bob"), &c), &t7, 7)
    });

    // --- algorithm and header
    case("alg none, empty signature", Reason::BadAlgorithm, {
        verify_doc(
            &format!(
                "{}.",
                forged(
                    json!({"alg": "none", "kid": kid(&key("bob").verifying_key())}),
                    &c7,
                    b""
                )
                .trim_end_matches('.')
            ),
            &t7,
            7,
        )
    });
    case("HS256 keyed with bob's public key", Reason::BadAlgorithm, {
        let h = json!({"alg": "HS256", "typ": "JWT", "kid": kid(&key("bob").verifying_key())});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(h.to_string()),
            URL_SAFE_NO_PAD.encode(c7.to_string())
        );
        let mac = hmac_sha256(key("bob").verifying_key().as_bytes(), input.as_bytes());
        verify_doc(&format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac)), &t7, 7)
    });
    case(
        "RS256 header with a 256-byte signature",
        Reason::BadAlgorithm,
        {
            verify_doc(
                &forged(
                    json!({"alg": "RS256", "kid": kid(&key("bob").verifying_key())}),
                    &c7,
                    &[0x42; 256],
                ),
                &t7,
                7,
            )
        },
    );
    case("alg eddsa in lower case", Reason::BadAlgorithm, {
        let h = json!({"alg": "eddsa", "kid": kid(&key("bob").verifying_key())});
        verify_doc(&raw(&key("bob"), &h.to_string(), &c7.to_string()), &t7, 7)
    });
    case("alg missing", Reason::BadAlgorithm, {
        verify_doc(
            &raw(
                &key("bob"),
                &json!({"kid": kid(&key("bob").verifying_key())}).to_string(),
                &c7.to_string(),
            ),
            &t7,
            7,
        )
    });
    case(
        "jwk header carrying the attacker's key",
        Reason::ForbiddenHeader,
        {
            let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(key("mallory").verifying_key().as_bytes())});
            verify_doc(&with_header_field(&key("bob"), "jwk", jwk, &t7), &t7, 7)
        },
    );
    case(
        "jku header",
        Reason::ForbiddenHeader,
        verify_doc(
            &with_header_field(&key("bob"), "jku", json!("https://evil/jwks"), &t7),
            &t7,
            7,
        ),
    );
    case(
        "x5u header",
        Reason::ForbiddenHeader,
        verify_doc(
            &with_header_field(&key("bob"), "x5u", json!("https://evil/cert"), &t7),
            &t7,
            7,
        ),
    );
    case(
        "x5c header",
        Reason::ForbiddenHeader,
        verify_doc(
            &with_header_field(&key("bob"), "x5c", json!(["MIIB"]), &t7),
            &t7,
            7,
        ),
    );
    case(
        "crit header",
        Reason::ForbiddenHeader,
        verify_doc(
            &with_header_field(&key("bob"), "crit", json!(["exp"]), &t7),
            &t7,
            7,
        ),
    );
    case("kid missing", Reason::MalformedToken, {
        verify_doc(
            &raw(&key("bob"), r#"{"alg":"EdDSA"}"#, &c7.to_string()),
            &t7,
            7,
        )
    });

    // --- encoding and size
    case("malformed base64 in the payload", Reason::MalformedToken, {
        let parts: Vec<&str> = bob7.split('.').collect();
        verify_doc(&format!("{}.{}*.{}", parts[0], parts[1], parts[2]), &t7, 7)
    });
    case("padded base64", Reason::MalformedToken, {
        let parts: Vec<&str> = bob7.split('.').collect();
        verify_doc(&format!("{}==.{}.{}", parts[0], parts[1], parts[2]), &t7, 7)
    });
    case(
        "duplicate JSON keys in the claims",
        Reason::MalformedToken,
        {
            let claims = c7.to_string().replacen('{', r#"{"iss":"alice","#, 1);
            verify_doc(&raw(&key("bob"), &header(&key("bob")), &claims), &t7, 7)
        },
    );
    case(
        "duplicate JSON keys in the header",
        Reason::MalformedToken,
        {
            let h = format!(
                r#"{{"alg":"EdDSA","alg":"none","kid":"{}"}}"#,
                kid(&key("bob").verifying_key())
            );
            verify_doc(&raw(&key("bob"), &h, &c7.to_string()), &t7, 7)
        },
    );
    case("ver as a string", Reason::MalformedToken, {
        let mut c = c7.clone();
        c["ver"] = json!("7");
        verify_doc(&signed_claims(&key("bob"), &c), &t7, 7)
    });
    case(
        "claims are an array",
        Reason::MalformedToken,
        verify_doc(&raw(&key("bob"), &header(&key("bob")), "[1,2]"), &t7, 7),
    );
    case(
        "a non-JWT string",
        Reason::MalformedToken,
        verify_doc("hello, I am an approval", &t7, 7),
    );
    case(
        "four dot-separated parts",
        Reason::MalformedToken,
        verify_doc(&format!("{bob7}.AAAA"), &t7, 7),
    );
    case(
        "JWS JSON serialization",
        Reason::MalformedToken,
        verify_doc(r#"{"payload":"e30","signatures":[]}"#, &t7, 7),
    );
    case(
        "a 1 MB token",
        Reason::TokenTooLarge,
        verify_doc(&"A".repeat(1 << 20), &t7, 7),
    );
    case(
        "8 KiB + 1 byte",
        Reason::TokenTooLarge,
        verify_doc(&format!("{bob7}{}", "A".repeat(8193 - bob7.len())), &t7, 7),
    );

    // --- policy: authorship and segregation of duties
    let active = Some(t7.as_str());
    case("no author token", Reason::MissingAuthor, {
        let toks = [
            token(&key("bob"), "bob", &t8, 8, Act::Approve),
            token(&key("carol"), "carol", &t8, 8, Act::Approve),
        ];
        outcome(&run(&t8, &toks, active, false))
    });
    case(
        "author token of someone else than change.author",
        Reason::AuthorMismatch,
        {
            let toks = [token(&key("dave"), "dave", &t8, 8, Act::Author)];
            outcome(&run(&t8, &toks, active, false))
        },
    );
    case("self-approval by the author", Reason::SelfApproval, {
        let t = v8_normal().replace("author: alice", "author: carol");
        let toks = [
            token(&key("carol"), "carol", &t, 8, Act::Author),
            token(&key("carol"), "carol", &t, 8, Act::Approve),
            token(&key("bob"), "bob", &t, 8, Act::Approve),
        ];
        outcome(&run(&t, &toks, active, false))
    });
    case(
        "one principal's two keys counted twice",
        Reason::InsufficientApprovals,
        {
            let toks = [
                token(&key("alice"), "alice", &t8, 8, Act::Author),
                token(&key("erin"), "erin", &t8, 8, Act::Approve),
                token(&key("erin2"), "erin", &t8, 8, Act::Approve),
            ];
            outcome(&run(&t8, &toks, active, false))
        },
    );
    case(
        "the same approval token twice",
        Reason::InsufficientApprovals,
        {
            let b = token(&key("bob"), "bob", &t8, 8, Act::Approve);
            let toks = [
                token(&key("alice"), "alice", &t8, 8, Act::Author),
                b.clone(),
                b,
            ];
            outcome(&run(&t8, &toks, active, false))
        },
    );
    case("approver without the role", Reason::MissingRole, {
        let toks = [
            token(&key("alice"), "alice", &t8, 8, Act::Author),
            token(&key("bob"), "bob", &t8, 8, Act::Approve),
            token(&key("dave"), "dave", &t8, 8, Act::Approve),
        ];
        outcome(&run(&t8, &toks, active, false))
    });
    case(
        "path-scoped requirement (tls) missed",
        Reason::InsufficientApprovals,
        {
            let t = v8_normal().replace("checkout-v1: { endpoints: [\"10.0.0.5:8080\"] }", "checkout-v1: { endpoints: [\"10.0.0.5:8080\"], tls: { server_name: evil.example } }");
            let toks = [
                token(&key("alice"), "alice", &t, 8, Act::Author),
                token(&key("bob"), "bob", &t, 8, Act::Approve),
                token(&key("carol"), "carol", &t, 8, Act::Approve),
            ];
            outcome(&run(&t, &toks, active, false))
        },
    );
    case(
        "claims standard while changing an upstream",
        Reason::InsufficientApprovals,
        {
            let t = doc(8, "alice", "standard").replace("10.0.0.7:8080", "10.6.6.6:8080");
            outcome(&run(
                &t,
                &[token(&key("alice"), "alice", &t, 8, Act::Author)],
                active,
                false,
            ))
        },
    );
    case(
        "claims standard while changing a routing flag's default",
        Reason::InsufficientApprovals,
        {
            let t = doc(8, "alice", "standard").replace("defaultVariant: v1", "defaultVariant: v2");
            outcome(&run(
                &t,
                &[token(&key("alice"), "alice", &t, 8, Act::Author)],
                active,
                false,
            ))
        },
    );
    case(
        "emergency self-approval when not allowed",
        Reason::SelfApproval,
        {
            let t = v8_normal().replace(
                "author: alice, class: normal",
                "author: carol, class: emergency",
            );
            let toks = [
                token(&key("carol"), "carol", &t, 8, Act::Author),
                token(&key("carol"), "carol", &t, 8, Act::Approve),
            ];
            outcome(&run(&t, &toks, active, false))
        },
    );
    case(
        "emergency while the author's last review is overdue",
        Reason::ReviewOverdue,
        {
            let t = v8_normal().replace("class: normal", "class: emergency");
            let toks = [
                token(&key("alice"), "alice", &t, 8, Act::Author),
                token(&key("ivan"), "ivan", &t, 8, Act::Approve),
            ];
            outcome(&run(&t, &toks, active, true))
        },
    );
    case(
        "review signed by the author",
        Reason::SelfApproval,
        review_outcome(
            "alice",
            &["ivan"],
            &[(&key("alice"), "alice"), (&key("bob"), "bob")],
        ),
    );
    case(
        "review by an approver of the same emergency",
        Reason::SelfApproval,
        review_outcome(
            "alice",
            &["carol"],
            &[(&key("carol"), "carol"), (&key("bob"), "bob")],
        ),
    );

    // --- anti-rollback
    case("lower version", Reason::VersionNotIncreasing, {
        let t = doc(6, "alice", "normal").replace("10.0.0.7:8080", "10.0.0.9:8080");
        outcome(&run(
            &t,
            &[token(&key("alice"), "alice", &t, 6, Act::Author)],
            active,
            false,
        ))
    });
    case(
        "same version, other digest (equivocation)",
        Reason::Equivocation,
        {
            let mark = HighWater {
                version: 7,
                digest: digest(t7.as_bytes()),
            };
            check_version(7, &digest(t8.as_bytes()), Some(&mark), 1000).map(|c| format!("{c:?}"))
        },
    );
    case(
        "version jump above max_version_step",
        Reason::VersionStepTooLarge,
        {
            let t = doc(1008, "alice", "normal").replace("10.0.0.7:8080", "10.0.0.9:8080");
            outcome(&run(
                &t,
                &[token(&key("alice"), "alice", &t, 1008, Act::Author)],
                active,
                false,
            ))
        },
    );
    case("promote token used twice", Reason::TokenReused, {
        let t = verify(
            &sign(
                &claims("bob", &t7, 7, Act::Promote).with_target("checkout", 1),
                &key("bob"),
            ),
            &store(),
            T0,
        )
        .unwrap();
        let seen = [t.replay_key()];
        check_fresh(&t, |k| seen.iter().any(|s| s == k)).map(|()| "fresh".into())
    });
    out
}

/// Reviews of an emergency (v8, by `author`, approved by `approvers`) signed by `reviewers`.
fn review_outcome(author: &str, approvers: &[&str], reviewers: &[(&SigningKey, &str)]) -> Outcome {
    let store = store();
    let t = v8_normal().replace("class: normal", "class: emergency");
    let (a, c) = (parse(&v7()), parse(&t));
    let class = classify(
        store.rules(),
        Some(&a.json),
        &c.json,
        ChangeClass::Emergency,
    );
    let d = digest(t.as_bytes());
    let e = Expected {
        acts: &[Act::Review],
        digest: &d,
        version: 8,
        target: None,
    };
    let toks: Vec<_> = reviewers
        .iter()
        .map(|(k, who)| verify_for(&token(k, who, &t, 8, Act::Review), &store, &e, T0).unwrap())
        .collect();
    let approvers: Vec<String> = approvers.iter().map(|s| s.to_string()).collect();
    let r = evaluate_review(&store, &class, author, &approvers, &toks);
    match r.refusal() {
        Some(x) => Err(x),
        None => Ok("review closed".into()),
    }
}

#[test]
fn adversarial_table() {
    let cases = cases();
    assert!(cases.len() >= 30, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for (name, want, got) in &cases {
        match got {
            Err(r) if r.reason == *want => {
                assert!(!r.detail.is_empty(), "{name}: empty detail");
                println!("{name}: {r}");
            }
            other => failures.push(format!("{name}: want {want}, got {other:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    println!(
        "{} adversarial cases refused with the expected reason",
        cases.len()
    );
}

#[test]
fn hostile_input_never_panics() {
    let s = store();
    let t7 = v7();
    let good = token(&key("bob"), "bob", &t7, 7, Act::Approve);
    // Every truncation and every single-character substitution of a good token.
    for i in 0..good.len() {
        let _ = verify(&good[..i], &s, T0);
        for c in ['.', 'A', '_', '-', '=', ' ', 'é'] {
            let mut t = good.clone();
            t.replace_range(i..i + 1, &c.to_string());
            assert!(verify(&t, &s, T0).is_err() || t == good);
        }
    }
    for junk in [
        "",
        ".",
        "..",
        "...",
        "a.b.c",
        "e30.e30.",
        "e30.e30.e30",
        "\u{0}\u{0}",
        "..AAAA",
    ] {
        assert!(verify(junk, &s, T0).is_err(), "{junk:?}");
    }
    // Extreme numbers.
    let mut c = claims_json("bob", &t7, 7, "approve");
    c["exp"] = json!(u64::MAX);
    c["iat"] = json!(u64::MAX);
    assert!(verify(&signed_claims(&key("bob"), &c), &s, T0).is_err());
    c["iat"] = json!(-1);
    assert_eq!(
        verify(&signed_claims(&key("bob"), &c), &s, T0)
            .unwrap_err()
            .reason,
        Reason::MalformedToken
    );
    let u = verify(&good, &s, u64::MAX).unwrap_err();
    assert_eq!(u.reason, Reason::Expired);
}

#[test]
fn token_file_newline_and_skew_are_tolerated() {
    let t7 = v7();
    let tok = format!("{}\n", token(&key("bob"), "bob", &t7, 7, Act::Approve));
    assert!(verify_doc(&tok, &t7, 7).is_ok());
    let mut c = claims_json("bob", &t7, 7, "approve");
    c["iat"] = json!(T0 + 60);
    assert!(
        verify_doc(&signed_claims(&key("bob"), &c), &t7, 7).is_ok(),
        "iat within clock_skew"
    );
    c["iat"] = json!(T0 - 2 * HOUR);
    c["exp"] = json!(T0 - 30);
    assert!(
        verify_doc(&signed_claims(&key("bob"), &c), &t7, 7).is_ok(),
        "exp within clock_skew"
    );
}

// === good paths ===

#[test]
fn standard_on_the_author_token_alone() {
    let t7 = v7();
    let t = doc(8, "alice", "standard")
        .replace("defaultVariant: \"off\"", "defaultVariant: \"on\"")
        .replace("paused: false", "paused: true");
    let a = run(
        &t,
        &[token(&key("alice"), "alice", &t, 8, Act::Author)],
        Some(&t7),
        false,
    );
    let Ruling::Activate(d) = &a.ruling else {
        panic!("{:?}", a.ruling)
    };
    assert_eq!(d.class, ChangeClass::Standard);
    assert!(d.approvers.is_empty());
    assert_eq!(d.author, "alice");
    let c = a.classification.unwrap();
    assert_eq!(
        c.paths,
        [
            "/flags/new-checkout/defaultVariant",
            "/rollouts/checkout/paused"
        ]
    );
    assert!(
        c.explain().starts_with("standard: 2 paths changed"),
        "{}",
        c.explain()
    );
}

#[test]
fn normal_with_two_approvers() {
    let t7 = v7();
    let t8 = v8_normal();
    let bob8 = token(&key("bob"), "bob", &t8, 8, Act::Approve);
    let toks = [
        token(&key("alice"), "alice", &t8, 8, Act::Author),
        bob8.clone(),
    ];
    let a = run(&t8, &toks, Some(&t7), false);
    let Ruling::Pending(d) = &a.ruling else {
        panic!("{:?}", a.ruling)
    };
    assert_eq!(
        d.detail(),
        "needs 1 more approval from role release-manager (bob approved; alice is the author)"
    );
    assert_eq!(d.refusal().unwrap().reason, Reason::InsufficientApprovals);

    let toks = [
        toks[0].clone(),
        bob8,
        token(&key("carol"), "carol", &t8, 8, Act::Approve),
    ];
    let a = run(&t8, &toks, Some(&t7), false);
    let Ruling::Activate(d) = &a.ruling else {
        panic!("{:?}", a.ruling)
    };
    assert_eq!(d.class, ChangeClass::Normal);
    assert_eq!(approver_names(d), ["bob", "carol"]);
    assert_eq!(d.approvers[0].role, "release-manager");
    assert_eq!(d.approvers[0].kid, kid(&key("bob").verifying_key()));
    assert_eq!(d.approvers[0].iat, T0);
    assert!(a.rejected.is_empty());
}

#[test]
fn path_scoped_requirement_says_what_is_missing() {
    let t7 = v7();
    let t = v8_normal().replace(
        "checkout-v1: { endpoints: [\"10.0.0.5:8080\"] }",
        "checkout-v1: { endpoints: [\"10.0.0.5:8080\"], tls: { server_name: a.example } }",
    );
    let mut toks = vec![
        token(&key("alice"), "alice", &t, 8, Act::Author),
        token(&key("bob"), "bob", &t, 8, Act::Approve),
        token(&key("carol"), "carol", &t, 8, Act::Approve),
    ];
    let a = run(&t, &toks, Some(&t7), false);
    let Ruling::Pending(d) = &a.ruling else {
        panic!("{:?}", a.ruling)
    };
    assert_eq!(
        d.detail(),
        "needs 1 more approval from role security because the change touches \
         /upstreams/checkout-v1/tls/server_name (no qualifying approval yet; bob lacks role security; \
         carol lacks role security; alice is the author)"
    );
    toks.push(token(&key("sam"), "sam", &t, 8, Act::Approve));
    let a = run(&t, &toks, Some(&t7), false);
    let Ruling::Activate(d) = &a.ruling else {
        panic!("{:?}", a.ruling)
    };
    assert_eq!(approver_names(d), ["bob", "carol", "sam"]);
}

#[test]
fn emergency_activates_on_its_require() {
    let t7 = v7();
    let t = v8_normal().replace("class: normal", "class: emergency");
    let toks = [
        token(&key("alice"), "alice", &t, 8, Act::Author),
        token(&key("ivan"), "ivan", &t, 8, Act::Approve),
    ];
    let a = run(&t, &toks, Some(&t7), false);
    let Ruling::Activate(d) = &a.ruling else {
        panic!("{:?}", a.ruling)
    };
    assert_eq!(d.class, ChangeClass::Emergency);
    assert_eq!(d.approvers[0].role, "incident-commander");
    // Reviewed afterwards by two release managers who took no part.
    assert_eq!(
        review_outcome(
            "alice",
            &["ivan"],
            &[(&key("bob"), "bob"), (&key("fred"), "fred")]
        ),
        Ok("review closed".into())
    );
    assert!(review_outcome("alice", &["ivan"], &[(&key("bob"), "bob")]).is_err());
}

#[test]
fn emergency_self_approval_when_allowed() {
    let mut trust = trust();
    trust.policy.emergency.allow_self_approval = true;
    let store = sluice::change::TrustStore::new(&trust).unwrap();
    let t7 = v7();
    let t = v8_normal().replace(
        "author: alice, class: normal",
        "author: carol, class: emergency",
    );
    let (a, c) = (parse(&t7), parse(&t));
    let toks = [
        token(&key("carol"), "carol", &t, 8, Act::Author),
        token(&key("carol"), "carol", &t, 8, Act::Approve),
    ];
    let r = assess(
        &store,
        &ChangeInput {
            bytes: t.as_bytes(),
            doc: &c.doc,
            json: &c.json,
            active: Some(&a.json),
            high_water: None,
            tokens: &toks,
            author_review_overdue: false,
            now: T0,
        },
    );
    let Ruling::Activate(d) = &r.ruling else {
        panic!("{:?}", r.ruling)
    };
    assert_eq!(approver_names(d), ["carol"]);
}

#[test]
fn nothing_active_is_normal_and_same_document_is_no_op() {
    let t7 = v7();
    let a = run(
        &t7,
        &[token(&key("alice"), "alice", &t7, 7, Act::Author)],
        None,
        false,
    );
    let Ruling::Pending(d) = &a.ruling else {
        panic!("{:?}", a.ruling)
    };
    assert_eq!(d.class, ChangeClass::Normal);
    assert!(a.classification.unwrap().nothing_active);
    assert_eq!(run(&t7, &[], Some(&t7), false).ruling, Ruling::NoOp);
    // A new version with nothing but the envelope changed is a no-op too.
    let t8 = doc(8, "dave", "emergency");
    assert_eq!(run(&t8, &[], Some(&t7), false).ruling, Ruling::NoOp);
}

#[test]
fn refused_author_token_is_named() {
    let t7 = v7();
    let t8 = v8_normal();
    let mut c = claims_json("alice", &t8, 8, "author");
    c["exp"] = json!(T0 - 2 * HOUR);
    c["iat"] = json!(T0 - 3 * HOUR);
    let a = run(&t8, &[signed_claims(&key("alice"), &c)], Some(&t7), false);
    let Ruling::Refused(r) = &a.ruling else {
        panic!("{:?}", a.ruling)
    };
    assert_eq!(r.reason, Reason::MissingAuthor);
    assert!(r.detail.contains("token 1: expired"), "{}", r.detail);
    assert_eq!(a.rejected[0].refusal.reason, Reason::Expired);
}

#[test]
fn standard_claim_lists_the_paths_that_made_it_normal() {
    let t7 = v7();
    let t = doc(8, "alice", "standard")
        .replace("10.0.0.7:8080", "10.6.6.6:8080")
        .replace("defaultVariant: v1", "defaultVariant: v2")
        .replace("defaultVariant: \"off\"", "defaultVariant: \"on\"");
    let a = run(
        &t,
        &[token(&key("alice"), "alice", &t, 8, Act::Author)],
        Some(&t7),
        false,
    );
    let c = a.classification.unwrap();
    assert_eq!(
        (c.claimed, c.class),
        (ChangeClass::Standard, ChangeClass::Normal)
    );
    let offending: Vec<String> = c.not_standard.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        offending,
        [
            "/flags/backend/defaultVariant is under flag `backend`, which a route uses to pick upstreams",
            "/upstreams/checkout-v2/endpoints/0 is not in standard.allow",
        ]
    );
    assert!(
        c.explain()
            .starts_with("normal: 3 paths changed; it claims standard, but /flags/backend"),
        "{}",
        c.explain()
    );
}

#[test]
fn evaluators_reached_by_a_routing_flag_are_routing() {
    use sluice::change::classify::Why;
    let mut trust = trust();
    trust.policy.standard.allow.push("/$evaluators/**".into());
    trust.policy.standard.allow.push("/fractional".into());
    let store = sluice::change::TrustStore::new(&trust).unwrap();
    let active = json!({
        "routes": [{"to": {"flag": "backend"}}],
        "flags": {"backend": {"targeting": {"if": [{"$ref": "beta"}, "v2", "v1"]}}},
        "$evaluators": {"beta": {"$ref": "staff"}, "staff": {"in": ["@x", {"var": "email"}]}, "other": true},
        "fractional": "v3",
    });
    let mut cand = active.clone();
    cand["$evaluators"]["staff"] = json!({"in": ["@y", {"var": "email"}]});
    cand["$evaluators"]["other"] = json!(false);
    cand["fractional"] = json!("v2");
    let c = classify(store.rules(), Some(&active), &cand, ChangeClass::Standard);
    let whys: Vec<(&str, &Why)> = c
        .not_standard
        .iter()
        .map(|n| (n.path.as_str(), &n.why))
        .collect();
    assert_eq!(
        whys,
        [
            (
                "/$evaluators/staff/in/0",
                &Why::RoutingInput("evaluator `staff`".into())
            ),
            (
                "/fractional",
                &Why::RoutingInput("the fractional hashing".into())
            ),
        ]
    );
    assert_eq!(c.class, ChangeClass::Normal);
}

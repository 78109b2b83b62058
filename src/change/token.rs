//! Approval tokens: JWS compact (RFC 7515) JWTs signed with Ed25519, checked the strict way.
//!
//! Only `alg: EdDSA` is accepted, whatever the header says about anything else; headers that
//! point at keys (`jwk`, `jku`, `x5u`, `x5c`) or demand extensions (`crit`) are refused, so
//! the key always comes from the trust store by `kid`. JSON with a duplicate key is refused
//! (a second parser could read the other copy). Time is passed in, never read here.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::json::parse_strict;
use super::keys;
use super::reason::{Reason, Refusal};
use super::trust::TrustStore;

/// Longest token accepted, in bytes (SPEC §5).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The only JWS algorithm accepted.
pub const ALG: &str = "EdDSA";

/// Header parameters that would let a token bring or point at its own key, or require
/// extensions; all refused.
pub const FORBIDDEN_HEADERS: [&str; 5] = ["jwk", "jku", "x5u", "x5c", "crit"];

/// What a token authorizes (`act` claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Act {
    /// Identifies the author of a change; mandatory for every change.
    Author,
    /// Counts toward `require`.
    Approve,
    /// Post-facto review of an emergency change.
    Review,
    /// Passes a manual gate of a rollout; single use.
    Promote,
    /// Restores an earlier document.
    Revert,
}

/// The claims sluice mints and reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claims {
    /// Principal.
    pub iss: String,
    /// Environment.
    pub aud: String,
    /// Document digest, `sha256:<hex>`.
    pub sub: String,
    /// Document version.
    pub ver: u64,
    /// What the token authorizes.
    pub act: Act,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds.
    pub exp: u64,
    /// Unique token id.
    pub jti: String,
    /// `promote`: the rollout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
    /// `promote`: the step index of the gate (a full promotion: the step it starts from).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    /// `promote`: a full promotion (`sluice rollout promote --full`), not a one-step one.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub full: bool,
}

/// A token whose signature, issuer, audience and validity period have been checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedToken {
    /// The principal: owner of the signing key, equal to `iss`.
    pub principal: String,
    /// Fingerprint of the signing key.
    pub kid: String,
    /// What it authorizes.
    pub act: Act,
    /// The digest it names.
    pub sub: String,
    /// The version it names.
    pub ver: u64,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds.
    pub exp: u64,
    /// Token id.
    pub jti: String,
    /// `promote`: the rollout.
    pub rollout: Option<String>,
    /// `promote`: the step.
    pub step: Option<u64>,
    /// `promote`: the `full` claim (absent: false).
    pub full: bool,
}

/// The use a token is presented for: the acts allowed and the document it must name.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// Acceptable `act` values.
    pub acts: &'a [Act],
    /// The document digest `sub` must equal.
    pub digest: &'a str,
    /// The version `ver` must equal.
    pub version: u64,
    /// `promote`: the rollout and step the token must name.
    pub target: Option<(&'a str, u64)>,
}

// === impl Act ===

impl Act {
    /// The claim value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Act::Author => "author",
            Act::Approve => "approve",
            Act::Review => "review",
            Act::Promote => "promote",
            Act::Revert => "revert",
        }
    }

    /// Reads a claim value.
    pub fn parse(s: &str) -> Option<Act> {
        [
            Act::Author,
            Act::Approve,
            Act::Review,
            Act::Promote,
            Act::Revert,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

impl std::fmt::Display for Act {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Claims ===

impl Claims {
    /// Claims for `document` (its exact bytes) at `version`, valid from `now` for `ttl_secs`,
    /// with a fresh random `jti`.
    pub fn new(
        principal: &str,
        environment: &str,
        document: &[u8],
        version: u64,
        act: Act,
        now: u64,
        ttl_secs: u64,
    ) -> Claims {
        Claims {
            iss: principal.to_string(),
            aud: environment.to_string(),
            sub: super::digest(document),
            ver: version,
            act,
            iat: now,
            exp: now.saturating_add(ttl_secs),
            jti: new_jti(),
            rollout: None,
            step: None,
            full: false,
        }
    }

    /// Adds the `rollout` and `step` of a `promote` token.
    pub fn with_target(mut self, rollout: &str, step: u64) -> Claims {
        self.rollout = Some(rollout.to_string());
        self.step = Some(step);
        self
    }

    /// Marks a `promote` token as a full promotion (claim `full: true`): it then authorizes
    /// skipping every remaining step from its `step`, and nothing else.
    pub fn with_full(mut self) -> Claims {
        self.full = true;
        self
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "iss": self.iss, "aud": self.aud, "sub": self.sub, "ver": self.ver,
            "act": self.act.as_str(), "iat": self.iat, "exp": self.exp, "jti": self.jti,
        });
        if let (Some(map), Some(r)) = (v.as_object_mut(), &self.rollout) {
            map.insert("rollout".into(), json!(r));
        }
        if let (Some(map), Some(s)) = (v.as_object_mut(), self.step) {
            map.insert("step".into(), json!(s));
        }
        if let (Some(map), true) = (v.as_object_mut(), self.full) {
            map.insert("full".into(), json!(true));
        }
        v
    }
}

// === impl VerifiedToken ===

impl VerifiedToken {
    /// Checks `act`, `sub`, `ver` (and `rollout`/`step`) against the use it is presented for.
    pub fn check_use(&self, expected: &Expected<'_>) -> Result<(), Refusal> {
        if !expected.acts.contains(&self.act) {
            let wanted: Vec<&str> = expected.acts.iter().map(|a| a.as_str()).collect();
            return Err(Reason::WrongAction.because(format!(
                "the token of {} is a `{}` token; this needs {}",
                self.principal,
                self.act,
                wanted.join(" or ")
            )));
        }
        if self.sub != expected.digest {
            return Err(Reason::WrongDigest.because(format!(
                "the token of {} names document {}, not this one ({})",
                self.principal, self.sub, expected.digest
            )));
        }
        if self.ver != expected.version {
            return Err(Reason::WrongVersion.because(format!(
                "the token of {} names version {}, the document is version {}",
                self.principal, self.ver, expected.version
            )));
        }
        if let Some((rollout, step)) = expected.target
            && (self.rollout.as_deref() != Some(rollout) || self.step != Some(step))
        {
            return Err(Reason::WrongTarget.because(format!(
                "the token of {} promotes {} step {}, not {rollout} step {step}",
                self.principal,
                self.rollout.as_deref().unwrap_or("(no rollout)"),
                self.step
                    .map_or_else(|| "(none)".to_string(), |s| s.to_string()),
            )));
        }
        Ok(())
    }

    /// Checks that a `promote` token authorizes this kind of promotion: a token for one step
    /// (no `full` claim) is never a full promotion, and a full one never passes just one gate,
    /// so neither can be replayed as the other (`wrong_target`).
    pub fn check_promotion_scope(&self, full: bool) -> Result<(), Refusal> {
        if self.full == full {
            return Ok(());
        }
        let (has, wants) = if self.full {
            ("a full promotion", "a one-step promote")
        } else {
            ("a one-step promote", "a full promotion")
        };
        Err(Reason::WrongTarget.because(format!(
            "the token of {} authorizes {has}, this is {wants}; sign one with{} --full",
            self.principal,
            if full { "" } else { "out" }
        )))
    }

    /// The key under which a single-use token is remembered: issuer and `jti` together,
    /// since `jti` is only unique per issuer.
    pub fn replay_key(&self) -> String {
        json!([self.principal, self.jti]).to_string()
    }
}

/// Refuses a single-use token (`promote`) whose [`VerifiedToken::replay_key`] the caller has
/// already remembered; `seen` answers that question from persisted state.
pub fn check_fresh(t: &VerifiedToken, seen: impl FnOnce(&str) -> bool) -> Result<(), Refusal> {
    if seen(&t.replay_key()) {
        return Err(Reason::TokenReused.because(format!(
            "the `{}` token {} of {} was already used; sign a new one",
            t.act,
            clip(&t.jti),
            t.principal
        )));
    }
    Ok(())
}

/// Verifies signature, issuer, audience and validity period of `token` at `now` (Unix
/// seconds). Leading and trailing whitespace (a token file's newline) is ignored.
pub fn verify(token: &str, store: &TrustStore, now: u64) -> Result<VerifiedToken, Refusal> {
    let token = token.trim_ascii();
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Reason::TokenTooLarge.because(format!(
            "the token is {} bytes; at most {MAX_TOKEN_BYTES} are accepted",
            token.len()
        )));
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(
            "not a JWS compact token (expected three base64url parts separated by dots)",
        ));
    };
    let header = decode_json(h64, "header")?;
    let header = header
        .as_object()
        .ok_or_else(|| malformed("the header is not a JSON object"))?;
    match header.get("alg") {
        Some(Value::String(alg)) if alg == ALG => {}
        Some(Value::String(alg)) => {
            return Err(Reason::BadAlgorithm.because(format!(
                "alg `{}` is refused; only EdDSA is accepted",
                clip(alg)
            )));
        }
        _ => {
            return Err(Reason::BadAlgorithm
                .because("the header has no alg string; only EdDSA is accepted"));
        }
    }
    if let Some(name) = FORBIDDEN_HEADERS.iter().find(|h| header.contains_key(**h)) {
        return Err(Reason::ForbiddenHeader.because(format!(
            "header `{name}` is refused: keys come from trust.principals, by kid"
        )));
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(t)) if t.eq_ignore_ascii_case("JWT") => {}
        Some(_) => return Err(malformed("header typ must be JWT when present")),
    }
    let Some(Value::String(kid)) = header.get("kid") else {
        return Err(malformed("the header has no kid string"));
    };
    let payload = decode_b64(p64, "payload")?;
    let sig = decode_b64(s64, "signature")?;
    let Some(entry) = store.key(kid) else {
        return Err(Reason::UnknownKey.because(format!(
            "no key with kid `{}` in trust.principals",
            clip(kid)
        )));
    };
    let sig: [u8; 64] = sig.as_slice().try_into().map_err(|_| {
        Reason::BadSignature.because(format!(
            "an Ed25519 signature is 64 bytes, this one is {}",
            sig.len()
        ))
    })?;
    // The signing input is the two base64url parts exactly as received (RFC 7515 §5.2).
    let signing_input = &token[..h64.len() + 1 + p64.len()];
    entry
        .key
        .verify_strict(signing_input.as_bytes(), &Signature::from_bytes(&sig))
        .map_err(|_| {
            Reason::BadSignature.because(format!(
                "the signature does not verify under key {kid} of {}",
                entry.principal
            ))
        })?;
    let claims = parse_strict(&payload)
        .map_err(|e| malformed(format!("the claims are not valid JSON: {e}")))?;
    let claims = claims
        .as_object()
        .ok_or_else(|| malformed("the claims are not a JSON object"))?;
    let iss = str_claim(claims, "iss")?;
    if iss != entry.principal {
        return Err(Reason::IssuerMismatch.because(format!(
            "iss is `{}` but key {kid} belongs to {}",
            clip(&iss),
            entry.principal
        )));
    }
    let aud = str_claim(claims, "aud")?;
    if aud != store.environment() {
        return Err(Reason::WrongAudience.because(format!(
            "the token is for environment `{}`, this is `{}`",
            clip(&aud),
            store.environment()
        )));
    }
    let act_text = str_claim(claims, "act")?;
    let act = Act::parse(&act_text).ok_or_else(|| {
        Reason::WrongAction.because(format!("act `{}` is not one sluice knows", clip(&act_text)))
    })?;
    let verified = VerifiedToken {
        principal: iss,
        kid: kid.clone(),
        act,
        sub: str_claim(claims, "sub")?,
        ver: int_claim(claims, "ver")?,
        iat: int_claim(claims, "iat")?,
        exp: int_claim(claims, "exp")?,
        jti: str_claim(claims, "jti")?,
        rollout: match claims.get("rollout") {
            None => None,
            Some(_) => Some(str_claim(claims, "rollout")?),
        },
        step: match claims.get("step") {
            None => None,
            Some(_) => Some(int_claim(claims, "step")?),
        },
        full: match claims.get("full") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(malformed("claim `full` must be true or false")),
        },
    };
    let nbf = match claims.get("nbf") {
        None => None,
        Some(_) => Some(int_claim(claims, "nbf")?),
    };
    check_time(&verified, nbf, store, now)?;
    Ok(verified)
}

/// [`verify`], then [`VerifiedToken::check_use`].
pub fn verify_for(
    token: &str,
    store: &TrustStore,
    expected: &Expected<'_>,
    now: u64,
) -> Result<VerifiedToken, Refusal> {
    let t = verify(token, store, now)?;
    t.check_use(expected)?;
    Ok(t)
}

/// Mints a token: header `{"alg":"EdDSA","typ":"JWT","kid":<fingerprint>}`, signed by `key`.
pub fn sign(claims: &Claims, key: &SigningKey) -> String {
    let header = json!({"alg": ALG, "typ": "JWT", "kid": keys::kid(&key.verifying_key())});
    sign_parts(
        header.to_string().as_bytes(),
        claims.to_json().to_string().as_bytes(),
        key,
    )
}

/// Signs arbitrary header and payload bytes as a JWS compact token. For tools and tests
/// that need tokens sluice itself would never mint.
pub fn sign_parts(header: &[u8], payload: &[u8], key: &SigningKey) -> String {
    let mut out = URL_SAFE_NO_PAD.encode(header);
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(payload));
    let sig = key.sign(out.as_bytes());
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(sig.to_bytes()));
    out
}

/// A fresh random token id (128 bits, hex).
pub fn new_jti() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode(bytes)
}

/// Validity period at `now`, both ends with `clock_skew` (as PyJWT's `leeway`).
fn check_time(
    t: &VerifiedToken,
    nbf: Option<u64>,
    store: &TrustStore,
    now: u64,
) -> Result<(), Refusal> {
    let rules = store.rules();
    let skew = rules.clock_skew_secs;
    if t.iat > now.saturating_add(skew) {
        return Err(Reason::NotYetValid.because(format!(
            "the token of {} is issued at {}, {}s in the future (clock skew allowed: {skew}s)",
            t.principal,
            t.iat,
            t.iat - now
        )));
    }
    if let Some(nbf) = nbf
        && nbf > now.saturating_add(skew)
    {
        return Err(Reason::NotYetValid.because(format!(
            "the token of {} is not valid before {nbf}, {}s from now",
            t.principal,
            nbf - now
        )));
    }
    if t.exp < t.iat {
        return Err(Reason::Expired.because(format!(
            "the token of {} expires before it was issued",
            t.principal
        )));
    }
    if t.exp - t.iat > rules.max_token_lifetime_secs {
        return Err(Reason::LifetimeTooLong.because(format!(
            "the token of {} lives {}s; max_token_lifetime is {}s",
            t.principal,
            t.exp - t.iat,
            rules.max_token_lifetime_secs
        )));
    }
    if t.exp.saturating_add(skew) <= now {
        return Err(Reason::Expired.because(format!(
            "the token of {} expired at {}, {}s ago",
            t.principal,
            t.exp,
            now - t.exp
        )));
    }
    Ok(())
}

fn malformed(detail: impl Into<String>) -> Refusal {
    Reason::MalformedToken.because(detail)
}

fn decode_b64(part: &str, what: &str) -> Result<Vec<u8>, Refusal> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| malformed(format!("the {what} is not unpadded base64url: {e}")))
}

fn decode_json(part: &str, what: &str) -> Result<Value, Refusal> {
    let bytes = decode_b64(part, what)?;
    parse_strict(&bytes).map_err(|e| malformed(format!("the {what} is not valid JSON: {e}")))
}

fn str_claim(claims: &Map<String, Value>, name: &str) -> Result<String, Refusal> {
    match claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(malformed(format!(
            "claim `{name}` must be a non-empty string"
        ))),
        None => Err(malformed(format!("claim `{name}` is missing"))),
    }
}

fn int_claim(claims: &Map<String, Value>, name: &str) -> Result<u64, Refusal> {
    match claims.get(name) {
        Some(v) => v
            .as_u64()
            .ok_or_else(|| malformed(format!("claim `{name}` must be a non-negative integer"))),
        None => Err(malformed(format!("claim `{name}` is missing"))),
    }
}

/// Hostile values go into error details; keep them short.
fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(64).filter(|c| !c.is_control()).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

//! Ed25519 keys as sluice writes them: public keys `ed25519:<base64url 32 bytes>` in
//! `sluice.yaml`, key ids (`kid`) as fingerprints, and private keys as PKCS#8 PEM files that
//! `sluice keygen` creates with mode 0600.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey, EncodePrivateKey, KeypairBytes, spki::der::pem::LineEnding,
};
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::TryRng;
use sha2::{Digest, Sha256};

/// The prefix of a public key line.
pub const KEY_PREFIX: &str = "ed25519:";

/// Why a key could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The public key text is not `ed25519:<base64url 32 bytes>`.
    #[error("a public key must be written `ed25519:<base64url of 32 bytes>`: {0}")]
    BadPublicKey(String),
    /// The 32 bytes are not a usable Ed25519 point.
    #[error("not a usable Ed25519 public key: {0}")]
    WeakPublicKey(String),
    /// The principal name cannot name a key file.
    #[error("principal `{0}` cannot name a key file: use letters, digits, `.`, `_` and `-`")]
    BadPrincipalName(String),
    /// A key file already exists; keygen never overwrites one.
    #[error("{0} already exists; remove it first to make a new key")]
    Exists(PathBuf),
    /// Reading or writing a key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The operating system random generator failed.
    #[error("cannot draw random bytes for a key: {0}")]
    Random(String),
    /// The private key file is not an Ed25519 PKCS#8 PEM key.
    #[error("{path}: not an Ed25519 PKCS#8 PEM private key: {message}")]
    BadPrivateKey {
        /// The file.
        path: PathBuf,
        /// The decoder's complaint.
        message: String,
    },
}

/// What `sluice keygen` made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keygen {
    /// The PKCS#8 PEM private key (mode 0600).
    pub private_key: PathBuf,
    /// The public key line file beside it.
    pub public_key: PathBuf,
    /// The `ed25519:<base64url>` line for `trust.principals.<name>.keys`.
    pub public_line: String,
    /// The key's fingerprint, which tokens carry as `kid`.
    pub kid: String,
}

/// Parses `ed25519:<base64url of 32 bytes>` (no padding), refusing small-order points.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, KeyError> {
    let b64 = text.strip_prefix(KEY_PREFIX).ok_or_else(|| {
        KeyError::BadPublicKey(format!("`{}` lacks the `ed25519:` prefix", shorten(text)))
    })?;
    let raw = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|e| KeyError::BadPublicKey(format!("bad base64url ({e})")))?;
    let bytes: [u8; 32] = raw
        .as_slice()
        .try_into()
        .map_err(|_| KeyError::BadPublicKey(format!("{} bytes instead of 32", raw.len())))?;
    let key =
        VerifyingKey::from_bytes(&bytes).map_err(|e| KeyError::WeakPublicKey(e.to_string()))?;
    // A small-order key lets one signature verify for many messages; nobody needs one.
    if key.is_weak() {
        return Err(KeyError::WeakPublicKey("the point has small order".into()));
    }
    Ok(key)
}

/// The `ed25519:<base64url>` line of a public key.
pub fn public_key_line(key: &VerifyingKey) -> String {
    format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(key.as_bytes()))
}

/// The key id: the first 16 hex digits of sha256 of the raw 32-byte public key.
pub fn kid(key: &VerifyingKey) -> String {
    let hash = Sha256::digest(key.as_bytes());
    hex::encode(&hash[..8])
}

/// Draws a fresh signing key from the operating system's random generator.
pub fn generate() -> Result<SigningKey, KeyError> {
    let mut secret = [0u8; 32];
    rand::rngs::SysRng
        .try_fill_bytes(&mut secret)
        .map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(SigningKey::from_bytes(&secret))
}

/// `sluice keygen`: writes `<dir>/<principal>.pem` (PKCS#8, mode 0600, never overwritten) and
/// `<dir>/<principal>.pub` (the public key line), and returns what to put in `sluice.yaml`.
pub fn keygen(principal: &str, dir: &Path) -> Result<Keygen, KeyError> {
    let valid = !principal.is_empty()
        && !principal.starts_with('.')
        && principal
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid {
        return Err(KeyError::BadPrincipalName(principal.to_string()));
    }
    fs::create_dir_all(dir).map_err(|source| KeyError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let key = generate()?;
    let private_key = dir.join(format!("{principal}.pem"));
    let public_key = dir.join(format!("{principal}.pub"));
    // PKCS#8 v1 (seed only), as `openssl genpkey -algorithm ed25519` writes it: OpenSSL and
    // Python's cryptography refuse the v2 form that carries the public key as well.
    let v1 = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    let pem = v1
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::BadPrivateKey {
            path: private_key.clone(),
            message: e.to_string(),
        })?;
    write_new(&private_key, pem.as_bytes(), 0o600)?;
    let public_line = public_key_line(&key.verifying_key());
    write_new(&public_key, format!("{public_line}\n").as_bytes(), 0o644)?;
    Ok(Keygen {
        private_key,
        public_key,
        public_line,
        kid: kid(&key.verifying_key()),
    })
}

/// Reads a PKCS#8 PEM Ed25519 private key (as written by [`keygen`]).
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| KeyError::BadPrivateKey {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Creates `path` with `mode` from the start (no window where a key is world-readable),
/// refusing to replace an existing file, and syncs it.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists(path.to_path_buf())
        } else {
            io(e)
        }
    })?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Keeps error messages short when someone pastes something long.
fn shorten(text: &str) -> String {
    let mut s: String = text.chars().take(24).collect();
    if text.chars().count() > 24 {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_round_trip_and_kid() {
        let key = generate().unwrap().verifying_key();
        let line = public_key_line(&key);
        assert_eq!(parse_public_key(&line).unwrap(), key);
        let k = kid(&key);
        assert_eq!(k.len(), 16);
        assert_eq!(k, hex::encode(&Sha256::digest(key.as_bytes())[..8]));
    }

    #[test]
    fn refuses_bad_public_keys() {
        assert!(parse_public_key("AAAA").is_err());
        assert!(parse_public_key("ed25519:AAAA").is_err());
        assert!(parse_public_key("ed25519:!!!").is_err());
        let key = generate().unwrap().verifying_key();
        let padded = format!("{}=", public_key_line(&key));
        assert!(parse_public_key(&padded).is_err());
        // The identity point has small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let line = format!("ed25519:{}", URL_SAFE_NO_PAD.encode(identity));
        assert!(matches!(
            parse_public_key(&line),
            Err(KeyError::WeakPublicKey(_))
        ));
    }

    #[test]
    fn keygen_writes_0600_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let made = keygen("alice", dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&made.private_key)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // PKCS#8 v1: version 0, OID 1.3.101.112, the 32-byte seed, nothing else.
        let pem = fs::read_to_string(&made.private_key).unwrap();
        assert!(
            pem.starts_with("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI"),
            "{pem}"
        );
        let key = load_signing_key(&made.private_key).unwrap();
        assert_eq!(public_key_line(&key.verifying_key()), made.public_line);
        assert_eq!(kid(&key.verifying_key()), made.kid);
        assert!(matches!(
            keygen("alice", dir.path()),
            Err(KeyError::Exists(_))
        ));
        assert!(matches!(
            keygen("../x", dir.path()),
            Err(KeyError::BadPrincipalName(_))
        ));
    }
}

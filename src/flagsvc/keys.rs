//! `ofrep.api_keys_file` (SPEC §4): when set, OFREP, its event streams and flagd gRPC need
//! one of the keys in the file, sent as `Authorization: Bearer <key>` or `X-API-Key: <key>`
//! (gRPC: the same names as metadata). One key a line; blank lines and lines starting with
//! `#` are ignored. The file is re-read when it changes; an unreadable file keeps the keys
//! last read (and is logged), so a bad edit never opens the door.
//!
//! Keys are held as SHA-256 digests and looked up by digest, so the comparison never runs
//! over the secret itself. Event streams get a derived token instead of the key (a browser
//! `EventSource` cannot send headers, and the stream URL may end up in logs): the token
//! opens the event stream only, and stops working when its key leaves the file.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::HeaderMap;
use sha2::{Digest, Sha256};

/// The keys in force, reloadable.
#[derive(Debug)]
pub struct ApiKeys {
    /// The file; `None`: no key needed.
    path: Option<PathBuf>,
    current: ArcSwap<KeySet>,
}

/// One reading of the file.
#[derive(Debug, Default)]
struct KeySet {
    /// Digests of the keys.
    keys: HashSet<[u8; 32]>,
    /// Digests of the event-stream tokens derived from them.
    tokens: HashSet<[u8; 32]>,
    /// Digest of the file's bytes, to skip re-reads that change nothing.
    file: [u8; 32],
}

/// Why a request was refused (HTTP 401, gRPC `UNAUTHENTICATED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No key was sent.
    #[error("an API key is required (Authorization: Bearer <key> or X-API-Key: <key>)")]
    Missing,
    /// The key sent is not in the keys file.
    #[error("the API key is not valid")]
    Unknown,
}

// === impl ApiKeys ===

impl ApiKeys {
    /// No key needed.
    pub fn open() -> ApiKeys {
        ApiKeys {
            path: None,
            current: ArcSwap::from_pointee(KeySet::default()),
        }
    }

    /// Keys from `path` (at start: an unreadable file is an error, not an open door).
    pub fn load(path: &Path) -> std::io::Result<ApiKeys> {
        let bytes = std::fs::read(path)?;
        Ok(ApiKeys {
            path: Some(path.to_path_buf()),
            current: ArcSwap::from_pointee(KeySet::parse(&bytes)),
        })
    }

    /// The keys file, if keys are required.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether a key is needed at all.
    pub fn required(&self) -> bool {
        self.path.is_some()
    }

    /// Re-reads the file; returns true when the keys changed.
    pub fn reload(&self) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                if Sha256::digest(&bytes)[..] == self.current.load().file[..] {
                    return false;
                }
                let set = KeySet::parse(&bytes);
                tracing::info!(path = %path.display(), keys = set.keys.len(), "API keys reloaded.");
                self.current.store(Arc::new(set));
                true
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "Cannot read the API keys file; the keys last read stay in force.");
                false
            }
        }
    }

    /// Checks a request's headers (`Authorization: Bearer`, `X-API-Key`).
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Denied> {
        if self.path.is_none() {
            return Ok(());
        }
        let key = presented(headers).ok_or(Denied::Missing)?;
        self.check_key(key)
    }

    /// Checks a key.
    pub fn check_key(&self, key: &str) -> Result<(), Denied> {
        if self.path.is_none() {
            return Ok(());
        }
        let d: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        if self.current.load().keys.contains(&d) {
            Ok(())
        } else {
            Err(Denied::Unknown)
        }
    }

    /// Checks an event-stream token (from the stream URL), or the headers.
    pub fn check_stream(&self, token: Option<&str>, headers: &HeaderMap) -> Result<(), Denied> {
        if self.path.is_none() {
            return Ok(());
        }
        match token {
            Some(t) => {
                let d: [u8; 32] = Sha256::digest(t.as_bytes()).into();
                if self.current.load().tokens.contains(&d) {
                    Ok(())
                } else {
                    Err(Denied::Unknown)
                }
            }
            None => self.check(headers),
        }
    }

    /// The event-stream token for the key these headers carry (already checked), if keys
    /// are required.
    pub fn stream_token(&self, headers: &HeaderMap) -> Option<String> {
        self.path.as_ref()?;
        presented(headers).map(stream_token)
    }
}

// === impl KeySet ===

impl KeySet {
    fn parse(bytes: &[u8]) -> KeySet {
        let text = String::from_utf8_lossy(bytes);
        let lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let mut set = KeySet {
            file: Sha256::digest(bytes).into(),
            ..KeySet::default()
        };
        for k in lines {
            set.keys.insert(Sha256::digest(k.as_bytes()).into());
            set.tokens
                .insert(Sha256::digest(stream_token(k).as_bytes()).into());
        }
        set
    }
}

/// The key a request presents: `Authorization: Bearer <key>`, else `X-API-Key`.
pub fn presented(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    bearer
        .or_else(|| {
            headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        })
        .filter(|k| !k.is_empty())
}

/// The event-stream token derived from `key`.
fn stream_token(key: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"sluice event stream token\0");
    h.update(key.as_bytes());
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn keys_from_a_file_are_checked_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "# ops\nk-one\n\n  k-two  \n").unwrap();
        let keys = ApiKeys::load(&path).unwrap();
        assert_eq!(keys.check(&headers(&[])), Err(Denied::Missing));
        assert_eq!(
            keys.check(&headers(&[("authorization", "Bearer k-one")])),
            Ok(())
        );
        assert_eq!(keys.check(&headers(&[("x-api-key", "k-two")])), Ok(()));
        assert_eq!(
            keys.check(&headers(&[("authorization", "Bearer nope")])),
            Err(Denied::Unknown)
        );
        let token = keys
            .stream_token(&headers(&[("x-api-key", "k-one")]))
            .unwrap();
        assert_eq!(keys.check_stream(Some(&token), &headers(&[])), Ok(()));
        assert_eq!(
            keys.check_stream(Some("k-one"), &headers(&[])),
            Err(Denied::Unknown),
            "a key is not a stream token"
        );
        assert!(!keys.reload(), "nothing changed");
        std::fs::write(&path, "k-three\n").unwrap();
        assert!(keys.reload());
        assert_eq!(keys.check_key("k-one"), Err(Denied::Unknown));
        assert_eq!(
            keys.check_stream(Some(&token), &headers(&[])),
            Err(Denied::Unknown)
        );
        assert_eq!(keys.check_key("k-three"), Ok(()));
        // An unreadable file keeps the keys in force.
        std::fs::remove_file(&path).unwrap();
        assert!(!keys.reload());
        assert_eq!(keys.check_key("k-three"), Ok(()));
        assert_eq!(ApiKeys::open().check(&headers(&[])), Ok(()));
    }
}

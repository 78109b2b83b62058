//! The approvals folder (`paths.approvals`): one token per `*.jwt` file.
//!
//! Tokens pile up there for many changes, so each is routed to the change it names by its
//! `sub` claim, read *without* verification: that only decides which candidate a token is
//! offered to, and the candidate then verifies it fully (a lying `sub` is a bad signature or
//! `wrong_digest`). Files that are not tokens at all are reported once by the gate.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::inputs::read_prefix;
use super::token::MAX_TOKEN_BYTES;

/// Most bytes read from a token file: a little more than a token may be, so a huge file
/// costs nothing and is still refused as `token_too_large`.
const TOKEN_FILE_LIMIT: usize = MAX_TOKEN_BYTES * 2;

/// A token file's content, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderToken {
    /// The file name (no directory).
    pub file: String,
    /// The file's text, trimmed.
    pub token: String,
    /// The `sub` claim, unverified; `None` when the text is not a readable JWS.
    pub sub: Option<String>,
    /// The `act` claim, unverified.
    pub act: Option<String>,
}

/// The folder's tokens and a fingerprint of its names and contents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Folder {
    /// Tokens, sorted by file name.
    pub tokens: Vec<FolderToken>,
    /// sha256 hex over every (name, content); changes whenever a token file does.
    pub fingerprint: String,
}

// === impl Folder ===

impl Folder {
    /// Reads every `*.jwt` file of `dir` (a missing folder is empty). A file is read up to a
    /// little more than the token limit, so a huge file costs nothing and is still refused as
    /// `token_too_large`.
    pub fn read(dir: &Path) -> Folder {
        let mut names: Vec<(String, std::path::PathBuf)> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                // Symlinks too (Kubernetes mounts): what they point to is checked when read.
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    (name.ends_with(".jwt") && !name.starts_with('.')).then(|| (name, e.path()))
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        let mut hash = Sha256::new();
        let mut tokens = Vec::with_capacity(names.len());
        for (name, path) in names {
            // Never blocks: a FIFO here (or a symlink to one) is skipped, not waited on.
            let buf = match read_prefix(&path, TOKEN_FILE_LIMIT) {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(file = %path.display(), error = %e, "Cannot read an approval file; skipping it.");
                    continue;
                }
            };
            hash.update((name.len() as u64).to_le_bytes());
            hash.update(name.as_bytes());
            hash.update((buf.len() as u64).to_le_bytes());
            hash.update(&buf);
            let token = String::from_utf8_lossy(&buf).trim().to_string();
            let claims = peek_claims(&token);
            tokens.push(FolderToken {
                file: name,
                sub: claims.as_ref().and_then(|c| claim(c, "sub")),
                act: claims.as_ref().and_then(|c| claim(c, "act")),
                token,
            });
        }
        Folder {
            tokens,
            fingerprint: hex::encode(hash.finalize()),
        }
    }

    /// The tokens whose (unverified) `sub` is `digest`.
    pub fn naming<'a>(&'a self, digest: &'a str) -> impl Iterator<Item = &'a FolderToken> + 'a {
        self.tokens
            .iter()
            .filter(move |t| t.sub.as_deref() == Some(digest))
    }
}

/// The claims of a JWS compact token, decoded but not verified.
pub fn peek_claims(token: &str) -> Option<serde_json::Value> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let mut parts = token.split('.');
    let (_, Some(p), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let bytes = URL_SAFE_NO_PAD.decode(p).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The unverified `sub` of a token, if it has one.
pub fn peek_sub(token: &str) -> Option<String> {
    peek_claims(token).and_then(|c| claim(&c, "sub"))
}

fn claim(c: &serde_json::Value, name: &str) -> Option<String> {
    c.get(name).and_then(|v| v.as_str()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_jwt_files_in_name_order_and_peeks_sub() {
        let d = tempfile::tempdir().unwrap();
        let claims = URL_SAFE_NO_PAD.encode(br#"{"sub":"sha256:ab","act":"approve"}"#);
        std::fs::write(d.path().join("b.jwt"), format!("e30.{claims}.c2ln\n")).unwrap();
        std::fs::write(d.path().join("a.jwt"), "not a token").unwrap();
        std::fs::write(d.path().join("c.txt"), "ignored").unwrap();
        std::fs::write(d.path().join("big.jwt"), vec![b'x'; 1 << 20]).unwrap();
        let f = Folder::read(d.path());
        let names: Vec<&str> = f.tokens.iter().map(|t| t.file.as_str()).collect();
        assert_eq!(names, ["a.jwt", "b.jwt", "big.jwt"]);
        assert_eq!(f.tokens[0].sub, None);
        assert_eq!(f.tokens[1].sub.as_deref(), Some("sha256:ab"));
        assert_eq!(f.tokens[1].act.as_deref(), Some("approve"));
        assert_eq!(f.tokens[2].token.len(), MAX_TOKEN_BYTES * 2);
        assert_eq!(f.naming("sha256:ab").count(), 1);
        let before = f.fingerprint.clone();
        std::fs::write(d.path().join("a.jwt"), "still not a token").unwrap();
        assert_ne!(Folder::read(d.path()).fingerprint, before);
        assert_eq!(
            Folder::read(&d.path().join("missing")),
            Folder::read(&d.path().join("nope"))
        );
    }
}

//! The state directory: atomic writes, documents by digest, the high-water mark.
//!
//! Every write is temp file → fsync → rename → fsync of the directory, so a crash leaves
//! either the old or the new file, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

pub use super::digest;
pub use super::version::HighWater;

/// Writes `bytes` to `path` atomically (and durably) with the given Unix mode.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let written = open_with_mode(&tmp, mode).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        // A full disk must not also keep the part that did fit.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

fn open_with_mode(path: &Path, mode: u32) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    o.open(path)
}

/// fsyncs a directory so a rename in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

// === impl StateDir ===

impl StateDir {
    /// Opens (creating) the state directory.
    pub fn open(root: &Path) -> io::Result<StateDir> {
        fs::create_dir_all(root.join("docs"))?;
        Ok(StateDir {
            root: root.to_path_buf(),
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The audit log's path.
    pub fn audit_path(&self) -> PathBuf {
        self.root.join("audit.jsonl")
    }

    fn doc_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.root.join("docs").join(format!("{hex}.yaml"))
    }

    /// Stores a document under its digest (idempotent).
    pub fn put_doc(&self, digest: &str, bytes: &[u8]) -> io::Result<()> {
        let p = self.doc_path(digest);
        if p.exists() {
            return Ok(());
        }
        write_atomic(&p, bytes, 0o644)
    }

    /// Reads a stored document, checking that its bytes still have its digest.
    pub fn get_doc(&self, d: &str) -> io::Result<Vec<u8>> {
        let bytes = fs::read(self.doc_path(d))?;
        if digest(&bytes) != d {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("stored document {d} does not match its digest"),
            ));
        }
        Ok(bytes)
    }

    /// The persisted high-water mark (`None` before the first activation).
    pub fn high_water(&self) -> io::Result<Option<HighWater>> {
        self.read_json("high_water.json")
    }

    /// Persists the high-water mark.
    pub fn set_high_water(&self, hw: &HighWater) -> io::Result<()> {
        let b = serde_json::to_vec(hw).map_err(io::Error::other)?;
        write_atomic(&self.root.join("high_water.json"), &b, 0o644)
    }

    /// Reads a JSON state file (None when absent).
    pub fn read_json<T: serde::de::DeserializeOwned>(&self, name: &str) -> io::Result<Option<T>> {
        match fs::read(self.root.join(name)) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a JSON state file atomically.
    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> io::Result<()> {
        let b = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
        write_atomic(&self.root.join(name), &b, 0o644)
    }

    /// The admin token: read from `token_file` if given, else from `state/admin.token`,
    /// generated (random, mode 0600) on first start.
    pub fn admin_token(&self, token_file: Option<&Path>) -> io::Result<String> {
        if let Some(f) = token_file {
            let t = fs::read_to_string(f)?.trim().to_string();
            if t.len() < 16 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "admin token in {} is shorter than 16 characters",
                        f.display()
                    ),
                ));
            }
            return Ok(t);
        }
        let p = self.root.join("admin.token");
        match fs::read_to_string(&p) {
            Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
            Ok(_) | Err(_) => {
                use base64::Engine;
                let raw: [u8; 32] = rand::random();
                let t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
                write_atomic(&p, format!("{t}\n").as_bytes(), 0o600)?;
                Ok(t)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_and_high_water() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::open(d.path()).unwrap();
        let dg = digest(b"version: 1");
        s.put_doc(&dg, b"version: 1").unwrap();
        assert_eq!(s.get_doc(&dg).unwrap(), b"version: 1");
        assert_eq!(s.high_water().unwrap(), None);
        let hw = HighWater {
            version: 3,
            digest: dg,
        };
        s.set_high_water(&hw).unwrap();
        assert_eq!(s.high_water().unwrap(), Some(hw));
    }

    #[test]
    fn admin_token_is_generated_once_with_mode_0600() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::open(d.path()).unwrap();
        let t1 = s.admin_token(None).unwrap();
        let t2 = s.admin_token(None).unwrap();
        assert_eq!(t1, t2);
        assert!(t1.len() >= 40);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(d.path().join("admin.token"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}

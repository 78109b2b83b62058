//! Reading what operators drop in for the gate — `traffic.yaml`, token files — so that no
//! such file can stall or flood the control plane.
//!
//! The control thread reads these files while it holds the change gate: a FIFO (or a
//! symlink to one, or a device) opened the usual way blocks until someone writes to it, and
//! with it status, audit, pushes and reverts. So a file is opened non-blocking, must be a
//! regular file once open (checked on the open descriptor, never by a racy look at the
//! path; a symlink to a regular file is fine, as Kubernetes mounts use them), and is read up
//! to a limit.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

/// Largest traffic document accepted from any source (file, `PUT /api/v1/traffic`).
pub const MAX_DOCUMENT_BYTES: usize = 16 << 20;

/// Why an input file was not read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// It could not be opened or read.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// It is a FIFO, a device, a socket or a directory.
    #[error("not a regular file ({0})")]
    NotRegular(&'static str),
    /// It is larger than the limit.
    #[error("larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
}

// === impl InputError ===

impl InputError {
    /// Whether the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, InputError::Io(e) if e.kind() == io::ErrorKind::NotFound)
    }
}

/// Reads a regular file of at most `limit` bytes without ever blocking on what it is.
pub fn read_regular(path: &Path, limit: usize) -> Result<Vec<u8>, InputError> {
    let buf = read_prefix(path, limit + 1)?;
    if buf.len() > limit {
        return Err(InputError::TooLarge { limit });
    }
    Ok(buf)
}

/// Reads the first `limit` bytes of a regular file without ever blocking on what it is.
pub fn read_prefix(path: &Path, limit: usize) -> Result<Vec<u8>, InputError> {
    let f = open_nonblocking(path)?;
    let meta = f.metadata()?;
    let t = meta.file_type();
    if !t.is_file() {
        return Err(InputError::NotRegular(kind_name(&t)));
    }
    let mut buf = Vec::with_capacity(meta.len().min(limit as u64) as usize);
    f.take(limit as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

fn open_nonblocking(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting for a
        // writer. O_NOCTTY: a terminal device never becomes ours.
        o.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    o.open(path)
}

fn kind_name(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    if t.is_dir() {
        return "a directory";
    }
    "not a file"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_files_and_refuses_fifos_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.jwt");
        std::fs::write(&f, "token").unwrap();
        assert_eq!(read_regular(&f, 10).unwrap(), b"token");
        assert!(matches!(
            read_regular(&f, 3),
            Err(InputError::TooLarge { limit: 3 })
        ));
        assert!(
            read_regular(&d.path().join("missing"), 10)
                .unwrap_err()
                .is_not_found()
        );
        assert!(matches!(
            read_regular(d.path(), 10),
            Err(InputError::NotRegular("a directory"))
        ));
        #[cfg(unix)]
        {
            let fifo = d.path().join("fifo");
            // The standard library cannot make a FIFO, and the crate forbids `unsafe`:
            // coreutils' mkfifo does.
            let made = std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .expect("mkfifo runs");
            assert!(made.success());
            let link = d.path().join("link.jwt");
            std::os::unix::fs::symlink(&fifo, &link).unwrap();
            // Would block forever with a plain open: nobody writes to the FIFO.
            assert!(matches!(
                read_regular(&link, 10),
                Err(InputError::NotRegular("a FIFO"))
            ));
            let to_file = d.path().join("to-file.jwt");
            std::os::unix::fs::symlink(&f, &to_file).unwrap();
            assert_eq!(read_regular(&to_file, 10).unwrap(), b"token");
        }
    }
}

//! Watching `traffic.yaml` and the approvals folder.
//!
//! The watcher only signals; the control loop re-reads the file and submits it to the gate
//! when its bytes changed. Directories are watched, not files, because editors replace files
//! by rename and Kubernetes swaps ConfigMap symlinks: a watch on the old inode would go
//! silent. A slow poll backs the watch up on filesystems without events.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// How long events settle before the file is read.
pub const DEBOUNCE: Duration = Duration::from_millis(150);
/// Fallback poll period.
pub const POLL: Duration = Duration::from_secs(2);

/// Whether an event can mean new bytes. Opens and reads (inotify's `IN_OPEN`,
/// `IN_ACCESS`, `IN_CLOSE_NOWRITE`) cannot, and must not signal: the control loop's own
/// read of the file is one, and would start the next read, forever.
fn changes(ev: &notify::Event) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode};
    match ev.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Starts watching the folders of `paths`; each event sends on `tx`. Keep the returned
/// watcher alive for as long as events are wanted.
pub fn watch(paths: &[&Path], tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.as_ref().is_ok_and(changes) {
            // A full channel already holds a pending signal: nothing is lost.
            let _ = tx.try_send(());
        }
    })?;
    let mut dirs: Vec<PathBuf> = Vec::new();
    for p in paths {
        let dir = if p.is_dir() {
            p.to_path_buf()
        } else {
            p.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf()
        };
        if !dirs.contains(&dir) && dir.exists() {
            w.watch(&dir, RecursiveMode::NonRecursive)?;
            dirs.push(dir);
        }
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reading a watched file (as the control loop does after every signal) signals nothing;
    /// writing it does.
    #[test]
    fn reads_do_not_signal_and_writes_do() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("traffic.yaml");
        std::fs::write(&file, "routes: []\n").unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        let _w = watch(&[file.as_path()], tx).unwrap();
        for _ in 0..20 {
            assert_eq!(std::fs::read_to_string(&file).unwrap(), "routes: []\n");
        }
        // Events of the reads, had they signalled, arrive within milliseconds.
        std::thread::sleep(Duration::from_millis(500));
        assert!(rx.try_recv().is_err(), "a read signalled a change");
        std::fs::write(&file, "routes: []\n# changed\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while rx.try_recv().is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "a write did not signal"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

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

/// Starts watching the folders of `paths`; each event sends on `tx`. Keep the returned
/// watcher alive for as long as events are wanted.
pub fn watch(paths: &[&Path], tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
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

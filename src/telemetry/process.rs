//! The standard `process_*` metrics (the names every Prometheus client library uses), read
//! from `/proc` at scrape time: nothing runs between scrapes and the request path never
//! sees them. On systems without `/proc` the families are left out.

#![allow(unsafe_code)] // sysconf, getrlimit and prctl: the only unsafe in sluice, four libc calls.

use std::fmt::Write as _;

/// Turns transparent huge pages off for this process, for every mapping present and future
/// (the `sluice` binary calls it first thing in `main`).
///
/// mimalloc reserves its arenas committed on Linux and `madvise(MADV_HUGEPAGE)`s them, so
/// with THP in `madvise` mode (Debian's default) the few small blocks an idle connection
/// keeps are backed by 2 MiB pages: 21 KiB of resident memory per idle keep-alive
/// connection instead of 13.9 KiB (`examples/idle_memory.rs`, README "Memory per idle
/// connection"), and twice the resident set at start. This is what `MIMALLOC_ALLOW_THP=0`
/// does, made the default: the flag is per process, so it also covers the arena mimalloc
/// reserved before `main`.
#[cfg(target_os = "linux")]
pub fn no_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and reads no memory of ours.
    // A kernel without it (before 3.15) answers EINVAL: nothing to turn off then.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

/// Transparent huge pages are a Linux matter: nothing to do elsewhere.
#[cfg(not(target_os = "linux"))]
pub fn no_transparent_huge_pages() {}

/// One reading of the process's resources.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in bytes.
    pub resident_bytes: u64,
    /// Virtual memory size, in bytes.
    pub virtual_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on file descriptors.
    pub max_fds: u64,
    /// Start time since the Unix epoch, in seconds.
    pub start_time_seconds: f64,
}

/// The families, with their help and type, rendered in the exposition format.
pub fn render(out: &mut String) {
    let Some(s) = Sample::read() else {
        return;
    };
    let mut family = |f: super::Family, value: String| {
        let kind = match f.kind {
            super::Kind::Counter => "counter",
            _ => "gauge",
        };
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {kind}", f.name);
        let _ = writeln!(out, "{} {value}", f.name);
    };
    family(super::PROCESS_CPU, format!("{}", s.cpu_seconds));
    family(super::PROCESS_RESIDENT, s.resident_bytes.to_string());
    family(super::PROCESS_VIRTUAL, s.virtual_bytes.to_string());
    family(super::PROCESS_OPEN_FDS, s.open_fds.to_string());
    family(super::PROCESS_MAX_FDS, s.max_fds.to_string());
    family(
        super::PROCESS_START_TIME,
        format!("{}", s.start_time_seconds),
    );
}

// === impl Sample ===

impl Sample {
    /// Reads `/proc/self`; `None` where it does not exist or does not parse.
    pub fn read() -> Option<Sample> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) is in parentheses and may contain spaces.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state): field N is f[N - 3].
        let field = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
        let ticks = clock_ticks()?;
        let (utime, stime) = (field(14)?, field(15)?);
        let start_ticks = field(22)?;
        let virtual_bytes = field(23)?;
        let rss_pages = field(24)?;
        let boot = boot_time()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        Some(Sample {
            cpu_seconds: (utime + stime) as f64 / ticks as f64,
            resident_bytes: rss_pages * page_size()?,
            virtual_bytes,
            open_fds,
            max_fds: max_fds()?,
            start_time_seconds: boot as f64 + start_ticks as f64 / ticks as f64,
        })
    }
}

fn clock_ticks() -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|t| *t > 0)
}

fn page_size() -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|p| *p > 0)
}

fn max_fds() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    Some(lim.rlim_cur)
}

/// Boot time in seconds since the epoch (`btime` in `/proc/stat`).
fn boot_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let Some(s) = Sample::read() else {
            eprintln!("no /proc here: process metrics are left out");
            return;
        };
        assert!(s.resident_bytes > 1 << 20, "{s:?}");
        assert!(s.virtual_bytes >= s.resident_bytes, "{s:?}");
        assert!(s.open_fds >= 3 && s.open_fds <= s.max_fds, "{s:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            s.start_time_seconds <= now + 1.0 && s.start_time_seconds > now - 86_400.0,
            "{s:?}"
        );
        let mut out = String::new();
        render(&mut out);
        for name in [
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_max_fds",
        ] {
            assert!(out.contains(&format!("# TYPE {name} ")), "{out}");
        }
    }
}

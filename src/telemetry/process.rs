//! The standard `process_*` metrics (the names every Prometheus client library uses), read
//! from `/proc` at scrape time: nothing runs between scrapes and the request path never
//! sees them. On systems without `/proc` the families are left out. Everything comes from
//! files under `/proc` (no libc call): the crate forbids `unsafe`.

use std::fmt::Write as _;

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

/// `AT_PAGESZ` and `AT_CLKTCK` in the auxiliary vector (`getauxval(3)`).
const AT_PAGESZ: u64 = 6;
const AT_CLKTCK: u64 = 17;

/// The clock tick rate the kernel counts CPU time in (`sysconf(_SC_CLK_TCK)`).
fn clock_ticks() -> Option<u64> {
    auxv(AT_CLKTCK)
}

/// The page size RSS is counted in (`sysconf(_SC_PAGESIZE)`).
fn page_size() -> Option<u64> {
    auxv(AT_PAGESZ)
}

/// One entry of the auxiliary vector the kernel gave this process, read from
/// `/proc/self/auxv` (pairs of native words: type, value) rather than through libc, so
/// that the crate needs no `unsafe`.
fn auxv(key: u64) -> Option<u64> {
    const WORD: usize = std::mem::size_of::<usize>();
    let bytes = std::fs::read("/proc/self/auxv").ok()?;
    let word = |b: &[u8]| -> Option<u64> {
        let w: [u8; WORD] = b.try_into().ok()?;
        u64::try_from(usize::from_ne_bytes(w)).ok()
    };
    bytes
        .chunks_exact(2 * WORD)
        .filter_map(|pair| Some((word(&pair[..WORD])?, word(&pair[WORD..])?)))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .filter(|v| *v > 0)
}

/// The soft limit on open files (`getrlimit(RLIMIT_NOFILE)`), from `/proc/self/limits`;
/// `unlimited` is `u64::MAX`, as `RLIM_INFINITY`.
fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let soft = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?;
    match soft {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
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
        // The values libc would give: the kernel's tick rate and page size on Linux.
        assert!(
            clock_ticks().is_some_and(|t| (50..=10_000).contains(&t)),
            "{:?}",
            clock_ticks()
        );
        assert!(
            page_size().is_some_and(|p| p >= 4096 && p.is_power_of_two()),
            "{:?}",
            page_size()
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

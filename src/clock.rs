//! Clock helpers: an injectable wall clock, monotonic seconds for the rollout windows, and
//! RFC 3339 formatting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time; tests inject a manual one.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// A clock that moves only when told, in milliseconds since the epoch.
    Manual(Arc<AtomicU64>),
}

// === impl Clock ===

impl Clock {
    /// A manual clock starting at `unix_ms`.
    pub fn manual(unix_ms: u64) -> Self {
        Clock::Manual(Arc::new(AtomicU64::new(unix_ms)))
    }

    /// Now.
    pub fn now(&self) -> SystemTime {
        match self {
            Clock::System => SystemTime::now(),
            Clock::Manual(ms) => UNIX_EPOCH + Duration::from_millis(ms.load(Ordering::SeqCst)),
        }
    }

    /// Now, in whole seconds since the epoch.
    pub fn unix_secs(&self) -> u64 {
        unix_secs(self.now())
    }

    /// Now, in milliseconds since the epoch.
    pub fn unix_millis(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    /// Moves a manual clock forward (no effect on the system clock).
    pub fn advance(&self, by: Duration) {
        if let Clock::Manual(ms) = self {
            ms.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
        }
    }
}

/// The process-wide origin of [`mono_secs`].
static MONO_ANCHOR: OnceLock<Instant> = OnceLock::new();

/// Whole seconds from a process-wide monotonic origin to `at` (0 for instants before it).
///
/// Rollout windows are tagged with these seconds rather than wall-clock ones: a stepped wall
/// clock (NTP, a manual test clock) must never make a writer reset a slot holding newer
/// counts. The data plane and the rollout runner both use this one origin, so their seconds
/// agree; the origin is fixed by the first call (an instance calls it at start).
#[inline]
pub fn mono_secs(at: Instant) -> u64 {
    at.saturating_duration_since(*MONO_ANCHOR.get_or_init(Instant::now))
        .as_secs()
}

/// Milliseconds from the same origin as [`mono_secs`].
#[inline]
pub fn mono_millis(at: Instant) -> u64 {
    let d = at.saturating_duration_since(*MONO_ANCHOR.get_or_init(Instant::now));
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Seconds since the epoch (0 before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// RFC 3339 in UTC with milliseconds: `2026-11-26T10:09:04.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_687_744_123);
        assert_eq!(rfc3339(t), "2026-11-26T10:09:04.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn manual_clock_moves_when_told() {
        let c = Clock::manual(1000);
        assert_eq!(c.unix_secs(), 1);
        c.advance(Duration::from_secs(5));
        assert_eq!(c.unix_secs(), 6);
    }
}

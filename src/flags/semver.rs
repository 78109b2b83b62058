//! Semantic versions for flagd's `sem_ver` operator (SemVer 2.0.0 precedence; build
//! metadata ignored), without allocating: a version borrows its pre-release text.

use std::cmp::Ordering;

/// A parsed version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Version<'s> {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    pre: Option<&'s str>,
}

// === impl Version ===

impl<'s> Version<'s> {
    /// A full SemVer 2.0.0 string, as the flagd schema requires of literal versions.
    pub(crate) fn parse_strict(s: &'s str) -> Option<Self> {
        parse(s, false)
    }

    /// flagd's reading of a context value: an optional `v`/`V` prefix, and partial versions
    /// (`1`, `1.2`) padded with zeros.
    pub(crate) fn parse_flagd(s: &'s str) -> Option<Self> {
        let s = s.strip_prefix(['v', 'V']).unwrap_or(s);
        parse(s, true)
    }

    /// SemVer precedence.
    pub(crate) fn precedence(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (self.pre, other.pre) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => compare_pre(a, b),
            })
    }
}

fn parse(s: &str, pad: bool) -> Option<Version<'_>> {
    let core_end = s.find(['-', '+']).unwrap_or(s.len());
    let (core, rest) = s.split_at(core_end);
    let mut nums = [0u64; 3];
    let mut count = 0;
    for part in core.split('.') {
        if count == 3 {
            return None;
        }
        nums[count] = numeric(part)?;
        count += 1;
    }
    if count < 3 && !pad {
        return None;
    }
    let (pre, build) = match rest.strip_prefix('-') {
        Some(r) => match r.split_once('+') {
            Some((p, b)) => (Some(p), Some(b)),
            None => (Some(r), None),
        },
        None => (None, rest.strip_prefix('+')),
    };
    if !rest.is_empty() && pre.is_none() && build.is_none() {
        return None;
    }
    if let Some(p) = pre
        && !p.split('.').all(pre_ident)
    {
        return None;
    }
    if let Some(b) = build
        && !b
            .split('.')
            .all(|i| !i.is_empty() && i.bytes().all(ident_byte))
    {
        return None;
    }
    Some(Version {
        major: nums[0],
        minor: nums[1],
        patch: nums[2],
        pre,
    })
}

/// `0` or a number without a leading zero.
fn numeric(part: &str) -> Option<u64> {
    if part.is_empty()
        || !part.bytes().all(|b| b.is_ascii_digit())
        || (part.len() > 1 && part.starts_with('0'))
    {
        return None;
    }
    part.parse().ok()
}

fn ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

fn pre_ident(i: &str) -> bool {
    if i.is_empty() || !i.bytes().all(ident_byte) {
        return false;
    }
    // A numeric identifier has no leading zero.
    !(i.bytes().all(|b| b.is_ascii_digit()) && i.len() > 1 && i.starts_with('0'))
}

fn compare_pre(a: &str, b: &str) -> Ordering {
    let mut xs = a.split('.');
    let mut ys = b.split('.');
    loop {
        match (xs.next(), ys.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let xn = x.bytes().all(|c| c.is_ascii_digit());
                let yn = y.bytes().all(|c| c.is_ascii_digit());
                let o = match (xn, yn) {
                    // Numeric identifiers have no leading zeros: longer is larger.
                    (true, true) => x.len().cmp(&y.len()).then_with(|| x.cmp(y)),
                    (true, false) => Ordering::Less,
                    (false, true) => Ordering::Greater,
                    (false, false) => x.cmp(y),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version<'_> {
        Version::parse_flagd(s).unwrap()
    }

    #[test]
    fn precedence_follows_semver() {
        let order = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
        ];
        for w in order.windows(2) {
            assert_eq!(
                v(w[0]).precedence(&v(w[1])),
                Ordering::Less,
                "{} < {}",
                w[0],
                w[1]
            );
        }
        assert_eq!(v("1.0.0+a").precedence(&v("1.0.0+b")), Ordering::Equal);
    }

    #[test]
    fn flagd_reading_pads_and_strips_prefix() {
        assert_eq!(v("1"), v("1.0.0"));
        assert_eq!(v("V1.2"), v("1.2.0"));
        assert!(Version::parse_flagd("2.0.0.0").is_none());
        assert!(Version::parse_flagd("01.0.0").is_none());
        assert!(Version::parse_flagd("1.0.0-").is_none());
        assert!(Version::parse_strict("1.0").is_none());
        assert!(Version::parse_strict("v1.0.0").is_none());
        assert!(Version::parse_strict("1.0.0-rc.1+build.5").is_some());
    }
}

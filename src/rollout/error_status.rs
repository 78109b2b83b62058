//! Which responses count as errors for a rollout: `analysis.error_statuses` compiled into a
//! bitmap once, so the data plane answers with one shift and mask.

use thiserror::Error;

use crate::config::traffic::parse_status_class;

/// Statuses the bitmap covers (100..=599 are the only valid ones; the rest stay clear).
const SPAN: usize = 640;

/// `error_statuses` compiled: a bit per status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorStatuses {
    bits: [u64; SPAN / 64],
}

/// An `error_statuses` entry that is neither a status (`503`) nor a class (`5xx`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("`{0}` is neither a status (503) nor a class (5xx)")]
pub struct InvalidErrorStatus(pub String);

// === impl ErrorStatuses ===

impl ErrorStatuses {
    /// Compiles entries such as `5xx`, `429`.
    pub fn compile<S: AsRef<str>>(entries: &[S]) -> Result<Self, InvalidErrorStatus> {
        let ranges = entries
            .iter()
            .map(|e| {
                let e = e.as_ref();
                parse_status_class(e).ok_or_else(|| InvalidErrorStatus(e.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_ranges(&ranges))
    }

    /// From inclusive status ranges already checked (`5xx` is `(500, 599)`).
    pub fn from_ranges(ranges: &[(u16, u16)]) -> Self {
        let mut me = ErrorStatuses {
            bits: [0; SPAN / 64],
        };
        for &(low, high) in ranges {
            for code in low..=high {
                let c = code as usize;
                if c < SPAN {
                    me.bits[c / 64] |= 1 << (c % 64);
                }
            }
        }
        me
    }

    /// Whether a response with `status` counts as an error. `sluice_generated` marks a response
    /// sluice produced itself (`x-sluice-error`): its 502, 503 and 504 always count, because they
    /// mean the variant could not be reached or did not answer in time.
    #[inline]
    pub fn is_error(&self, status: u16, sluice_generated: bool) -> bool {
        if sluice_generated && matches!(status, 502..=504) {
            return true;
        }
        let c = status as usize;
        c < SPAN && self.bits[c / 64] & (1 << (c % 64)) != 0
    }
}

impl Default for ErrorStatuses {
    /// The default `error_statuses: ["5xx"]`.
    fn default() -> Self {
        let mut me = ErrorStatuses {
            bits: [0; SPAN / 64],
        };
        for c in 500..600usize {
            me.bits[c / 64] |= 1 << (c % 64);
        }
        me
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_single_codes() {
        let s = ErrorStatuses::compile(&["5xx", "429"]).unwrap();
        for c in 500..=599 {
            assert!(s.is_error(c, false), "{c}");
        }
        assert!(s.is_error(429, false));
        for c in [0, 99, 200, 404, 428, 430, 499, 600, 639, 640, 65535] {
            assert!(!s.is_error(c, false), "{c}");
        }
        assert_eq!(
            ErrorStatuses::default(),
            ErrorStatuses::compile(&["5xx"]).unwrap()
        );
    }

    #[test]
    fn sluice_gateway_errors_always_count() {
        let s = ErrorStatuses::compile(&["429"]).unwrap();
        assert!(!s.is_error(503, false), "an upstream 503 is not listed");
        for c in [502, 503, 504] {
            assert!(s.is_error(c, true), "{c}");
        }
        assert!(
            !s.is_error(500, true),
            "sluice's own errors are 502/503/504 only"
        );
        assert!(
            !s.is_error(404, true),
            "no_route is not the variant's fault"
        );
    }

    #[test]
    fn rejects_what_validation_rejects() {
        assert_eq!(
            ErrorStatuses::compile(&["6xx"]),
            Err(InvalidErrorStatus("6xx".into()))
        );
        assert!(ErrorStatuses::compile(&["50"]).is_err());
        assert!(ErrorStatuses::compile::<&str>(&[]).is_ok());
    }
}

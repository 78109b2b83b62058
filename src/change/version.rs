//! Anti-rollback (SPEC §5): versions strictly increase across activations, by at most
//! `max_version_step`; reusing the high-water version for other bytes is equivocation. Pure:
//! the caller persists the high-water mark in `state_dir`.

use serde::{Deserialize, Serialize};

use super::reason::{Reason, Refusal};

/// The highest version ever activated, with its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HighWater {
    /// The version.
    pub version: u64,
    /// `sha256:<hex>` of that document.
    pub digest: String,
}

/// A candidate version that passed the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionCheck {
    /// Above the mark, within the step: may activate.
    Newer,
    /// The very document at the mark: nothing to do.
    Same,
}

/// Checks `version` (of the document with `digest`) against the high-water mark (`None`:
/// nothing ever activated, the mark counts as 0 so the step limit still binds the first
/// version and a huge first version cannot lock out every later one).
pub fn check_version(
    version: u64,
    digest: &str,
    mark: Option<&HighWater>,
    max_step: u64,
) -> Result<VersionCheck, Refusal> {
    let high = mark.map_or(0, |m| m.version);
    if let Some(m) = mark
        && version == m.version
    {
        return if digest == m.digest {
            Ok(VersionCheck::Same)
        } else {
            Err(Reason::Equivocation.because(format!(
                "version {version} was already activated as {}; this document ({digest}) reuses the version with other content",
                m.digest
            )))
        };
    }
    if version <= high {
        return Err(Reason::VersionNotIncreasing.because(format!(
            "version {version} does not exceed the high-water mark {high}"
        )));
    }
    if version - high > max_step {
        return Err(Reason::VersionStepTooLarge.because(format!(
            "version {version} exceeds the high-water mark {high} by {}; max_version_step is {max_step}",
            version - high
        )));
    }
    Ok(VersionCheck::Newer)
}

/// Whether a pending change at `version` can never activate any more and is dropped.
pub fn is_stale(version: u64, mark: Option<&HighWater>) -> bool {
    mark.is_some_and(|m| version <= m.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(v: u64) -> HighWater {
        HighWater {
            version: v,
            digest: "sha256:aa".into(),
        }
    }

    #[test]
    fn versions() {
        let m = mark(7);
        assert_eq!(
            check_version(8, "sha256:bb", Some(&m), 1000),
            Ok(VersionCheck::Newer)
        );
        assert_eq!(
            check_version(7, "sha256:aa", Some(&m), 1000),
            Ok(VersionCheck::Same)
        );
        assert_eq!(
            check_version(7, "sha256:bb", Some(&m), 1000)
                .unwrap_err()
                .reason,
            Reason::Equivocation
        );
        assert_eq!(
            check_version(6, "sha256:bb", Some(&m), 1000)
                .unwrap_err()
                .reason,
            Reason::VersionNotIncreasing
        );
        assert_eq!(
            check_version(1008, "sha256:bb", Some(&m), 1000)
                .unwrap_err()
                .reason,
            Reason::VersionStepTooLarge
        );
        assert_eq!(
            check_version(1007, "sha256:bb", Some(&m), 1000),
            Ok(VersionCheck::Newer)
        );
        assert_eq!(
            check_version(u64::MAX, "x", Some(&m), u64::MAX),
            Ok(VersionCheck::Newer)
        );
        assert_eq!(check_version(1, "x", None, 1000), Ok(VersionCheck::Newer));
        assert_eq!(
            check_version(0, "x", None, 1000).unwrap_err().reason,
            Reason::VersionNotIncreasing
        );
        assert!(is_stale(7, Some(&m)) && !is_stale(8, Some(&m)) && !is_stale(1, None));
    }
}

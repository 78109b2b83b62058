//! The change policy of `trust.policy`, compiled: the requirements (`count` principals
//! holding one of `roles`, optionally only for some paths), standard paths, token lifetime
//! and review deadlines. Read by classification, the trust store and the policy; it reads
//! none of them, so `change/` has no import cycle.

use super::glob::Glob;
use crate::config::ConfigError;
use crate::config::settings::{Policy, Requirement};

/// The change policy, compiled.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Longest `exp - iat`, seconds.
    pub max_token_lifetime_secs: u64,
    /// Tolerance on `iat`, `nbf` and `exp`, seconds.
    pub clock_skew_secs: u64,
    /// How far a version may exceed the high-water mark.
    pub max_version_step: u64,
    /// Pre-approved paths.
    pub standard_allow: Vec<Glob>,
    /// `normal.require`.
    pub normal: Vec<Rule>,
    /// `emergency.require`.
    pub emergency: Vec<Rule>,
    /// Whether the author counts toward `emergency.require`.
    pub allow_self_approval: bool,
    /// Time allowed for the review of an emergency, seconds.
    pub review_within_secs: u64,
    /// `emergency.review`.
    pub review: Vec<Rule>,
}

/// One requirement: `count` distinct principals holding one of `roles`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Where it is written, e.g. `normal.require[1]`.
    pub source: String,
    /// Distinct principals needed.
    pub count: usize,
    /// Roles that count.
    pub roles: Vec<String>,
    /// Only when the diff touches one of these.
    pub paths: Option<Vec<Glob>>,
}

// === impl Rules ===

impl Rules {
    /// Compiles `trust.policy`, collecting every error with its path.
    pub fn compile(p: &Policy) -> Result<Rules, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let standard_allow = p
            .standard
            .allow
            .iter()
            .enumerate()
            .filter_map(|(i, g)| {
                Glob::parse(g)
                    .map_err(|e| {
                        errors.push(ConfigError::plain(
                            &format!("trust.policy.standard.allow[{i}]"),
                            e,
                        ))
                    })
                    .ok()
            })
            .collect();
        let mut rules = |section: &str, reqs: &[Requirement]| -> Vec<Rule> {
            reqs.iter()
                .enumerate()
                .map(|(i, r)| Rule::compile(&format!("{section}[{i}]"), r, &mut errors))
                .collect()
        };
        let normal = rules("normal.require", &p.normal.require);
        let emergency = rules("emergency.require", &p.emergency.require);
        let review = rules("emergency.review", &p.emergency.review);
        if p.max_version_step == 0 {
            errors.push(ConfigError::plain(
                "trust.policy.max_version_step",
                "must be at least 1, or no new version could ever activate",
            ));
        }
        if p.max_token_lifetime.0.as_secs() == 0 {
            errors.push(ConfigError::plain(
                "trust.policy.max_token_lifetime",
                "must be at least 1s",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Rules {
            max_token_lifetime_secs: p.max_token_lifetime.0.as_secs(),
            clock_skew_secs: p.clock_skew.0.as_secs(),
            max_version_step: p.max_version_step,
            standard_allow,
            normal,
            emergency,
            allow_self_approval: p.emergency.allow_self_approval,
            review_within_secs: p.emergency.review_within.0.as_secs(),
            review,
        })
    }

    /// The path-scoped requirement (of `normal` or `emergency`) covering these pointer
    /// segments, if any.
    pub fn guarding(&self, segs: &[&str]) -> Option<&Rule> {
        self.normal.iter().chain(&self.emergency).find(|r| {
            r.paths
                .as_ref()
                .is_some_and(|g| g.iter().any(|g| g.matches_segments(segs)))
        })
    }

    /// Whether an emergency change needs a review at all.
    pub fn review_required(&self) -> bool {
        self.review.iter().any(|r| r.count > 0)
    }

    /// When the review of an emergency activated at `activated_at` falls due.
    pub fn review_due(&self, activated_at: u64) -> u64 {
        activated_at.saturating_add(self.review_within_secs)
    }
}

// === impl Rule ===

impl Rule {
    fn compile(source: &str, r: &Requirement, errors: &mut Vec<ConfigError>) -> Rule {
        let at = format!("trust.policy.{source}");
        if r.roles.is_empty() {
            errors.push(ConfigError::plain(
                &format!("{at}.roles"),
                "at least one role is needed",
            ));
        }
        let paths = r.paths.as_ref().map(|ps| {
            ps.iter()
                .enumerate()
                .filter_map(|(i, g)| {
                    Glob::parse(g)
                        .map_err(|e| {
                            errors.push(ConfigError::plain(&format!("{at}.paths[{i}]"), e))
                        })
                        .ok()
                })
                .collect()
        });
        Rule {
            source: source.to_string(),
            count: r.count,
            roles: r.roles.clone(),
            paths,
        }
    }

    /// "normal.require[1] (role security)".
    pub fn describe(&self) -> String {
        format!("{} ({})", self.source, roles_phrase(&self.roles))
    }
}

pub(super) fn roles_phrase(roles: &[String]) -> String {
    match roles {
        [one] => format!("role {one}"),
        many => format!("roles {}", many.join(" or ")),
    }
}

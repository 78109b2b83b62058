//! The approval policy: which requirements apply to a classified change, who counts toward
//! them, and — when they are not met — a sentence saying exactly what is missing.
//!
//! Counting rules (SPEC §5): requirements count distinct principals (two keys of one person
//! count once); each must hold one of the requirement's roles; the author never counts,
//! except toward `emergency.require` with `allow_self_approval: true`. Path-scoped entries of
//! `normal.require` also bind emergency changes. One principal may satisfy several
//! requirements (a release manager who is also in security counts for both), as code-owner
//! rules do. Reviews of an emergency come from principals who are neither its author nor one
//! of its approvers.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::classify::Classification;
use super::reason::{Reason, Refusal};
use super::rules::{Rule, roles_phrase};
use super::token::{Act, VerifiedToken};
use super::trust::TrustStore;
use crate::config::traffic::{ChangeClass, ChangeHeader};

/// A principal who counted, as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Approver {
    /// Who.
    pub principal: String,
    /// The role they counted under.
    pub role: String,
    /// The key that signed their token.
    pub kid: String,
    /// When their token was issued.
    pub iat: u64,
}

/// A requirement that is not met.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shortfall {
    /// `insufficient_approvals`, or `self_approval` / `missing_role` when that is what an
    /// offered token lacked.
    pub reason: Reason,
    /// The requirement, e.g. `normal.require[0]`.
    pub rule: String,
    /// How many more principals are needed.
    pub missing: usize,
    /// The sentence, e.g. "needs 1 more approval from role release-manager (bob approved;
    /// alice is the author)".
    pub detail: String,
}

/// A token that counted toward nothing, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ignored {
    /// Its signer.
    pub principal: String,
    /// Its key.
    pub kid: String,
    /// Why it did not count.
    pub reason: Reason,
    /// The sentence.
    pub detail: String,
}

/// The outcome of the policy for one change (or one review).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The class it is handled as.
    pub class: ChangeClass,
    /// The author (principal of the author token).
    pub author: String,
    /// The author token's key and issue time, for the audit log.
    pub author_kid: String,
    /// Principals who counted.
    pub approvers: Vec<Approver>,
    /// Requirements still unmet; empty means the change may activate (or the review closes).
    pub shortfalls: Vec<Shortfall>,
    /// Tokens that counted toward nothing.
    pub ignored: Vec<Ignored>,
}

/// Whether requirement `r` applies to a change with these paths; the paths that make it.
fn applies<'c>(r: &Rule, c: &'c Classification) -> Option<Vec<&'c str>> {
    match &r.paths {
        None => Some(Vec::new()),
        Some(globs) => {
            let hit: Vec<&str> = c.touched(globs).collect();
            (!hit.is_empty()).then_some(hit)
        }
    }
}

// === impl Decision ===

impl Decision {
    /// Every requirement is met.
    pub fn satisfied(&self) -> bool {
        self.shortfalls.is_empty()
    }

    /// What is missing, as one sentence ("" when satisfied).
    pub fn detail(&self) -> String {
        self.shortfalls
            .iter()
            .map(|s| s.detail.as_str())
            .collect::<Vec<_>>()
            .join("; and ")
    }

    /// The refusal to report while the change is short: the first shortfall's reason.
    pub fn refusal(&self) -> Option<Refusal> {
        self.shortfalls
            .first()
            .map(|s| s.reason.because(self.detail()))
    }
}

/// Applies the policy to a classified change and its tokens, which the caller has verified
/// for this document (`act` author or approve; others are ignored).
///
/// Refuses outright — no further token can help — on `missing_author`, `author_mismatch`,
/// and `review_overdue` (an emergency by an author whose earlier emergency review is overdue).
pub fn evaluate(
    store: &TrustStore,
    classification: &Classification,
    change: &ChangeHeader,
    tokens: &[VerifiedToken],
    author_review_overdue: bool,
) -> Result<Decision, Refusal> {
    let rules = store.rules();
    let authors: Vec<&VerifiedToken> = tokens.iter().filter(|t| t.act == Act::Author).collect();
    let Some(author) = authors
        .iter()
        .filter(|t| t.principal == change.author)
        .min_by(|a, b| (a.iat, &a.kid).cmp(&(b.iat, &b.kid)))
    else {
        return Err(match authors.first() {
            None => Reason::MissingAuthor.because(format!(
                "no valid author token; change.author `{}` must sign one with --act author",
                change.author
            )),
            Some(t) => Reason::AuthorMismatch.because(format!(
                "change.author is `{}` but the author token is signed by {}",
                change.author, t.principal
            )),
        });
    };
    let mut ignored: Vec<Ignored> = authors
        .iter()
        .filter(|t| t.principal != change.author)
        .map(|t| Ignored {
            principal: t.principal.clone(),
            kid: t.kid.clone(),
            reason: Reason::AuthorMismatch,
            detail: format!(
                "{} signed an author token, but change.author is {}",
                t.principal, change.author
            ),
        })
        .collect();
    ignored.extend(
        tokens
            .iter()
            .filter(|t| !matches!(t.act, Act::Author | Act::Approve))
            .map(|t| Ignored {
                principal: t.principal.clone(),
                kid: t.kid.clone(),
                reason: Reason::WrongAction,
                detail: format!(
                    "a `{}` token of {} does not count toward activation",
                    t.act, t.principal
                ),
            }),
    );
    let class = classification.class;
    if class == ChangeClass::Emergency && author_review_overdue {
        return Err(Reason::ReviewOverdue.because(format!(
            "{} has an emergency change whose review is overdue; it must be reviewed before another emergency",
            author.principal
        )));
    }
    let mut applicable: Vec<(&Rule, bool, Vec<&str>)> = Vec::new();
    let path_scoped_normal = rules.normal.iter().filter(|r| r.paths.is_some());
    match class {
        ChangeClass::Standard | ChangeClass::Unapproved => {}
        ChangeClass::Normal => {
            for r in &rules.normal {
                if let Some(hit) = applies(r, classification) {
                    applicable.push((r, false, hit));
                }
            }
        }
        ChangeClass::Emergency => {
            for r in &rules.emergency {
                if let Some(hit) = applies(r, classification) {
                    applicable.push((r, rules.allow_self_approval, hit));
                }
            }
            for r in path_scoped_normal {
                if let Some(hit) = applies(r, classification) {
                    applicable.push((r, false, hit));
                }
            }
        }
    }
    let approvals: Vec<&VerifiedToken> = tokens.iter().filter(|t| t.act == Act::Approve).collect();
    let mut excluded = BTreeMap::new();
    excluded.insert(author.principal.clone(), Exclusion::Author);
    let tally = tally(store, &applicable, &approvals, &excluded, "approval");
    ignored.extend(tally.ignored);
    Ok(Decision {
        class,
        author: author.principal.clone(),
        author_kid: author.kid.clone(),
        approvers: tally.counted,
        shortfalls: tally.shortfalls,
        ignored,
    })
}

/// Applies `emergency.review` to the `review` tokens of an emergency change, verified for
/// that document. `approvers` are the principals who approved it; they and the author are
/// not independent and do not count.
pub fn evaluate_review(
    store: &TrustStore,
    classification: &Classification,
    author: &str,
    approvers: &[String],
    tokens: &[VerifiedToken],
) -> Decision {
    let rules = store.rules();
    let applicable: Vec<(&Rule, bool, Vec<&str>)> = rules
        .review
        .iter()
        .filter_map(|r| applies(r, classification).map(|hit| (r, false, hit)))
        .collect();
    let mut excluded = BTreeMap::new();
    for a in approvers {
        excluded.insert(a.clone(), Exclusion::Approver);
    }
    excluded.insert(author.to_string(), Exclusion::Author);
    let reviews: Vec<&VerifiedToken> = tokens.iter().filter(|t| t.act == Act::Review).collect();
    let mut tally = tally(store, &applicable, &reviews, &excluded, "review");
    tally.ignored.extend(
        tokens
            .iter()
            .filter(|t| t.act != Act::Review)
            .map(|t| Ignored {
                principal: t.principal.clone(),
                kid: t.kid.clone(),
                reason: Reason::WrongAction,
                detail: format!("a `{}` token of {} is not a review", t.act, t.principal),
            }),
    );
    Decision {
        class: ChangeClass::Emergency,
        author: author.to_string(),
        author_kid: String::new(),
        approvers: tally.counted,
        shortfalls: tally.shortfalls,
        ignored: tally.ignored,
    }
}

/// Why a principal cannot count toward a requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exclusion {
    Author,
    Approver,
}

struct Tally {
    counted: Vec<Approver>,
    shortfalls: Vec<Shortfall>,
    ignored: Vec<Ignored>,
}

/// Counts distinct principals per requirement. `noun` is "approval" or "review".
fn tally(
    store: &TrustStore,
    applicable: &[(&Rule, bool, Vec<&str>)],
    tokens: &[&VerifiedToken],
    excluded: &BTreeMap<String, Exclusion>,
    noun: &str,
) -> Tally {
    // One entry per principal, whatever number of keys or tokens: their earliest token.
    let mut by_principal: BTreeMap<&str, &VerifiedToken> = BTreeMap::new();
    for t in tokens {
        let e = by_principal.entry(t.principal.as_str()).or_insert(t);
        if (t.iat, &t.kid) < (e.iat, &e.kid) {
            *e = t;
        }
    }
    let mut counted: Vec<Approver> = Vec::new();
    let mut shortfalls = Vec::new();
    let mut used: BTreeSet<&str> = BTreeSet::new();
    // A principal who qualifies for some applicable requirement is not "missing a role" just
    // because another requirement needs a role they lack.
    let qualifies_somewhere = |p: &str| {
        applicable.iter().any(|(r, allow_self, _)| {
            let blocked = match excluded.get(p) {
                Some(Exclusion::Author) => !allow_self,
                Some(Exclusion::Approver) => true,
                None => false,
            };
            !blocked && r.roles.iter().any(|role| store.has_role(p, role))
        })
    };
    for (rule, allow_self, hit) in applicable {
        let mut have: Vec<&str> = Vec::new();
        let mut notes: Vec<String> = Vec::new();
        let mut self_blocked = false;
        let mut role_blocked = false;
        for (&p, t) in &by_principal {
            let exclusion = excluded.get(p).copied();
            let blocked = match exclusion {
                Some(Exclusion::Author) => !allow_self,
                Some(Exclusion::Approver) => true,
                None => false,
            };
            let role = rule.roles.iter().find(|r| store.has_role(p, r));
            match (blocked, role) {
                (true, _) => {
                    self_blocked = true;
                    notes.push(match exclusion {
                        Some(Exclusion::Approver) => {
                            format!("{p} approved this change, so {p}'s {noun} does not count")
                        }
                        _ => format!("{p} is the author, so {p}'s own {noun} does not count"),
                    });
                }
                (false, None) => {
                    role_blocked |= !qualifies_somewhere(p);
                    notes.push(format!("{p} lacks {}", roles_phrase(&rule.roles)));
                }
                (false, Some(role)) => {
                    have.push(p);
                    if used.insert(p) {
                        counted.push(Approver {
                            principal: p.to_string(),
                            role: role.clone(),
                            kid: t.kid.clone(),
                            iat: t.iat,
                        });
                    }
                }
            }
        }
        if have.len() >= rule.count {
            continue;
        }
        let missing = rule.count - have.len();
        let mut parts: Vec<String> = Vec::new();
        if have.is_empty() {
            parts.push(format!("no qualifying {noun} yet"));
        } else {
            parts.push(format!("{} {}", join_names(&have), past_tense(noun)));
        }
        parts.extend(notes);
        for (p, e) in excluded {
            if *e == Exclusion::Author && !by_principal.contains_key(p.as_str()) {
                parts.push(format!("{p} is the author"));
            }
        }
        let because = if hit.is_empty() {
            String::new()
        } else {
            let shown: Vec<&str> = hit.iter().take(3).copied().collect();
            let more = if hit.len() > 3 {
                format!(" and {} more", hit.len() - 3)
            } else {
                String::new()
            };
            format!(" because the change touches {}{more}", shown.join(", "))
        };
        let detail = format!(
            "needs {missing} more {noun}{} from {}{because} ({})",
            if missing == 1 { "" } else { "s" },
            roles_phrase(&rule.roles),
            parts.join("; ")
        );
        let reason = if self_blocked {
            Reason::SelfApproval
        } else if role_blocked {
            Reason::MissingRole
        } else {
            Reason::InsufficientApprovals
        };
        shortfalls.push(Shortfall {
            reason,
            rule: rule.source.clone(),
            missing,
            detail,
        });
    }
    let ignored = by_principal
        .iter()
        .filter(|(p, _)| {
            !used.contains(**p) && (!applicable.is_empty() || excluded.contains_key(**p))
        })
        .map(|(&p, t)| {
            let (reason, detail) = match excluded.get(p) {
                Some(Exclusion::Author) => (
                    Reason::SelfApproval,
                    format!("{p} is the author and cannot count"),
                ),
                Some(Exclusion::Approver) => (
                    Reason::SelfApproval,
                    format!("{p} approved this change and cannot review it"),
                ),
                None => (
                    Reason::MissingRole,
                    format!("{p} holds none of the roles a requirement needs"),
                ),
            };
            Ignored {
                principal: p.to_string(),
                kid: t.kid.clone(),
                reason,
                detail,
            }
        })
        .collect();
    Tally {
        counted,
        shortfalls,
        ignored,
    }
}

fn join_names(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn past_tense(noun: &str) -> &'static str {
    if noun == "review" {
        "reviewed"
    } else {
        "approved"
    }
}

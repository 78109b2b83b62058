//! Post-facto reviews of emergency changes (SPEC §5).
//!
//! An emergency activation records `review_due` in its audit line; `emergency.reviewed`
//! closes it and `review.overdue` notes (once) that the deadline passed. Which reviews are
//! open is therefore read from the audit log — the commit record — and never from a file
//! that a crash could leave behind it. Only the review tokens pushed through the API are
//! kept beside it, in `state/reviews.json`.

use std::collections::BTreeMap;
use std::io;

use serde_json::Value;

use super::audit::{EventKind, Record};
use super::classify::Classification;
use super::policy::Approver;
use super::store::StateDir;

/// An emergency change whose review is not closed.
#[derive(Debug, Clone)]
pub struct Review {
    /// The emergency document's digest.
    pub digest: String,
    /// Its version.
    pub version: u64,
    /// Its author.
    pub author: String,
    /// Principals who approved it (they may not review it).
    pub approvers: Vec<String>,
    /// The `change` object of its activation record, repeated in later records.
    pub change: Value,
    /// The document that was active before it (the diff a path-scoped review rule reads).
    pub prev_digest: Option<String>,
    /// Deadline, Unix seconds.
    pub due: u64,
    /// Deadline, RFC 3339.
    pub review_due: String,
    /// `review.overdue` was audited.
    pub overdue_audited: bool,
    /// Review tokens pushed for it.
    pub tokens: Vec<String>,
    /// Its diff, computed when first needed.
    pub classification: Option<Classification>,
    /// The latest judgement: who counted and what is missing.
    pub last: Option<(Vec<Approver>, String)>,
}

// === impl Review ===

impl Review {
    /// Whether the deadline has passed at `now` (Unix seconds).
    pub fn overdue(&self, now: u64) -> bool {
        now >= self.due
    }
}

/// The open reviews recorded in the audit log's `entries`, oldest first.
pub fn open_from_audit(entries: &[Record]) -> Vec<Review> {
    let mut open: Vec<Review> = Vec::new();
    let mut current: Option<String> = None;
    for r in entries {
        let Some(kind) = r.kind else { continue };
        let (e, digest) = (&r.line, r.digest().to_string());
        match kind {
            EventKind::ChangeActivated => {
                if let Some(due_text) = e["review_due"].as_str()
                    && let Some(due) = parse_rfc3339(due_text)
                {
                    open.retain(|r| r.digest != digest);
                    open.push(Review {
                        digest: digest.clone(),
                        version: e["change"]["version"].as_u64().unwrap_or(0),
                        author: e["change"]["author"].as_str().unwrap_or("").to_string(),
                        approvers: e["change"]["approvers"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|a| a["principal"].as_str().map(str::to_string))
                            .collect(),
                        change: e["change"].clone(),
                        prev_digest: current.clone(),
                        due,
                        review_due: due_text.to_string(),
                        overdue_audited: false,
                        tokens: Vec::new(),
                        classification: None,
                        last: None,
                    });
                }
                current = Some(digest);
            }
            EventKind::ChangeReverted | EventKind::ChangeRestored => current = Some(digest),
            EventKind::EmergencyReviewed => open.retain(|r| r.digest != digest),
            EventKind::ReviewOverdue => {
                if let Some(r) = open.iter_mut().find(|r| r.digest == digest) {
                    r.overdue_audited = true;
                }
            }
            _ => {}
        }
    }
    open
}

const TOKENS_FILE: &str = "reviews.json";

/// Review tokens pushed so far, by emergency digest.
pub fn load_tokens(state: &StateDir) -> BTreeMap<String, Vec<String>> {
    match state.read_json(TOKENS_FILE) {
        Ok(Some(m)) => m,
        Ok(None) => BTreeMap::new(),
        Err(e) => {
            tracing::warn!(error = %e, "state/reviews.json cannot be read; pushed review tokens must be sent again.");
            BTreeMap::new()
        }
    }
}

/// Persists the pushed review tokens of the open reviews.
pub fn save_tokens(state: &StateDir, reviews: &[Review]) -> io::Result<()> {
    let m: BTreeMap<&str, &Vec<String>> = reviews
        .iter()
        .filter(|r| !r.tokens.is_empty())
        .map(|r| (r.digest.as_str(), &r.tokens))
        .collect();
    state.write_json(TOKENS_FILE, &m)
}

/// Parses the RFC 3339 UTC timestamps sluice writes (`2026-11-26T10:09:04.123Z`, fraction
/// optional) to Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-');
    let (y, m, day) = (
        d.next()?.parse::<i64>().ok()?,
        d.next()?.parse::<i64>().ok()?,
        d.next()?.parse::<i64>().ok()?,
    );
    let time = time.split('.').next()?;
    let mut t = time.split(':');
    let (hh, mm, ss) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::audit::Event;
    use serde_json::json;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rfc3339_round_trips() {
        for secs in [0u64, 951_782_400, 1_795_687_744, 4_102_444_800] {
            let t = crate::clock::rfc3339(UNIX_EPOCH + Duration::from_millis(secs * 1000 + 123));
            assert_eq!(parse_rfc3339(&t), Some(secs), "{t}");
        }
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn open_reviews_follow_the_log() {
        let line = |e: Event| Record::new(serde_json::Value::Object(e.into_fields()));
        let act = |d: &str, due: Option<&str>| {
            let e = Event::new(EventKind::ChangeActivated, "admin").change(json!({"digest": d, "version": 1, "author": "alice", "approvers": [{"principal": "ivan"}]}));
            line(match due {
                Some(due) => e.with("review_due", due),
                None => e,
            })
        };
        let about = |kind, d: &str| line(Event::new(kind, "sluice").change(json!({ "digest": d })));
        let entries = vec![
            act("sha256:a", None),
            act("sha256:e1", Some("2026-01-02T00:00:00.000Z")),
            act("sha256:e2", Some("2026-01-03T00:00:00.000Z")),
            about(EventKind::ReviewOverdue, "sha256:e2"),
            about(EventKind::EmergencyReviewed, "sha256:e1"),
        ];
        let open = open_from_audit(&entries);
        assert_eq!(open.len(), 1);
        let r = &open[0];
        assert_eq!(r.digest, "sha256:e2");
        assert_eq!(r.prev_digest.as_deref(), Some("sha256:e1"));
        assert_eq!(r.approvers, ["ivan"]);
        assert!(r.overdue_audited);
        assert!(r.overdue(r.due) && !r.overdue(r.due - 1));
    }
}

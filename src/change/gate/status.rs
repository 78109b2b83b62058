//! The status document (`GET /api/v1/status`, `sluice status`): what is active, what is
//! pending and what it lacks, which emergency reviews are due or overdue, and the audit head.

use serde_json::{Value, json};

use super::Gate;
use crate::change::classify::class_name;

// === impl Gate ===

impl Gate {
    /// The status document.
    pub fn status_json(&self) -> Value {
        let now = self.clock.unix_secs();
        let active = self.active.as_ref().map(|a| {
            let mut v = json!({
                "version": a.doc.version,
                "digest": a.digest,
                "class": class_name(a.class),
                "id": a.doc.change.id,
                "author": a.doc.change.author,
                "summary": a.doc.change.summary,
                "approvers": a.approvers,
                "activated_at": a.activated_at,
            });
            if !a.warnings.is_empty() {
                let w: Vec<Value> = a
                    .warnings
                    .iter()
                    .map(|w| json!({"path": w.path, "line": w.line, "message": w.message}))
                    .collect();
                v["warnings"] = Value::Array(w);
            }
            if let Some(r) = self.reviews.iter().find(|r| r.digest == a.digest) {
                v["review_due"] = json!(r.review_due);
            }
            v
        });
        let pending: Vec<Value> = self
            .pending
            .values()
            .map(|p| {
                let mut v = json!({
                    "version": p.version,
                    "digest": p.digest,
                    "source": p.source,
                    "since": p.since,
                    "tokens_pushed": p.tokens.len(),
                });
                match &p.last {
                    Some(l) => {
                        v["id"] = json!(l.id);
                        v["author"] = json!(l.author);
                        v["class"] = json!(class_name(l.class));
                        v["classification"] = json!(l.classification);
                        v["missing"] = json!(l.missing);
                        v["shortfalls"] = json!(l.shortfalls);
                        v["approvers"] = json!(l.approvers);
                    }
                    None => v["missing"] = json!("not judged since the last start"),
                }
                v
            })
            .collect();
        let reviews: Vec<Value> = self
            .reviews
            .iter()
            .map(|r| {
                let (reviewers, missing) = match &r.last {
                    Some((who, missing)) => (json!(who), json!(missing)),
                    None => (json!([]), json!("no qualifying review yet")),
                };
                json!({
                    "version": r.version,
                    "digest": r.digest,
                    "id": r.change["id"],
                    "author": r.author,
                    "approvers": r.approvers,
                    "review_due": r.review_due,
                    "overdue": r.overdue(now),
                    "reviewers": reviewers,
                    "missing": missing,
                })
            })
            .collect();
        let overdue = self.reviews.iter().filter(|r| r.overdue(now)).count();
        let rollouts: Vec<Value> = self
            .published
            .load_full()
            .map(|s| {
                s.rollouts
                    .iter()
                    .map(|r| json!({ "name": &*r.name, "weight": r.weight() as f64 / 100.0 }))
                    .collect()
            })
            .unwrap_or_default();
        let head = self.audit.head();
        json!({
            "active": active,
            "high_water": { "version": self.hw.version, "digest": self.hw.digest },
            "require_approvals": self.trust.require_approvals(),
            "pending": pending,
            "emergency_reviews": reviews,
            "emergency_reviews_overdue": overdue,
            "rollouts": rollouts,
            "audit": { "seq": head.seq, "head": head.hash },
        })
    }
}

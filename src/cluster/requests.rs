//! The admin API's change endpoints in cluster mode: a push, an approval or a revert taken by
//! any node is published into etcd, and the answer is this node's own judgement of it, made
//! when the watch delivers it — the same gate, reached the same way as on every other node.

use std::sync::Arc;
use std::time::Duration;

use super::publish::{self, RevertRequest};
use super::{Cluster, FleetRefusal};
use crate::change::Refusal;
use crate::change::gate::Outcome;
use crate::change::token::{self, Act};

/// How long a request waits for this node's judgement.
const JUDGE_WAIT: Duration = Duration::from_secs(30);

/// The answer to a change request in cluster mode.
#[derive(Debug, Clone)]
pub enum Answer {
    /// This node's judgement.
    Judged(Outcome),
    /// A token was refused before anything was published.
    Refused(Refusal),
    /// etcd could not take it, or no judgement came in time.
    Fleet(FleetRefusal),
}

// === impl Cluster ===

impl Cluster {
    /// `PUT /api/v1/traffic`: publishes the document and its tokens, then answers with this
    /// node's judgement. Tokens this node's trust store refuses are not published: the caller
    /// hears why at once, and etcd never carries them.
    pub async fn push(self: &Arc<Self>, bytes: Vec<u8>, tokens: Vec<String>) -> Answer {
        if let Err(r) = self.check_tokens(&tokens) {
            return Answer::Refused(r);
        }
        let s = match self.live() {
            Ok(s) => s,
            Err(f) => return Answer::Fleet(f),
        };
        let digest = crate::change::digest(&bytes);
        let after = self.judge_seq();
        let me = self.clone();
        let published = self
            .on_cluster(async move {
                let r = publish::candidate(&s, &bytes, &tokens).await;
                // Already there with these tokens: no watch event will come, so judge now.
                let hex = super::keys::hex_of(&crate::change::digest(&bytes)).to_string();
                let _ = me.jobs.send(super::sync::Job::Candidate {
                    hex,
                    seen: std::time::Instant::now(),
                });
                r
            })
            .await;
        match published {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Answer::Fleet(FleetRefusal::unavailable(e.to_string())),
            None => return Answer::Fleet(FleetRefusal::unavailable("the cluster thread stopped")),
        }
        self.answer(&digest, after).await
    }

    /// `POST /api/v1/approvals`: publishes the token for the document it names.
    pub async fn approve(self: &Arc<Self>, token: String) -> Answer {
        if let Err(r) = self.check_tokens(std::slice::from_ref(&token)) {
            return Answer::Refused(r);
        }
        let s = match self.live() {
            Ok(s) => s,
            Err(f) => return Answer::Fleet(f),
        };
        let digest = crate::change::folder::peek_sub(token.trim()).unwrap_or_default();
        let after = self.judge_seq();
        let me = self.clone();
        let d = digest.clone();
        let published = self
            .on_cluster(async move {
                // A token for a document the fleet never saw: the gate says so, as alone.
                if s.get(&me.keys.doc(&d)).await?.is_none() {
                    return Ok(false);
                }
                let new = publish::token(&s, &d, &token).await?;
                let review = crate::change::folder::peek_claims(&token)
                    .is_some_and(|c| c.get("act").and_then(|a| a.as_str()) == Some("review"));
                // The watch brings a new token back; a repeated one (or a review, judged on
                // its own) is handed to the gate from here.
                if review && !new {
                    let _ = me.jobs.send(super::sync::Job::Review(token));
                } else if !review {
                    let _ = me.jobs.send(super::sync::Job::Candidate {
                        hex: super::keys::hex_of(&d).to_string(),
                        seen: std::time::Instant::now(),
                    });
                }
                Ok::<bool, super::ClusterError>(true)
            })
            .await;
        match published {
            Some(Ok(true)) => self.answer(&digest, after).await,
            Some(Ok(false)) => Answer::Judged(Outcome::Rejected(
                crate::change::Reason::UnknownChange.because(format!(
                    "no pending change has digest {digest}; push the document first"
                )),
            )),
            Some(Err(e)) => Answer::Fleet(FleetRefusal::unavailable(e.to_string())),
            None => Answer::Fleet(FleetRefusal::unavailable("the cluster thread stopped")),
        }
    }

    /// `POST /api/v1/revert`: every node reverts (each with its own history and trust store);
    /// the answer is this node's.
    pub async fn revert(self: &Arc<Self>, version: u64, token: String) -> Answer {
        if let Err(r) = self.check_tokens(std::slice::from_ref(&token)) {
            return Answer::Refused(r);
        }
        let s = match self.live() {
            Ok(s) => s,
            Err(f) => return Answer::Fleet(f),
        };
        let r = RevertRequest {
            id: publish::request_id(),
            version,
            token,
            from: self.node_id.clone(),
        };
        let key = format!("revert:{}", r.id);
        let after = self.judge_seq();
        match self
            .on_cluster(async move { publish::revert(&s, &r).await })
            .await
        {
            Some(Ok(())) => {}
            Some(Err(e)) => return Answer::Fleet(FleetRefusal::unavailable(e.to_string())),
            None => return Answer::Fleet(FleetRefusal::unavailable("the cluster thread stopped")),
        }
        self.answer(&key, after).await
    }

    async fn answer(&self, digest: &str, after: u64) -> Answer {
        match self.wait_judged(digest, after, JUDGE_WAIT).await {
            Some(o) => Answer::Judged(o),
            None => Answer::Fleet(FleetRefusal {
                status: 504,
                code: "not_judged",
                detail: format!(
                    "published {digest} to the fleet, but this node has not judged it within {} s",
                    JUDGE_WAIT.as_secs()
                ),
            }),
        }
    }

    /// Verifies tokens as this node would (signature, audience, times) before publishing.
    fn check_tokens(&self, tokens: &[String]) -> Result<(), Refusal> {
        let (trust, now) = {
            let g = self.gate.lock();
            (g.trust().clone(), g.clock().unix_secs())
        };
        for t in tokens {
            let v = token::verify(t.trim(), &trust, now)?;
            if matches!(v.act, Act::Promote) {
                return Err(crate::change::Reason::WrongAction
                    .because("a `promote` token is not an approval; use the rollout endpoint"));
            }
        }
        Ok(())
    }
}

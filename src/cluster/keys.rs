//! The key layout under `cluster.etcd.prefix` (P). Every key sluice writes is named here.
//!
//! ```text
//! P/fleet                        {"environment"}: which trust environment owns the prefix
//! P/nodes/<node_id>              leased: a node's registration and what it serves
//! P/leader                       leased: the leader's node id; its create revision is the term
//! P/docs/<sha256 hex>            a candidate document's exact bytes
//! P/tokens/<sha256 hex>/<hash>   an approval token for that document (JWS text)
//! P/active                       {"version","digest"}: the fleet's active document
//! P/highwater                    {"version","digest"}: the fleet's high-water mark (never lowered)
//! P/rollouts/<name>              rollout progress, written by the leader in fenced transactions
//! P/actions/<id>                 operator actions on their way to the leader, and their result
//! P/reverts/<id>                 revert requests (a version and a revert token)
//! P/windows/<node_id>/<rollout>  leased: a node's per-second counts for one rollout
//! P/audit/head                   {"seq","hash"}: the fleet audit chain's head
//! P/audit/log/<seq, 12 digits>   the fleet audit chain's lines
//! P/audit/once/<key>             markers that make an append happen once fleet-wide
//! ```
//!
//! The digest in a `docs` key is only an address: every node hashes the bytes itself.

/// Key names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

// === impl Keys ===

impl Keys {
    /// Keys under `prefix` (a trailing slash is ignored).
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// The prefix, without a trailing slash.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Everything sluice keeps: `P/`.
    pub fn all(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// `P/fleet`.
    pub fn fleet(&self) -> String {
        format!("{}/fleet", self.prefix)
    }

    /// `P/nodes/`.
    pub fn nodes(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }

    /// `P/nodes/<id>`.
    pub fn node(&self, id: &str) -> String {
        format!("{}/nodes/{id}", self.prefix)
    }

    /// `P/leader`.
    pub fn leader(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    /// `P/docs/`.
    pub fn docs(&self) -> String {
        format!("{}/docs/", self.prefix)
    }

    /// `P/docs/<hex>` for `sha256:<hex>`.
    pub fn doc(&self, digest: &str) -> String {
        format!("{}/docs/{}", self.prefix, hex_of(digest))
    }

    /// `P/tokens/<hex>/`.
    pub fn tokens_of(&self, digest: &str) -> String {
        format!("{}/tokens/{}/", self.prefix, hex_of(digest))
    }

    /// `P/tokens/<hex>/<first 32 hex of the token's sha256>`: one key per distinct token.
    pub fn token(&self, digest: &str, token: &str) -> String {
        let h = crate::change::digest(token.trim().as_bytes());
        let h = hex_of(&h);
        format!("{}{}", self.tokens_of(digest), &h[..32])
    }

    /// `P/active`.
    pub fn active(&self) -> String {
        format!("{}/active", self.prefix)
    }

    /// `P/highwater`.
    pub fn high_water(&self) -> String {
        format!("{}/highwater", self.prefix)
    }

    /// `P/rollouts/`.
    pub fn rollouts(&self) -> String {
        format!("{}/rollouts/", self.prefix)
    }

    /// `P/rollouts/<name>`.
    pub fn rollout(&self, name: &str) -> String {
        format!("{}/rollouts/{name}", self.prefix)
    }

    /// `P/actions/`.
    pub fn actions(&self) -> String {
        format!("{}/actions/", self.prefix)
    }

    /// `P/actions/<id>`.
    pub fn action(&self, id: &str) -> String {
        format!("{}/actions/{id}", self.prefix)
    }

    /// `P/reverts/`.
    pub fn reverts(&self) -> String {
        format!("{}/reverts/", self.prefix)
    }

    /// `P/reverts/<id>`.
    pub fn revert(&self, id: &str) -> String {
        format!("{}/reverts/{id}", self.prefix)
    }

    /// `P/windows/`.
    pub fn windows(&self) -> String {
        format!("{}/windows/", self.prefix)
    }

    /// `P/windows/<node>/<rollout>`.
    pub fn window(&self, node: &str, rollout: &str) -> String {
        format!("{}/windows/{node}/{rollout}", self.prefix)
    }

    /// `P/audit/head`.
    pub fn audit_head(&self) -> String {
        format!("{}/audit/head", self.prefix)
    }

    /// `P/audit/log/`.
    pub fn audit_log(&self) -> String {
        format!("{}/audit/log/", self.prefix)
    }

    /// `P/audit/log/<seq>` (zero-padded, so keys sort by seq).
    pub fn audit_line(&self, seq: u64) -> String {
        format!("{}/audit/log/{seq:012}", self.prefix)
    }

    /// `P/audit/once/<key>`.
    pub fn audit_once(&self, key: &str) -> String {
        format!("{}/audit/once/{key}", self.prefix)
    }

    /// What a key under the prefix is.
    pub fn parse<'a>(&self, key: &'a str) -> Key<'a> {
        let Some(rest) = key
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return Key::Other;
        };
        let (head, tail) = rest.split_once('/').unwrap_or((rest, ""));
        match (head, tail) {
            ("fleet", "") => Key::Fleet,
            ("leader", "") => Key::Leader,
            ("active", "") => Key::Active,
            ("highwater", "") => Key::HighWater,
            ("nodes", id) if !id.is_empty() => Key::Node(id),
            ("docs", hex) if !hex.is_empty() => Key::Doc(hex),
            ("tokens", t) => match t.split_once('/') {
                Some((hex, h)) if !hex.is_empty() && !h.is_empty() => Key::Token(hex),
                _ => Key::Other,
            },
            ("rollouts", name) if !name.is_empty() => Key::Rollout(name),
            ("actions", id) if !id.is_empty() => Key::Action(id),
            ("reverts", id) if !id.is_empty() => Key::Revert(id),
            ("windows", t) => match t.split_once('/') {
                Some((node, rollout)) if !node.is_empty() && !rollout.is_empty() => {
                    Key::Window { node, rollout }
                }
                _ => Key::Other,
            },
            ("audit", _) => Key::Audit,
            _ => Key::Other,
        }
    }
}

/// A parsed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key<'a> {
    /// `P/fleet`.
    Fleet,
    /// `P/nodes/<id>`.
    Node(&'a str),
    /// `P/leader`.
    Leader,
    /// `P/docs/<hex>`.
    Doc(&'a str),
    /// `P/tokens/<hex>/<hash>`.
    Token(&'a str),
    /// `P/active`.
    Active,
    /// `P/highwater`.
    HighWater,
    /// `P/rollouts/<name>`.
    Rollout(&'a str),
    /// `P/actions/<id>`.
    Action(&'a str),
    /// `P/reverts/<id>`.
    Revert(&'a str),
    /// `P/windows/<node>/<rollout>`.
    Window {
        /// Node id.
        node: &'a str,
        /// Rollout name.
        rollout: &'a str,
    },
    /// Anything under `P/audit/`.
    Audit,
    /// Not ours.
    Other,
}

/// The hex of `sha256:<hex>` (or the text itself when it has no such prefix).
pub fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// The end of a prefix range: the prefix with its last byte incremented.
pub fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let k = Keys::new("/sluice/prod/");
        assert_eq!(k.node("gw-1"), "/sluice/prod/nodes/gw-1");
        assert_eq!(k.parse(&k.node("gw-1")), Key::Node("gw-1"));
        assert_eq!(k.parse(&k.doc("sha256:ab")), Key::Doc("ab"));
        let t = k.token("sha256:ab", "x.y.z");
        assert_eq!(k.parse(&t), Key::Token("ab"));
        assert_eq!(
            k.parse(&k.window("gw-1", "web")),
            Key::Window {
                node: "gw-1",
                rollout: "web"
            }
        );
        assert_eq!(k.parse(&k.audit_line(7)), Key::Audit);
        assert_eq!(k.audit_line(7), "/sluice/prod/audit/log/000000000007");
        assert_eq!(k.parse("/sluice/prodx/leader"), Key::Other);
        assert_eq!(k.parse("/sluice/prod/leader"), Key::Leader);
        assert_eq!(range_end("/a/"), b"/a0".to_vec());
    }
}

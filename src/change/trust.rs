//! The trust store: `sluice.yaml`'s `trust` section compiled for verification — each key by
//! its `kid` with its one owner, each principal's roles, and the change policy with its globs
//! compiled. Built once at start; read-only afterwards.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ed25519_dalek::VerifyingKey;

use super::keys;
use super::rules::Rules;
use crate::config::settings::Trust;
use crate::config::{ConfigError, ConfigErrors};

/// Keys, principals, roles and the compiled change policy.
#[derive(Debug, Clone)]
pub struct TrustStore {
    environment: String,
    require_approvals: bool,
    keys: HashMap<String, KeyEntry>,
    roles: BTreeMap<String, BTreeSet<String>>,
    rules: Rules,
}

/// A trusted public key and the principal it belongs to.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    /// The owner.
    pub principal: String,
    /// The Ed25519 public key.
    pub key: VerifyingKey,
}

// === impl TrustStore ===

impl TrustStore {
    /// Compiles the `trust` section, collecting every error: unreadable or weak keys, a key
    /// listed under two principals, bad globs, impossible policy values.
    pub fn new(trust: &Trust) -> Result<TrustStore, ConfigErrors> {
        let mut errors = Vec::new();
        let mut keys: HashMap<String, KeyEntry> = HashMap::new();
        let mut roles = BTreeMap::new();
        for (name, p) in &trust.principals {
            roles.insert(
                name.clone(),
                p.roles.iter().cloned().collect::<BTreeSet<_>>(),
            );
            for (i, text) in p.keys.iter().enumerate() {
                let path = format!("trust.principals.{name}.keys[{i}]");
                let key = match keys::parse_public_key(text) {
                    Ok(k) => k,
                    Err(e) => {
                        errors.push(ConfigError::plain(&path, e.to_string()));
                        continue;
                    }
                };
                let kid = keys::kid(&key);
                match keys.get(&kid) {
                    // The same key twice under one principal is harmless.
                    Some(prev) if prev.principal == *name && prev.key == key => {}
                    Some(prev) if prev.key == key => errors.push(ConfigError::plain(
                        &path,
                        format!(
                            "this key is already listed under principal `{}`: a key may belong to one principal only",
                            prev.principal
                        ),
                    )),
                    Some(prev) => errors.push(ConfigError::plain(
                        &path,
                        format!("key id {kid} collides with another key of `{}`; make a new key", prev.principal),
                    )),
                    None => {
                        keys.insert(
                            kid,
                            KeyEntry {
                                principal: name.clone(),
                                key,
                            },
                        );
                    }
                }
            }
        }
        if trust.environment.trim().is_empty() {
            errors.push(ConfigError::plain("trust.environment", "must not be empty"));
        }
        let rules = match Rules::compile(&trust.policy) {
            Ok(r) => Some(r),
            Err(mut e) => {
                errors.append(&mut e);
                None
            }
        };
        match rules {
            Some(rules) if errors.is_empty() => Ok(TrustStore {
                environment: trust.environment.clone(),
                require_approvals: trust.require_approvals,
                keys,
                roles,
                rules,
            }),
            _ => Err(ConfigErrors(errors)),
        }
    }

    /// The environment tokens must name in `aud`.
    pub fn environment(&self) -> &str {
        &self.environment
    }

    /// Whether changes need tokens at all (`trust.require_approvals`).
    pub fn require_approvals(&self) -> bool {
        self.require_approvals
    }

    /// The key with this `kid`, and its owner.
    pub fn key(&self, kid: &str) -> Option<&KeyEntry> {
        self.keys.get(kid)
    }

    /// The roles `principal` holds (empty when unknown).
    pub fn roles(&self, principal: &str) -> impl Iterator<Item = &str> {
        self.roles
            .get(principal)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// Whether `principal` holds `role`.
    pub fn has_role(&self, principal: &str, role: &str) -> bool {
        self.roles.get(principal).is_some_and(|r| r.contains(role))
    }

    /// The compiled change policy.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::keys::{generate, public_key_line};
    use crate::config::settings::Principal;

    fn principal(keys: Vec<String>, roles: &[&str]) -> Principal {
        Principal {
            keys,
            roles: roles.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn maps_kids_to_owners() {
        let a = generate().unwrap().verifying_key();
        let mut trust = Trust::default();
        trust.principals.insert(
            "alice".into(),
            principal(vec![public_key_line(&a)], &["dev"]),
        );
        let store = TrustStore::new(&trust).unwrap();
        assert_eq!(store.key(&keys::kid(&a)).unwrap().principal, "alice");
        assert!(store.has_role("alice", "dev"));
        assert!(!store.has_role("alice", "ops"));
        assert!(store.key("0000000000000000").is_none());
    }

    #[test]
    fn refuses_a_key_under_two_principals_and_bad_keys() {
        let line = public_key_line(&generate().unwrap().verifying_key());
        let mut trust = Trust::default();
        trust
            .principals
            .insert("a".into(), principal(vec![line.clone()], &[]));
        trust
            .principals
            .insert("b".into(), principal(vec![line, "ed25519:xx".into()], &[]));
        trust.policy.standard.allow = vec!["flags/*".into()];
        let errs = TrustStore::new(&trust).unwrap_err().0;
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "trust.principals.b.keys[0]",
                "trust.principals.b.keys[1]",
                "trust.policy.standard.allow[0]"
            ],
            "{errs:?}"
        );
        assert!(
            errs[0]
                .message
                .contains("already listed under principal `a`")
        );
    }
}

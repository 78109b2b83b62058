//! Endpoint addresses for the snapshot build. Hostnames are looked up *before* the change
//! gate's lock is taken ([`Addresses::resolve`]): a slow resolver must not stall the admin
//! API, the file watch and the rollout runner, which all wait on that lock. The build only
//! reads the result ([`Addresses::get`]); the control plane re-resolves periodically and
//! right after an activation that found a hostname unresolved.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};

use crate::config::TrafficDoc;

/// Resolved addresses of a document's hostname endpoints (`host:port` → addresses).
#[derive(Debug, Clone, Default)]
pub struct Addresses {
    by_endpoint: HashMap<String, Vec<SocketAddr>>,
}

// === impl Addresses ===

impl Addresses {
    /// Looks up every hostname endpoint of `doc`. Blocking: never call it under the gate's
    /// lock.
    pub fn resolve(doc: &TrafficDoc) -> Addresses {
        let mut by_endpoint = HashMap::new();
        for e in doc.upstreams.values().flat_map(|u| u.endpoints.iter()) {
            if e.parse::<SocketAddr>().is_err() && !by_endpoint.contains_key(e) {
                by_endpoint.insert(e.clone(), resolve(e));
            }
        }
        Addresses { by_endpoint }
    }

    /// The addresses of `endpoint`: an IP literal as written, a hostname as looked up
    /// (empty when it was not looked up or did not resolve).
    pub fn get(&self, endpoint: &str) -> Vec<SocketAddr> {
        match endpoint.parse::<SocketAddr>() {
            Ok(a) => vec![a],
            Err(_) => self.by_endpoint.get(endpoint).cloned().unwrap_or_default(),
        }
    }
}

/// Resolves `host:port`; IP literals without a lookup. Blocking.
pub fn resolve(endpoint: &str) -> Vec<SocketAddr> {
    if let Ok(a) = endpoint.parse::<SocketAddr>() {
        return vec![a];
    }
    match endpoint.to_socket_addrs() {
        Ok(it) => it.collect(),
        Err(e) => {
            tracing::warn!(endpoint, error = %e, "Endpoint did not resolve.");
            Vec::new()
        }
    }
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
pub fn host_of(endpoint: &str) -> &str {
    let host = endpoint
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(endpoint);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(host_of("a.internal:80"), "a.internal");
        assert_eq!(host_of("[::1]:80"), "::1");
        assert_eq!(host_of("10.0.0.1:80"), "10.0.0.1");
    }

    #[test]
    fn literals_need_no_lookup() {
        let a = Addresses::default();
        assert_eq!(a.get("10.0.0.1:80"), vec!["10.0.0.1:80".parse().unwrap()]);
        assert!(a.get("svc.internal:80").is_empty());
    }
}

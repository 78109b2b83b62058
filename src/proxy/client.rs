//! Who the client is: the address behind trusted proxies (`network.trusted_proxies`) and
//! the verified client certificate of an mTLS listener (`tls.client_auth`).
//!
//! `X-Forwarded-For` is believed only as far as the proxies that wrote it are trusted: read
//! from the right, each address written by a trusted peer moves the client one hop further
//! out, and the first address that is not a trusted proxy is the client. With trusted
//! proxies configured, the chain sent upstream starts at that client (what sluice cannot
//! vouch for is dropped), so an upstream reading the left-most entry reads the real client.
//! Without them, the chain is kept and the peer appended (SPEC §9), and the client is the
//! peer.

use std::fmt::Write as _;
use std::net::IpAddr;

use http::HeaderMap;
use http::header::HeaderValue;

use super::headers::{X_FORWARDED_FOR, append_forwarded_for};
use crate::config::cidr::Cidr;

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    cidrs: Box<[Cidr]>,
}

/// The verified certificate a client presented on an mTLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject, RFC 4514 style (`CN=alice,O=Example`), most significant RDN last as
    /// the certificate lists them.
    pub subject: Box<str>,
    /// Subject alternative names, in certificate order: DNS names, URIs (SPIFFE ids),
    /// e-mail addresses and IP addresses, as text.
    pub sans: Box<[Box<str>]>,
}

// === impl TrustedProxies ===

impl TrustedProxies {
    /// Parses the list (validated with `sluice.yaml`; an entry that does not parse is
    /// skipped, never trusted).
    pub fn new(list: &[String]) -> TrustedProxies {
        TrustedProxies {
            cidrs: list.iter().filter_map(|s| Cidr::parse(s).ok()).collect(),
        }
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.cidrs.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidrs.iter().any(|c| c.contains(ip))
    }

    /// The client of a request from `peer`, and the `X-Forwarded-For` to send upstream
    /// (rewritten in `headers`).
    pub fn forward(&self, headers: &mut HeaderMap, peer: IpAddr) -> IpAddr {
        let (client, chain) = self.resolve(headers, peer);
        self.apply(headers, peer, chain);
        client
    }

    /// The client of a request from `peer`, and the chain to send upstream (`None`: the
    /// peer alone, or without trusted proxies the request's chain with the peer appended).
    pub fn resolve(&self, headers: &HeaderMap, peer: IpAddr) -> (IpAddr, Option<HeaderValue>) {
        if self.is_empty() || !self.contains(peer) || !headers.contains_key(&X_FORWARDED_FOR) {
            return (peer, None);
        }
        // Entries across every X-Forwarded-For line, left to right.
        let mut entries: Vec<&str> = Vec::new();
        for v in headers.get_all(&X_FORWARDED_FOR) {
            match v.to_str() {
                Ok(s) => entries.extend(s.split(',').map(str::trim)),
                // Not text: nothing before it can be read, so nothing there is believed.
                Err(_) => entries.clear(),
            }
        }
        let mut client = peer;
        let mut from = entries.len();
        for (i, e) in entries.iter().enumerate().rev() {
            let Some(ip) = parse_entry(e) else { break };
            client = ip;
            from = i;
            if !self.contains(ip) {
                break;
            }
        }
        let mut chain = String::with_capacity(48 * (entries.len() - from + 1));
        for e in &entries[from..] {
            if let Some(ip) = parse_entry(e) {
                let _ = write!(chain, "{ip}, ");
            }
        }
        let _ = write!(chain, "{peer}");
        (client, HeaderValue::from_str(&chain).ok())
    }

    /// Sets the `X-Forwarded-For` sent upstream, `chain` from [`resolve`](Self::resolve).
    /// An untrusted peer's claims are dropped: the chain starts at the peer.
    pub fn apply(&self, headers: &mut HeaderMap, peer: IpAddr, chain: Option<HeaderValue>) {
        if self.is_empty() {
            append_forwarded_for(headers, peer);
            return;
        }
        match chain {
            Some(v) => {
                headers.insert(X_FORWARDED_FOR.clone(), v);
            }
            None => {
                headers.remove(&X_FORWARDED_FOR);
                append_forwarded_for(headers, peer);
            }
        }
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:80`,
/// `[2001:db8::1]:443`).
fn parse_entry(e: &str) -> Option<IpAddr> {
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = e.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, port) = e.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

// === impl ClientCert ===

impl ClientCert {
    /// Reads the subject and SANs of a DER certificate (already verified by rustls).
    pub fn from_der(der: &[u8]) -> Option<ClientCert> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let subject = cert.subject().to_string().replace(", ", ",");
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for n in &ext.value.general_names {
                let text = match n {
                    GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
                        (*s).to_string()
                    }
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => IpAddr::from(<[u8; 4]>::try_from(*b).ok()?).to_string(),
                        16 => IpAddr::from(<[u8; 16]>::try_from(*b).ok()?).to_string(),
                        _ => continue,
                    },
                    _ => continue,
                };
                sans.push(text.into_boxed_str());
            }
        }
        Some(ClientCert {
            subject: subject.into(),
            sans: sans.into(),
        })
    }

    /// The first SAN, if any.
    pub fn first_san(&self) -> Option<&str> {
        self.sans.first().map(|s| &**s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(h: &HeaderMap) -> &str {
        h.get(&X_FORWARDED_FOR).unwrap().to_str().unwrap()
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(X_FORWARDED_FOR.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn untrusted_peers_cannot_name_the_client() {
        let t = TrustedProxies::new(&["10.0.0.0/8".into()]);
        let mut h = headers(&["1.2.3.4"]);
        let c = t.forward(&mut h, "203.0.113.5".parse().unwrap());
        assert_eq!(c, "203.0.113.5".parse::<IpAddr>().unwrap());
        assert_eq!(xff(&h), "203.0.113.5");
    }

    #[test]
    fn right_most_untrusted_wins() {
        let t = TrustedProxies::new(&["10.0.0.0/8".into(), "192.0.2.1".into()]);
        // The client forged 6.6.6.6; the balancer (10.0.0.2) appended the real address,
        // a second trusted hop (192.0.2.1) appended the balancer.
        let mut h = headers(&["6.6.6.6, 198.51.100.7", "10.0.0.2"]);
        let c = t.forward(&mut h, "192.0.2.1".parse().unwrap());
        assert_eq!(c, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(xff(&h), "198.51.100.7, 10.0.0.2, 192.0.2.1");
        // Every hop trusted: the left-most is the client.
        let mut h = headers(&["10.1.1.1, 10.2.2.2"]);
        let c = t.forward(&mut h, "10.0.0.9".parse().unwrap());
        assert_eq!(c, "10.1.1.1".parse::<IpAddr>().unwrap());
        // Garbage stops the walk at the last hop that could be read.
        let mut h = headers(&["198.51.100.7, unknown, 10.0.0.3"]);
        let c = t.forward(&mut h, "10.0.0.9".parse().unwrap());
        assert_eq!(c, "10.0.0.3".parse::<IpAddr>().unwrap());
        assert_eq!(xff(&h), "10.0.0.3, 10.0.0.9");
        // Ports and brackets.
        let mut h = headers(&["[2001:db8::7]:443, 198.51.100.8:1234"]);
        let c = t.forward(&mut h, "10.0.0.9".parse().unwrap());
        assert_eq!(c, "198.51.100.8".parse::<IpAddr>().unwrap());
        // A trusted peer without the header is the client.
        let mut h = HeaderMap::new();
        let c = t.forward(&mut h, "10.0.0.9".parse().unwrap());
        assert_eq!(c, "10.0.0.9".parse::<IpAddr>().unwrap());
        assert_eq!(xff(&h), "10.0.0.9");
    }

    #[test]
    fn nothing_trusted_keeps_the_appended_chain() {
        let t = TrustedProxies::new(&[]);
        let mut h = headers(&["203.0.113.9"]);
        let c = t.forward(&mut h, "127.0.0.1".parse().unwrap());
        assert_eq!(c, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(xff(&h), "203.0.113.9, 127.0.0.1");
    }
}

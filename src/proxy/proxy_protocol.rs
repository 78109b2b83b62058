//! The PROXY protocol (HAProxy, v1 text and v2 binary) on listeners with
//! `proxy_protocol: true`: the balancer in front opens each connection with a header naming
//! the client, and that address replaces the TCP peer.
//!
//! Only the header is read, never a byte past it (v2 says its length; v1 is read a byte at a
//! time up to its CRLF, 107 bytes at most), so TLS or HTTP then starts on a clean stream. A
//! connection whose first bytes are not a valid header is closed: on such a listener a
//! client could otherwise name any address it likes, and on the other listeners a header is
//! never accepted (it is not HTTP, so hyper refuses it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The v2 signature (12 bytes).
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// The longest v1 header, CRLF included.
const V1_MAX: usize = 107;

/// The longest v2 address block accepted (addresses and TLVs; balancers send well under).
const V2_MAX: usize = 4096;

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyHeaderError {
    /// The connection did not start with a PROXY header.
    #[error("no PROXY protocol header")]
    Missing,
    /// The header was malformed.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    /// The peer closed or failed before the header ended.
    #[error("connection ended inside the PROXY protocol header")]
    Truncated,
}

/// Reads a PROXY header from `s`. `Ok(Some(addr))`: the client's address; `Ok(None)`: the
/// header names no client (v1 `UNKNOWN`, v2 `LOCAL` or an unspecified family, as health
/// checks of the balancer send), so the TCP peer stands.
pub async fn read_header<S: AsyncRead + Unpin>(
    s: &mut S,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut head = [0u8; 16];
    read(s, &mut head[..12]).await?;
    if &head[..12] == V2_SIG {
        read(s, &mut head[12..16]).await?;
        let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
        if len > V2_MAX {
            return Err(ProxyHeaderError::Malformed("v2 address block too long"));
        }
        let mut body = vec![0u8; len];
        read(s, &mut body).await?;
        return parse_v2(head[12], head[13], &body);
    }
    if !head.starts_with(b"PROXY ") {
        return Err(ProxyHeaderError::Missing);
    }
    let mut line = [0u8; V1_MAX];
    line[..12].copy_from_slice(&head[..12]);
    let mut len = 12;
    while !line[..len].ends_with(b"\r\n") {
        if len == V1_MAX {
            return Err(ProxyHeaderError::Malformed("v1 line longer than 107 bytes"));
        }
        read(s, &mut line[len..len + 1]).await?;
        len += 1;
    }
    parse_v1(&line[..len - 2])
}

async fn read<S: AsyncRead + Unpin>(s: &mut S, buf: &mut [u8]) -> Result<(), ProxyHeaderError> {
    s.read_exact(buf)
        .await
        .map(|_| ())
        .map_err(|_| ProxyHeaderError::Truncated)
}

/// `PROXY TCP4 <src> <dst> <sport> <dport>` (CRLF removed).
fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let bad = ProxyHeaderError::Malformed;
    let line = std::str::from_utf8(line).map_err(|_| bad("v1 header is not text"))?;
    let mut parts = line.split(' ');
    if parts.next() != Some("PROXY") {
        return Err(ProxyHeaderError::Missing);
    }
    let family = parts.next().ok_or(bad("v1 header without a protocol"))?;
    if family == "UNKNOWN" {
        return Ok(None);
    }
    let fields: Vec<&str> = parts.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(bad("v1 header needs 4 fields after the protocol"));
    };
    let ip = |s: &str| -> Result<IpAddr, ProxyHeaderError> {
        match family {
            "TCP4" => s
                .parse::<Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| bad("v1 TCP4 address is not IPv4")),
            "TCP6" => s
                .parse::<Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| bad("v1 TCP6 address is not IPv6")),
            _ => Err(bad("v1 protocol must be TCP4, TCP6 or UNKNOWN")),
        }
    };
    let port = |s: &str| -> Result<u16, ProxyHeaderError> {
        // Decimal without sign or leading zeros, as the specification writes them.
        if s.is_empty() || (s.len() > 1 && s.starts_with('0')) {
            return Err(bad("v1 port is not a decimal number"));
        }
        s.parse()
            .map_err(|_| bad("v1 port is not a number from 0 to 65535"))
    };
    let src = ip(src)?;
    ip(dst)?;
    let sport = port(sport)?;
    port(dport)?;
    Ok(Some(SocketAddr::new(src, sport)))
}

/// The v2 header after its signature: version/command, family/protocol, address block.
fn parse_v2(ver_cmd: u8, fam: u8, body: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let bad = ProxyHeaderError::Malformed;
    if ver_cmd >> 4 != 2 {
        return Err(bad("v2 version nibble is not 2"));
    }
    match ver_cmd & 0x0f {
        // LOCAL: the balancer's own connection (health checks); the address block is ignored.
        0 => return Ok(None),
        1 => {}
        _ => return Err(bad("v2 command is neither LOCAL nor PROXY")),
    }
    match fam {
        // UNSPEC: the receiver uses the real connection's addresses.
        0x00 => Ok(None),
        // TCP over IPv4: src(4) dst(4) sport(2) dport(2).
        0x11 => {
            let a: &[u8; 12] = body
                .get(..12)
                .and_then(|b| b.try_into().ok())
                .ok_or(bad("v2 TCP4 address block shorter than 12 bytes"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Ok(Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[8], a[9]]),
            )))
        }
        // TCP over IPv6: src(16) dst(16) sport(2) dport(2).
        0x21 => {
            let a: &[u8; 36] = body
                .get(..36)
                .and_then(|b| b.try_into().ok())
                .ok_or(bad("v2 TCP6 address block shorter than 36 bytes"))?;
            let mut src = [0u8; 16];
            src.copy_from_slice(&a[..16]);
            Ok(Some(SocketAddr::new(
                Ipv6Addr::from(src).into(),
                u16::from_be_bytes([a[32], a[33]]),
            )))
        }
        _ => Err(bad("v2 family/protocol must be TCP over IPv4 or IPv6")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn header(bytes: &[u8]) -> (Result<Option<SocketAddr>, ProxyHeaderError>, Vec<u8>) {
        let mut s = bytes;
        let r = read_header(&mut s).await;
        (r, s.to_vec())
    }

    fn v2(cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
        let mut b = V2_SIG.to_vec();
        b.push(cmd);
        b.push(fam);
        b.extend_from_slice(&(block.len() as u16).to_be_bytes());
        b.extend_from_slice(block);
        b
    }

    #[tokio::test]
    async fn v1_forms() {
        let (r, rest) = header(b"PROXY TCP4 198.51.100.7 10.0.0.1 51234 443\r\nGET /").await;
        assert_eq!(r, Ok(Some("198.51.100.7:51234".parse().unwrap())));
        assert_eq!(rest, b"GET /", "nothing past the header is read");
        let (r, _) = header(b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 80\r\n").await;
        assert_eq!(r, Ok(Some("[2001:db8::7]:4000".parse().unwrap())));
        let (r, rest) = header(b"PROXY UNKNOWN\r\nX").await;
        assert_eq!(r, Ok(None));
        assert_eq!(rest, b"X");
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"PROXY TCP4 198.51.100.7 10.0.0.1 51234\r\n",
            b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 198.51.100.7 10.0.0.1 012 443\r\n",
            b"PROXY TCP4 198.51.100.7 10.0.0.1 70000 443\r\n",
            b"PROXY UDP4 198.51.100.7 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 198.51.100.7  10.0.0.1 1 2\r\n",
        ] {
            let (r, _) = header(bad).await;
            assert!(r.is_err(), "{:?} accepted", String::from_utf8_lossy(bad));
        }
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(120));
        assert_eq!(
            header(long.as_bytes()).await.0,
            Err(ProxyHeaderError::Malformed("v1 line longer than 107 bytes"))
        );
        assert_eq!(
            header(b"PROXY TCP4 1.2.3.4").await.0,
            Err(ProxyHeaderError::Truncated)
        );
    }

    #[tokio::test]
    async fn v2_forms() {
        let mut block = vec![198, 51, 100, 7, 10, 0, 0, 1];
        block.extend_from_slice(&51234u16.to_be_bytes());
        block.extend_from_slice(&443u16.to_be_bytes());
        // A TLV after the addresses (AWS sends the VPC endpoint id this way).
        block.extend_from_slice(&[0xEA, 0x00, 0x03, b'v', b'p', b'c']);
        let mut bytes = v2(0x21, 0x11, &block);
        bytes.extend_from_slice(b"\x16\x03\x01");
        let (r, rest) = header(&bytes).await;
        assert_eq!(r, Ok(Some("198.51.100.7:51234".parse().unwrap())));
        assert_eq!(rest, b"\x16\x03\x01");

        let mut block6 = Vec::new();
        block6.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        block6.extend_from_slice(&[0u8; 16]);
        block6.extend_from_slice(&[0x0f, 0xa0, 0, 80]);
        let (r, _) = header(&v2(0x21, 0x21, &block6)).await;
        assert_eq!(r, Ok(Some("[2001:db8::7]:4000".parse().unwrap())));

        assert_eq!(header(&v2(0x20, 0x00, &[])).await.0, Ok(None), "LOCAL");
        assert_eq!(header(&v2(0x21, 0x00, &[])).await.0, Ok(None), "UNSPEC");
        assert!(header(&v2(0x21, 0x11, &block[..8])).await.0.is_err());
        assert!(
            header(&v2(0x11, 0x11, &block)).await.0.is_err(),
            "version 1 nibble"
        );
        assert!(
            header(&v2(0x22, 0x11, &block)).await.0.is_err(),
            "command 2"
        );
        assert!(header(&v2(0x21, 0x12, &block)).await.0.is_err(), "UDP");
        let mut cut = v2(0x21, 0x11, &block);
        cut.truncate(20);
        assert_eq!(header(&cut).await.0, Err(ProxyHeaderError::Truncated));
    }
}

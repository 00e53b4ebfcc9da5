//! The PROXY protocol (HAProxy's, versions 1 and 2) on listeners with
//! `enable_proxy_protocol`: the header a load balancer sends before the
//! client's bytes, naming the client's address (used in logs, the admin
//! API and `$SYS`) and, in version 2, the TLS it terminated.
//!
//! The header is read exactly (version 1 a byte at a time up to its CRLF,
//! at most 107 bytes; version 2 its 16-byte head, then the length it
//! announces, at most 500 bytes), so nothing of the client's own bytes is
//! taken with it. What Mosquitto refuses is refused: a malformed header,
//! version 2's LOCAL command and non-TCP families (but UNIX streams),
//! and with `proxy_protocol_v2_require_tls` a header without TLS.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::{ListenerConfig, ProxyVersion};
use crate::net::driver::Identity;

/// The version 2 signature.
const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 1's longest header, CRLF included.
const V1_MAX: usize = 107;
/// Version 2's longest address block ferrymq reads (as Mosquitto).
const V2_MAX: usize = 500;

/// What a PROXY header said.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Proxied {
    /// The client's address; `None`: the header names none (version 1's
    /// UNKNOWN, a UNIX stream) and the connection's own peer stands.
    pub source: Option<SocketAddr>,
    /// Version 2: the client connected over TLS (the PP2_TYPE_SSL TLV).
    pub tls: bool,
    /// ... and presented a certificate the proxy verified.
    pub verified_certificate: bool,
    /// ... whose Common Name is this.
    pub common_name: Option<String>,
}

/// Reads the PROXY header of `version` from `stream`.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    version: ProxyVersion,
) -> Result<Proxied, String> {
    match version {
        ProxyVersion::V1 => {
            let mut line = Vec::with_capacity(V1_MAX);
            loop {
                let b = stream.read_u8().await.map_err(|e| e.to_string())?;
                line.push(b);
                // Not a PROXY header: refused at once, not at the deadline.
                if line.len() <= 6 && !b"PROXY ".starts_with(&line) {
                    return Err("no PROXY header (version 1)".into());
                }
                if line.ends_with(b"\r\n") {
                    break;
                }
                if line.len() >= V1_MAX {
                    return Err("corrupt PROXY header (version 1, no CRLF)".into());
                }
            }
            parse_v1(&line)
        }
        ProxyVersion::V2 => {
            let mut signature = [0u8; 12];
            for (slot, expected) in signature.iter_mut().zip(SIGNATURE) {
                *slot = stream.read_u8().await.map_err(|e| e.to_string())?;
                if *slot != expected {
                    return Err("no PROXY header (version 2)".into());
                }
            }
            let mut rest = [0u8; 4];
            stream
                .read_exact(&mut rest)
                .await
                .map_err(|e| e.to_string())?;
            let [.., hi, lo] = rest;
            let mut head = [0u8; 16];
            for (slot, byte) in head.iter_mut().zip(signature.into_iter().chain(rest)) {
                *slot = byte;
            }
            let len = usize::from(u16::from_be_bytes([hi, lo]));
            if len > V2_MAX {
                return Err("corrupt PROXY header (version 2, too long)".into());
            }
            let mut body = vec![0u8; len];
            stream
                .read_exact(&mut body)
                .await
                .map_err(|e| e.to_string())?;
            parse_v2(&head, &body)
        }
    }
}

/// `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n`, or `PROXY UNKNOWN ...\r\n`.
pub fn parse_v1(line: &[u8]) -> Result<Proxied, String> {
    let corrupt = || "corrupt PROXY header (version 1)".to_string();
    let text = std::str::from_utf8(line).map_err(|_| corrupt())?;
    let text = text.strip_suffix("\r\n").ok_or_else(corrupt)?;
    let mut words = text.split(' ');
    if words.next() != Some("PROXY") {
        return Err(corrupt());
    }
    let family = words.next().ok_or_else(corrupt)?;
    if family == "UNKNOWN" {
        return Ok(Proxied::default());
    }
    let fields: Vec<&str> = words.collect();
    let [src, dst, sport, dport] = fields.as_slice() else {
        return Err(corrupt());
    };
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0);
    let (Some(sport), Some(_)) = (port(sport), port(dport)) else {
        return Err(corrupt());
    };
    let ip = match family {
        "TCP4" => src.parse::<Ipv4Addr>().map(IpAddr::V4).ok(),
        "TCP6" => src.parse::<Ipv6Addr>().map(IpAddr::V6).ok(),
        _ => None,
    };
    let valid_dst = match family {
        "TCP4" => dst.parse::<Ipv4Addr>().is_ok(),
        _ => dst.parse::<Ipv6Addr>().is_ok(),
    };
    match ip {
        Some(ip) if valid_dst => Ok(Proxied {
            source: Some(SocketAddr::new(ip, sport)),
            ..Proxied::default()
        }),
        _ => Err(corrupt()),
    }
}

/// The binary version: signature, version 2 with the PROXY command, a TCP
/// over IPv4 or IPv6 or UNIX stream family, addresses, then TLVs.
pub fn parse_v2(head: &[u8; 16], body: &[u8]) -> Result<Proxied, String> {
    let corrupt = || "corrupt PROXY header (version 2)".to_string();
    let (signature, [command, family, ..]) = head.split_first_chunk::<12>().ok_or_else(corrupt)?
    else {
        return Err(corrupt());
    };
    if *signature != SIGNATURE || command >> 4 != 2 {
        return Err(corrupt());
    }
    match command & 0x0F {
        1 => {}
        0 => return Err("PROXY header with the LOCAL command, refused as Mosquitto does".into()),
        _ => return Err(corrupt()),
    }
    let mut rest = body;
    let source = match family {
        // TCP over IPv4: src(4) dst(4) sport(2) dport(2).
        0x11 => {
            let (ip, port) = addresses::<4>(&mut rest).ok_or_else(corrupt)?;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        // TCP over IPv6: src(16) dst(16) sport(2) dport(2).
        0x21 => {
            let (ip, port) = addresses::<16>(&mut rest).ok_or_else(corrupt)?;
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        // UNIX stream: src(108) dst(108); no socket address for it.
        0x31 => {
            let _addresses: [u8; 216] = take(&mut rest).ok_or_else(corrupt)?;
            None
        }
        _ => return Err(corrupt()),
    };
    let mut proxied = Proxied {
        source,
        ..Proxied::default()
    };
    read_tlvs(rest, &mut proxied).ok_or_else(corrupt)?;
    Ok(proxied)
}

/// The first `N` bytes of `buf`, which moves past them.
fn take<const N: usize>(buf: &mut &[u8]) -> Option<[u8; N]> {
    let (first, rest) = buf.split_first_chunk::<N>()?;
    *buf = rest;
    Some(*first)
}

/// Source and destination addresses of `N` bytes, then their ports: the
/// source's address and port.
fn addresses<const N: usize>(buf: &mut &[u8]) -> Option<([u8; N], u16)> {
    let source: [u8; N] = take(buf)?;
    let _destination: [u8; N] = take(buf)?;
    let port = u16::from_be_bytes(take(buf)?);
    let _destination_port: [u8; 2] = take(buf)?;
    Some((source, port))
}

/// One type-length-value: its type and value, `buf` moving past it.
fn tlv<'a>(buf: &mut &'a [u8]) -> Option<(u8, &'a [u8])> {
    let [kind, hi, lo] = take::<3>(buf)?;
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    let value = buf.get(..len)?;
    *buf = buf.get(len..)?;
    Some((kind, value))
}

/// Who the client is, by what the proxy says of its TLS, as `listener`
/// wants it: `proxy_protocol_v2_require_tls` needs TLS, `require_certificate`
/// a certificate the proxy verified, `use_identity_as_username` its CN.
pub(crate) fn identity(proxied: &Proxied, listener: &ListenerConfig) -> Result<Identity, String> {
    if listener.proxy_protocol_v2_require_tls && !proxied.tls {
        return Err(
            "the PROXY header says the client did not use TLS, which the listener \
                    requires (proxy_protocol_v2_require_tls)"
                .into(),
        );
    }
    if listener.require_certificate && !proxied.verified_certificate {
        return Err(
            "the PROXY header names no verified client certificate, which the \
                    listener requires (require_certificate)"
                .into(),
        );
    }
    if !listener.use_identity_as_username {
        return Ok(Identity::Connect);
    }
    Ok(match (&proxied.common_name, proxied.verified_certificate) {
        (Some(cn), true) => Identity::Certificate(cn.as_str().into()),
        _ => Identity::Missing,
    })
}

/// The TLVs; of them only PP2_TYPE_SSL (0x20) and its CN sub-TLV matter.
fn read_tlvs(mut tlvs: &[u8], proxied: &mut Proxied) -> Option<()> {
    while !tlvs.is_empty() {
        let (kind, mut value) = tlv(&mut tlvs)?;
        if kind != 0x20 {
            continue;
        }
        // client flags (1), verify (4), then sub-TLVs.
        let [client] = take::<1>(&mut value)?;
        let verify = u32::from_be_bytes(take::<4>(&mut value)?);
        proxied.tls = true;
        // PP2_CLIENT_SSL (1) with a certificate on the connection or the
        // session (PP2_CLIENT_CERT_CONN 2, PP2_CLIENT_CERT_SESS 4) that
        // the proxy verified (0).
        proxied.verified_certificate = client & 0x01 != 0 && client & 0x06 != 0 && verify == 0;
        while !value.is_empty() {
            let (kind, sub) = tlv(&mut value)?;
            // PP2_SUBTYPE_SSL_CN
            if kind == 0x22 {
                proxied.common_name = Some(String::from_utf8_lossy(sub).into_owned());
            }
        }
    }
    Some(())
}

/// A PROXY version 2 header for `source` (tests and the interop suite).
pub fn v2_header(source: SocketAddr, destination: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    out.push(0x21);
    let mut body = Vec::new();
    match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.push(0x11);
            body.extend(s.ip().octets());
            body.extend(d.ip().octets());
        }
        (s, d) => {
            out.push(0x21);
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
                IpAddr::V6(ip) => ip.octets(),
            };
            body.extend(v6(s));
            body.extend(v6(d));
        }
    }
    body.extend(source.port().to_be_bytes());
    body.extend(destination.port().to_be_bytes());
    body.extend_from_slice(tlvs);
    out.extend((body.len() as u16).to_be_bytes());
    out.extend(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_headers() {
        let p = parse_v1(b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 1883\r\n").unwrap();
        assert_eq!(p.source, Some("192.0.2.7:56324".parse().unwrap()));
        let p = parse_v1(b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 1883\r\n").unwrap();
        assert_eq!(p.source, Some("[2001:db8::7]:4000".parse().unwrap()));
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n").unwrap().source, None);
        for bad in [
            &b"PROXY TCP4 192.0.2.7 198.51.100.1 0 1883\r\n"[..],
            b"PROXY TCP4 2001:db8::7 198.51.100.1 1 1883\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 1\r\n",
            b"PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n",
            b"HELLO\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\n",
        ] {
            assert!(parse_v1(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn version_2_headers_and_tls() {
        let src: SocketAddr = "192.0.2.7:56324".parse().unwrap();
        let dst: SocketAddr = "198.51.100.1:1883".parse().unwrap();
        let header = v2_header(src, dst, &[]);
        let (head, body) = header.split_at(16);
        let p = parse_v2(head.try_into().unwrap(), body).unwrap();
        assert_eq!((p.source, p.tls), (Some(src), false));
        // SSL TLV: client SSL|CERT_SESS, verify 0, CN "dev-7".
        let mut ssl = vec![0x05, 0, 0, 0, 0, 0x22, 0, 5];
        ssl.extend(b"dev-7");
        let mut tlv = vec![0x20];
        tlv.extend((ssl.len() as u16).to_be_bytes());
        tlv.extend(ssl);
        let header = v2_header(src, dst, &tlv);
        let (head, body) = header.split_at(16);
        let p = parse_v2(head.try_into().unwrap(), body).unwrap();
        assert!(p.tls && p.verified_certificate);
        assert_eq!(p.common_name.as_deref(), Some("dev-7"));
        // LOCAL, a bad signature, a short body, a truncated TLV: refused.
        let mut local = header.clone();
        local[12] = 0x20;
        let (head, body) = local.split_at(16);
        assert!(parse_v2(head.try_into().unwrap(), body).is_err());
        let mut bad = header.clone();
        bad[0] = b'X';
        let (head, body) = bad.split_at(16);
        assert!(parse_v2(head.try_into().unwrap(), body).is_err());
        let (head, body) = header.split_at(16);
        assert!(parse_v2(head.try_into().unwrap(), &body[..8]).is_err());
        assert!(parse_v2(head.try_into().unwrap(), &body[..body.len() - 2]).is_err());
    }
}

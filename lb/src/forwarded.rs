//! The forwarding headers iogate-lb puts on every request it sends upstream, as nginx's
//! `proxy_set_header` lines in front of socket.io usually do:
//!
//! - `X-Forwarded-For`: the client's address appended to what the client sent (`a, b, client`),
//!   as nginx's `$proxy_add_x_forwarded_for`; a value that is not visible ASCII is replaced;
//! - `X-Real-IP`: the client's address alone (any value the client sent is replaced);
//! - `X-Forwarded-Proto`: `https` on a TLS listener, else `http` (replaced likewise).
//!
//! A backend can trust `X-Real-IP` and `X-Forwarded-Proto` and the last `X-Forwarded-For` entry:
//! the LB always writes them. The address is written without `fmt`: `Display` of an `IpAddr`
//! was 1,300 of the ~8,000 instructions these headers cost per request (callgrind, see
//! docs/benchmarks.md); an IPv4 address is formatted by hand, an IPv6 one still by `Display`.

use std::borrow::Cow;
use std::net::IpAddr;

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderValue;
use pingora_core::{ErrorType, OrErr};
use pingora_http::RequestHeader;

/// Longest text of an IPv4 address (`255.255.255.255`).
const MAX_IPV4_TEXT: usize = 15;

/// `ip` as text: an IPv4 address written by hand into `buf`, an IPv6 one by `Display`.
pub fn ip_text(ip: IpAddr, buf: &mut [u8; MAX_IPV4_TEXT]) -> Cow<'_, [u8]> {
    let v4 = match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => return Cow::Owned(v6.to_string().into_bytes()),
    };
    let mut n = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    Cow::Borrowed(&buf[..n])
}

/// Set the three forwarding headers on `req` (the request as it goes upstream) for a client at
/// `client` (none for a connection without an inet peer: `X-Forwarded-For` is passed as sent,
/// `X-Real-IP` removed).
pub fn apply(
    req: &mut RequestHeader,
    client: Option<IpAddr>,
    tls: bool,
) -> pingora_core::Result<()> {
    if let Some(ip) = client {
        let mut buf = [0u8; MAX_IPV4_TEXT];
        let ip = ip_text(ip, &mut buf);
        let ip = ip.as_ref();
        let prev = req
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty());
        let real_ip = header_value(Bytes::copy_from_slice(ip))?;
        let xff = match prev {
            Some(prev) => {
                let mut v = BytesMut::with_capacity(prev.len() + 2 + ip.len());
                v.put_slice(prev.as_bytes());
                v.put_slice(b", ");
                v.put_slice(ip);
                header_value(v.freeze())?
            }
            None => real_ip.clone(),
        };
        req.insert_header("X-Forwarded-For", xff)?;
        req.insert_header("X-Real-IP", real_ip)?;
    } else {
        // No address to write: a value the client sent must not reach the backend as ours.
        req.remove_header("X-Real-IP");
    }
    let proto = if tls { "https" } else { "http" };
    req.insert_header("X-Forwarded-Proto", HeaderValue::from_static(proto))?;
    Ok(())
}

/// A header value of an address's text, or of a visible-ASCII value with one appended: every
/// byte is valid in a header, so the check cannot fail (if it did, the request fails with it).
fn header_value(b: Bytes) -> pingora_core::Result<HeaderValue> {
    HeaderValue::from_maybe_shared(b)
        .or_err(ErrorType::InvalidHTTPHeader, "forwarding header value")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn addresses_read_as_display_writes_them() {
        let mut buf = [0u8; MAX_IPV4_TEXT];
        let v4 = [
            [0, 0, 0, 0],
            [127, 0, 0, 1],
            [10, 9, 99, 100],
            [255, 255, 255, 255],
            [1, 20, 199, 250],
        ];
        for o in v4 {
            let ip = IpAddr::V4(Ipv4Addr::from(o));
            assert_eq!(&*ip_text(ip, &mut buf), ip.to_string().as_bytes());
        }
        let v6: [Ipv6Addr; 4] = [
            Ipv6Addr::LOCALHOST,
            "2001:db8::8a2e:370:7334".parse().unwrap(),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
            Ipv4Addr::new(255, 255, 255, 255).to_ipv6_mapped(),
        ];
        for a in v6 {
            let ip = IpAddr::V6(a);
            assert_eq!(&*ip_text(ip, &mut buf), ip.to_string().as_bytes());
        }
    }

    fn upstream(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/socket.io/", Some(headers.len())).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        req
    }

    fn values(req: &RequestHeader, name: &str) -> Vec<String> {
        req.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn the_client_is_appended_and_spoofed_values_are_replaced() {
        let mut req = upstream(&[
            ("X-Forwarded-For", "203.0.113.7, 10.0.0.1"),
            ("X-Real-IP", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
        ]);
        apply(&mut req, Some("192.0.2.44".parse().unwrap()), false).unwrap();
        assert_eq!(
            values(&req, "x-forwarded-for"),
            ["203.0.113.7, 10.0.0.1, 192.0.2.44"]
        );
        assert_eq!(values(&req, "x-real-ip"), ["192.0.2.44"]);
        assert_eq!(values(&req, "x-forwarded-proto"), ["http"]);
    }

    #[test]
    fn a_first_hop_gets_the_client_alone_and_the_scheme() {
        let mut req = upstream(&[("Host", "example.com"), ("X-Forwarded-For", "")]);
        apply(&mut req, Some("2001:db8::1".parse().unwrap()), true).unwrap();
        assert_eq!(values(&req, "x-forwarded-for"), ["2001:db8::1"]);
        assert_eq!(values(&req, "x-real-ip"), ["2001:db8::1"]);
        assert_eq!(values(&req, "x-forwarded-proto"), ["https"]);
        assert_eq!(values(&req, "host"), ["example.com"]);

        let mut req = upstream(&[("X-Real-IP", "6.6.6.6")]);
        apply(&mut req, None, false).unwrap();
        assert_eq!(values(&req, "x-forwarded-for"), Vec::<String>::new());
        assert_eq!(values(&req, "x-real-ip"), Vec::<String>::new());
        assert_eq!(values(&req, "x-forwarded-proto"), ["http"]);
    }
}

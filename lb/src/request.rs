//! What the LB reads from a client's request head besides the Engine.IO fields: a cookie by
//! name, and the value the `hash` policy hashes. pingora has no cookie or query parser.

use std::net::IpAddr;

use pingora_http::RequestHeader;

use crate::config::HashKey;

/// The value of cookie `name` (the first one, over every `Cookie` header).
pub fn cookie<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .find_map(|v| {
            v.to_str().ok()?.split(';').find_map(|kv| {
                let (k, v) = kv.trim().split_once('=')?;
                (k.trim() == name).then(|| v.trim())
            })
        })
}

/// The value `key` selects in this request (`client_ip` is `ip`).
pub fn hash_input(key: &HashKey, req: &RequestHeader, ip: Option<IpAddr>) -> Option<String> {
    match key {
        HashKey::Query(name) => req.uri.query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == name.as_str())
                .map(|(_, v)| v.into_owned())
        }),
        HashKey::Header(name) => req
            .headers
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        HashKey::Cookie(name) => cookie(req, name).map(str::to_string),
        HashKey::ClientIp => ip.map(|ip| ip.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", uri.as_bytes(), None).expect("request");
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).expect("header");
        }
        r
    }

    #[test]
    fn cookies_over_several_headers() {
        let r = req(
            "/",
            &[
                ("cookie", "a=1; io=x"),
                ("cookie", " iogate_backend = node-2 ;b=2"),
            ],
        );
        assert_eq!(cookie(&r, "iogate_backend"), Some("node-2"));
        assert_eq!(cookie(&r, "a"), Some("1"));
        assert_eq!(cookie(&r, "missing"), None);
        assert_eq!(cookie(&req("/", &[("cookie", "novalue")]), "novalue"), None);
    }

    #[test]
    fn hash_inputs() {
        let r = req(
            "/socket.io/?EIO=4&room=a%20b",
            &[("x-tenant", "t1"), ("cookie", "k=v")],
        );
        let ip: IpAddr = [10, 0, 0, 1].into();
        assert_eq!(
            hash_input(&HashKey::Query("room".into()), &r, None),
            Some("a b".into())
        );
        assert_eq!(
            hash_input(&HashKey::Header("x-tenant".into()), &r, None),
            Some("t1".into())
        );
        assert_eq!(
            hash_input(&HashKey::Cookie("k".into()), &r, None),
            Some("v".into())
        );
        assert_eq!(
            hash_input(&HashKey::ClientIp, &r, Some(ip)),
            Some("10.0.0.1".into())
        );
        assert_eq!(hash_input(&HashKey::Query("none".into()), &r, None), None);
    }
}

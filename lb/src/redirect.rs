//! The HTTP → HTTPS redirect listener (`listeners[].redirect_to_https`): every request is
//! answered `308 Permanent Redirect` to the same host and path over `https://`, like nginx's
//! `return 308 https://$host$request_uri;`. 308 (not 301) keeps a POST a POST, which matters for
//! Engine.IO's polling POSTs. Nothing is proxied; a request without a usable `Host` gets 400.

use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

/// The redirect app of one listener.
pub struct HttpsRedirect {
    /// The port clients reach the TLS listener on (443 is left out of the URL).
    pub port: u16,
}

/// The `Location` for a request with this `Host` and path-and-query, if the host is usable.
pub fn location(host: &str, path_and_query: &str, port: u16) -> Option<String> {
    // Host without its port; IPv6 literals keep their brackets.
    let name = if host.starts_with('[') {
        host.split_inclusive(']').next()?
    } else {
        host.split(':').next()?
    };
    let valid = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b));
    if !valid {
        return None;
    }
    let path = if path_and_query.starts_with('/') {
        path_and_query
    } else {
        "/"
    };
    Some(if port == 443 {
        format!("https://{name}{path}")
    } else {
        format!("https://{name}:{port}{path}")
    })
}

#[async_trait]
impl ServeHttp for HttpsRedirect {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()));
        let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let (status, location) = match host.and_then(|h| location(h, pq, self.port)) {
            Some(l) => (308, Some(l)),
            None => (400, None),
        };
        let body: &[u8] = if location.is_some() {
            b""
        } else {
            b"missing or invalid Host header\n"
        };
        let mut b = Response::builder()
            .status(status)
            .header(http::header::CONTENT_LENGTH, body.len())
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8");
        if let Some(l) = location {
            b = b.header(http::header::LOCATION, l);
        }
        b.body(body.to_vec())
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::location;

    #[test]
    fn locations() {
        assert_eq!(
            location(
                "chat.example:80",
                "/socket.io/?EIO=4&transport=polling",
                443
            )
            .as_deref(),
            Some("https://chat.example/socket.io/?EIO=4&transport=polling")
        );
        assert_eq!(
            location("chat.example", "/", 8443).as_deref(),
            Some("https://chat.example:8443/")
        );
        assert_eq!(
            location("[::1]:8080", "/x", 8443).as_deref(),
            Some("https://[::1]:8443/x")
        );
        assert_eq!(location("", "/", 443), None);
        assert_eq!(location("evil.example/@x", "/", 443), None);
        assert_eq!(location("a b", "/", 443), None);
    }
}

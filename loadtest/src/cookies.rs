//! A per-client cookie jar, like a browser's for one site: every `Set-Cookie` a response carries
//! (polling responses and the WebSocket 101) is kept, and sent back as `Cookie` on the client's
//! later requests, across reconnects. This is what lets proxies that pin sessions with an
//! inserted cookie (HAProxy `cookie … insert`, nginx `map $cookie_…`) be measured with
//! long-polling clients.
//!
//! Scope is one server, so domain and path attributes are ignored; a cookie whose value is empty
//! or that carries `Max-Age=0` is removed.

use std::sync::Mutex;

use http::HeaderMap;
use http::header::SET_COOKIE;

/// Cookies of one client.
#[derive(Debug, Default)]
pub struct CookieJar {
    cookies: Mutex<Vec<(String, String)>>,
}

impl CookieJar {
    /// Remember the `Set-Cookie` headers of a response.
    pub fn store(&self, headers: &HeaderMap) {
        let Ok(mut jar) = self.cookies.lock() else {
            return;
        };
        for v in headers.get_all(SET_COOKIE) {
            let Ok(v) = v.to_str() else { continue };
            let mut parts = v.split(';');
            let Some((name, value)) = parts.next().and_then(|kv| kv.split_once('=')) else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            if name.is_empty() {
                continue;
            }
            let expired = parts.any(|a| a.trim().eq_ignore_ascii_case("max-age=0"));
            jar.retain(|(n, _)| n != name);
            if !expired && !value.is_empty() {
                jar.push((name.to_string(), value.to_string()));
            }
        }
    }

    /// The `Cookie` header value to send, if any cookie is held.
    pub fn header(&self) -> Option<String> {
        let jar = self.cookies.lock().ok()?;
        if jar.is_empty() {
            return None;
        }
        Some(
            jar.iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn keeps_replaces_and_expires() {
        let jar = CookieJar::default();
        assert_eq!(jar.header(), None);
        let mut h = HeaderMap::new();
        h.append(
            SET_COOKIE,
            HeaderValue::from_static("SRV=n1; path=/; HttpOnly"),
        );
        h.append(SET_COOKIE, HeaderValue::from_static("io=abc"));
        jar.store(&h);
        assert_eq!(jar.header().as_deref(), Some("SRV=n1; io=abc"));
        let mut h = HeaderMap::new();
        h.append(SET_COOKIE, HeaderValue::from_static("SRV=n2"));
        jar.store(&h);
        assert_eq!(jar.header().as_deref(), Some("io=abc; SRV=n2"));
        let mut h = HeaderMap::new();
        h.append(SET_COOKIE, HeaderValue::from_static("io=gone; Max-Age=0"));
        jar.store(&h);
        assert_eq!(jar.header().as_deref(), Some("SRV=n2"));
    }
}

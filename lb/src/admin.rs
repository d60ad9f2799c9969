//! The admin API on its own listener (loopback by default; optional bearer token):
//!
//! - the token (`admin.token`, `admin.token_file` or `IOGATE_LB_ADMIN_TOKEN`) is compared in
//!   constant time; a listener reachable from other hosts without one refuses to start (config
//!   validation);
//! - a state-changing request (`POST`) sent by a browser — it carries `Origin` or
//!   `Sec-Fetch-Site` — is refused with 403, token or not: a page the operator visits cannot
//!   drain backends through a cross-site form or a DNS-rebound name. curl and scripts send
//!   neither header.
//!
//! - `GET /metrics` — Prometheus text from the default registry (the one pingora-prometheus
//!   serves), gauges refreshed first;
//! - `GET /api/backends` — JSON: id, address, weight, state (`pending`, `up`, `draining`,
//!   `down`), who asked it to drain (`admin`, `config`, `backend`), session-id tag, live sessions,
//!   WebSockets, polling sessions, last health result;
//! - `POST /api/backends/{id}/drain` and `/undrain`.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use prometheus::{Encoder, TextEncoder};
use serde_json::json;

use crate::state::Lb;

/// The admin HTTP app.
pub struct Admin(pub Arc<Lb>);

/// Whether `a` equals `b`, in a time that depends on their lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn reply(code: u16, ctype: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, ctype)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn json_reply(code: u16, v: serde_json::Value) -> Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(&v).unwrap_or_default();
    body.push(b'\n');
    reply(code, "application/json", body)
}

/// The backends listing.
pub fn backends_json(lb: &Lb) -> serde_json::Value {
    let list: Vec<_> = lb
        .registry
        .all()
        .iter()
        .map(|b| {
            json!({
                "id": b.id,
                "address": b.addr.to_string(),
                "weight": b.weight(),
                "state": b.state(),
                "draining_by": b.draining_by(),
                "sid_tag": b.sid_tag(),
                "live_sessions": b.live(),
                "websockets": b.websockets(),
                "polling_sessions": b.polling(),
                "last_health": b.last_health(),
            })
        })
        .collect();
    json!({
        "backends": list,
        "sid_table_entries": lb.sids.len(),
        "sid_tag_conflicts": *lb.tags.conflicts(),
    })
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let lb = &self.0;
        let req = session.req_header();
        let cfg = lb.config.load();
        if let Some(token) = &cfg.admin.effective_token {
            let ok = req
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()));
            if !ok {
                return json_reply(401, json!({"error": "missing or wrong bearer token"}));
            }
        }
        let from_browser = req.headers.contains_key(http::header::ORIGIN)
            || req.headers.contains_key("sec-fetch-site");
        if req.method != http::Method::GET && from_browser {
            return json_reply(
                403,
                json!({"error": "state-changing admin requests from a browser are refused"}),
            );
        }
        let method = req.method.clone();
        let path = req.uri.path().to_string();
        match (method.as_str(), path.as_str()) {
            ("GET", "/metrics") => {
                crate::control::refresh_gauges(lb);
                let mut buf = Vec::new();
                let enc = TextEncoder::new();
                if enc.encode(&prometheus::gather(), &mut buf).is_err() {
                    return reply(500, "text/plain", b"encode error\n".to_vec());
                }
                reply(200, iogate_shared::metrics::CONTENT_TYPE, buf)
            }
            ("GET", "/api/backends") => json_reply(200, backends_json(lb)),
            ("POST", p) if p.starts_with("/api/backends/") => {
                let rest = &p["/api/backends/".len()..];
                let Some((id, action)) = rest.rsplit_once('/') else {
                    return json_reply(404, json!({"error": "not found"}));
                };
                let Some(b) = lb.registry.get(id) else {
                    return json_reply(404, json!({"error": format!("no backend `{id}`")}));
                };
                match action {
                    "drain" => b.set_admin_drain(true),
                    "undrain" => b.set_admin_drain(false),
                    _ => return json_reply(404, json!({"error": "use /drain or /undrain"})),
                }
                tracing::info!(backend = %id, action, "admin request");
                json_reply(200, json!({"id": id, "state": b.state()}))
            }
            _ => json_reply(
                404,
                json!({"error": "not found", "endpoints": ["GET /metrics", "GET /api/backends", "POST /api/backends/{id}/drain", "POST /api/backends/{id}/undrain"]}),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}

//! The chat demo page, served by the node when `demo.dir` is set (the demo/ folder): `GET /`,
//! `/demo/app.js`, `/demo/style.css`, the official socket.io-client browser bundle from
//! `demo/node_modules` at `/demo/vendor/socket.io.min.js`, and `GET /demo/backends`, a read-only
//! copy of the load balancer's `/api/backends` (from `demo.lb_admin`) for the sessions panel.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::DemoConfig;

#[derive(Clone)]
struct Demo {
    dir: Arc<PathBuf>,
    lb_admin: Option<Arc<str>>,
}

/// The demo routes, or none when `demo.dir` is unset.
pub fn routes(cfg: &DemoConfig) -> Option<Router> {
    let dir = cfg.dir.clone()?;
    let state = Demo {
        dir: Arc::new(dir),
        lb_admin: cfg.lb_admin.as_deref().map(Arc::from),
    };
    Some(
        Router::new()
            .route(
                "/",
                get(|s: State<Demo>| file(s, "index.html", "text/html; charset=utf-8")),
            )
            .route(
                "/demo/app.js",
                get(|s: State<Demo>| file(s, "app.js", "text/javascript; charset=utf-8")),
            )
            .route(
                "/demo/style.css",
                get(|s: State<Demo>| file(s, "style.css", "text/css; charset=utf-8")),
            )
            .route(
                "/demo/vendor/socket.io.min.js",
                get(|s: State<Demo>| {
                    file(
                        s,
                        "node_modules/socket.io-client/dist/socket.io.min.js",
                        "text/javascript; charset=utf-8",
                    )
                }),
            )
            .route("/demo/backends", get(backends))
            .with_state(state),
    )
}

async fn file(State(d): State<Demo>, name: &'static str, ctype: &'static str) -> Response {
    match tokio::fs::read(d.dir.join(name)).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, ctype),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => {
            let hint = if name.starts_with("node_modules") {
                " (run `npm ci` in the demo folder)"
            } else {
                ""
            };
            (StatusCode::NOT_FOUND, format!("{name}: {e}{hint}\n")).into_response()
        }
    }
}

async fn backends(State(d): State<Demo>) -> Response {
    let Some(addr) = d.lb_admin.clone() else {
        return (StatusCode::NOT_FOUND, "demo.lb_admin is not configured\n").into_response();
    };
    match tokio::time::timeout(Duration::from_secs(1), fetch_backends(&addr)).await {
        Ok(Ok(body)) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::BAD_GATEWAY,
            format!("load balancer admin API: {e}\n"),
        )
            .into_response(),
        Err(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            "load balancer admin API timed out\n",
        )
            .into_response(),
    }
}

async fn fetch_backends(addr: &str) -> std::io::Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET /api/backends HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.take(1 << 20).read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("malformed response"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(
            head.lines().next().unwrap_or("bad status").to_string(),
        ));
    }
    Ok(body.to_string())
}

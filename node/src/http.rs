//! Plain HTTP on the Socket.IO port: `/healthz`, `/readyz`, `/metrics`, and the middleware in
//! front of the Engine.IO path that tracks each session's connection (for drain) and counts
//! rejected Engine.IO requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, OriginalUri, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::bus::BusStatus;
use crate::connections::{ConnInfo, SessionConns};
use crate::metrics::NodeMetrics;

/// Give a handshake request its own copy of the URI and headers.
///
/// hyper parses a request without copying: the URI and header values are slices of the
/// connection's read buffer (16 KiB once grown). engineioxide keeps every session's handshake
/// request head for the socket's lifetime, so without this copy each session pins that whole
/// buffer — measured at 18 KiB of an idle WebSocket session's 30 KiB. Only handshakes (no `sid`)
/// are copied: later requests of a session are not kept.
fn detach_request_head(req: &mut Request) {
    if let Ok(uri) = axum::http::Uri::try_from(req.uri().to_string()) {
        // axum's router keeps a clone of the URI too.
        if let Some(OriginalUri(original)) = req.extensions_mut().get_mut::<OriginalUri>() {
            *original = uri.clone();
        }
        *req.uri_mut() = uri;
    }
    let mut headers = HeaderMap::with_capacity(req.headers().len());
    // Header names are already owned (hyper's parser copies them); values are slices.
    for (name, value) in req.headers() {
        let Ok(mut copy) = HeaderValue::from_bytes(value.as_bytes()) else {
            continue;
        };
        copy.set_sensitive(value.is_sensitive());
        headers.append(name.clone(), copy);
    }
    *req.headers_mut() = headers;
}

/// Local sockets by transport: `(polling, websocket)`.
pub type SocketCounter = Arc<dyn Fn() -> (usize, usize) + Send + Sync>;

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// This node's id.
    pub node_id: Arc<str>,
    /// The tag of the session ids it issues.
    pub sid_tag: Arc<str>,
    /// True from the first shutdown signal on.
    pub draining: Arc<AtomicBool>,
    /// True once every namespace is registered.
    pub ready: Arc<AtomicBool>,
    /// Redis bus health.
    pub bus: Arc<BusStatus>,
    /// Metrics.
    pub metrics: NodeMetrics,
    /// Counts local sockets.
    pub sockets: SocketCounter,
    /// Session → connection table.
    pub conns: Arc<SessionConns>,
    /// The Engine.IO path, e.g. `/socket.io`.
    pub eio_path: Arc<str>,
}

/// The plain HTTP routes.
pub fn routes(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(st): State<HttpState>) -> Response {
    let (polling, websocket) = (st.sockets)();
    let draining = st.draining.load(Ordering::Acquire);
    let registered = st.ready.load(Ordering::Acquire);
    let ready = registered && !draining;
    let body = json!({
        "ready": ready,
        "node": &*st.node_id,
        "sid_tag": &*st.sid_tag,
        "sockets": polling + websocket,
        "draining": draining,
        "namespaces_registered": registered,
        "bus": st.bus.get().as_str(),
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn metrics(State(st): State<HttpState>) -> Response {
    let (polling, websocket) = (st.sockets)();
    st.metrics
        .sockets
        .with_label_values(&["polling"])
        .set(polling as i64);
    st.metrics
        .sockets
        .with_label_values(&["websocket"])
        .set(websocket as i64);
    (
        [(header::CONTENT_TYPE, iogate_shared::metrics::CONTENT_TYPE)],
        iogate_shared::metrics::render(&st.metrics.registry),
    )
        .into_response()
}

/// An Engine.IO `close` packet as a polling answer: the client closes the transport ("transport
/// close") and reconnects — elsewhere, through the load balancer.
fn close_packet() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        Body::from("1"),
    )
        .into_response()
}

/// Middleware on every request: for the Engine.IO path, record each session's WebSocket
/// connection, answer the long-polls of drained sessions with an Engine.IO `close` packet (the
/// pending one at once), refuse new sessions while draining (503 + Retry-After), and count error
/// answers.
pub async fn engineio_guard(State(st): State<HttpState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let on_eio = path
        .strip_prefix(&*st.eio_path)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    if !on_eio {
        return next.run(req).await;
    }
    let mut sid = None;
    let mut websocket = false;
    if let Some(q) = req.uri().query() {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            match &*k {
                "sid" => sid = Some(v.into_owned()),
                "transport" => websocket = v == "websocket",
                _ => {}
            }
        }
    }
    if sid.is_none() && st.draining.load(Ordering::Acquire) {
        // A new session on a draining node: send the client elsewhere.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "node is draining\n",
        )
            .into_response();
    }
    let mut req = req;
    let resp = match &sid {
        None => {
            detach_request_head(&mut req);
            next.run(req).await
        }
        Some(sid) if websocket => {
            let conn = req
                .extensions()
                .get::<ConnectInfo<ConnInfo>>()
                .map(|ConnectInfo(ci)| ci.handle.clone());
            let resp = next.run(req).await;
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                && let Some(conn) = conn
            {
                // The session's transport is this connection from now on.
                st.conns.upgraded(sid, &conn);
            }
            resp
        }
        Some(sid) if req.method() == Method::GET => {
            // A long-poll: answered with `close` if the session is (or gets) drained.
            match st.conns.closer(sid) {
                None => next.run(req).await,
                Some(closer) => {
                    let drained = closer.notified();
                    tokio::pin!(drained);
                    drained.as_mut().enable();
                    if st.conns.is_draining(sid) {
                        return close_packet();
                    }
                    tokio::select! {
                        // A poll that got packets completes in the same poll of its future, so
                        // one still pending has taken nothing from the session's queue: dropping
                        // it for the close packet loses no packet.
                        biased;
                        resp = next.run(req) => resp,
                        () = &mut drained => close_packet(),
                    }
                }
            }
        }
        Some(_) => next.run(req).await,
    };
    let status = resp.status();
    if status.is_client_error() || status.is_server_error() {
        st.metrics
            .engineio_rejected
            .with_label_values(&[status.as_str()])
            .inc();
    }
    resp
}

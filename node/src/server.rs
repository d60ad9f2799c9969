//! Assembling and running one node: config → Socket.IO server (with the Redis adapter or the
//! in-memory one) → axum router → listener, until a drain signal, then [`drain`](crate::drain).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use socketioxide::adapter::{Adapter, Emitter};
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::Sid;
use socketioxide::{SocketIo, SocketIoBuilder, TransportType};
use socketioxide_redis::{CustomRedisAdapter, RedisAdapterConfig, RedisAdapterCtr};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::app::{AppCtx, chat, conformance};
use crate::bus::driver::BusDriver;
use crate::bus::{BusState, BusStatus, client, supervisor};
use crate::config::{NodeConfig, Profile, Transport};
use crate::connections::{ConnInfo, KillableListener, SessionConns};
use crate::http::{self, HttpState};
use crate::metrics::NodeMetrics;
use crate::recovery::adapter::{RecoveryAdapter, RecoveryState};
use crate::recovery::store::Store;
use crate::recovery::{Recovery, Windows};

/// The Redis adapter on the node's own bus driver.
pub type RedisBusAdapter = CustomRedisAdapter<Emitter, BusDriver>;

/// The Socket.IO adapter used when Redis is configured: the Redis adapter, with connection state
/// recovery when `recovery.enabled`.
pub type BusAdapter = RecoveryAdapter<RedisBusAdapter>;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Metrics registration failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The Redis client could not be built.
    #[error(transparent)]
    Redis(#[from] client::ClientError),
    /// A namespace could not be registered with the adapter.
    #[error("registering namespace: {0}")]
    Namespace(String),
    /// The session-id tag is not valid (config validation should have caught it).
    #[error("engineio.sid_tag: {0}")]
    SidTag(String),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Serve(std::io::Error),
}

/// A node bound to its address, ready to [`run`](BoundNode::run).
pub struct BoundNode {
    cfg: NodeConfig,
    node_id: Arc<str>,
    sid_tag: Arc<str>,
    listener: TcpListener,
}

impl BoundNode {
    /// Bind the listen address (so the caller learns the real port before serving).
    pub async fn bind(cfg: NodeConfig) -> Result<Self, NodeError> {
        let listener = TcpListener::bind(&cfg.listen)
            .await
            .map_err(|source| NodeError::Bind {
                addr: cfg.listen.clone(),
                source,
            })?;
        let node_id: Arc<str> = cfg.resolved_node_id().into();
        let sid_tag: Arc<str> = cfg.resolved_sid_tag(&node_id).into();
        Ok(Self {
            cfg,
            node_id,
            sid_tag,
            listener,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The node id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The tag in front of the session ids this node issues.
    pub fn sid_tag(&self) -> &str {
        &self.sid_tag
    }

    /// Serve until `drain_signal` resolves, then drain and return.
    pub async fn run(self, drain_signal: impl Future<Output = ()> + Send) -> Result<(), NodeError> {
        // Session ids are generated in engineioxide (vendored): `{tag}.{random}`.
        Sid::set_session_tag(Some(&self.sid_tag)).map_err(|e| NodeError::SidTag(e.to_string()))?;
        let metrics = NodeMetrics::new()?;
        let conns = Arc::new(SessionConns::default());
        let ctx = Arc::new(AppCtx {
            node_id: self.node_id.clone(),
            metrics: metrics.clone(),
            conns: conns.clone(),
        });
        let builder = socketio_builder(&self.cfg);
        let parts = Parts {
            cfg: self.cfg.clone(),
            node_id: self.node_id.clone(),
            sid_tag: self.sid_tag.clone(),
            metrics: metrics.clone(),
            conns,
            listener: self.listener,
        };
        if self.cfg.redis.enabled() {
            let status = Arc::new(BusStatus::new(BusState::Reconnecting));
            let fred = client::build(&self.cfg.redis)?;
            let driver = BusDriver::new(fred, status.clone(), metrics.clone(), &self.cfg.redis);
            let (stop_tx, stop_rx) = watch::channel(false);
            supervisor::spawn(&driver, self.cfg.redis.down_after, stop_rx);
            let adapter_cfg = RedisAdapterConfig::new()
                .with_prefix(self.cfg.redis.key_prefix.clone())
                .with_request_timeout(self.cfg.redis.request_timeout)
                .with_stream_buffer(self.cfg.redis.queue_size);
            let ctr = RedisAdapterCtr::new_with_driver(driver, adapter_cfg);
            let recovery = if self.cfg.recovery.enabled {
                Some(start_recovery(
                    &self.cfg,
                    metrics.clone(),
                    stop_tx.subscribe(),
                )?)
            } else {
                None
            };
            let state = RecoveryState {
                inner: ctr,
                recovery,
            };
            let (layer, io) = builder.with_adapter::<BusAdapter>(state).build_layer();
            let ready = Arc::new(AtomicBool::new(false));
            match self.cfg.profile {
                Profile::Chat => io
                    .ns("/", chat::connect_handler(ctx))
                    .await
                    .map_err(|e| NodeError::Namespace(e.to_string()))?,
                Profile::Conformance => {
                    for ns in conformance::NAMESPACES {
                        io.ns(ns, conformance::connect_handler(ctx.clone()))
                            .await
                            .map_err(|e| NodeError::Namespace(e.to_string()))?;
                    }
                }
            }
            ready.store(true, Ordering::Release);
            let res = serve(parts, io, layer, status, ready, drain_signal).await;
            let _ = stop_tx.send(true);
            res
        } else {
            let status = Arc::new(BusStatus::new(BusState::Disabled));
            let (layer, io) = builder.build_layer();
            match self.cfg.profile {
                Profile::Chat => io.ns("/", chat::connect_handler(ctx)),
                Profile::Conformance => {
                    for ns in conformance::NAMESPACES {
                        io.ns(ns, conformance::connect_handler(ctx.clone()));
                    }
                }
            }
            let ready = Arc::new(AtomicBool::new(true));
            serve(parts, io, layer, status, ready, drain_signal).await
        }
    }
}

/// Connect recovery's two Redis clients (commands; the blocking stream reader) and start its
/// runtime.
fn start_recovery(
    cfg: &NodeConfig,
    metrics: NodeMetrics,
    stop: watch::Receiver<bool>,
) -> Result<Arc<Recovery>, NodeError> {
    let commands = client::build(&cfg.redis)?;
    // The reader blocks for up to a second per XREAD.
    let reader = client::build_with_timeout(
        &cfg.redis,
        cfg.redis.command_timeout + std::time::Duration::from_secs(2),
    )?;
    tokio::spawn(keep_connected(commands.clone(), stop.clone()));
    tokio::spawn(keep_connected(reader.clone(), stop.clone()));
    let store = Store::new(
        commands,
        reader,
        &cfg.redis.key_prefix,
        cfg.redis.command_timeout,
    );
    let heartbeat = cfg.engineio.ping_interval + cfg.engineio.ping_timeout;
    let windows = Windows::new(&cfg.recovery, heartbeat);
    Ok(Recovery::start(store, windows, metrics, stop))
}

/// Run a fred client's connection task (it reconnects by itself) and start a new one should it
/// ever end, until `stop`.
async fn keep_connected(client: fred::prelude::Client, mut stop: watch::Receiver<bool>) {
    use fred::prelude::ClientLike;
    loop {
        let handle = client.connect();
        tokio::select! {
            _ = handle => {
                tracing::warn!("a recovery Redis connection task ended; starting a new one");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                let _ = client.quit().await;
                return;
            }
        }
    }
}

struct Parts {
    cfg: NodeConfig,
    node_id: Arc<str>,
    sid_tag: Arc<str>,
    metrics: NodeMetrics,
    conns: Arc<SessionConns>,
    listener: TcpListener,
}

fn socketio_builder(cfg: &NodeConfig) -> SocketIoBuilder {
    let e = &cfg.engineio;
    let b = SocketIo::builder()
        .req_path(e.path.clone())
        .ping_interval(e.ping_interval)
        .ping_timeout(e.ping_timeout)
        .max_payload(e.max_payload)
        .ws_max_message_size(usize::try_from(e.max_payload).unwrap_or(usize::MAX))
        .max_buffer_size(e.max_buffer_size)
        .connect_timeout(e.connect_timeout)
        .upgrade_timeout(e.upgrade_timeout)
        .ack_timeout(e.ack_timeout);
    let polling = e.transports.contains(&Transport::Polling);
    let ws = e.transports.contains(&Transport::Websocket);
    match (polling, ws) {
        (true, false) => b.transports([TransportType::Polling]),
        (false, true) => b.transports([TransportType::Websocket]),
        _ => b.transports([TransportType::Polling, TransportType::Websocket]),
    }
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::mirror_request()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_credentials(true)
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers(tower_http::cors::AllowHeaders::mirror_request()),
    )
}

async fn serve<A: Adapter>(
    parts: Parts,
    io: SocketIo<A>,
    layer: SocketIoLayer<A>,
    bus: Arc<BusStatus>,
    ready: Arc<AtomicBool>,
    drain_signal: impl Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    let draining = Arc::new(AtomicBool::new(false));
    let counter_io = io.clone();
    let state = HttpState {
        node_id: parts.node_id.clone(),
        sid_tag: parts.sid_tag.clone(),
        draining: draining.clone(),
        ready,
        bus,
        metrics: parts.metrics.clone(),
        sockets: Arc::new(move || {
            let mut polling = 0;
            let mut ws = 0;
            for ns in counter_io.nsps() {
                for s in ns.sockets() {
                    match s.transport_type() {
                        TransportType::Polling => polling += 1,
                        TransportType::Websocket => ws += 1,
                    }
                }
            }
            (polling, ws)
        }),
        conns: parts.conns.clone(),
        eio_path: parts.cfg.engineio.path.clone().into(),
    };
    let mut router: Router = http::routes(state.clone());
    if let Some(demo) = crate::demo::routes(&parts.cfg.demo) {
        router = router.merge(demo);
    }
    let mut router = router.layer(layer);
    if let Some(c) = cors(&parts.cfg.engineio.cors_origins) {
        router = router.layer(c);
    }
    let router = router.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        http::engineio_guard,
    ));

    let addr = parts.listener.local_addr().ok();
    tracing::info!(node = %parts.node_id, sid_tag = %parts.sid_tag, ?addr, profile = ?parts.cfg.profile,
        redis = parts.cfg.redis.enabled(), "iogate-node serving");

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let server = axum::serve(
        KillableListener(parts.listener),
        router.into_make_service_with_connect_info::<ConnInfo>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stop_rx.wait_for(|v| *v).await;
    });
    let server = tokio::spawn(async move { server.await });

    drain_signal.await;
    draining.store(true, Ordering::Release);
    parts.metrics.draining.set(1);
    crate::drain::drain(&io, &parts.conns, &parts.cfg.drain).await;
    let _ = stop_tx.send(true);
    // Connections still open (idle keep-alives) are not waited for beyond a short moment.
    if let Ok(Ok(Err(e))) = tokio::time::timeout(std::time::Duration::from_secs(1), server).await {
        return Err(NodeError::Serve(e));
    }
    tracing::info!(node = %parts.node_id, "drained; exiting");
    Ok(())
}

//! Assembling and running one node: config and the application's setup → Socket.IO server
//! (the Redis adapter on the node's bus, or on a standalone driver without Redis; connection
//! state recovery on top when enabled; the node's socket observer) → axum router → listener,
//! until a drain signal, then [`drain`](crate::drain).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use socketioxide::adapter::Emitter;
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::Sid;
use socketioxide::{SocketIo, SocketIoBuilder, TransportType};
use socketioxide_redis::{CustomRedisAdapter, RedisAdapterConfig, RedisAdapterCtr};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::bus::driver::BusDriver;
use crate::bus::{BusState, BusStatus, client, supervisor};
use crate::config::{NodeConfig, Transport};
use crate::connections::{ConnInfo, KillableListener, SessionConns};
use crate::context::NodeContext;
use crate::http::{self, HttpState};
use crate::metrics::NodeMetrics;
use crate::observer::{EventLabels, NodeObserver};
use crate::recovery::adapter::{RecoveryAdapter, RecoveryState};
use crate::recovery::store::Store;
use crate::recovery::{Recovery, Windows};
use crate::server_events::ServerEvents;

/// The Redis adapter on the node's own bus driver.
pub type RedisBusAdapter = CustomRedisAdapter<Emitter, BusDriver>;

/// The Socket.IO adapter of every node: the Redis adapter on the node's bus (or on a standalone
/// driver when no Redis is configured), with connection state recovery when
/// `recovery.enabled`. Applications name it through [`Io`](crate::Io),
/// [`SocketRef`](crate::SocketRef) and the other aliases at the crate root.
pub type NodeAdapter = RecoveryAdapter<RedisBusAdapter>;

/// An error from an application's setup.
pub type SetupError = Box<dyn std::error::Error + Send + Sync>;

type SetupFuture = Pin<Box<dyn Future<Output = Result<(), SetupError>> + Send>>;
type SetupFn = Box<dyn FnOnce(SocketIo<NodeAdapter>, NodeContext) -> SetupFuture + Send>;

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
    /// The application's setup failed (a namespace could not be registered, or the
    /// application's own error).
    #[error("application setup: {0}")]
    Setup(SetupError),
    /// The session-id tag is not valid (config validation should have caught it).
    #[error("engineio.sid_tag: {0}")]
    SidTag(String),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Serve(std::io::Error),
}

/// A node to build: its configuration and the applications that register namespaces on it.
///
/// ```no_run
/// use iogate_node::{Node, NodeConfig, SocketRef};
/// use iogate_node::socketioxide::extract::Data;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let node = Node::new(NodeConfig::default())
///     .app(|io, _ctx| async move {
///         io.ns("/", async |s: SocketRef| {
///             s.on("echo", async |s: SocketRef, Data::<serde_json::Value>(v)| {
///                 let _ = s.emit("echo", &v);
///             });
///         })
///         .await?;
///         Ok(())
///     })
///     .bind()
///     .await?;
/// node.run(iogate_node::shutdown_signal()).await?;
/// # Ok(()) }
/// ```
pub struct Node {
    cfg: NodeConfig,
    setups: Vec<SetupFn>,
}

impl Node {
    /// A node with this configuration and no application yet.
    pub fn new(cfg: NodeConfig) -> Node {
        Node {
            cfg,
            setups: Vec::new(),
        }
    }

    /// Add an application: `setup` registers its namespaces (`io.ns(path, handler)`, with
    /// connect middlewares through socketioxide's `.with(...)`) and anything else it needs
    /// before the node takes traffic. It runs once, when the node starts; `/readyz` turns 200
    /// only after every setup succeeded, and a failed setup stops the node with
    /// [`NodeError::Setup`]. Several applications can share a node (different namespaces).
    pub fn app<F, Fut>(mut self, setup: F) -> Node
    where
        F: FnOnce(SocketIo<NodeAdapter>, NodeContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), SetupError>> + Send + 'static,
    {
        self.setups
            .push(Box::new(move |io, ctx| Box::pin(setup(io, ctx))));
        self
    }

    /// Bind the listen address (so the caller learns the real port before serving).
    pub async fn bind(self) -> Result<BoundNode, NodeError> {
        let cfg = self.cfg;
        let listener = TcpListener::bind(&cfg.listen)
            .await
            .map_err(|source| NodeError::Bind {
                addr: cfg.listen.clone(),
                source,
            })?;
        let node_id: Arc<str> = cfg.resolved_node_id().into();
        let sid_tag: Arc<str> = cfg.resolved_sid_tag(&node_id).into();
        Ok(BoundNode {
            cfg,
            node_id,
            sid_tag,
            listener,
            setups: self.setups,
        })
    }
}

/// A node bound to its address, ready to [`run`](BoundNode::run).
pub struct BoundNode {
    cfg: NodeConfig,
    node_id: Arc<str>,
    sid_tag: Arc<str>,
    listener: TcpListener,
    setups: Vec<SetupFn>,
}

impl BoundNode {
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

    /// Run the applications' setups, serve until `drain_signal` resolves, then drain and return.
    pub async fn run(self, drain_signal: impl Future<Output = ()> + Send) -> Result<(), NodeError> {
        // Session ids are generated in engineioxide (vendored): `{tag}.{random}`.
        Sid::set_session_tag(Some(&self.sid_tag)).map_err(|e| NodeError::SidTag(e.to_string()))?;
        let cfg = self.cfg;
        let metrics = NodeMetrics::new()?;
        let conns = Arc::new(SessionConns::default());
        let events = Arc::new(EventLabels::new(cfg.metrics.max_event_labels));
        let observer = Arc::new(NodeObserver {
            metrics: metrics.clone(),
            conns: conns.clone(),
            events: events.clone(),
        });
        // Stops the bus supervisor and recovery's tasks when the node is done.
        let (stop_tx, stop_rx) = watch::channel(false);
        let (driver, status) = if cfg.redis.enabled() {
            let status = Arc::new(BusStatus::new(BusState::Reconnecting));
            let fred = client::build(&cfg.redis)?;
            let driver = BusDriver::new(fred, status.clone(), metrics.clone(), &cfg.redis);
            supervisor::spawn(&driver, cfg.redis.down_after, stop_rx.clone());
            (driver, status)
        } else {
            (
                BusDriver::standalone(),
                Arc::new(BusStatus::new(BusState::Disabled)),
            )
        };
        let server_events = ServerEvents::start(
            driver.clone(),
            &cfg.redis.key_prefix,
            &self.node_id,
            cfg.redis.request_timeout,
            metrics.clone(),
            stop_rx.clone(),
        )
        .await;
        let ctx = NodeContext::new(
            self.node_id.clone(),
            self.sid_tag.clone(),
            cfg.clone(),
            metrics.clone(),
            events,
            server_events,
        );
        let incomplete = metrics.cluster_incomplete.clone();
        let adapter_cfg = RedisAdapterConfig::new()
            .with_prefix(cfg.redis.key_prefix.clone())
            .with_request_timeout(cfg.redis.request_timeout)
            .with_stream_buffer(cfg.redis.queue_size)
            .with_on_incomplete(move |request| {
                incomplete.with_label_values(&[request]).inc();
            });
        let recovery = if cfg.recovery.enabled {
            Some(start_recovery(&cfg, metrics.clone(), stop_rx)?)
        } else {
            None
        };
        let state = RecoveryState {
            inner: RedisAdapterCtr::new_with_driver(driver, adapter_cfg),
            recovery,
        };
        let (layer, io) = socketio_builder(&cfg)
            .observer(observer)
            .with_adapter::<NodeAdapter>(state)
            .build_layer();
        let ready = Arc::new(AtomicBool::new(false));
        for setup in self.setups {
            if let Err(e) = setup(io.clone(), ctx.clone()).await {
                let _ = stop_tx.send(true);
                return Err(NodeError::Setup(e));
            }
        }
        ready.store(true, Ordering::Release);
        let parts = Parts {
            cfg,
            node_id: self.node_id,
            sid_tag: self.sid_tag,
            metrics,
            conns,
            listener: self.listener,
        };
        let res = serve(parts, io, layer, status, ready, drain_signal).await;
        let _ = stop_tx.send(true);
        res
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
        .ws_read_buffer_size(e.ws_read_buffer)
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

/// CORS for the Engine.IO endpoint. `[]`: no CORS headers, so browsers allow only the same
/// origin. `["*"]`: any origin, without credentials (`Access-Control-Allow-Origin: *`; browsers
/// then send no cookies cross-origin). A list of origins: those only, with credentials (the
/// origin is echoed and `Access-Control-Allow-Credentials: true` sent). Origins are validated
/// with the config, so none is dropped here.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
        .allow_headers(tower_http::cors::AllowHeaders::mirror_request());
    Some(if origins.iter().any(|o| o == "*") {
        layer.allow_origin(AllowOrigin::any())
    } else {
        layer
            .allow_origin(AllowOrigin::list(
                origins.iter().filter_map(|o| o.parse().ok()),
            ))
            .allow_credentials(true)
    })
}

async fn serve(
    parts: Parts,
    io: SocketIo<NodeAdapter>,
    layer: SocketIoLayer<NodeAdapter>,
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
    tracing::info!(node = %parts.node_id, sid_tag = %parts.sid_tag, ?addr,
        redis = parts.cfg.redis.enabled(), recovery = parts.cfg.recovery.enabled, "iogate-node serving");

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

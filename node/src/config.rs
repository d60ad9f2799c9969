//! The node's configuration: the YAML schema (`config/node.yaml` documents every field), its
//! defaults, its validation, and the command-line overrides.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use iogate_shared::config::{self, ConfigError, Problems, Validate};
use serde::{Deserialize, Serialize};

/// Which set of handlers and settings the node serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// The reference chat application (docs/protocol.md).
    #[default]
    Chat,
    /// Handlers and timings the official socket.io-protocol test suite expects.
    Conformance,
}

/// One Engine.IO transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// HTTP long-polling.
    Polling,
    /// WebSocket.
    Websocket,
}

/// Top-level node configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Address the HTTP/Socket.IO server listens on.
    pub listen: String,
    /// Node id reported in `whoami`, `/readyz` and metrics. Default: hostname plus a random suffix.
    pub node_id: Option<String>,
    /// Application profile.
    pub profile: Profile,
    /// Redis bus; with neither `url` nor `cluster_nodes` the node runs alone (in-memory adapter).
    pub redis: RedisConfig,
    /// Engine.IO / Socket.IO settings.
    pub engineio: EngineIoConfig,
    /// Graceful drain on SIGTERM/SIGINT.
    pub drain: DrainConfig,
    /// Connection state recovery across nodes (needs Redis).
    pub recovery: RecoveryConfig,
    /// The chat demo page (off unless `demo.dir` is set).
    pub demo: DemoConfig,
    /// Metrics settings.
    pub metrics: MetricsConfig,
}

/// Metrics settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Most distinct event names labelled in `iogate_node_events_total` and
    /// `iogate_node_event_duration_seconds`; events past it (and events without a handler) are
    /// labelled `other`.
    pub max_event_labels: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            max_event_labels: 100,
        }
    }
}

/// Socket.IO connection state recovery: a client that reconnects — to any node — within
/// `max_disconnection` gets its session back (rooms, private id) and every packet it missed.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// Off by default, as in socket.io: with it on, every tracked event carries its offset as
    /// an extra last argument, which clients' listeners see. Every node of a cluster must agree.
    pub enabled: bool,
    /// How long a disconnected session can be recovered (socket.io's
    /// `maxDisconnectionDuration`).
    #[serde(with = "humantime_serde")]
    pub max_disconnection: Duration,
    /// Most tracked packets kept per namespace (approximately), a memory bound on top of the
    /// time window; a session whose missed packets were trimmed by it is not recovered.
    pub max_entries: u64,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_disconnection: Duration::from_secs(120),
            max_entries: 1_000_000,
        }
    }
}

/// The chat demo page served at `/`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// The demo/ folder (with `npm ci` run in it); unset = no demo.
    pub dir: Option<std::path::PathBuf>,
    /// `host:port` of the load balancer's admin API, for the sessions panel.
    pub lb_admin: Option<String>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:4001".into(),
            node_id: None,
            profile: Profile::Chat,
            redis: RedisConfig::default(),
            engineio: EngineIoConfig::default(),
            drain: DrainConfig::default(),
            recovery: RecoveryConfig::default(),
            demo: DemoConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// Redis bus settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[user:pass@]host:port[/db]` of a standalone Redis ≥ 7.
    pub url: Option<String>,
    /// `host:port` seed nodes of a Redis Cluster (mutually exclusive with `url`).
    pub cluster_nodes: Vec<String>,
    /// ACL user name (overrides one in the url).
    pub username: Option<String>,
    /// Password (overrides one in the url).
    pub password: Option<String>,
    /// Prefix of every pub/sub channel; nodes of one cluster must share it.
    pub key_prefix: String,
    /// Upper bound of every Redis command (publish, subscribe, numsub).
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Upper bound of one TCP connect + handshake attempt.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Reconnect backoff.
    pub reconnect: ReconnectConfig,
    /// Inbound messages buffered per subscribed channel before new ones are dropped (and counted).
    pub queue_size: usize,
    /// Outbound commands fred may buffer while a connection is being re-established.
    pub max_command_buffer: usize,
    /// How long a remote request (fetch_sockets, broadcast with ack) waits for other nodes.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// After how long an outage the bus state turns from `reconnecting` to `down`.
    #[serde(with = "humantime_serde")]
    pub down_after: Duration,
    /// TLS to Redis. On with a `rediss://` url (the system's CA certificates), or with this
    /// section (also for `cluster_nodes`).
    pub tls: Option<RedisTls>,
}

/// `redis.tls`.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RedisTls {
    /// PEM CA certificate(s) to trust instead of the system's (a private CA, a self-signed
    /// server certificate).
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            cluster_nodes: Vec::new(),
            username: None,
            password: None,
            key_prefix: "iogate".into(),
            command_timeout: Duration::from_millis(1000),
            connect_timeout: Duration::from_millis(2000),
            reconnect: ReconnectConfig::default(),
            queue_size: 4096,
            max_command_buffer: 10_000,
            request_timeout: Duration::from_secs(5),
            down_after: Duration::from_secs(10),
            tls: None,
        }
    }
}

impl RedisConfig {
    /// Whether the node joins a cluster through Redis at all.
    pub fn enabled(&self) -> bool {
        self.url.is_some() || !self.cluster_nodes.is_empty()
    }
}

/// Capped exponential backoff with jitter, retried forever.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectConfig {
    /// First delay.
    #[serde(with = "humantime_serde")]
    pub min_delay: Duration,
    /// Cap of the delay.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Random extra delay added to each attempt, 0..jitter.
    #[serde(with = "humantime_serde")]
    pub jitter: Duration,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(1000),
            jitter: Duration::from_millis(200),
        }
    }
}

/// Engine.IO / Socket.IO server settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineIoConfig {
    /// HTTP path of the Engine.IO endpoint.
    pub path: String,
    /// Heartbeat interval sent in the open packet.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// How long to wait for a pong before closing.
    #[serde(with = "humantime_serde")]
    pub ping_timeout: Duration,
    /// Largest accepted packet / polling body in bytes (Node socket.io default: 1 MB).
    pub max_payload: u64,
    /// Transports offered to clients.
    pub transports: Vec<Transport>,
    /// Packets buffered per socket before emits to it fail.
    pub max_buffer_size: usize,
    /// Bytes of each WebSocket's read buffer, held for the socket's life, and the most one read
    /// takes (a larger frame grows the buffer and is read in several). engineioxide's default
    /// is 4096; 1024 saves 3 KiB per idle client (`bench/node-memory.sh`).
    pub ws_read_buffer: usize,
    /// Time a client has to send its Socket.IO CONNECT after the Engine.IO handshake.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time a client has to finish a polling → WebSocket upgrade.
    #[serde(with = "humantime_serde")]
    pub upgrade_timeout: Duration,
    /// Default time a server-side emit-with-ack waits.
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// Allowed CORS origins: empty = no CORS headers (same origin only); `["*"]` = any origin
    /// without credentials; a list of origins (`https://app.example.com`) = those, with
    /// credentials.
    pub cors_origins: Vec<String>,
    /// The tag in front of every session id this node issues (`{tag}.{16 random chars}`), so a
    /// load balancer routes a session it has never seen to this node. 1-8 characters of
    /// `A-Z a-z 0-9 _ -`, unique in the cluster. Default: the node id when it is such a string,
    /// else 8 characters derived from it.
    pub sid_tag: Option<String>,
}

/// Default of `engineio.ws_read_buffer`.
pub const WS_READ_BUFFER_DEFAULT: usize = 1024;

impl Default for EngineIoConfig {
    fn default() -> Self {
        Self {
            path: "/socket.io".into(),
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_payload: 1_000_000,
            transports: vec![Transport::Polling, Transport::Websocket],
            max_buffer_size: 128,
            ws_read_buffer: WS_READ_BUFFER_DEFAULT,
            connect_timeout: Duration::from_secs(45),
            upgrade_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(5),
            cors_origins: Vec::new(),
            sid_tag: None,
        }
    }
}

/// Graceful drain settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrainConfig {
    /// Time between `/readyz` turning 503 and the first disconnect, so load balancers notice.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// Sockets disconnected per second while draining.
    pub rate: u32,
    /// Hard limit of the whole drain (grace included); the node exits 0 when it is reached.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(5),
            rate: 500,
            timeout: Duration::from_secs(60),
        }
    }
}

pub use iogate_shared::sid::valid_tag as valid_sid_tag;

/// The default session-id tag of a node: its id when that is a valid tag, else 8 characters
/// (48 bits of FNV-1a, URL-safe base64) derived from it — stable across restarts of the node.
pub fn default_sid_tag(node_id: &str) -> String {
    if valid_sid_tag(node_id) {
        return node_id.to_string();
    }
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let hash = node_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (0..8)
        .map(|i| char::from(ALPHABET[((hash >> (i * 6)) & 63) as usize]))
        .collect()
}

fn valid_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

impl Validate for NodeConfig {
    fn validate(&self, p: &mut Problems) {
        if self.listen.parse::<SocketAddr>().is_err() {
            p.push(
                "listen",
                format!(
                    "`{}` is not an IP:port address (e.g. 0.0.0.0:4001)",
                    self.listen
                ),
            );
        }
        if let Some(id) = &self.node_id
            && (id.is_empty() || id.len() > 64 || id.contains(char::is_whitespace))
        {
            p.push("node_id", "must be 1-64 characters without whitespace");
        }
        let r = &self.redis;
        if r.url.is_some() && !r.cluster_nodes.is_empty() {
            p.push(
                "redis.cluster_nodes",
                "set either redis.url or redis.cluster_nodes, not both",
            );
        }
        if let Some(url) = &r.url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            p.push(
                "redis.url",
                format!("`{url}` must start with redis:// or rediss://"),
            );
        }
        if let Some(ca) = r.tls.as_ref().and_then(|t| t.ca_file.as_ref())
            && let Err(e) = crate::bus::client::tls_roots(ca)
        {
            p.push("redis.tls.ca_file", e.to_string());
        }
        for (i, n) in r.cluster_nodes.iter().enumerate() {
            if !valid_host_port(n) {
                p.push(
                    format!("redis.cluster_nodes[{i}]"),
                    format!("`{n}` is not host:port"),
                );
            }
        }
        if r.key_prefix.is_empty() || r.key_prefix.contains('#') {
            p.push(
                "redis.key_prefix",
                "must be non-empty and must not contain `#`",
            );
        }
        for (name, d) in [
            ("redis.command_timeout", r.command_timeout),
            ("redis.connect_timeout", r.connect_timeout),
            ("redis.request_timeout", r.request_timeout),
            ("redis.reconnect.min_delay", r.reconnect.min_delay),
            ("redis.reconnect.max_delay", r.reconnect.max_delay),
        ] {
            if d.is_zero() {
                p.push(name, "must be greater than 0");
            }
        }
        if r.reconnect.min_delay > r.reconnect.max_delay {
            p.push(
                "redis.reconnect.min_delay",
                "must not exceed redis.reconnect.max_delay",
            );
        }
        if r.queue_size == 0 {
            p.push("redis.queue_size", "must be at least 1");
        }
        if r.max_command_buffer == 0 {
            p.push("redis.max_command_buffer", "must be at least 1");
        }
        let e = &self.engineio;
        if !e.path.starts_with('/') || e.path.len() < 2 {
            p.push("engineio.path", "must start with `/` and not be `/` alone");
        }
        for (name, d) in [
            ("engineio.ping_interval", e.ping_interval),
            ("engineio.ping_timeout", e.ping_timeout),
            ("engineio.connect_timeout", e.connect_timeout),
            ("engineio.upgrade_timeout", e.upgrade_timeout),
            ("engineio.ack_timeout", e.ack_timeout),
        ] {
            if d.is_zero() {
                p.push(name, "must be greater than 0");
            }
        }
        if e.max_payload < 1024 {
            p.push("engineio.max_payload", "must be at least 1024 bytes");
        }
        if e.transports.is_empty() {
            p.push(
                "engineio.transports",
                "needs at least one of polling, websocket",
            );
        }
        if e.max_buffer_size == 0 {
            p.push("engineio.max_buffer_size", "must be at least 1");
        }
        if !(256..=1 << 20).contains(&e.ws_read_buffer) {
            p.push("engineio.ws_read_buffer", "must be 256..=1048576 bytes");
        }
        for (i, o) in e.cors_origins.iter().enumerate() {
            if let Some(msg) = origin_problem(o, e.cors_origins.len()) {
                p.push(format!("engineio.cors_origins[{i}]"), msg);
            }
        }
        if let Some(tag) = &e.sid_tag
            && !valid_sid_tag(tag)
        {
            p.push(
                "engineio.sid_tag",
                "must be 1-8 characters of A-Z a-z 0-9 _ -",
            );
        }
        if let Some(a) = &self.demo.lb_admin
            && !valid_host_port(a)
        {
            p.push("demo.lb_admin", format!("`{a}` is not host:port"));
        }
        let rc = &self.recovery;
        if rc.enabled && !self.redis.enabled() {
            p.push(
                "recovery.enabled",
                "connection state recovery keeps sessions in Redis: set redis.url or redis.cluster_nodes",
            );
        }
        if rc.max_disconnection.is_zero() {
            p.push("recovery.max_disconnection", "must be greater than 0");
        }
        if rc.max_entries < 1000 {
            p.push("recovery.max_entries", "must be at least 1000");
        }
        if self.metrics.max_event_labels == 0 || self.metrics.max_event_labels > 10_000 {
            p.push("metrics.max_event_labels", "must be between 1 and 10000");
        }
        if self.drain.rate == 0 {
            p.push("drain.rate", "must be at least 1 socket per second");
        }
        if self.drain.timeout < self.drain.grace {
            p.push("drain.timeout", "must be at least drain.grace");
        }
    }
}

/// Command-line values that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`
    pub listen: Option<String>,
    /// `--node-id`
    pub node_id: Option<String>,
    /// `--redis-url` (`none` disables Redis)
    pub redis_url: Option<String>,
    /// `--profile`
    pub profile: Option<Profile>,
}

impl NodeConfig {
    /// Load `path` (or defaults when `None`), apply `overrides` and validate the result. Errors
    /// name the file, line, column and field.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        // Validated once, after the overrides: a check that spans fields (recovery needs Redis)
        // must see `--redis-url` too.
        let (mut cfg, text, file) = match path {
            Some(p) => {
                let text = config::read_file(p)?;
                let cfg: NodeConfig = config::parse_str(&text, p)?;
                (cfg, text, p.to_path_buf())
            }
            None => (NodeConfig::default(), String::new(), "<defaults>".into()),
        };
        cfg.apply(overrides);
        let mut problems = Problems::default();
        cfg.validate(&mut problems);
        config::problems_to_error(problems, &text, &file)?;
        Ok(cfg)
    }

    /// Apply command-line overrides, then the profile's fixed settings.
    pub fn apply(&mut self, o: &Overrides) {
        if let Some(l) = &o.listen {
            self.listen = l.clone();
        }
        if let Some(id) = &o.node_id {
            self.node_id = Some(id.clone());
        }
        if let Some(url) = &o.redis_url {
            if url.eq_ignore_ascii_case("none") {
                self.redis.url = None;
                self.redis.cluster_nodes.clear();
            } else {
                self.redis.url = Some(url.clone());
                self.redis.cluster_nodes.clear();
            }
        }
        if let Some(profile) = o.profile {
            self.profile = profile;
        }
        if self.profile == Profile::Conformance {
            // What socketio/socket.io-protocol's test-suite expects.
            self.engineio.ping_interval = Duration::from_millis(300);
            self.engineio.ping_timeout = Duration::from_millis(200);
            self.engineio.connect_timeout = Duration::from_secs(1);
            self.engineio.max_payload = 1_000_000;
        }
    }

    /// The session-id tag for a node whose id is `node_id`.
    pub fn resolved_sid_tag(&self, node_id: &str) -> String {
        self.engineio
            .sid_tag
            .clone()
            .unwrap_or_else(|| default_sid_tag(node_id))
    }

    /// The node id, generating `hostname-xxxx` when none is configured.
    pub fn resolved_node_id(&self) -> String {
        if let Some(id) = &self.node_id {
            return id.clone();
        }
        let host = hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "node".into());
        let suffix: u16 = rand::random();
        format!("{host}-{suffix:04x}")
    }
}

/// What is wrong with a CORS origin entry (`*` alone, or `scheme://host[:port]`).
fn origin_problem(o: &str, entries: usize) -> Option<String> {
    if o == "*" {
        return (entries > 1)
            .then(|| "`*` allows any origin; it cannot be combined with a list".into());
    }
    let rest = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"));
    let ok = rest.is_some_and(|h| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    });
    (!ok).then(|| {
        format!("`{o}` must be `*` or an origin like https://app.example.com (scheme and host, optional port, no path)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_sid_tags() {
        assert_eq!(default_sid_tag("node-1"), "node-1");
        let long = default_sid_tag("worker.example.com-7f3a");
        assert_eq!(long.len(), 8);
        assert!(valid_sid_tag(&long));
        assert_eq!(long, default_sid_tag("worker.example.com-7f3a"));
        assert_ne!(long, default_sid_tag("worker.example.com-7f3b"));
        assert!(!valid_sid_tag(""));
        assert!(!valid_sid_tag("a.b"));
        assert!(!valid_sid_tag("ninechars"));
    }

    #[test]
    fn cors_origins_are_star_alone_or_origins() {
        assert_eq!(origin_problem("*", 1), None);
        assert!(origin_problem("*", 2).is_some());
        assert_eq!(origin_problem("https://app.example.com", 2), None);
        assert_eq!(origin_problem("http://127.0.0.1:3000", 1), None);
        for bad in [
            "app.example.com",
            "https://",
            "https://a.com/path",
            "ftp://a.com",
            "https://a b",
        ] {
            assert!(origin_problem(bad, 1).is_some(), "{bad}");
        }
    }
}

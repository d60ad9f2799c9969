//! The load balancer's configuration: the YAML schema (`config/lb.yaml` documents every field),
//! defaults, validation, and the quick command-line form (`--listen`, `--upstream`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use iogate_shared::config::{self, ConfigError, Problems, Validate};
use serde::{Deserialize, Serialize};

/// Top-level LB configuration.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LbConfig {
    /// Client-facing listeners: HTTP/1.1 + WebSocket, TLS with HTTP/2 for long-polling, or a
    /// redirect to HTTPS.
    pub listeners: Vec<Listener>,
    /// The admin API (metrics, backends, drain).
    pub admin: AdminConfig,
    /// The backends: fixed addresses, or DNS names re-resolved by [`Resolver`].
    pub upstreams: Vec<Upstream>,
    /// How DNS-named upstreams are resolved (nginx's `resolver`, HAProxy's `resolvers`).
    pub resolver: Resolver,
    /// TLS from the LB to every backend (proxied requests, tunnels and health checks).
    pub upstream_tls: UpstreamTls,
    /// Idle keep-alive connections to the backends (nginx's upstream `keepalive`).
    pub upstream_keepalive: UpstreamKeepalive,
    /// How a new session picks a backend.
    pub balancing: Balancing,
    /// How later requests of a session find its backend.
    pub stickiness: Stickiness,
    /// Engine.IO awareness.
    pub engineio: EngineIo,
    /// Active and passive health checks.
    pub health: Health,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Limits.
    pub limits: Limits,
    /// What clients may reach on the nodes through the LB.
    pub exposure: Exposure,
    /// Shutdown.
    pub shutdown: Shutdown,
    /// Binary upgrade (`-u`).
    pub upgrade: Upgrade,
    /// Worker threads of the proxy service.
    pub threads: usize,
}

impl Default for LbConfig {
    fn default() -> Self {
        Self {
            listeners: vec![Listener::plain("0.0.0.0:8080")],
            admin: AdminConfig::default(),
            upstreams: Vec::new(),
            resolver: Resolver::default(),
            upstream_tls: UpstreamTls::default(),
            upstream_keepalive: UpstreamKeepalive::default(),
            balancing: Balancing::default(),
            stickiness: Stickiness::default(),
            engineio: EngineIo::default(),
            health: Health::default(),
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            exposure: Exposure::default(),
            shutdown: Shutdown::default(),
            upgrade: Upgrade::default(),
            threads: 2,
        }
    }
}

/// One client-facing listener.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `IP:port`.
    pub address: String,
    /// Bytes of the read buffer pingora puts in front of each client connection (it allocates
    /// and zero-fills it per connection, for the connection's whole life). `0`: reads go
    /// straight into the HTTP parser's and the tunnel's own buffers.
    #[serde(default = "default_read_buffer")]
    pub read_buffer: usize,
    /// Terminate TLS on this listener.
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// Answer every request on this (plain) listener with `308 Permanent Redirect` to
    /// `https://` the same host and path, at this port (443: no port in the URL).
    #[serde(default)]
    pub redirect_to_https: Option<u16>,
}

impl Listener {
    /// A plain listener at `address`.
    pub fn plain(address: &str) -> Listener {
        Listener {
            address: address.to_string(),
            read_buffer: default_read_buffer(),
            tls: None,
            redirect_to_https: None,
        }
    }

    /// What only a restart changes (everything but the certificate files' names).
    pub fn restart_key(&self) -> (&str, usize, Option<bool>, Option<u16>) {
        (
            &self.address,
            self.read_buffer,
            self.tls.as_ref().map(|t| t.http2),
            self.redirect_to_https,
        )
    }
}

/// TLS on a listener.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Certificate/key pairs. SNI picks the one whose names match; the first is the default.
    /// Reloaded (files and list) on SIGHUP, on a config change and when a file changes.
    pub certificates: Vec<CertificateFiles>,
    /// Offer HTTP/2 by ALPN (`h2`, then `http/1.1`); WebSockets use HTTP/1.1 either way.
    #[serde(default = "yes")]
    pub http2: bool,
}

/// One certificate chain and its private key, PEM files.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// The chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

fn yes() -> bool {
    true
}

fn default_read_buffer() -> usize {
    0
}

/// Admin API listener.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `IP:port` (loopback by default).
    pub listen: String,
    /// When set, every admin request needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// A file holding the token (its first line, trimmed), read at start and at every reload.
    pub token_file: Option<PathBuf>,
    /// The token in force: `token`, the first line of `token_file`, or the
    /// `IOGATE_LB_ADMIN_TOKEN` environment variable (filled in when the config is loaded).
    #[serde(skip)]
    pub effective_token: Option<String>,
}

/// The environment variable the admin token may come from.
pub const ADMIN_TOKEN_ENV: &str = "IOGATE_LB_ADMIN_TOKEN";

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9100".into(),
            token: None,
            token_file: None,
            effective_token: None,
        }
    }
}

impl AdminConfig {
    /// Why this admin listener must not start: it is reachable from other hosts and there is no
    /// token.
    pub fn exposure_problem(&self, has_token: bool) -> Option<String> {
        let exposed = self
            .listen
            .parse::<SocketAddr>()
            .is_ok_and(|a| !a.ip().is_loopback());
        (exposed && !has_token).then(|| {
            format!(
                "`{}` is reachable from other hosts and the admin API has no token: set \
                 admin.token_file (or admin.token, or the {ADMIN_TOKEN_ENV} environment variable), \
                 or listen on a loopback address",
                self.listen
            )
        })
    }

    /// The token in force, from `token`, `token_file` or [`ADMIN_TOKEN_ENV`] (in that order;
    /// `token` and `token_file` together are an error, as is an empty or unreadable file).
    pub fn resolve_token(&self) -> Result<Option<String>, (&'static str, String)> {
        match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => Err((
                "admin.token_file",
                "set admin.token or admin.token_file, not both".into(),
            )),
            (Some(t), None) => Ok(Some(t.clone())),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    (
                        "admin.token_file",
                        format!("cannot read `{}`: {e}", path.display()),
                    )
                })?;
                let token = text.lines().next().unwrap_or("").trim().to_string();
                if token.is_empty() {
                    return Err((
                        "admin.token_file",
                        format!("`{}` holds no token on its first line", path.display()),
                    ));
                }
                Ok(Some(token))
            }
            (None, None) => Ok(std::env::var(ADMIN_TOKEN_ENV)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())),
        }
    }
}

/// One backend, or a DNS name whose records are the backends.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Stable id (metrics label, cookie value, admin API); default: the address. A backend
    /// found through DNS is named `IP:port`, or `ID/IP:port` when the upstream has an id.
    #[serde(default)]
    pub id: Option<String>,
    /// `IP:port`, or `NAME:port`: every A and AAAA record of NAME is a backend at that port,
    /// re-resolved as the `resolver` section says. Empty when `srv` is set.
    #[serde(default)]
    pub address: String,
    /// A DNS SRV name (`_service._proto.name`): every target of the records with the lowest
    /// priority value is a backend, at the record's port, weighted by the record's weight.
    #[serde(default)]
    pub srv: Option<String>,
    /// Relative capacity (least-connections divides live sessions by it; hashing weights by it).
    /// For every address of a DNS name (an SRV record's own weight wins when it is not 0).
    #[serde(default = "one")]
    pub weight: u32,
    /// The tag this backend puts in its session ids (`{tag}.{random}`). Optional: the LB also
    /// learns it from the backend's health probes. Not for DNS names (each address is another
    /// node with its own tag).
    #[serde(default)]
    pub sid_tag: Option<String>,
}

fn one() -> u32 {
    1
}

impl Upstream {
    /// A fixed backend at `address` (`IP:port`).
    pub fn fixed(address: &str) -> Upstream {
        Upstream {
            id: None,
            address: address.to_string(),
            srv: None,
            weight: 1,
            sid_tag: None,
        }
    }

    /// The id, defaulting to the address (the SRV name for an SRV upstream).
    pub fn id(&self) -> &str {
        self.id
            .as_deref()
            .or(self.srv.as_deref())
            .unwrap_or(&self.address)
    }

    /// Whether it names DNS records rather than one fixed address.
    pub fn is_dns(&self) -> bool {
        self.srv.is_some() || !is_addr(&self.address)
    }
}

/// `resolver` section: the DNS servers asked for upstreams given as names, and how often.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Resolver {
    /// `IP` or `IP:port` of the DNS servers to ask (nginx's `resolver`). Empty: the system's
    /// (`/etc/resolv.conf`, with its search domains, and `/etc/hosts`).
    pub servers: Vec<String>,
    /// The longest time between two resolutions of a name (a record's TTL makes it sooner).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The shortest time between two resolutions of a name (a TTL of 0 is re-asked this often).
    #[serde(with = "humantime_serde")]
    pub min_interval: Duration,
    /// Bound on one resolution (all servers and retries).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// A name that stops existing (NXDOMAIN) or has no records keeps its last addresses this
    /// long before they drain (HAProxy's `hold nx`). A failure to get any answer keeps them
    /// until an answer comes.
    #[serde(with = "humantime_serde")]
    pub hold_empty: Duration,
}

impl Default for Resolver {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            interval: Duration::from_secs(5),
            min_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            hold_empty: Duration::from_secs(30),
        }
    }
}

impl Resolver {
    /// The servers as socket addresses (port 53 when none is given); validated.
    pub fn server_addrs(&self) -> Vec<SocketAddr> {
        self.servers
            .iter()
            .filter_map(|s| parse_dns_server(s))
            .collect()
    }
}

/// `IP`, `IP:port` or `[IPv6]:port` of a DNS server.
pub fn parse_dns_server(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>().ok().or_else(|| {
        s.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// Whether `s` is a DNS name: dot-separated labels of 1-63 letters, digits, `-` and `_`, 253
/// characters at most, an optional final dot.
pub fn is_dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// `NAME:port` with a valid DNS name and a port 1-65535.
pub fn split_name_port(s: &str) -> Option<(&str, u16)> {
    let (name, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    is_dns_name(name).then_some((name, port))
}

/// Balancing policy for new sessions.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Fewest live sessions per unit of weight; ties rotate.
    #[default]
    LeastConn,
    /// Rotate over ready backends.
    RoundRobin,
    /// Ketama consistent hashing of `balancing.key`.
    Hash,
}

/// `balancing` section.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Balancing {
    /// The policy.
    pub policy: Policy,
    /// For `hash`: `query:<name>`, `header:<name>`, `cookie:<name>` or `client_ip`.
    pub key: Option<String>,
    /// `key` parsed, the first time a request asks (a configuration is validated, `key`
    /// included, before it is put in force, and never changed after).
    #[serde(skip)]
    parsed_key: std::sync::OnceLock<Option<HashKey>>,
}

impl PartialEq for Balancing {
    fn eq(&self, other: &Self) -> bool {
        self.policy == other.policy && self.key == other.key
    }
}

impl Balancing {
    /// What the `hash` policy hashes; `None` under any other policy (and for a key that does
    /// not parse, which validation refuses with its file and line).
    pub fn hash_key(&self) -> Option<&HashKey> {
        if self.policy != Policy::Hash {
            return None;
        }
        self.parsed_key
            .get_or_init(|| self.key.as_deref().and_then(HashKey::parse))
            .as_ref()
    }
}

/// What the hash policy hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// A query parameter.
    Query(String),
    /// A request header.
    Header(String),
    /// A cookie.
    Cookie(String),
    /// The client address.
    ClientIp,
}

impl HashKey {
    /// Parse `query:x`, `header:x`, `cookie:x`, `client_ip`.
    pub fn parse(s: &str) -> Option<HashKey> {
        if s == "client_ip" {
            return Some(HashKey::ClientIp);
        }
        let (kind, name) = s.split_once(':')?;
        if name.is_empty() {
            return None;
        }
        match kind {
            "query" => Some(HashKey::Query(name.into())),
            "header" => Some(HashKey::Header(name.to_ascii_lowercase())),
            "cookie" => Some(HashKey::Cookie(name.into())),
            _ => None,
        }
    }
}

/// Session stickiness mode.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum StickyMode {
    /// Learn sid → backend from handshake responses.
    #[default]
    Sid,
    /// A cookie naming the backend id (for several LB replicas); the sid table is kept too.
    Cookie,
    /// No stickiness (only safe with WebSocket-only clients).
    None,
}

/// `stickiness` section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Stickiness {
    /// The mode.
    pub mode: StickyMode,
    /// Cookie name in `cookie` mode.
    pub cookie_name: String,
}

impl Default for Stickiness {
    fn default() -> Self {
        Self {
            mode: StickyMode::Sid,
            cookie_name: "iogate_backend".into(),
        }
    }
}

/// `engineio` section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EngineIo {
    /// Engine.IO path prefix.
    pub path: String,
    /// Most sessions the sid table holds; new handshakes beyond it get 503.
    pub sid_table_max: usize,
    /// Most sid-table entries one client IP may hold (its polling sessions, and those upgraded
    /// from polling); its next polling handshake gets 503. 0: no per-IP cap.
    pub sid_table_max_per_ip: usize,
    /// Added to pingInterval + pingTimeout (from the open packet) before an idle sid expires.
    #[serde(with = "humantime_serde")]
    pub idle_margin: Duration,
    /// Serve long-polling requests on plain-TCP listeners by iogate-lb's own HTTP/1.1 path
    /// (`lb/src/polling/`) instead of pingora's: the same admission, routing, headers and
    /// metrics, at a fraction of the CPU per request. Everything else (WebSockets, TLS
    /// listeners, other paths, requests outside its shape) is pingora's either way.
    pub polling_fast_path: bool,
}

impl Default for EngineIo {
    fn default() -> Self {
        Self {
            path: "/socket.io".into(),
            sid_table_max: 1_000_000,
            sid_table_max_per_ip: 0,
            idle_margin: Duration::from_secs(10),
            polling_fast_path: true,
        }
    }
}

/// `health` section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Health {
    /// Active HTTP check; `enabled: false` treats backends as up until passive checks fail.
    pub active: ActiveHealth,
    /// Passive check on connect failures.
    pub passive: PassiveHealth,
}

/// What an active check does.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// An Engine.IO handshake on `engineio.path`, closed at once: works against any Engine.IO
    /// server with no extra route, and learns the backend's session-id tag and heartbeat.
    #[default]
    Engineio,
    /// `GET path`: 2xx is ready, 503 is draining (iogate-node's `/readyz`).
    Http,
}

/// Active health check. A backend that answers is alive; it is ready when it would take a new
/// session, draining when it answers 503. Only failures (no answer, another status) count toward
/// `fall` and make it down.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ActiveHealth {
    /// Whether to run it.
    pub enabled: bool,
    /// `engineio` (default) or `http`.
    pub kind: CheckKind,
    /// The path of an `http` check (default `/readyz`).
    pub path: Option<String>,
    /// Time between checks.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Bound on one check.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive passes to turn up.
    pub rise: u32,
    /// Consecutive failures to turn down.
    pub fall: u32,
}

impl ActiveHealth {
    /// The path of an `http` check.
    pub fn http_path(&self) -> &str {
        self.path.as_deref().unwrap_or("/readyz")
    }
}

impl Default for ActiveHealth {
    fn default() -> Self {
        Self {
            enabled: true,
            kind: CheckKind::Engineio,
            path: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(1000),
            rise: 1,
            fall: 2,
        }
    }
}

/// Passive health: consecutive connect failures take a backend out for a cool-down.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveHealth {
    /// Consecutive connect failures before the backend is taken out (0 = off).
    pub failures: u32,
    /// How long it stays out.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        Self {
            failures: 1,
            cooldown: Duration::from_secs(5),
        }
    }
}

/// `upstream_keepalive` section: the keep-alive connections the fast path keeps
/// to each backend between requests (pingora's path keeps its own pool of 128).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamKeepalive {
    /// Most idle connections kept per backend (nginx's `keepalive N`); 0 keeps none.
    pub idle_per_backend: usize,
    /// An idle connection is closed after this (nginx's `keepalive_timeout`); keep it below
    /// the backends' own idle timeout where you can (Node.js: `server.keepAliveTimeout`, 5 s).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for UpstreamKeepalive {
    fn default() -> Self {
        Self {
            idle_per_backend: 128,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// `timeouts` section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// TCP connect to a backend.
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// An open WebSocket with no traffic either way is closed after this (keep it above
    /// pingInterval + pingTimeout).
    #[serde(with = "humantime_serde")]
    pub websocket_idle: Duration,
    /// One polling request (long-polls are held by the backend up to pingInterval).
    #[serde(with = "humantime_serde")]
    pub polling_request: Duration,
    /// A client's request header must be complete within this of its first byte (slow-loris
    /// defence, nginx's `client_header_timeout`); the connection is closed otherwise.
    #[serde(with = "humantime_serde")]
    pub client_header: Duration,
    /// A client's keep-alive connection idle between requests is closed after this (nginx's
    /// `keepalive_timeout`).
    #[serde(with = "humantime_serde")]
    pub client_keepalive: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            websocket_idle: Duration::from_secs(600),
            polling_request: Duration::from_secs(90),
            client_header: Duration::from_secs(10),
            client_keepalive: Duration::from_secs(75),
        }
    }
}

/// `limits` section. 0 means "no limit" for the counts and rates.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Concurrent client requests + WebSockets in total (nginx's `limit_conn`: a connection
    /// counts while a request or a tunnel is in progress on it).
    pub max_connections: usize,
    /// Concurrent client requests + WebSockets per client IP.
    pub max_connections_per_ip: usize,
    /// Open client TCP connections in total, counted from accept to close (idle keep-alive
    /// connections and connections still sending their header included); over it the
    /// connection is closed at accept.
    pub max_tcp_connections: usize,
    /// Open client TCP connections per client IP (HAProxy's `src_conn_cur`).
    pub max_tcp_connections_per_ip: usize,
    /// New Engine.IO sessions per second (token bucket refill); over it: 503 + Retry-After.
    pub new_sessions_per_second: u32,
    /// Token bucket size for new sessions.
    pub new_sessions_burst: u32,
    /// New Engine.IO sessions per second from one client IP; over it: 503 + Retry-After.
    pub new_sessions_per_second_per_ip: u32,
    /// Token bucket size per client IP.
    pub new_sessions_burst_per_ip: u32,
    /// Buckets the per-IP rate is kept in: IPs are hashed (with a per-process random key) into
    /// this many buckets, so memory is fixed (~32 bytes each) however many IPs come; two IPs in
    /// one bucket share its rate.
    pub per_ip_rate_buckets: usize,
    /// Largest request body (polling POST) in bytes; over it: 413.
    pub max_body_bytes: usize,
    /// Largest request head (request line + headers) in bytes; over it: 431.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 0,
            max_connections_per_ip: 0,
            max_tcp_connections: 0,
            max_tcp_connections_per_ip: 0,
            new_sessions_per_second: 0,
            new_sessions_burst: 0,
            new_sessions_per_second_per_ip: 0,
            new_sessions_burst_per_ip: 0,
            per_ip_rate_buckets: 65_536,
            max_body_bytes: 1_100_000,
            max_header_bytes: 16 * 1024,
        }
    }
}

/// `upstream_tls` section (nginx's `proxy_pass https://` with `proxy_ssl_verify on`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTls {
    /// Speak TLS to every backend. Its certificate is always verified.
    pub enabled: bool,
    /// PEM CA certificate(s) the backends' certificates must chain to; unset: the system's.
    pub ca_file: Option<PathBuf>,
    /// The name sent by SNI and verified in the backends' certificates (nginx's
    /// `proxy_ssl_name`); unset: each backend's IP address (its certificate needs that IP in
    /// its subjectAltName).
    pub server_name: Option<String>,
}

/// `exposure` section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Exposure {
    /// Paths the LB answers 404 instead of forwarding: the nodes' operational endpoints. An
    /// entry matches the path itself and everything under it (`/metrics` also blocks
    /// `/metrics/x`, not `/metricsx`). `[]` forwards everything.
    pub blocked_paths: Vec<String>,
}

impl Default for Exposure {
    fn default() -> Self {
        Self {
            blocked_paths: ["/metrics", "/readyz", "/healthz", "/demo/backends"]
                .map(String::from)
                .to_vec(),
        }
    }
}

impl Exposure {
    /// Whether `path` is blocked.
    pub fn blocks(&self, path: &str) -> bool {
        self.blocked_paths.iter().any(|b| {
            let b = b.trim_end_matches('/');
            path.strip_prefix(b)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }
}

/// `shutdown` section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Shutdown {
    /// On SIGTERM, how long live sessions may continue before they are closed.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// After shutdown starts, how long an idle keep-alive client connection stays open for its
    /// next request (answered with `Connection: close`) before it is closed. `0s` closes idle
    /// connections at once, which fails a request a client sends on one at that moment.
    #[serde(with = "humantime_serde")]
    pub idle_wait: Duration,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(30),
            idle_wait: Duration::from_secs(30),
        }
    }
}

/// `upgrade` section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Upgrade {
    /// A process started with `-u` waits this long for the old process's sid table before it
    /// answers `400 Session ID unknown` to a sid it does not know.
    #[serde(with = "humantime_serde")]
    pub handover_wait: Duration,
}

impl Default for Upgrade {
    fn default() -> Self {
        Self {
            handover_wait: Duration::from_secs(3),
        }
    }
}

pub use iogate_shared::sid::valid_tag as valid_sid_tag;

/// `--upstream` of the quick form: `srv:NAME` is an SRV name, anything else an address.
fn quick_upstream(a: &str) -> Upstream {
    match a.strip_prefix("srv:") {
        Some(name) => Upstream {
            srv: Some(name.to_string()),
            ..Upstream::fixed("")
        },
        None => Upstream::fixed(a),
    }
}

fn is_addr(s: &str) -> bool {
    s.parse::<SocketAddr>().is_ok()
}

impl Validate for LbConfig {
    fn validate(&self, p: &mut Problems) {
        if self.listeners.is_empty() {
            p.push("listeners", "needs at least one listener");
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if !is_addr(&l.address) {
                p.push(
                    format!("listeners[{i}].address"),
                    format!("`{}` is not IP:port", l.address),
                );
            }
            if let Some(t) = &l.tls {
                if t.certificates.is_empty() {
                    p.push(
                        format!("listeners[{i}].tls.certificates"),
                        "needs at least one certificate",
                    );
                }
                if l.redirect_to_https.is_some() {
                    p.push(
                        format!("listeners[{i}].redirect_to_https"),
                        "a TLS listener cannot redirect to HTTPS (it is HTTPS)",
                    );
                }
            }
            if l.redirect_to_https == Some(0) {
                p.push(
                    format!("listeners[{i}].redirect_to_https"),
                    "must be a port 1..=65535",
                );
            }
        }
        if let Err(e) = crate::tls::load_all(&self.listeners) {
            p.push(e.field(), e.error.to_string());
        }
        if let Some(ca) = &self.upstream_tls.ca_file
            && let Err(e) = crate::tls::load_roots(ca)
        {
            p.push("upstream_tls.ca_file", e.to_string());
        }
        if let Some(n) = &self.upstream_tls.server_name
            && rustls_pki_types::ServerName::try_from(n.as_str()).is_err()
        {
            p.push(
                "upstream_tls.server_name",
                format!("`{n}` is not a DNS name or an IP address"),
            );
        }
        for (i, b) in self.exposure.blocked_paths.iter().enumerate() {
            if !b.starts_with('/') || b.trim_end_matches('/').is_empty() {
                p.push(
                    format!("exposure.blocked_paths[{i}]"),
                    format!("`{b}` must be a path like /metrics (not / itself)"),
                );
            }
        }
        if !is_addr(&self.admin.listen) {
            p.push(
                "admin.listen",
                format!("`{}` is not IP:port", self.admin.listen),
            );
        }
        if self.admin.token.as_deref() == Some("") {
            p.push(
                "admin.token",
                "must not be empty (remove it to disable auth)",
            );
        }
        match self.admin.resolve_token() {
            Err((field, msg)) => p.push(field, msg),
            Ok(token) => {
                if let Some(msg) = self.admin.exposure_problem(token.is_some()) {
                    p.push("admin.listen", msg);
                }
            }
        }
        let mut ids = HashSet::new();
        let mut tags = HashSet::new();
        for (i, u) in self.upstreams.iter().enumerate() {
            match (&u.srv, u.address.as_str()) {
                (Some(_), a) if !a.is_empty() => p.push(
                    format!("upstreams[{i}].srv"),
                    "give either `address` or `srv`, not both",
                ),
                (Some(srv), _) if !is_dns_name(srv) => p.push(
                    format!("upstreams[{i}].srv"),
                    format!("`{srv}` is not a DNS name"),
                ),
                (None, "") => p.push(
                    format!("upstreams[{i}].address"),
                    "needs `address` (IP:port or NAME:port) or `srv`",
                ),
                (None, a) if !is_addr(a) && split_name_port(a).is_none() => p.push(
                    format!("upstreams[{i}].address"),
                    format!("`{a}` is not IP:port or NAME:port"),
                ),
                _ => {}
            }
            if u.is_dns() && u.sid_tag.is_some() {
                p.push(
                    format!("upstreams[{i}].sid_tag"),
                    "a DNS name stands for several nodes, each with its own tag: leave it out (tags are learned from the probes)",
                );
            }
            if u.weight == 0 || u.weight > 1000 {
                p.push(format!("upstreams[{i}].weight"), "must be 1..=1000");
            }
            let id = u.id();
            if id.is_empty()
                || id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_graphic() && c != ';' && c != ',')
            {
                p.push(
                    format!("upstreams[{i}].id"),
                    "must be 1-64 printable characters without `;` or `,`",
                );
            }
            if !ids.insert(id.to_string()) {
                p.push(format!("upstreams[{i}].id"), format!("duplicate id `{id}`"));
            }
            if let Some(tag) = &u.sid_tag {
                if !valid_sid_tag(tag) {
                    p.push(
                        format!("upstreams[{i}].sid_tag"),
                        "must be 1-8 characters of A-Z a-z 0-9 _ -",
                    );
                } else if !tags.insert(tag.clone()) {
                    p.push(
                        format!("upstreams[{i}].sid_tag"),
                        format!("duplicate sid_tag `{tag}`"),
                    );
                }
            }
        }
        match (self.balancing.policy, &self.balancing.key) {
            (Policy::Hash, None) => p.push(
                "balancing.key",
                "the hash policy needs a key (query:NAME, header:NAME, cookie:NAME or client_ip)",
            ),
            (Policy::Hash, Some(k)) if HashKey::parse(k).is_none() => p.push(
                "balancing.key",
                format!("`{k}` is not query:NAME, header:NAME, cookie:NAME or client_ip"),
            ),
            (Policy::LeastConn | Policy::RoundRobin, Some(_)) => {
                p.push("balancing.key", "only the hash policy takes a key")
            }
            _ => {}
        }
        let c = &self.stickiness.cookie_name;
        if c.is_empty()
            || !c
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
        {
            p.push(
                "stickiness.cookie_name",
                "must be letters, digits, `_` or `-`",
            );
        }
        if !self.engineio.path.starts_with('/') || self.engineio.path.len() < 2 {
            p.push("engineio.path", "must start with `/` and not be `/` alone");
        }
        if self.engineio.sid_table_max == 0 {
            p.push("engineio.sid_table_max", "must be at least 1");
        }
        for (i, server) in self.resolver.servers.iter().enumerate() {
            if parse_dns_server(server).is_none() {
                p.push(
                    format!("resolver.servers[{i}]"),
                    format!("`{server}` is not IP or IP:port"),
                );
            }
        }
        let r = &self.resolver;
        if r.min_interval.is_zero() {
            p.push("resolver.min_interval", "must be greater than 0");
        }
        if r.interval < r.min_interval {
            p.push(
                "resolver.interval",
                "must be at least resolver.min_interval",
            );
        }
        if r.timeout.is_zero() {
            p.push("resolver.timeout", "must be greater than 0");
        }
        let a = &self.health.active;
        match (&a.path, a.kind) {
            (Some(_), CheckKind::Engineio) => p.push(
                "health.active.path",
                "only `kind: http` takes a path (the engineio check uses engineio.path)",
            ),
            (Some(path), CheckKind::Http) if !path.starts_with('/') => {
                p.push("health.active.path", "must start with `/`")
            }
            _ => {}
        }
        for (name, d) in [
            ("health.active.interval", a.interval),
            ("health.active.timeout", a.timeout),
            ("timeouts.connect", self.timeouts.connect),
            ("timeouts.websocket_idle", self.timeouts.websocket_idle),
            ("timeouts.polling_request", self.timeouts.polling_request),
            ("timeouts.client_header", self.timeouts.client_header),
            ("upgrade.handover_wait", self.upgrade.handover_wait),
            (
                "upstream_keepalive.idle_timeout",
                self.upstream_keepalive.idle_timeout,
            ),
        ] {
            if d.is_zero() {
                p.push(name, "must be greater than 0");
            }
        }
        if self.timeouts.client_keepalive < Duration::from_secs(1) {
            p.push("timeouts.client_keepalive", "must be at least 1s");
        }
        if a.rise == 0 {
            p.push("health.active.rise", "must be at least 1");
        }
        if a.fall == 0 {
            p.push("health.active.fall", "must be at least 1");
        }
        if self.timeouts.websocket_idle < Duration::from_secs(60) {
            p.push(
                "timeouts.websocket_idle",
                "must be at least 60s (above pingInterval + pingTimeout)",
            );
        }
        let l = &self.limits;
        if l.new_sessions_per_second > 0 && l.new_sessions_burst == 0 {
            p.push(
                "limits.new_sessions_burst",
                "must be at least 1 when new_sessions_per_second is set",
            );
        }
        if l.new_sessions_per_second_per_ip > 0 && l.new_sessions_burst_per_ip == 0 {
            p.push(
                "limits.new_sessions_burst_per_ip",
                "must be at least 1 when new_sessions_per_second_per_ip is set",
            );
        }
        if !(1..=1 << 24).contains(&l.per_ip_rate_buckets) {
            p.push("limits.per_ip_rate_buckets", "must be 1..=16777216");
        }
        if l.max_body_bytes < 1024 {
            p.push("limits.max_body_bytes", "must be at least 1024");
        }
        if l.max_header_bytes < 1024 {
            p.push("limits.max_header_bytes", "must be at least 1024");
        }
        if self.threads == 0 || self.threads > 256 {
            p.push("threads", "must be 1..=256");
        }
    }
}

impl LbConfig {
    /// Load and validate a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: LbConfig = config::load_file(path)?;
        cfg.resolve_admin_token(path)?;
        Ok(cfg)
    }

    /// The file's config with `--admin ADDR` in place of `admin.listen`, validated again (the
    /// address, and a token for an address reachable from other hosts).
    pub fn with_admin_listen(mut self, admin: &str) -> Result<Self, ConfigError> {
        self.admin.listen = admin.to_string();
        let mut problems = Problems::default();
        self.validate(&mut problems);
        config::problems_to_error(problems, "", Path::new("<command line>"))?;
        Ok(self)
    }

    /// Fill in `admin.effective_token` (validation already read the token's sources; one that
    /// changed since is an error, never a silently disabled token).
    fn resolve_admin_token(&mut self, path: &Path) -> Result<(), ConfigError> {
        match self.admin.resolve_token() {
            Ok(t) => {
                self.admin.effective_token = t;
                Ok(())
            }
            Err((field, msg)) => {
                let mut problems = Problems::default();
                problems.push(field, msg);
                config::problems_to_error(problems, "", path)
            }
        }
    }

    /// The quick form: `--listen ADDR --upstream ADDR... [--resolver ADDR...] [--admin ADDR]
    /// [--threads N]`. An upstream is `IP:port`, `NAME:port` or `srv:NAME`.
    pub fn quick(
        listen: &str,
        upstreams: &[String],
        resolvers: &[String],
        admin: Option<&str>,
        tls: Option<CertificateFiles>,
        threads: Option<usize>,
    ) -> Result<Self, ConfigError> {
        let mut listener = Listener::plain(listen);
        listener.tls = tls.map(|c| ListenerTls {
            certificates: vec![c],
            http2: true,
        });
        let mut cfg = LbConfig {
            listeners: vec![listener],
            upstreams: upstreams.iter().map(|a| quick_upstream(a)).collect(),
            ..LbConfig::default()
        };
        cfg.resolver.servers = resolvers.to_vec();
        if let Some(a) = admin {
            cfg.admin.listen = a.to_string();
        }
        if let Some(t) = threads {
            cfg.threads = t;
        }
        let mut problems = Problems::default();
        cfg.validate(&mut problems);
        config::problems_to_error(problems, "", Path::new("<command line>"))?;
        cfg.resolve_admin_token(Path::new("<command line>"))?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_key_is_parsed_once_and_only_under_hash() {
        let hash = Balancing {
            policy: Policy::Hash,
            key: Some("header:X-Tenant".into()),
            ..Default::default()
        };
        let unparsed = hash.clone();
        let first = hash.hash_key().expect("a header key");
        assert_eq!(first, &HashKey::Header("x-tenant".into()));
        assert!(std::ptr::eq(first, hash.hash_key().expect("again")));
        // The cache is not part of the configuration's value.
        assert_eq!(hash, unparsed);
        let other = Balancing {
            policy: Policy::LeastConn,
            key: Some("header:X-Tenant".into()),
            ..Default::default()
        };
        assert_eq!(other.hash_key(), None);
        let bad = Balancing {
            policy: Policy::Hash,
            key: Some("nothing".into()),
            ..Default::default()
        };
        assert_eq!(bad.hash_key(), None);
    }
}

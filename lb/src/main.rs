//! `iogate-lb`: the pingora front door of a Socket.IO cluster.

/// mimalloc, not the system allocator: pingora allocates ~100 times per proxied HTTP request,
/// and glibc's malloc/free spent ~20 % of the long-polling path's instructions on it (measured
/// with bench/instructions.sh; docs/benchmarks.md has the numbers and the CPU A/B).
/// Its arenas are committed on demand (see `iogate_lb::memory::configure_allocator`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Configures mimalloc before it initialises: a constructor with priority 101, the first one
/// for programs, so it runs before mimalloc's own (which has none) and before `main`.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array.00101")]
static CONFIGURE_ALLOCATOR: extern "C" fn() = {
    extern "C" fn configure() {
        iogate_lb::memory::configure_allocator();
    }
    configure
};

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use iogate_lb::accept::AcceptFilter;
use iogate_lb::admin::Admin;
use iogate_lb::config::LbConfig;
use iogate_lb::control::Control;
use iogate_lb::metrics::LbMetrics;
use iogate_lb::polling::FrontDoor;
use iogate_lb::proxy::Proxy;
use iogate_lb::redirect::HttpsRedirect;
use iogate_lb::state::Lb;
use iogate_lb::tls::TlsListeners;
use iogate_lb::{handover, health};
use iogate_shared::telemetry::{self, LogFormat};
use pingora_core::apps::http_app::HttpServer;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::protocols::ALPN;
use pingora_core::server::Server;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;

/// Socket.IO-aware load balancer: sid stickiness, least-connections over live sessions,
/// WebSockets, health checks, hot reload.
#[derive(Debug, Parser)]
#[command(name = "iogate-lb", version)]
struct Cli {
    /// YAML config file (see config/lb.yaml). Reloaded on SIGHUP and when it changes.
    #[arg(long, short = 'c', env = "IOGATE_LB_CONFIG", conflicts_with_all = ["listen", "upstream"])]
    config: Option<PathBuf>,
    /// Quick start without a file: client listener address.
    #[arg(long)]
    listen: Option<String>,
    /// Quick start without a file: a backend (repeat; ids are the addresses): `IP:port`,
    /// `NAME:port` (every A/AAAA record of NAME, re-resolved) or `srv:NAME` (SRV records).
    #[arg(long)]
    upstream: Vec<String>,
    /// Quick start: the DNS server (`IP` or `IP:port`) asked for `NAME:port` and `srv:NAME`
    /// upstreams (repeat for several); default: the system's resolver.
    #[arg(long, requires = "listen")]
    resolver: Vec<String>,
    /// Quick start: terminate TLS on `--listen` with this certificate chain (PEM; reloaded when
    /// the file changes or on SIGHUP).
    #[arg(long, requires = "listen", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Quick start: the private key of `--tls-cert` (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Quick start: worker threads of the proxy service (`threads` in the file; default 2).
    #[arg(long, requires = "listen")]
    threads: Option<usize>,
    /// Admin API address (default 127.0.0.1:9100).
    #[arg(long)]
    admin: Option<String>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Take over the listeners and the sid table of a running instance (zero-downtime binary
    /// upgrade; then send SIGQUIT to the old process).
    #[arg(long, short = 'u')]
    upgrade: bool,
    /// Unix socket used to hand listeners over during an upgrade (the sid table goes over
    /// `<this>.sids`).
    #[arg(long, default_value = "/tmp/iogate-lb-upgrade.sock")]
    upgrade_sock: String,
    /// Pid file.
    #[arg(long, default_value = "/tmp/iogate-lb.pid")]
    pid_file: String,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match (&cli.config, &cli.listen) {
        (Some(path), _) => LbConfig::load(path).and_then(|c| match &cli.admin {
            Some(a) => c.with_admin_listen(a),
            None => Ok(c),
        }),
        (None, Some(listen)) => LbConfig::quick(
            listen,
            &cli.upstream,
            &cli.resolver,
            cli.admin.as_deref(),
            cli.tls_cert
                .clone()
                .zip(cli.tls_key.clone())
                .map(|(cert, key)| iogate_lb::config::CertificateFiles { cert, key }),
            cli.threads,
        ),
        (None, None) => {
            eprintln!(
                "iogate-lb needs --config FILE, or --listen ADDR --upstream ADDR [--upstream ADDR ...]"
            );
            return ExitCode::from(2);
        }
    };
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    telemetry::init(cli.log_format, "info");

    let metrics = match LbMetrics::new(prometheus::default_registry()) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("metrics: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tls = match TlsListeners::load(&cfg.listeners) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let upstream_tls = match iogate_lb::tls::UpstreamClient::new(&cfg.upstream_tls) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("upstream_tls: {e}");
            return ExitCode::from(2);
        }
    };
    let lb = match Lb::new(cfg.clone(), metrics) {
        Ok(lb) => {
            let lb = Arc::new(lb.with_tls(tls).with_upstream_tls(upstream_tls));
            lb.metrics.set_certificates(&lb.tls);
            lb.metrics.set_limits(&cfg);
            lb
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let handover_path = handover::socket_path(&cli.upgrade_sock);
    // An upgrading process listens for the old one's sid table before it takes the listeners.
    let handover_listener = if cli.upgrade {
        match handover::bind(&lb, &handover_path) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!(path = %handover_path.display(), error = %e,
                    "cannot listen for the old process's sid table; sessions without a node tag will get 400");
                None
            }
        }
    } else {
        None
    };
    // One round of health checks before serving: backends start pending, and the sid tags they
    // report route sessions this process has never seen (after an upgrade or a restart).
    if cfg.health.active.enabled {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(health::round(&lb, &mut Default::default())),
            Err(e) => tracing::error!(error = %e, "first health round skipped: no runtime"),
        }
        for b in lb.registry.all() {
            tracing::info!(backend = %b.id, state = b.state().as_str(), tag = ?b.sid_tag(),
                health = %b.last_health(), "backend checked");
        }
    }

    let conf = ServerConf {
        threads: cfg.threads,
        grace_period_seconds: Some(cfg.shutdown.grace.as_secs()),
        graceful_shutdown_timeout_seconds: Some(5),
        upgrade_sock: cli.upgrade_sock.clone(),
        pid_file: cli.pid_file.clone(),
        // The CAs pingora's connector trusts for upstream TLS (unset: the system's).
        ca_file: cfg
            .upstream_tls
            .ca_file
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned()),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: cli.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    // pingora writes the pid file only when it daemonizes; operators (and `-u` + SIGQUIT) need it.
    if let Err(e) = std::fs::write(&cli.pid_file, format!("{}\n", std::process::id())) {
        tracing::error!(pid_file = %cli.pid_file, error = %e, "cannot write the pid file");
    }
    let phases = server.watch_execution_phase();

    // pingora's HTTP path, behind the fast path for long-polling and WebSocket upgrades (`iogate_lb::polling`).
    let mut pingora_path = pingora_proxy::http_proxy(&server.configuration, Proxy(lb.clone()));
    pingora_path.set_shutdown_idle_wait(cfg.shutdown.idle_wait);
    let mut options = pingora_path.server_options.clone().unwrap_or_default();
    options.h1_header_timeout = Some(cfg.timeouts.client_header);
    // An HTTP/2 connection without streams closes like an idle HTTP/1.1 keep-alive one.
    options.h2_idle_timeout = Some(cfg.timeouts.client_keepalive);
    pingora_path.server_options = Some(options);
    let front = FrontDoor::new(pingora_path, Proxy(lb.clone()), cfg.shutdown.idle_wait);
    let parked_idle = front.parked_idle_connections();
    let mut proxy = Service::new("iogate-lb proxy".to_string(), front);
    proxy.set_connection_filter(Arc::new(AcceptFilter(lb.clone())));
    let mut redirects = Vec::new();
    for l in &cfg.listeners {
        if let Some(port) = l.redirect_to_https {
            let mut r = Service::new(
                format!("iogate-lb redirect {}", l.address),
                HttpServer::new_app(HttpsRedirect { port }),
            );
            r.add_tcp(&l.address);
            // The same per-client TCP limits as the proxy's listeners.
            r.set_connection_filter(Arc::new(AcceptFilter(lb.clone())));
            redirects.push(r);
            continue;
        }
        let mut endpoint = ListenerConfig::tcp(l.address.clone())
            .l4_buffer(L4BufferSettings::default().read(l.read_buffer));
        if let (Some(t), Some(resolver)) = (&l.tls, lb.tls.resolver(&l.address)) {
            let mut settings = match TlsSettings::intermediate("", "") {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("TLS settings for {}: {e}", l.address);
                    return ExitCode::FAILURE;
                }
            };
            settings.set_cert_resolver(resolver);
            if t.http2 {
                settings.enable_h2();
            } else {
                settings.set_alpn(ALPN::H1);
            }
            endpoint = endpoint.tls(settings);
        }
        proxy.add_listener(endpoint);
    }
    let mut admin = Service::new(
        "iogate-lb admin".to_string(),
        HttpServer::new_app(Admin(lb.clone())),
    );
    admin.add_tcp(&cfg.admin.listen);
    let control = background_service(
        "iogate-lb control",
        Control {
            lb,
            config_path: cli.config.clone(),
            handover_path,
            handover_listener: std::sync::Mutex::new(handover_listener),
            phases: std::sync::Mutex::new(Some(phases)),
            parked_idle,
        },
    );
    server.add_service(proxy);
    server.add_service(admin);
    for r in redirects {
        server.add_service(r);
    }
    server.add_service(control);
    tracing::info!(
        listeners = ?cfg.listeners.iter().map(|l| l.address.as_str()).collect::<Vec<_>>(),
        admin = %cfg.admin.listen,
        upstreams = cfg.upstreams.len(),
        "iogate-lb starting"
    );
    server.run_forever();
}

//! `iogate-loadtest`: drive a Socket.IO server or cluster with many clients and account for every
//! message.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use iogate_loadtest::client::{Target, Transport};
use iogate_loadtest::report::{self, Summary};
use iogate_loadtest::run::{self, Env, Phase, Scenario, ScenarioFile};
use iogate_loadtest::{assert, procstat};
use iogate_shared::telemetry::{self, LogFormat};

/// Socket.IO load generator: WebSocket and long-polling clients, exact delivery accounting,
/// latency percentiles, JSON/HTML reports, CI thresholds.
#[derive(Debug, Parser)]
#[command(name = "iogate-loadtest", version)]
struct Cli {
    /// Server URL, e.g. http://127.0.0.1:8080 (path defaults to /socket.io/). Repeat it to
    /// spread clients round-robin over several servers (the nodes of a cluster).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: Vec<String>,
    /// Scenario for a single phase.
    #[arg(long, value_enum, default_value_t = Scenario::Idle)]
    scenario: Scenario,
    /// YAML file with several phases (`phases: [{scenario, clients, duration, ...}]`); overrides
    /// the single-phase flags.
    #[arg(long)]
    scenario_file: Option<PathBuf>,
    /// Clients.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// New connections per second while ramping up (0 = all at once).
    #[arg(long, default_value_t = 0.0)]
    connect_rate: f64,
    /// Scenario duration once connected (e.g. 30s, 2m).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Messages per second per client (echo, broadcast, room) or churn operations per second.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Messages per second over all clients (overrides --rate).
    #[arg(long)]
    total_rate: Option<f64>,
    /// Transport.
    #[arg(long, value_enum, default_value_t = Transport::Websocket)]
    transport: Transport,
    /// Rooms for the room scenario.
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    /// Padding per message, bytes.
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
    /// Spread source addresses over 127.0.0.1 … 127.0.0.K (passes per-IP limits, more ports).
    #[arg(long, default_value_t = 0)]
    local_addrs: u8,
    /// Keep a cookie jar per client, like a browser: cookies a response sets are sent on the
    /// client's later requests (for proxies that pin sessions with a cookie).
    #[arg(long)]
    cookies: bool,
    /// Reconnect after a lost session, like socket.io-client.
    #[arg(long)]
    reconnect: bool,
    /// Speak Socket.IO connection state recovery like socket.io-client 4.6+: keep the session's
    /// pid and the last offset, send them when reconnecting; counts recovered sessions.
    #[arg(long)]
    recovery: bool,
    /// RNG seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Connect timeout.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
    /// Ack timeout (echo).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    ack_timeout: Duration,
    /// Wait after the senders stop for in-flight messages.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// Keep listening this long after the drain: deliveries arriving then are counted as `late`
    /// (and not as lost); what has not arrived by its end is `lost` (never delivered).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    late_window: Duration,
    /// Write the JSON summary to FILE (`-` = stdout).
    #[arg(long)]
    json: Option<String>,
    /// Write a self-contained HTML report.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Thresholds, e.g. "loss=0,p99<50ms,connected>=99.9%": exit 1 when one fails.
    #[arg(long = "assert")]
    assert_spec: Option<String>,
    /// Trust the CA certificate(s) in this PEM file for https:// and wss:// URLs (a private or
    /// self-signed CA), like curl's --cacert. Without it the webpki roots are trusted.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Hide the live progress even on a TTY.
    #[arg(long)]
    quiet: bool,
    /// Log format (logs go to stderr; RUST_LOG filters).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn target(url: &str) -> anyhow::Result<Target> {
    let u = url::Url::parse(url).with_context(|| format!("bad --url {url}"))?;
    let tls = match u.scheme() {
        "http" | "ws" => false,
        "https" | "wss" => true,
        other => bail!("--url {url}: scheme {other} is not http(s):// or ws(s)://"),
    };
    let host = u.host_str().context("--url needs a host")?.to_string();
    let port = u.port().unwrap_or(if tls { 443 } else { 80 });
    let addr: SocketAddr = (host.as_str(), port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .next()
        .context("no address")?;
    let mut path = u.path().to_string();
    if path == "/" || path.is_empty() {
        path = "/socket.io/".into();
    }
    if !path.ends_with('/') {
        path.push('/');
    }
    Ok(Target {
        addr,
        host: format!("{host}:{port}"),
        path,
        query: u.query().unwrap_or("").to_string(),
        tls,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format, "warn");
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(real_main(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("iogate-loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let thresholds = match &cli.assert_spec {
        Some(s) => assert::parse(s).map_err(anyhow::Error::msg)?,
        None => Vec::new(),
    };
    let phases = match &cli.scenario_file {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let f: ScenarioFile =
                serde_yaml::from_str(&text).with_context(|| format!("{}", p.display()))?;
            f.phases
        }
        None => vec![Phase {
            scenario: cli.scenario,
            clients: cli.clients,
            connect_rate: cli.connect_rate,
            duration: cli.duration,
            rate: cli.rate,
            total_rate: cli.total_rate,
            transport: cli.transport,
            rooms: cli.rooms,
            payload_bytes: cli.payload_bytes,
            reconnect: cli.reconnect,
        }],
    };
    let local_addrs: Vec<IpAddr> = (1..=cli.local_addrs)
        .map(|k| IpAddr::from([127, 0, 0, k]))
        .collect();
    let env = Env {
        targets: cli
            .url
            .iter()
            .map(|u| target(u))
            .collect::<anyhow::Result<_>>()?,
        local_addrs,
        seed: cli.seed,
        connect_timeout: cli.connect_timeout,
        ack_timeout: cli.ack_timeout,
        drain: cli.drain,
        late_window: cli.late_window,
        cookies: cli.cookies,
        recovery: cli.recovery,
        ca: match &cli.ca {
            None => None,
            Some(path) => {
                let pem =
                    std::fs::read(path).with_context(|| format!("--ca {}", path.display()))?;
                Some(
                    iogate_loadtest::client::TlsTrust::from_pem(&pem)
                        .map_err(|e| anyhow::anyhow!("--ca {}: {e}", path.display()))?,
                )
            }
        },
    };
    let live = !cli.quiet && std::io::stderr().is_terminal();
    let mut summaries = Vec::new();
    for phase in phases {
        let bar = live.then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.enable_steady_tick(Duration::from_millis(250));
            b
        });
        let cpu0 = procstat::cpu_time();
        let t0 = std::time::Instant::now();
        let clients = phase.clients;
        let mut last = (std::time::Instant::now(), 0.0f64);
        let (run, timeline) = run::run_phase(phase.clone(), env.clone(), |r, elapsed| {
            if let Some(b) = &bar {
                let (connected, total, p99, failed) = r.stats.summary_light();
                let dt = last.0.elapsed().as_secs_f64();
                if dt >= 0.2 {
                    let rate = (total - last.1) / dt;
                    last = (std::time::Instant::now(), total);
                    b.set_message(format!(
                        "{:>6.1}s  connected {connected}/{clients}  msgs/s {rate:.0}  p99 {p99:.2} ms  failed {failed}",
                        elapsed.as_secs_f64()
                    ));
                }
            }
        })
        .await;
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu = (procstat::cpu_time() - cpu0).as_secs_f64();
        let accounting = run.stats.summary();
        let delivered = accounting.received + accounting.acks_received;
        let storm = run
            .storm_recovery_us
            .load(std::sync::atomic::Ordering::Relaxed);
        let s = Summary {
            url: cli.url.join(" "),
            clients,
            connects: run
                .stats
                .connects
                .load(std::sync::atomic::Ordering::Relaxed),
            connected_peak: run
                .stats
                .connected_peak
                .load(std::sync::atomic::Ordering::Relaxed),
            reconnects: run
                .stats
                .reconnects
                .load(std::sync::atomic::Ordering::Relaxed),
            recovered: run
                .stats
                .recovered
                .load(std::sync::atomic::Ordering::Relaxed),
            elapsed_s: elapsed,
            storm_recovery_ms: (phase.scenario == Scenario::Storm).then(|| {
                if storm == 0 {
                    f64::INFINITY
                } else {
                    storm as f64 / 1000.0
                }
            }),
            throughput_per_s: delivered as f64 / phase.duration.as_secs_f64().max(1e-9),
            generator_cpu_s: cpu,
            generator_cpu_pct: cpu * 100.0 / elapsed.max(1e-9),
            generator_rss_mib: procstat::rss_bytes() as f64 / 1048576.0,
            generator_peak_rss_mib: procstat::peak_rss_bytes() as f64 / 1048576.0,
            accounting,
            timeline,
            phase,
        };
        eprint!("{}", report::table(&s));
        summaries.push(s);
    }
    if let Some(j) = &cli.json {
        let text = serde_json::to_string_pretty(&summaries)?;
        if j == "-" {
            println!("{text}");
        } else {
            std::fs::write(j, text + "\n").with_context(|| format!("writing {j}"))?;
        }
    }
    if let Some(p) = &cli.report {
        std::fs::write(p, report::html(&summaries))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    let mut failed = Vec::new();
    for s in &summaries {
        failed.extend(assert::check(&thresholds, s));
    }
    if !failed.is_empty() {
        for f in &failed {
            eprintln!("assertion failed: {f}");
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

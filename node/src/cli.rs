//! The command line and process life every node binary shares — the `iogate-node` binary and
//! applications built on the library alike: [`NodeArgs`] (flatten it into your own clap
//! parser) and [`run`], which loads and validates the config (`--check`), sets up logging,
//! starts the runtime, serves, drains on the first SIGTERM/SIGINT and exits at once on the
//! second, with the exit codes of `iogate-node`.

use std::path::PathBuf;
use std::process::ExitCode;

use iogate_shared::telemetry::{self, LogFormat};

use crate::config::{NodeConfig, Overrides};
use crate::server::Node;

/// The flags of every node binary.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// YAML config file (see config/node.yaml). Without it, defaults apply.
    #[arg(long, short = 'c', env = "IOGATE_NODE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listen address, overrides `listen`.
    #[arg(long)]
    pub listen: Option<String>,
    /// Node id, overrides `node_id`.
    #[arg(long)]
    pub node_id: Option<String>,
    /// Redis URL, overrides `redis.url`; `none` runs a single node without Redis.
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Validate the configuration and exit (0 when valid).
    #[arg(long)]
    pub check: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl NodeArgs {
    /// The config overrides these flags make.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            node_id: self.node_id.clone(),
            redis_url: self.redis_url.clone(),
            profile: None,
        }
    }
}

/// Run a node binary: load the config (`args.config` with `overrides`; every error printed as
/// `file:line:column: field: message`, exit 2), stop there with `--check` (exit 0), else log to
/// stderr (`RUST_LOG`, `--log-format`), build the node with `node(config)` — add your
/// applications there — bind, print `{name} {node_id} listening on {addr}` on stdout (scripts
/// wait for it), serve, drain on the first SIGTERM/SIGINT (a second one exits at once, 130) and
/// exit 0 when drained; 1 when the node fails.
pub fn run(
    name: &str,
    args: &NodeArgs,
    overrides: Overrides,
    node: impl FnOnce(NodeConfig) -> Node,
) -> ExitCode {
    let cfg = match NodeConfig::load(args.config.as_deref(), &overrides) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!(
            "{}: configuration is valid",
            args.config
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "<defaults>".into())
        );
        return ExitCode::SUCCESS;
    }
    // fred logs every connection error at warn; the bus supervisor reports outages itself.
    telemetry::init(args.log_format, "info,fred=error");
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let node = node(cfg);
    let result = rt.block_on(async move {
        let node = node.bind().await?;
        match node.local_addr() {
            // One line on stdout that scripts and tests can wait for.
            Ok(addr) => println!("{name} {} listening on {addr}", node.node_id()),
            Err(e) => tracing::warn!(error = %e, "cannot read the bound address"),
        }
        node.run(shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on the first SIGTERM/SIGINT (the node then drains); a second one exits the process
/// at once with code 130.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; drain on signal is unavailable");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining (send again to exit at once)"),
        _ = int.recv() => tracing::info!("SIGINT: draining (send again to exit at once)"),
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
}

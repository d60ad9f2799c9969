//! `iogate-node`: run one clustered Socket.IO node.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use iogate_node::BoundNode;
use iogate_node::config::{NodeConfig, Overrides, Profile};
use iogate_shared::telemetry::{self, LogFormat};

/// A clustered Socket.IO node: socketioxide + axum, joined to other nodes through Redis.
#[derive(Debug, Parser)]
#[command(name = "iogate-node", version)]
struct Cli {
    /// YAML config file (see config/node.yaml). Without it, defaults apply.
    #[arg(long, short = 'c', env = "IOGATE_NODE_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address, overrides `listen`.
    #[arg(long)]
    listen: Option<String>,
    /// Node id, overrides `node_id`.
    #[arg(long)]
    node_id: Option<String>,
    /// Redis URL, overrides `redis.url`; `none` runs a single node with the in-memory adapter.
    #[arg(long)]
    redis_url: Option<String>,
    /// Application profile, overrides `profile`.
    #[arg(long, value_enum)]
    profile: Option<Profile>,
    /// Validate the configuration and exit (0 when valid).
    #[arg(long)]
    check: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides {
        listen: cli.listen.clone(),
        node_id: cli.node_id.clone(),
        redis_url: cli.redis_url.clone(),
        profile: cli.profile,
    };
    let cfg = match NodeConfig::load(cli.config.as_deref(), &overrides) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        println!(
            "{}: configuration is valid",
            cli.config
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "<defaults>".into())
        );
        return ExitCode::SUCCESS;
    }
    // fred logs every connection error at warn; the bus supervisor reports outages itself.
    telemetry::init(cli.log_format, "info,fred=error");
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: NodeConfig) -> anyhow::Result<()> {
    let node = BoundNode::bind(cfg).await?;
    let addr = node.local_addr().context("reading the bound address")?;
    // One line on stdout that scripts and tests can wait for.
    println!("iogate-node {} listening on {addr}", node.node_id());
    node.run(shutdown_signal()).await?;
    Ok(())
}

/// Resolves on the first SIGTERM/SIGINT; a second one exits the process at once.
async fn shutdown_signal() {
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

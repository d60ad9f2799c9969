//! Building the fred client from [`RedisConfig`].

use fred::prelude::{Builder, Client, Config, ReconnectPolicy, ServerConfig};
use fred::types::RespVersion;
use fred::types::config::UnresponsiveConfig;
use fred::types::config::{TlsConfig, TlsConnector};
use std::time::Duration;

use crate::config::RedisConfig;

/// Why the fred client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// fred refused the configuration (a malformed URL, for instance).
    #[error("invalid Redis configuration: {0}")]
    Config(#[from] fred::error::Error),
    /// `redis.tls.ca_file` could not be used.
    #[error("redis.tls.ca_file {path}: {message}")]
    Tls {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

/// The CA certificates in a PEM file, as rustls trust anchors.
pub fn tls_roots(path: &std::path::Path) -> Result<rustls::RootCertStore, ClientError> {
    let err = |message: String| ClientError::Tls {
        path: path.to_path_buf(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
    iogate_shared::tls::roots_from_pem(&pem).map_err(err)
}

/// The TLS settings of the fred client: `redis.tls.ca_file`'s CAs (ring provider, TLS 1.2 and
/// 1.3), or the system's when only the url says `rediss://`.
fn tls_config(cfg: &RedisConfig) -> Result<Option<TlsConfig>, ClientError> {
    let Some(tls) = &cfg.tls else {
        // fred itself sets up rediss:// urls (system CA certificates).
        return Ok(None);
    };
    let connector = match &tls.ca_file {
        Some(ca) => {
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| ClientError::Tls {
                    path: ca.clone(),
                    message: e.to_string(),
                })?
                .with_root_certificates(tls_roots(ca)?)
                .with_no_client_auth();
            TlsConnector::from(config)
        }
        None => TlsConnector::default_rustls()?,
    };
    Ok(Some(connector.into()))
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Build (not connect) a RESP3 fred client for standalone Redis or Redis Cluster.
pub fn build(cfg: &RedisConfig) -> Result<Client, ClientError> {
    build_with_timeout(cfg, cfg.command_timeout)
}

/// [`build`] with another command timeout: a client whose commands block on purpose (the
/// recovery stream reader's `XREAD BLOCK`) needs one above its block time.
pub fn build_with_timeout(
    cfg: &RedisConfig,
    command_timeout: Duration,
) -> Result<Client, ClientError> {
    let mut config = match &cfg.url {
        Some(url) => Config::from_url(url)?,
        None => {
            let hosts: Vec<(String, u16)> = cfg
                .cluster_nodes
                .iter()
                .filter_map(|n| {
                    let (h, p) = n.rsplit_once(':')?;
                    Some((h.to_string(), p.parse().ok()?))
                })
                .collect();
            Config {
                server: ServerConfig::new_clustered(hosts),
                ..Config::default()
            }
        }
    };
    if let Some(tls) = tls_config(cfg)? {
        config.tls = Some(tls);
    }
    // Sharded pub/sub on one connection needs RESP3 (Redis >= 7).
    config.version = RespVersion::RESP3;
    // Keep retrying when Redis is down at start-up instead of failing the node.
    config.fail_fast = false;
    if cfg.username.is_some() {
        config.username = cfg.username.clone();
    }
    if cfg.password.is_some() {
        config.password = cfg.password.clone();
    }

    let mut policy = ReconnectPolicy::new_exponential(
        0, // forever
        millis(cfg.reconnect.min_delay).max(1),
        millis(cfg.reconnect.max_delay).max(1),
        2,
    );
    policy.set_jitter(millis(cfg.reconnect.jitter));

    let connect_timeout = cfg.connect_timeout;
    let buffer = cfg.max_command_buffer;
    let queue = cfg.queue_size;
    let client = Builder::from_config(config)
        .set_policy(policy)
        .with_connection_config(|c| {
            c.connection_timeout = connect_timeout;
            c.internal_command_timeout = command_timeout;
            c.max_command_buffer_len = buffer;
            c.max_command_attempts = 1;
            // A Redis that stops answering (not just closing) is detected and reconnected.
            c.unresponsive = UnresponsiveConfig {
                max_timeout: Some(command_timeout * 2),
                interval: Duration::from_millis(250),
            };
        })
        .with_performance_config(|p| {
            p.default_command_timeout = command_timeout;
            p.broadcast_channel_capacity = queue;
        })
        .build()?;
    Ok(client)
}

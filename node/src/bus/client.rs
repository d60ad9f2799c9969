//! Building the fred client from [`RedisConfig`].

use fred::prelude::{Builder, Client, Config, ReconnectPolicy, ServerConfig};
use fred::types::RespVersion;
use fred::types::config::UnresponsiveConfig;
use std::time::Duration;

use crate::config::RedisConfig;

/// Why the fred client could not be built (a malformed URL, for instance).
#[derive(Debug, thiserror::Error)]
#[error("invalid Redis configuration: {0}")]
pub struct ClientError(#[from] fred::error::Error);

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

//! The bus supervisor: one task per node that watches the fred connection and restores the
//! subscriptions.
//!
//! It reacts to fred's reconnect notifications and also checks the connection state every
//! 100 ms (cheap: one lock read), so a disconnect/reconnect is never missed. On every (re)connect
//! it SSUBSCRIBEs every tracked channel again (idempotent in Redis) and only then reports the bus
//! `up`. If fred's connection task ever ends, the supervisor starts a new one, so the bus is
//! retried forever whatever fred's policy decides.
//!
//! Redis Cluster moves shard channels without a reconnect: a failover promotes a replica, a
//! reshard (`redis-cli --cluster reshard`) hands a slot to another master, and the old owner
//! drops the slot's subscribers with an `sunsubscribe` push that fred discards. So in cluster
//! mode the supervisor also refreshes fred's slot map every [`SLOT_CHECK`] (one `CLUSTER SLOTS`)
//! and re-subscribes every tracked channel when the master of one of their slots changed —
//! otherwise a node that only listens would stay deaf after a reshard while every publish
//! reported it as reached.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, ClusterInterface, EventInterface, PubsubInterface};
use fred::types::config::Server;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use super::driver::{BusDriver, Shared};
use super::{BusState, BusStatus};

const TICK: Duration = Duration::from_millis(100);
/// How often, in cluster mode, the masters of the bus channels' slots are checked.
pub const SLOT_CHECK: Duration = Duration::from_secs(1);

/// Start connecting and supervising. Returns at once; the bus comes up in the background.
/// The task ends when `shutdown` turns true.
pub fn spawn(driver: &BusDriver, down_after: Duration, shutdown: watch::Receiver<bool>) {
    let Some(shared) = driver.shared.clone() else {
        return;
    };
    tokio::spawn(run(shared, down_after, shutdown));
}

async fn run(shared: Arc<Shared>, down_after: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut reconnect_rx = shared.client.reconnect_rx();
    let mut error_rx = shared.client.error_rx();
    // The last connection error logged: a wrong password or an unreachable host is logged
    // once per distinct error, not at every retry.
    let mut last_error: Option<String> = None;
    let mut handle = shared.client.connect();
    let mut ever_up = false;
    let clustered = shared.client.is_clustered();
    // The master of each tracked channel's slot at the last check (cluster mode).
    let mut owners: Vec<(String, Option<Server>)> = Vec::new();
    let mut last_slot_check = Instant::now();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = reconnect_rx.recv() => {
                match r {
                    Ok(server) => tracing::debug!(%server, "Redis connection (re)established"),
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => reconnect_rx = shared.client.reconnect_rx(),
                }
                // A reconnect may have lost subscriptions even if we never saw a disconnect.
                shared.resubscribe.store(true, Ordering::Release);
            }
            e = error_rx.recv() => {
                match e {
                    Ok((error, server)) => {
                        let text = error.to_string();
                        if last_error.as_deref() != Some(text.as_str()) {
                            tracing::error!(error = %text, server = ?server.map(|s| s.to_string()),
                                "Redis connection error (retrying with backoff)");
                            last_error = Some(text);
                        }
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => error_rx = shared.client.error_rx(),
                }
            }
            _ = ticker.tick() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            let _ = shared.client.quit().await;
            return;
        }
        // Held publishes whose own copy never came: this node was the subscriber missing.
        shared.echoes.expire(Instant::now());
        let status: &BusStatus = &shared.status;
        let connected = shared.client.is_connected();
        let state = status.get();
        if clustered && connected && last_slot_check.elapsed() >= SLOT_CHECK {
            last_slot_check = Instant::now();
            if let Some(now) = slot_owners(&shared).await {
                if owners_moved(&owners, &now) {
                    tracing::info!(
                        "the Redis Cluster moved a bus channel's slot; re-subscribing on its new master"
                    );
                    shared.resubscribe.store(true, Ordering::Release);
                }
                owners = now;
            }
        }
        let needs_resub = shared.resubscribe.load(Ordering::Acquire);
        if connected && (state != BusState::Up || needs_resub) {
            if restore(&shared).await {
                shared.resubscribe.store(false, Ordering::Release);
                last_error = None;
                if state != BusState::Up {
                    came_back(&shared, ever_up);
                    ever_up = true;
                }
            }
        } else if !connected && state == BusState::Up {
            lost(&shared);
        } else if !connected
            && state == BusState::Reconnecting
            && status
                .outage_since()
                .is_some_and(|t| t.elapsed() >= down_after)
        {
            tracing::error!(
                after = ?down_after,
                "Redis bus still unreachable; state is now `down` (still retrying)"
            );
            status.set(BusState::Down);
        }
        if handle.is_finished() {
            tracing::warn!("fred connection task ended; starting a new one");
            handle = shared.client.connect();
        }
    }
}

/// The master of every tracked channel's slot, after refreshing fred's slot map; `None` when the
/// refresh failed (the next check tries again).
async fn slot_owners(shared: &Shared) -> Option<Vec<(String, Option<Server>)>> {
    match tokio::time::timeout(shared.command_timeout, shared.client.sync_cluster()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "cluster slot refresh failed; will retry");
            return None;
        }
        Err(_) => return None,
    }
    let routing = shared.client.cached_cluster_state()?;
    let mut out: Vec<(String, Option<Server>)> = shared
        .tracked_channels()
        .into_iter()
        .map(|chan| {
            let slot = fred::util::redis_keyslot(chan.as_bytes());
            let owner = routing.get_server(slot).cloned();
            (chan, owner)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Some(out)
}

/// Whether a channel seen at both checks has another master now (a channel tracked since the
/// last check was subscribed where it lives now).
pub(crate) fn owners_moved<S: PartialEq>(
    before: &[(String, Option<S>)],
    now: &[(String, Option<S>)],
) -> bool {
    now.iter().any(|(chan, owner)| {
        before
            .iter()
            .find(|(c, _)| c == chan)
            .is_some_and(|(_, was)| was != owner)
    })
}

/// SSUBSCRIBE every tracked channel. True when all are confirmed.
async fn restore(shared: &Shared) -> bool {
    let channels = shared.tracked_channels();
    for chan in &channels {
        match tokio::time::timeout(
            shared.command_timeout,
            shared.client.ssubscribe(chan.as_str()),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(chan, error = %e, "re-subscribe failed; will retry");
                return false;
            }
            Err(_) => {
                tracing::debug!(chan, "re-subscribe timed out; will retry");
                return false;
            }
        }
    }
    true
}

fn came_back(shared: &Shared, ever_up: bool) {
    let status = &shared.status;
    let dropped = shared.dropped_in_outage.swap(0, Ordering::AcqRel);
    shared.drop_logged.store(false, Ordering::Release);
    let outage = status.outage_since().map(|t| t.elapsed());
    status.set_outage_since(None);
    status.set(BusState::Up);
    shared.metrics.bus_up.set(1);
    if ever_up {
        shared.metrics.bus_reconnects.inc();
        if let Some(d) = outage {
            shared.metrics.bus_outage.observe(d.as_secs_f64());
        }
        tracing::info!(
            outage = ?outage.unwrap_or_default(),
            dropped_cross_node_messages = dropped,
            channels = shared.tracked_channels().len(),
            "Redis bus is back: subscriptions restored"
        );
    } else {
        tracing::info!(
            channels = shared.tracked_channels().len(),
            "Redis bus is up"
        );
    }
}

fn lost(shared: &Shared) {
    let status = &shared.status;
    status.set_outage_since(Some(Instant::now()));
    status.set(BusState::Reconnecting);
    shared.metrics.bus_up.set(0);
    tracing::warn!("Redis bus connection lost; reconnecting with backoff");
}

#[cfg(test)]
mod tests {
    use super::owners_moved;

    fn at(pairs: &[(&str, Option<u16>)]) -> Vec<(String, Option<u16>)> {
        pairs.iter().map(|(c, o)| (c.to_string(), *o)).collect()
    }

    #[test]
    fn a_moved_slot_is_seen_a_new_channel_is_not() {
        let before = at(&[("a", Some(7000)), ("b", Some(7001))]);
        assert!(!owners_moved(&before, &before));
        assert!(owners_moved(
            &before,
            &at(&[("a", Some(7002)), ("b", Some(7001))])
        ));
        // The master gone from the map (a failover in progress) counts as moved.
        assert!(owners_moved(
            &before,
            &at(&[("a", None), ("b", Some(7001))])
        ));
        // A channel subscribed since the last check is where it was subscribed.
        assert!(!owners_moved(
            &before,
            &at(&[("a", Some(7000)), ("b", Some(7001)), ("c", Some(7002))])
        ));
        assert!(!owners_moved(&[], &before));
    }
}

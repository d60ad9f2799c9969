//! The bus supervisor: one task per node that watches the fred connection and restores the
//! subscriptions.
//!
//! It reacts to fred's reconnect notifications and also checks the connection state every
//! 100 ms (cheap: one lock read), so a disconnect/reconnect is never missed. On every (re)connect
//! it SSUBSCRIBEs every tracked channel again (idempotent in Redis) and only then reports the bus
//! `up`. If fred's connection task ever ends, the supervisor starts a new one, so the bus is
//! retried forever whatever fred's policy decides.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, EventInterface, PubsubInterface};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use super::driver::{BusDriver, Shared};
use super::{BusState, BusStatus};

const TICK: Duration = Duration::from_millis(100);

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
        let status: &BusStatus = &shared.status;
        let connected = shared.client.is_connected();
        let state = status.get();
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

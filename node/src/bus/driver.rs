//! [`BusDriver`]: socketioxide-redis's `Driver` on fred, which counts what it cannot deliver
//! instead of failing, hanging or panicking.
//!
//! - `publish`: while the bus is not `up` the message is dropped at once and counted
//!   (`bus_down`); otherwise SPUBLISH runs under `redis.command_timeout` and a timeout or error is
//!   counted (`timeout`, `error`). It always returns `Ok`, so socketioxide goes on to deliver the
//!   broadcast to this node's own clients. The first drop of an outage is logged, later ones are
//!   only counted.
//! - `subscribe`: the channel is tracked first (so the supervisor re-subscribes it after every
//!   reconnect) and then SSUBSCRIBEd if the bus is up; it never fails.
//! - inbound: one dispatcher task reads fred's message stream and `try_send`s each message into
//!   the channel's bounded queue; a full queue drops and counts (`queue_full`), a lagging fred
//!   broadcast counts what it skipped (`lagged`).
//! - `num_serv`: SHARDNUMSUB of the request channel; while Redis is unreachable this node is the
//!   only one it can reach, so it answers 1 (requests then complete locally instead of waiting).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fred::prelude::{Client, EventInterface, PubsubInterface};
use fred::types::{Message, MessageKind};
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use tokio::sync::{broadcast, mpsc};

use super::{BusState, BusStatus};
use crate::metrics::NodeMetrics;

/// State shared by every clone of the driver and by the supervisor.
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) channels: RwLock<HashMap<String, mpsc::Sender<ChanItem>>>,
    pub(crate) status: Arc<BusStatus>,
    pub(crate) metrics: NodeMetrics,
    pub(crate) command_timeout: Duration,
    pub(crate) queue_size: usize,
    /// Set when a subscribe could not be confirmed: the supervisor re-subscribes everything.
    pub(crate) resubscribe: AtomicBool,
    /// Whether the current outage's first drop was logged.
    pub(crate) drop_logged: AtomicBool,
    /// Messages dropped since the current outage began (for the recovery log line).
    pub(crate) dropped_in_outage: AtomicU64,
}

impl Shared {
    pub(crate) fn count_drop(&self, reason: &'static str, detail: &dyn std::fmt::Display) {
        self.metrics.bus_dropped.with_label_values(&[reason]).inc();
        self.dropped_in_outage.fetch_add(1, Ordering::Relaxed);
        if !self.drop_logged.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                reason,
                %detail,
                "Redis bus cannot carry cross-node messages; local clients still receive them. \
                 Further drops in this outage are only counted in iogate_node_bus_dropped_total"
            );
        }
    }

    pub(crate) fn tracked_channels(&self) -> Vec<String> {
        self.channels
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// socketioxide-redis `Driver` over a fred client. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct BusDriver {
    pub(crate) shared: Arc<Shared>,
}

impl BusDriver {
    /// Wrap a fred client (not yet connected) and start the inbound dispatcher.
    pub fn new(
        client: Client,
        status: Arc<BusStatus>,
        metrics: NodeMetrics,
        command_timeout: Duration,
        queue_size: usize,
    ) -> Self {
        let shared = Arc::new(Shared {
            client,
            channels: RwLock::new(HashMap::new()),
            status,
            metrics,
            command_timeout,
            queue_size: queue_size.max(1),
            resubscribe: AtomicBool::new(false),
            drop_logged: AtomicBool::new(false),
            dropped_in_outage: AtomicU64::new(0),
        });
        tokio::spawn(dispatch(shared.client.message_rx(), shared.clone()));
        Self { shared }
    }

    /// The fred client underneath.
    pub fn client(&self) -> &Client {
        &self.shared.client
    }
}

/// Route messages from fred's broadcast stream to the per-channel queues.
async fn dispatch(mut rx: broadcast::Receiver<Message>, shared: Arc<Shared>) {
    loop {
        match rx.recv().await {
            Ok(msg) => {
                if !matches!(msg.kind, MessageKind::SMessage | MessageKind::Message) {
                    continue;
                }
                shared.metrics.bus_received.inc();
                let chan = msg.channel.to_string();
                let Some(data) = msg.value.into_owned_bytes() else {
                    shared.metrics.bus_dropped.with_label_values(&["error"]).inc();
                    continue;
                };
                let tx = shared
                    .channels
                    .read()
                    .ok()
                    .and_then(|m| m.get(&chan).cloned());
                let Some(tx) = tx else { continue };
                match tx.try_send((chan, data)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        shared.metrics.bus_dropped.with_label_values(&["queue_full"]).inc();
                        tracing::debug!("bus inbound queue full, message dropped");
                    }
                    Err(mpsc::error::TrySendError::Closed((chan, _))) => {
                        if let Ok(mut m) = shared.channels.write() {
                            m.remove(&chan);
                        }
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                shared
                    .metrics
                    .bus_dropped
                    .with_label_values(&["lagged"])
                    .inc_by(n);
                tracing::warn!(skipped = n, "bus dispatcher lagged behind fred; messages dropped");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

impl Driver for BusDriver {
    type Error = Infallible;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), Self::Error> {
        let s = &self.shared;
        if s.status.get() != BusState::Up {
            s.count_drop("bus_down", &"Redis unreachable");
            return Ok(());
        }
        match tokio::time::timeout(
            s.command_timeout,
            s.client.spublish::<i64, _, _>(chan, val),
        )
        .await
        {
            Ok(Ok(_)) => s.metrics.bus_published.inc(),
            Ok(Err(e)) => s.count_drop("error", &e),
            Err(_) => s.count_drop("timeout", &"SPUBLISH timed out"),
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        chan: String,
        _size: usize,
    ) -> Result<MessageStream<ChanItem>, Self::Error> {
        let s = &self.shared;
        let (tx, rx) = mpsc::channel(s.queue_size);
        if let Ok(mut m) = s.channels.write() {
            m.insert(chan.clone(), tx);
        }
        if s.status.get() == BusState::Up {
            let ok = matches!(
                tokio::time::timeout(s.command_timeout, s.client.ssubscribe(chan.as_str())).await,
                Ok(Ok(()))
            );
            if !ok {
                tracing::warn!(chan, "SSUBSCRIBE not confirmed; the supervisor will retry");
                s.resubscribe.store(true, Ordering::Release);
            }
        }
        Ok(MessageStream::new(rx))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), Self::Error> {
        let s = &self.shared;
        if let Ok(mut m) = s.channels.write() {
            m.remove(&chan);
        }
        if s.status.get() == BusState::Up {
            let _ = tokio::time::timeout(s.command_timeout, s.client.sunsubscribe(chan)).await;
        }
        Ok(())
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, Self::Error> {
        let s = &self.shared;
        if s.status.get() != BusState::Up {
            return Ok(1);
        }
        match tokio::time::timeout(
            s.command_timeout,
            s.client.pubsub_shardnumsub::<(String, u16), _>(chan),
        )
        .await
        {
            Ok(Ok((_, n))) => Ok(n.max(1)),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "SHARDNUMSUB failed; assuming this node only");
                Ok(1)
            }
            Err(_) => Ok(1),
        }
    }
}

//! [`BusDriver`]: socketioxide-redis's `Driver` on fred, which counts what it cannot deliver
//! instead of failing, hanging or panicking.
//!
//! - `publish`: while the bus is not `up` the message is dropped at once and counted
//!   (`bus_down`); otherwise SPUBLISH runs under `redis.command_timeout` (fred's own timeout, so a
//!   command given up on is never sent later) and a timeout or error is counted (`timeout`,
//!   `error`). It always returns `Ok`, so socketioxide goes on to deliver the
//!   broadcast to this node's own clients. The first drop of an outage is logged, later ones are
//!   only counted.
//! - `subscribe`: the channel is tracked first (so the supervisor re-subscribes it after every
//!   reconnect) and then SSUBSCRIBEd if the bus is up; it never fails.
//! - inbound: one dispatcher task reads fred's message stream and `try_send`s each message into
//!   the channel's bounded queue; a full queue drops and counts (`queue_full`), a lagging fred
//!   broadcast counts what it skipped (`lagged`).
//! - unreached peers: SPUBLISH answers how many subscribers got the message. On a namespace's
//!   broadcast channel every node is one subscriber, so when fewer nodes got it than were
//!   subscribed within the last `redis.down_after`, the miss is counted (`unreached`): a node
//!   that is re-subscribing after a Redis restart did not get it. (A node that just left is
//!   counted the same way until the window passes.) One subscriber missing may be this node
//!   itself (not a loss): the bus's `echo` module waits for the message's own copy to tell.
//! - `num_serv`: SHARDNUMSUB of the request channel; while Redis is unreachable this node is the
//!   only one it can reach, so it answers 1 (requests then complete locally instead of waiting).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use fred::error::ErrorKind;
use fred::prelude::{Client, ClientLike, EventInterface, PubsubInterface};
use fred::types::config::Options;
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
    /// `{prefix}-request#`: the start of every namespace's broadcast channel.
    pub(crate) request_prefix: String,
    /// Subscribers recently seen per broadcast channel.
    pub(crate) peers: Mutex<HashMap<String, PeerWindow>>,
    /// How long a subscriber count is remembered.
    pub(crate) peer_window: Duration,
    /// Publishes that reached one subscriber too few, waiting for their own copy.
    pub(crate) echoes: super::echo::Echoes,
}

/// The largest subscriber count of a channel seen within a time window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerWindow {
    max: u64,
    at: Instant,
}

impl PeerWindow {
    /// Record `receivers` for a publish at `now`; returns how many recently seen subscribers
    /// did not receive it.
    pub(crate) fn observe(
        slot: &mut Option<PeerWindow>,
        receivers: u64,
        now: Instant,
        window: Duration,
    ) -> u64 {
        match slot {
            Some(w) if receivers < w.max && now.duration_since(w.at) <= window => w.max - receivers,
            _ => {
                *slot = Some(PeerWindow {
                    max: receivers,
                    at: now,
                });
                0
            }
        }
    }
}

impl Shared {
    /// Count one cross-node message dropped.
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

    /// A namespace's broadcast channel (`{prefix}-request#{ns}#`), which every node subscribes.
    fn is_broadcast_channel(&self, chan: &str) -> bool {
        chan.strip_prefix(&self.request_prefix)
            .is_some_and(|rest| rest.matches('#').count() == 1)
    }

    /// SPUBLISH under `command_timeout`, timed by fred itself: a command fred gives up on is
    /// marked so that it is never written later (after a reconnect, to a new master), where an
    /// outer `tokio::time::timeout` would only drop the caller's future and leave the command
    /// queued — delivered after it was counted as dropped. (Once written, a command cannot be
    /// taken back: a timeout after the write is a Redis slower than `command_timeout`, and is
    /// counted as a drop.)
    async fn spublish(&self, chan: &str, val: bytes::Bytes) -> Result<i64, fred::error::Error> {
        let options = Options {
            timeout: Some(self.command_timeout),
            ..Options::default()
        };
        self.client
            .with_options(&options)
            .spublish::<i64, _, _>(chan, val)
            .await
    }

    /// Count a publish of `payload` on `chan` that reached `receivers` subscribers.
    fn published(&self, chan: &str, receivers: i64, payload: &[u8]) {
        self.metrics.bus_published.inc();
        if !self.is_broadcast_channel(chan) {
            return;
        }
        let receivers = u64::try_from(receivers).unwrap_or(0);
        let missed = match self.peers.lock() {
            Ok(mut peers) => {
                let mut slot = peers.get(chan).copied();
                let missed =
                    PeerWindow::observe(&mut slot, receivers, Instant::now(), self.peer_window);
                if let Some(w) = slot {
                    peers.insert(chan.to_string(), w);
                }
                missed
            }
            Err(_) => 0,
        };
        // One missing may be this node's own subscription: its copy of the message decides.
        if missed > 1
            || (missed == 1
                && self.echoes.hold(payload, Instant::now()) != super::echo::Held::Waiting)
        {
            self.count_drop(
                "unreached",
                &format_args!("{missed} node(s) not subscribed"),
            );
        }
    }

    /// A message arrived: when it is a held publish's own copy, another node was the one that
    /// missed it.
    fn echo_arrived(&self, chan: &str, payload: &[u8]) {
        if self.is_broadcast_channel(chan) && self.echoes.arrived(payload, Instant::now()) {
            self.count_drop("unreached", &"1 node not subscribed");
        }
    }

    pub(crate) fn tracked_channels(&self) -> Vec<String> {
        self.channels
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// socketioxide-redis `Driver` over a fred client — or, for a node without Redis, over nothing
/// ([`BusDriver::standalone`]). Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct BusDriver {
    /// `None`: a standalone node. Publishes go nowhere (there is no other node to miss them),
    /// subscriptions never yield, and every request is answered by this node alone.
    pub(crate) shared: Option<Arc<Shared>>,
    /// Standalone: the subscribed channels' senders, kept so their streams stay open.
    idle: Arc<Mutex<HashMap<String, mpsc::Sender<ChanItem>>>>,
}

impl BusDriver {
    /// Wrap a fred client (not yet connected) and start the inbound dispatcher.
    pub fn new(
        client: Client,
        status: Arc<BusStatus>,
        metrics: NodeMetrics,
        settings: &crate::config::RedisConfig,
    ) -> Self {
        let shared = Arc::new(Shared {
            client,
            channels: RwLock::new(HashMap::new()),
            status,
            metrics,
            command_timeout: settings.command_timeout,
            queue_size: settings.queue_size.max(1),
            resubscribe: AtomicBool::new(false),
            drop_logged: AtomicBool::new(false),
            dropped_in_outage: AtomicU64::new(0),
            request_prefix: format!("{}-request#", settings.key_prefix),
            peers: Mutex::new(HashMap::new()),
            peer_window: settings.down_after,
            echoes: Default::default(),
        });
        tokio::spawn(dispatch(shared.client.message_rx(), shared.clone()));
        Self {
            shared: Some(shared),
            idle: Arc::default(),
        }
    }

    /// A driver for a node without Redis: the adapter on it serves this node's sockets only.
    pub fn standalone() -> Self {
        Self {
            shared: None,
            idle: Arc::default(),
        }
    }

    /// The fred client underneath (`None` for a standalone node).
    pub fn client(&self) -> Option<&Client> {
        self.shared.as_ref().map(|s| &s.client)
    }

    /// Whether this node has a Redis bus at all (`false` for a standalone node).
    pub fn clustered(&self) -> bool {
        self.shared.is_some()
    }

    /// Publish for a caller that must know: how many subscribers got the message, or why none
    /// did. Unlike `Driver::publish` a failure is returned (and still counted as a drop); a
    /// standalone node reaches nobody (`Ok(0)`).
    pub async fn publish_checked(&self, chan: &str, val: Vec<u8>) -> Result<u64, PublishError> {
        let Some(s) = &self.shared else {
            return Ok(0);
        };
        if s.status.get() != BusState::Up {
            s.count_drop("bus_down", &"Redis unreachable");
            return Err(PublishError::BusDown);
        }
        let val = bytes::Bytes::from(val);
        match s.spublish(chan, val.clone()).await {
            Ok(receivers) => {
                s.published(chan, receivers, &val);
                Ok(u64::try_from(receivers).unwrap_or(0))
            }
            Err(e) if *e.kind() == ErrorKind::Timeout => {
                s.count_drop("timeout", &"SPUBLISH timed out");
                Err(PublishError::Timeout(s.command_timeout))
            }
            Err(e) => {
                s.count_drop("error", &e);
                Err(PublishError::Redis(e.to_string()))
            }
        }
    }
}

/// Why [`BusDriver::publish_checked`] reached no other node.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PublishError {
    /// The bus is not up (Redis unreachable, or reconnecting).
    #[error("the Redis bus is down")]
    BusDown,
    /// SPUBLISH did not answer within `redis.command_timeout`.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error.
    #[error("Redis: {0}")]
    Redis(String),
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
                    shared
                        .metrics
                        .bus_dropped
                        .with_label_values(&["error"])
                        .inc();
                    continue;
                };
                let tx = shared
                    .channels
                    .read()
                    .ok()
                    .and_then(|m| m.get(&chan).cloned());
                shared.echo_arrived(&chan, &data);
                let Some(tx) = tx else { continue };
                match tx.try_send((chan, data)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        shared
                            .metrics
                            .bus_dropped
                            .with_label_values(&["queue_full"])
                            .inc();
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
                tracing::warn!(
                    skipped = n,
                    "bus dispatcher lagged behind fred; messages dropped"
                );
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

impl Driver for BusDriver {
    type Error = Infallible;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), Self::Error> {
        // Counted either way; socketioxide goes on to deliver to this node's own clients.
        let _ = self.publish_checked(&chan, val).await;
        Ok(())
    }

    async fn subscribe(
        &self,
        chan: String,
        _size: usize,
    ) -> Result<MessageStream<ChanItem>, Self::Error> {
        let Some(s) = &self.shared else {
            let (tx, rx) = mpsc::channel(1);
            if let Ok(mut m) = self.idle.lock() {
                m.insert(chan, tx);
            }
            return Ok(MessageStream::new(rx));
        };
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
        let Some(s) = &self.shared else {
            if let Ok(mut m) = self.idle.lock() {
                m.remove(&chan);
            }
            return Ok(());
        };
        if let Ok(mut m) = s.channels.write() {
            m.remove(&chan);
        }
        if s.status.get() == BusState::Up {
            let _ = tokio::time::timeout(s.command_timeout, s.client.sunsubscribe(chan)).await;
        }
        Ok(())
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, Self::Error> {
        let Some(s) = &self.shared else {
            return Ok(1);
        };
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

#[cfg(test)]
mod tests {
    use super::PeerWindow;
    use std::time::{Duration, Instant};

    #[test]
    fn peer_window_counts_missing_subscribers_then_forgets() {
        let w = Duration::from_secs(10);
        let t0 = Instant::now();
        let mut slot = None;
        assert_eq!(PeerWindow::observe(&mut slot, 3, t0, w), 0);
        assert_eq!(
            PeerWindow::observe(&mut slot, 1, t0 + Duration::from_secs(1), w),
            2
        );
        assert_eq!(
            PeerWindow::observe(&mut slot, 3, t0 + Duration::from_secs(2), w),
            0
        );
        // After the window a smaller cluster is the new normal.
        assert_eq!(
            PeerWindow::observe(&mut slot, 2, t0 + Duration::from_secs(13), w),
            0
        );
        assert_eq!(
            PeerWindow::observe(&mut slot, 2, t0 + Duration::from_secs(14), w),
            0
        );
    }
}

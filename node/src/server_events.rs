//! [`ServerEvents`]: events from one node's application to the applications on the other nodes,
//! optionally answered — socket.io's `io.serverSideEmit`, acknowledgements included.
//!
//! Contract:
//!
//! - [`ServerEvents::emit`] publishes the event once on the bus (`{prefix}-server-events#`);
//!   every *other* node subscribed at that moment runs its handler for it (this node does not,
//!   as in socket.io). A bus that is down is an error for the caller, never a silent drop. A
//!   standalone node (no Redis) has no other node to reach: `Ok`.
//! - [`ServerEvents::emit_with_ack`] waits for one answer from every node the message reached
//!   (SPUBLISH's receiver count, minus this node's own subscription): the value its handler
//!   returned, or "unhandled" at once when it has no handler for the event (socket.io would
//!   leave the caller waiting out the timeout for such a node). When the wait
//!   (`redis.request_timeout`, or the given timeout) ends first, the caller gets
//!   [`ServerEventError::Incomplete`] carrying the answers that came and how many nodes did
//!   not answer, counted in `iogate_node_cluster_incomplete_total{request="server_emit"}` —
//!   an explicit partial result, never a silently shorter list.
//! - Each received event runs its handler in a task of its own; a handler that panics sends no
//!   answer, so its caller's wait ends incomplete.
//! - Answers go to the asking node's own channel (`{prefix}-server-events#{uid}#`, `uid` random
//!   per process), keyed by a per-process request number; late answers are dropped.
//! - Messages are JSON: data and answers are any `serde` value.
//!
//! Both channels are tracked by the bus driver, so its supervisor re-subscribes them after every
//! Redis reconnect, as it does for socketioxide's own channels.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use socketioxide_redis::drivers::Driver;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::bus::driver::{BusDriver, PublishError};
use crate::metrics::NodeMetrics;

/// An event another node's application emitted.
#[derive(Debug, Clone)]
pub struct ServerEvent {
    /// The node id of the sender.
    pub from: String,
    /// The data it sent.
    pub data: Value,
}

/// One other node's answer to [`ServerEvents::emit_with_ack`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerAck {
    /// The node id of the node that answered.
    pub node: String,
    /// What its handler returned; `None` when it has no handler for the event.
    pub data: Option<Value>,
}

/// Why a server-side emit failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerEventError {
    /// The event could not be sent to the other nodes.
    #[error("server_emit: not sent: {0}")]
    Bus(#[from] PublishError),
    /// The data could not be encoded as JSON.
    #[error("server_emit: cannot encode the data: {0}")]
    Encode(String),
    /// Not every node the event reached answered in time. `acks` holds the answers that came.
    #[error(
        "server_emit: only {} of {expected} other nodes answered within {timeout:?} (a node is slow, paused or partitioned from Redis)",
        acks.len()
    )]
    Incomplete {
        /// The answers that came in time.
        acks: Vec<ServerAck>,
        /// How many other nodes the event reached.
        expected: usize,
        /// How long they were waited for.
        timeout: Duration,
    },
}

/// A handler for one server-side event.
type Handler =
    Arc<dyn Fn(ServerEvent) -> Pin<Box<dyn Future<Output = Value> + Send>> + Send + Sync>;

/// What goes over the event channel.
#[derive(Serialize, Deserialize)]
struct Request {
    /// The sender's process uid (its answer channel).
    uid: String,
    /// The sender's node id.
    node: String,
    /// Request number, when an answer is wanted.
    id: Option<u64>,
    event: String,
    data: Value,
}

/// What goes back to the asking node.
#[derive(Serialize, Deserialize)]
struct Answer {
    id: u64,
    node: String,
    /// `None`: no handler for the event.
    data: Option<Value>,
}

/// The server-side events of one node: register handlers, emit to the other nodes. Cheap to
/// clone (one `Arc`); reach it through [`crate::NodeContext::server_events`].
#[derive(Clone)]
pub struct ServerEvents {
    inner: Arc<Inner>,
}

struct Inner {
    driver: BusDriver,
    node_id: String,
    uid: String,
    /// `{prefix}-server-events#`: the event channel, and the start of every answer channel.
    events_chan: String,
    timeout: Duration,
    metrics: NodeMetrics,
    handlers: RwLock<HashMap<String, Handler>>,
    pending: Mutex<HashMap<u64, mpsc::UnboundedSender<ServerAck>>>,
    next_id: AtomicU64,
}

/// Removes a request's entry from the pending table however its wait ends.
struct PendingGuard<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut p) = self.inner.pending.lock() {
            p.remove(&self.id);
        }
    }
}

impl ServerEvents {
    /// Subscribe this node's two channels and start the task that serves them until `stop`.
    pub(crate) async fn start(
        driver: BusDriver,
        key_prefix: &str,
        node_id: &str,
        timeout: Duration,
        metrics: NodeMetrics,
        stop: watch::Receiver<bool>,
    ) -> ServerEvents {
        let uid = format!("{:016x}", rand::random::<u64>());
        let inner = Arc::new(Inner {
            driver,
            node_id: node_id.to_string(),
            events_chan: format!("{key_prefix}-server-events#"),
            uid,
            timeout,
            metrics,
            handlers: RwLock::default(),
            pending: Mutex::default(),
            next_id: AtomicU64::new(1),
        });
        // The bus driver never fails a subscribe: it tracks the channel and subscribes it as
        // soon as (and whenever) Redis is up.
        let events = match inner.driver.subscribe(inner.events_chan.clone(), 0).await {
            Ok(s) => s,
            Err(e) => match e {},
        };
        let answers = match inner
            .driver
            .subscribe(inner.answer_chan(&inner.uid), 0)
            .await
        {
            Ok(s) => s,
            Err(e) => match e {},
        };
        tokio::spawn(serve(inner.clone(), events, answers, stop));
        ServerEvents { inner }
    }

    /// Run `handler` for every `event` another node emits; what it returns is that node's
    /// answer when it asked for one. Registering `event` again replaces the handler.
    pub fn on<F, Fut>(&self, event: impl Into<String>, handler: F)
    where
        F: Fn(ServerEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Value> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |ev| Box::pin(handler(ev)));
        if let Ok(mut h) = self.inner.handlers.write() {
            h.insert(event.into(), handler);
        }
    }

    /// Send `event` with `data` to every other node; no answers. Errors when the bus cannot
    /// carry it (down, timed out).
    pub async fn emit(&self, event: &str, data: &impl Serialize) -> Result<(), ServerEventError> {
        self.send(event, data, None).await.map(|_| ())
    }

    /// Send `event` with `data` to every other node and wait, up to `redis.request_timeout`, for
    /// every one of them to answer.
    pub async fn emit_with_ack(
        &self,
        event: &str,
        data: &impl Serialize,
    ) -> Result<Vec<ServerAck>, ServerEventError> {
        self.emit_with_ack_timeout(event, data, self.inner.timeout)
            .await
    }

    /// [`Self::emit_with_ack`] with its own timeout.
    pub async fn emit_with_ack_timeout(
        &self,
        event: &str,
        data: &impl Serialize,
        timeout: Duration,
    ) -> Result<Vec<ServerAck>, ServerEventError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel();
        if let Ok(mut p) = self.inner.pending.lock() {
            p.insert(id, tx);
        }
        let _guard = PendingGuard {
            inner: &self.inner,
            id,
        };
        let deadline = Instant::now() + timeout;
        let expected = self.send(event, data, Some(id)).await?;
        match gather(&mut rx, expected, deadline).await {
            Ok(acks) => Ok(acks),
            Err(acks) => {
                self.inner
                    .metrics
                    .cluster_incomplete
                    .with_label_values(&["server_emit"])
                    .inc();
                Err(ServerEventError::Incomplete {
                    acks,
                    expected,
                    timeout,
                })
            }
        }
    }

    /// Publish a request; returns how many other nodes it reached.
    async fn send(
        &self,
        event: &str,
        data: &impl Serialize,
        id: Option<u64>,
    ) -> Result<usize, ServerEventError> {
        let i = &self.inner;
        let data =
            serde_json::to_value(data).map_err(|e| ServerEventError::Encode(e.to_string()))?;
        let req = Request {
            uid: i.uid.clone(),
            node: i.node_id.clone(),
            id,
            event: event.to_string(),
            data,
        };
        let bytes =
            serde_json::to_vec(&req).map_err(|e| ServerEventError::Encode(e.to_string()))?;
        let receivers = i.driver.publish_checked(&i.events_chan, bytes).await?;
        i.metrics.server_events.with_label_values(&["sent"]).inc();
        // This node is subscribed to the channel too (and ignores its own events).
        let others = receivers.saturating_sub(u64::from(i.driver.clustered()));
        Ok(usize::try_from(others).unwrap_or(usize::MAX))
    }
}

impl Inner {
    fn answer_chan(&self, uid: &str) -> String {
        format!("{}{uid}#", self.events_chan)
    }

    fn handler(&self, event: &str) -> Option<Handler> {
        self.handlers.read().ok()?.get(event).cloned()
    }

    /// Run the handler for a request from another node and answer it if asked to.
    fn received(self: &Arc<Self>, req: Request) {
        if req.uid == self.uid {
            return;
        }
        let handler = self.handler(&req.event);
        let result = if handler.is_some() {
            "received"
        } else {
            "unhandled"
        };
        self.metrics
            .server_events
            .with_label_values(&[result])
            .inc();
        let inner = self.clone();
        tokio::spawn(async move {
            let data = match handler {
                Some(h) => {
                    let ev = ServerEvent {
                        from: req.node,
                        data: req.data,
                    };
                    Some(h(ev).await)
                }
                None => {
                    tracing::debug!(event = req.event, "server-side event with no handler");
                    None
                }
            };
            let Some(id) = req.id else { return };
            let answer = Answer {
                id,
                node: inner.node_id.clone(),
                data,
            };
            let Ok(bytes) = serde_json::to_vec(&answer) else {
                return;
            };
            let chan = inner.answer_chan(&req.uid);
            if let Err(e) = inner.driver.publish_checked(&chan, bytes).await {
                tracing::debug!(error = %e, "server-side event answer not sent");
            }
        });
    }

    fn answered(&self, answer: Answer) {
        let tx = self
            .pending
            .lock()
            .ok()
            .and_then(|p| p.get(&answer.id).cloned());
        if let Some(tx) = tx {
            let _ = tx.send(ServerAck {
                node: answer.node,
                data: answer.data,
            });
        }
    }
}

/// Serve both channels until `stop`.
async fn serve(
    inner: Arc<Inner>,
    mut events: socketioxide_redis::drivers::MessageStream<socketioxide_redis::drivers::ChanItem>,
    mut answers: socketioxide_redis::drivers::MessageStream<socketioxide_redis::drivers::ChanItem>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            Some((_, bytes)) = events.next() => match serde_json::from_slice::<Request>(&bytes) {
                Ok(req) => inner.received(req),
                Err(e) => tracing::warn!(error = %e, "undecodable server-side event dropped"),
            },
            Some((_, bytes)) = answers.next() => match serde_json::from_slice::<Answer>(&bytes) {
                Ok(a) => inner.answered(a),
                Err(e) => tracing::warn!(error = %e, "undecodable server-side event answer dropped"),
            },
            r = stop.wait_for(|s| *s) => {
                let _ = r;
                return;
            }
        }
    }
}

/// Collect `expected` answers, or as many as came by `deadline` (`Err`).
async fn gather(
    rx: &mut mpsc::UnboundedReceiver<ServerAck>,
    expected: usize,
    deadline: Instant,
) -> Result<Vec<ServerAck>, Vec<ServerAck>> {
    let mut acks = Vec::with_capacity(expected.min(64));
    while acks.len() < expected {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(ack)) => acks.push(ack),
            Ok(None) | Err(_) => return Err(acks),
        }
    }
    Ok(acks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(node: &str) -> ServerAck {
        ServerAck {
            node: node.into(),
            data: Some(Value::from(1)),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn gather_returns_once_every_node_answered() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.send(ack("a")).ok();
        tx.send(ack("b")).ok();
        let deadline = Instant::now() + Duration::from_secs(5);
        let t = Instant::now();
        assert_eq!(
            gather(&mut rx, 2, deadline).await,
            Ok(vec![ack("a"), ack("b")])
        );
        assert_eq!(t.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn gather_ends_at_the_deadline_with_what_came() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.send(ack("a")).ok();
        let t = Instant::now();
        let deadline = t + Duration::from_secs(2);
        assert_eq!(gather(&mut rx, 2, deadline).await, Err(vec![ack("a")]));
        assert_eq!(t.elapsed(), Duration::from_secs(2));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn gather_with_nobody_to_wait_for_is_complete_at_once() {
        let (_tx, mut rx) = mpsc::unbounded_channel();
        let deadline = Instant::now() + Duration::from_secs(2);
        assert_eq!(gather(&mut rx, 0, deadline).await, Ok(vec![]));
    }

    #[tokio::test]
    async fn a_standalone_node_has_nobody_to_wait_for() -> Result<(), Box<dyn std::error::Error>> {
        let (_stop_tx, stop) = watch::channel(false);
        let events = ServerEvents::start(
            BusDriver::standalone(),
            "t",
            "alone",
            Duration::from_secs(5),
            NodeMetrics::new()?,
            stop,
        )
        .await;
        events.emit("x", &1).await?;
        assert_eq!(events.emit_with_ack("x", &1).await?, vec![]);
        Ok(())
    }

    #[test]
    fn incomplete_says_how_many_answered() {
        let e = ServerEventError::Incomplete {
            acks: vec![ack("a")],
            expected: 2,
            timeout: Duration::from_secs(2),
        };
        assert!(
            e.to_string()
                .starts_with("server_emit: only 1 of 2 other nodes answered within 2s"),
            "{e}"
        );
    }
}

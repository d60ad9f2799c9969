//! Socket.IO connection state recovery, across nodes, exactly.
//!
//! The protocol, as socket.io-client 4.6+ speaks it: the CONNECT ack carries a private session
//! id (`pid`); every tracked event (broadcasts and `socket.emit`, not acks, not volatile, not
//! local-only) carries its offset as its last argument; a client that reconnects sends
//! `{pid, offset}` in its CONNECT payload and, when the server restores the session, gets every
//! tracked packet it missed, then the same `pid` back (`socket.recovered` is true).
//!
//! Across nodes:
//!
//! - **One order.** Every tracked packet is appended to its namespace's Redis stream before
//!   anyone gets it; the entry id is its offset. Every node — the sender's too — delivers tracked
//!   packets to its local sockets only from its stream reader, in stream order, and remembers the
//!   last offset it delivered (its cursor). So all nodes deliver the same packets in the same
//!   order, and the offsets a client sees only grow.
//! - **The replay/live boundary.** A recovering socket is first held out of every live delivery
//!   (a reserved room every tracked delivery excludes). When it attaches, the node fetches the
//!   entries after the client's offset, then — under the lock its reader holds while delivering
//!   — sends the socket those up to its cursor that were meant for the session (replay), gives it
//!   its rooms back and releases it: every later entry comes live, from the reader. Nothing is
//!   missed (replay covers up to the cursor, live starts after it), nothing comes twice, and
//!   the order is the stream's. If the client's offset is *ahead* of this node's cursor (it was
//!   on a node whose reader was further), nothing is replayed and the socket stays held until the
//!   reader passes that offset.
//! - **Sessions** live in Redis, written as they change (start, rooms, end), not only on a clean
//!   disconnect, so a node killed with `SIGKILL` loses none; see [`store`].
//! - **Trimming** (every few seconds, by age and by `max_entries`) keeps entries for
//!   `max_disconnection` plus one heartbeat and a margin, and records how far it cut. An entry
//!   older than that window went out at least one heartbeat before any live session's client
//!   went away, so it had it: a session whose offset was trimmed by age is still recovered. When
//!   the cut reaches entries younger than the window (`max_entries`), it is not.
//! - **Late appends.** An append sent just as Redis failed may be applied after later ones;
//!   every entry carries its writer's order (`uid:n`) and readers skip one that arrives after a
//!   later entry of the same writer (counted), so nothing is delivered out of order.
//! - **Redis trouble.** A tracked packet that cannot be appended because Redis is unreachable is
//!   delivered to local sockets without an offset, in order, by the writer itself (counted, as
//!   cross-node messages are); one that was sent but got no answer is not delivered another way
//!   (the readers deliver it if it landed), so nothing is ever delivered twice. Recovery attempts
//!   fail (counted) and clients get fresh sessions. After a Redis restart the sessions are gone:
//!   fresh sessions, never someone else's packets.
//!
//! Modules: [`offset`] (ids and the last-argument offset), [`entry`] (a tracked packet and its
//! audience), [`store`] (Redis), [`adapter`] (the socketioxide adapter wrapper that hooks all of
//! it into a namespace), and this module's node-wide runtime: the ordered writer, the stream
//! reader and the session keep-alive.

pub mod adapter;
pub mod entry;
pub mod offset;
pub mod store;

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use fred::prelude::ClientLike;
use tokio::sync::{mpsc, oneshot};

use crate::config::RecoveryConfig;
use crate::metrics::NodeMetrics;
use offset::Offset;
use store::{SessionWrite, Store};

/// How often live sessions' expiry is pushed back.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// How long the reader's `XREAD` blocks.
const READ_BLOCK: Duration = Duration::from_millis(1000);
/// Entries per `XREAD` / `XRANGE` page.
const PAGE: u64 = 1000;
/// Writes taken into one batch (sent together, in order).
const BATCH: usize = 512;
/// Added to the retention window beyond `max_disconnection` and one heartbeat.
const MARGIN: Duration = Duration::from_secs(10);
/// How often the writer trims the streams it appends to (by age and by `max_entries`); also
/// after every tenth of `max_entries` appended, so a stream overshoots its bound by at most that.
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// A namespace's side of the runtime (implemented by [`adapter::RecoveryAdapter`]).
pub(crate) trait NamespaceLink: Send + Sync {
    /// The stream key.
    fn key(&self) -> &str;
    /// The last offset delivered (`None`: not known yet, read new entries only).
    fn cursor(&self) -> Option<Offset>;
    /// Deliver entries read from the stream, in order.
    fn deliver(&self, entries: Vec<store::StreamEntry>);
    /// The pids of the local sockets' sessions.
    fn live_pids(&self) -> Vec<String>;
}

/// Local delivery without an offset, for an append Redis certainly did not get; it takes the
/// append's place in this writer's order.
pub(crate) type Fallback = Box<dyn FnOnce(u64) + Send>;

/// Why an append got no offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AppendError {
    /// Not sent: Redis was unreachable. The packet was delivered to local sockets without an
    /// offset (its fallback ran).
    Unavailable,
    /// Sent, but no answer (an error or a timeout): it may be in the stream, and then the
    /// readers deliver it; it is not delivered another way, so never twice.
    Uncertain,
}

/// One request to the ordered writer.
pub(crate) enum WriteOp {
    /// Append an entry to a stream; `reply` gets the offset; `fallback` runs, in order, when the
    /// append is not sent.
    Append {
        key: String,
        entry: Vec<u8>,
        reply: Option<oneshot::Sender<Result<Offset, AppendError>>>,
        fallback: Fallback,
    },
    /// Write the session table.
    Session(SessionWrite),
}

/// The timings derived from the config.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    /// `recovery.max_disconnection`.
    pub max_disconnection: Duration,
    /// How long tracked packets are kept: `max_disconnection` + pingInterval + pingTimeout +
    /// a margin.
    pub retention: Duration,
    /// The TTL of a connected session, refreshed every 30 s.
    pub live_ttl: Duration,
    /// `recovery.max_entries`.
    pub max_entries: u64,
}

impl Windows {
    /// From the recovery config and the Engine.IO heartbeat.
    pub fn new(cfg: &RecoveryConfig, heartbeat: Duration) -> Windows {
        Windows {
            max_disconnection: cfg.max_disconnection,
            retention: cfg.max_disconnection + heartbeat + MARGIN,
            live_ttl: cfg.max_disconnection + KEEP_ALIVE + MARGIN,
            max_entries: cfg.max_entries,
        }
    }
}

/// Node-wide recovery runtime, shared by every namespace's adapter.
pub struct Recovery {
    pub(crate) store: Store,
    /// This process's writer id: every entry it appends carries `uid:n`, `n` counting its
    /// appends in order.
    pub(crate) writer_uid: String,
    pub(crate) windows: Windows,
    pub(crate) metrics: NodeMetrics,
    writer: mpsc::UnboundedSender<WriteOp>,
    namespaces: Mutex<Vec<Weak<dyn NamespaceLink>>>,
}

impl Recovery {
    /// Start the writer, the reader and the keep-alive; they stop when the last handle is
    /// dropped or `stop` turns true.
    pub fn start(
        store: Store,
        windows: Windows,
        metrics: NodeMetrics,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Arc<Recovery> {
        let (tx, rx) = mpsc::unbounded_channel();
        let rec = Arc::new(Recovery {
            store,
            writer_uid: offset::new_pid(),
            windows,
            metrics,
            writer: tx,
            namespaces: Mutex::new(Vec::new()),
        });
        tokio::spawn(write_loop(Arc::downgrade(&rec), rx));
        tokio::spawn(read_loop(Arc::downgrade(&rec), stop.clone()));
        tokio::spawn(keep_alive_loop(Arc::downgrade(&rec), stop));
        rec
    }

    pub(crate) fn register(&self, ns: Weak<dyn NamespaceLink>) {
        self.namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ns);
    }

    fn live_namespaces(&self) -> Vec<Arc<dyn NamespaceLink>> {
        let mut list = self.namespaces.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|w| w.strong_count() > 0);
        list.iter().filter_map(Weak::upgrade).collect()
    }

    /// Queue a write; `false` when the writer is gone (shutting down).
    pub(crate) fn enqueue(&self, op: WriteOp) -> bool {
        self.writer.send(op).is_ok()
    }

    /// Append `entry` to stream `key` in this node's order and wait for its offset;
    /// `fallback` delivers it locally if Redis is unreachable.
    pub(crate) async fn append(
        &self,
        key: String,
        entry: Vec<u8>,
        fallback: Fallback,
    ) -> Result<Offset, AppendError> {
        let (tx, rx) = oneshot::channel();
        let op = WriteOp::Append {
            key,
            entry,
            reply: Some(tx),
            fallback,
        };
        if !self.enqueue(op) {
            return Err(AppendError::Uncertain);
        }
        rx.await.unwrap_or(Err(AppendError::Uncertain))
    }
}

/// The ordered writer: appends and session writes, in the order they were queued, pipelined.
async fn write_loop(rec: Weak<Recovery>, mut rx: mpsc::UnboundedReceiver<WriteOp>) {
    // The newest offset per stream, for time-based trimming (`XTRIM MINID`): stream ids are
    // Redis's clock, so the window is measured on it, not on this node's.
    let mut newest: std::collections::HashMap<String, Offset> = std::collections::HashMap::new();
    let mut last_trim = std::time::Instant::now();
    let mut since_trim: u64 = 0;
    // This writer's order: an entry Redis applies late (sent before an outage, applied after
    // later ones) is recognised by it and not delivered out of order.
    let mut n: u64 = 0;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let Some(rec) = rec.upgrade() else { return };
        let connected = rec.store.client().is_connected();
        let mut appends = Vec::new();
        let mut sessions = Vec::new();
        for op in batch {
            match op {
                WriteOp::Append {
                    key,
                    entry,
                    reply,
                    fallback,
                } => {
                    n += 1;
                    appends.push((key, entry, reply, fallback, n));
                }
                WriteOp::Session(w) => sessions.push(w),
            }
        }
        if !appends.is_empty() {
            if !connected {
                // Not sent: certainly not in the stream, so delivered here without an offset.
                for (_, _, reply, fallback, n) in appends {
                    rec.metrics
                        .recovery_untracked
                        .with_label_values(&["redis_unavailable"])
                        .inc();
                    fallback(n);
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(AppendError::Unavailable));
                    }
                }
            } else {
                let items: Vec<(String, Vec<u8>, String)> = appends
                    .iter()
                    .map(|(k, e, _, _, n)| {
                        (k.clone(), e.clone(), format!("{}:{n}", rec.writer_uid))
                    })
                    .collect();
                let results = rec.store.append(&items).await;
                let failed = results.iter().filter(|r| r.is_err()).count();
                if failed > 0 {
                    tracing::warn!(
                        failed,
                        entries = items.len(),
                        "appending tracked packets: no answer for some"
                    );
                }
                for ((key, _, reply, _, _), r) in appends.into_iter().zip(results) {
                    let r = match r {
                        Ok(id) => {
                            let n = newest.entry(key).or_insert(id);
                            *n = (*n).max(id);
                            since_trim += 1;
                            rec.metrics.recovery_appended.inc();
                            Ok(id)
                        }
                        Err(e) => {
                            // Sent: it may have landed (the readers then deliver it), so it is
                            // not delivered another way.
                            rec.metrics
                                .recovery_untracked
                                .with_label_values(&["uncertain"])
                                .inc();
                            tracing::debug!(error = %e, "append without an answer");
                            Err(AppendError::Uncertain)
                        }
                    };
                    if let Some(reply) = reply {
                        let _ = reply.send(r);
                    }
                }
            }
        }
        if last_trim.elapsed() >= TRIM_EVERY || since_trim >= (rec.windows.max_entries / 10).max(1)
        {
            last_trim = std::time::Instant::now();
            since_trim = 0;
            let window = u64::try_from(rec.windows.retention.as_millis()).unwrap_or(u64::MAX);
            for (key, newest) in &newest {
                let older_than = Offset {
                    ms: newest.ms.saturating_sub(window),
                    seq: 0,
                };
                if let Err(e) = rec
                    .store
                    .trim(key, older_than, rec.windows.max_entries)
                    .await
                {
                    tracing::debug!(error = %e, "stream trim failed");
                }
            }
        }
        if !sessions.is_empty()
            && let Err(e) = rec.store.write_sessions(&sessions).await
        {
            {
                rec.metrics
                    .recovery_session_write_errors
                    .inc_by(sessions.len() as u64);
                tracing::debug!(error = %e, writes = sessions.len(), "session writes failed");
            }
        }
    }
}

/// The stream reader: every namespace's stream in one blocking `XREAD`, delivered in order.
async fn read_loop(rec: Weak<Recovery>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut failing = false;
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return;
        }
        let Some(r) = rec.upgrade() else { return };
        let namespaces = r.live_namespaces();
        if namespaces.is_empty() {
            drop(r);
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let streams: Vec<(String, Option<Offset>)> = namespaces
            .iter()
            .map(|n| (n.key().to_string(), n.cursor()))
            .collect();
        let store = r.store.clone();
        drop(r);
        let res = tokio::select! {
            res = store.read(&streams, READ_BLOCK, PAGE) => res,
            _ = stop.changed() => return,
        };
        match res {
            Ok(results) => {
                if failing {
                    tracing::info!("recovery stream reader is back");
                    failing = false;
                    backoff = Duration::from_millis(100);
                }
                for (key, entries) in results {
                    if let Some(ns) = namespaces.iter().find(|n| n.key() == key) {
                        ns.deliver(entries);
                    }
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "recovery stream reader failing; tracked packets wait in Redis");
                    failing = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Push back the expiry of every live session, so one whose node dies stays recoverable for
/// `max_disconnection` (plus at most one period) after the death.
async fn keep_alive_loop(rec: Weak<Recovery>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(KEEP_ALIVE);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let Some(r) = rec.upgrade() else { return };
        let pids: Vec<String> = r
            .live_namespaces()
            .iter()
            .flat_map(|n| n.live_pids())
            .collect();
        for chunk in pids.chunks(1000) {
            if let Err(e) = r.store.keep_alive(chunk, r.windows.live_ttl).await {
                tracing::debug!(error = %e, "session keep-alive failed");
            }
        }
    }
}

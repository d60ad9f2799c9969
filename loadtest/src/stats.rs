//! Exact accounting of a run: connections, latencies (HDR histograms), and per-message delivery
//! tracking — sent, expected, received, lost, duplicated, out of order — from per-sender
//! sequence numbers and the set of receivers each message was meant for.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::bitset::BitSet;

fn hist() -> Histogram<u64> {
    // 1 µs .. 1 h, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th.
    pub p90: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// Percentiles (ms) of a histogram of microseconds.
pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Percentiles {
        count: h.len(),
        p50: ms(h.value_at_quantile(0.5)),
        p90: ms(h.value_at_quantile(0.9)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
        mean: h.mean() / 1000.0,
    }
}

/// One message a client sent that other clients should receive.
#[derive(Debug)]
struct Sent {
    expected: BitSet,
    got: BitSet,
}

/// Connection and message accounting shared by every client task.
pub struct Stats {
    /// Clients.
    pub clients: usize,
    /// Connect attempts that succeeded.
    pub connects: AtomicU64,
    /// Clients connected right now.
    pub connected_now: AtomicU64,
    /// Most clients connected at once.
    pub connected_peak: AtomicU64,
    /// Reconnections (after the first connect).
    pub reconnects: AtomicU64,
    /// Reconnects whose session was recovered (connection state recovery).
    pub recovered: AtomicU64,
    /// Echo/ack requests sent.
    pub acks_sent: AtomicU64,
    /// Acks received.
    pub acks_received: AtomicU64,
    /// Acks not received within the ack timeout.
    pub acks_timed_out: AtomicU64,
    failures: Mutex<BTreeMap<String, u64>>,
    disconnects: Mutex<BTreeMap<String, u64>>,
    connect_time: Mutex<Histogram<u64>>,
    reconnect_time: Mutex<Histogram<u64>>,
    latency: Mutex<Histogram<u64>>,
    window: Mutex<Histogram<u64>>,
    connected: Mutex<BitSet>,
    /// Clients that joined and have not left on purpose: connected ones, plus those whose
    /// session was lost and that are reconnecting. They are the audience of a broadcast.
    members: Mutex<BitSet>,
    messages: Mutex<Vec<Sent>>,
    last_seq: Mutex<HashMap<(u32, u32), u32>>,
    received: AtomicU64,
    /// Deliveries after the drain window (see [`Stats::drain_ended`]).
    late: AtomicU64,
    /// When the drain window ended (µs since the run's start; 0: not yet).
    late_after_us: AtomicU64,
    duplicated: AtomicU64,
    out_of_order: AtomicU64,
    unexpected: AtomicU64,
}

impl Stats {
    /// Accounting for `clients` clients.
    pub fn new(clients: usize) -> Self {
        Self {
            clients,
            connects: AtomicU64::new(0),
            connected_now: AtomicU64::new(0),
            connected_peak: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
            acks_sent: AtomicU64::new(0),
            acks_received: AtomicU64::new(0),
            acks_timed_out: AtomicU64::new(0),
            failures: Mutex::new(BTreeMap::new()),
            disconnects: Mutex::new(BTreeMap::new()),
            connect_time: Mutex::new(hist()),
            reconnect_time: Mutex::new(hist()),
            latency: Mutex::new(hist()),
            window: Mutex::new(hist()),
            connected: Mutex::new(BitSet::new(clients)),
            members: Mutex::new(BitSet::new(clients)),
            messages: Mutex::new(Vec::new()),
            last_seq: Mutex::new(HashMap::new()),
            received: AtomicU64::new(0),
            late: AtomicU64::new(0),
            late_after_us: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
        }
    }

    /// Client `i` connected after `us` µs (a reconnect when `reconnect_us` is set).
    pub fn connected(&self, i: usize, us: u64, reconnect_us: Option<u64>) {
        self.connects.fetch_add(1, Ordering::Relaxed);
        let now = self.connected_now.fetch_add(1, Ordering::Relaxed) + 1;
        self.connected_peak.fetch_max(now, Ordering::Relaxed);
        if let Ok(mut h) = self.connect_time.lock() {
            let _ = h.record(us.max(1));
        }
        if let Some(r) = reconnect_us {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut h) = self.reconnect_time.lock() {
                let _ = h.record(r.max(1));
            }
        }
        if let Ok(mut c) = self.connected.lock() {
            c.set(i);
        }
        if let Ok(mut m) = self.members.lock() {
            m.set(i);
        }
    }

    /// Client `i` lost its session. A client that left on purpose (`voluntary`) stops being
    /// part of the audience; one that lost its connection stays in it, so what it misses while
    /// reconnecting counts as lost.
    pub fn disconnected(&self, i: usize, reason: &str, voluntary: bool) {
        self.connected_now.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut c) = self.connected.lock() {
            c.clear(i);
        }
        if voluntary && let Ok(mut m) = self.members.lock() {
            m.clear(i);
        }
        let key = reason.split(':').next().unwrap_or(reason).to_string();
        if let Ok(mut d) = self.disconnects.lock() {
            *d.entry(key).or_insert(0) += 1;
        }
    }

    /// Failed connect attempts so far.
    pub fn failure_count(&self) -> u64 {
        self.failures.lock().map(|f| f.values().sum()).unwrap_or(0)
    }

    /// A connect attempt failed.
    pub fn failed(&self, reason: &str) {
        if let Ok(mut f) = self.failures.lock() {
            *f.entry(reason.to_string()).or_insert(0) += 1;
        }
    }

    /// Register a message about to be sent to `audience` (None = every member). Returns its id.
    pub fn message_sent(&self, audience: Option<&BitSet>) -> u64 {
        let expected = match (self.members.lock(), audience) {
            (Ok(c), Some(a)) => c.and(a),
            (Ok(c), None) => c.clone(),
            (Err(_), _) => BitSet::new(self.clients),
        };
        let got = BitSet::new(self.clients);
        match self.messages.lock() {
            Ok(mut m) => {
                m.push(Sent { expected, got });
                (m.len() - 1) as u64
            }
            Err(_) => 0,
        }
    }

    /// The drain window ended at `now_us`: deliveries from now on are late.
    pub fn drain_ended(&self, now_us: u64) {
        self.late_after_us.store(now_us.max(1), Ordering::Release);
    }

    /// Receiver `r` got message `id` from `sender` with sequence `seq`, `latency_us` after it was
    /// sent, at `now_us` (µs since the run's start).
    pub fn delivered(
        &self,
        r: usize,
        id: u64,
        sender: u32,
        seq: u32,
        latency_us: u64,
        now_us: u64,
    ) {
        let dup = match self.messages.lock() {
            Ok(mut m) => match m.get_mut(id as usize) {
                Some(s) => {
                    if !s.expected.get(r) {
                        self.unexpected.fetch_add(1, Ordering::Relaxed);
                    }
                    s.got.set(r)
                }
                None => false,
            },
            Err(_) => false,
        };
        if dup {
            self.duplicated.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.received.fetch_add(1, Ordering::Relaxed);
        let late_after = self.late_after_us.load(Ordering::Acquire);
        if late_after != 0 && now_us >= late_after {
            self.late.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut last) = self.last_seq.lock() {
            let e = last.entry((r as u32, sender)).or_insert(0);
            if seq < *e {
                self.out_of_order.fetch_add(1, Ordering::Relaxed);
            } else {
                *e = seq;
            }
        }
        self.record_latency(latency_us);
    }

    /// Record one round-trip or delivery latency.
    pub fn record_latency(&self, us: u64) {
        if let Ok(mut h) = self.latency.lock() {
            let _ = h.record(us.max(1));
        }
        if let Ok(mut h) = self.window.lock() {
            let _ = h.record(us.max(1));
        }
    }

    /// Percentiles since the last call (for the timeline), then reset the window.
    pub fn take_window(&self) -> Percentiles {
        match self.window.lock() {
            Ok(mut h) => {
                let p = percentiles(&h);
                h.reset();
                p
            }
            Err(_) => Percentiles::default(),
        }
    }

    /// (connected, deliveries + acks so far, current-window p99 ms, failures) for the live
    /// progress line.
    pub fn summary_light(&self) -> (u64, f64, f64, u64) {
        let p99 = self
            .window
            .lock()
            .map(|h| {
                if h.is_empty() {
                    0.0
                } else {
                    h.value_at_quantile(0.99) as f64 / 1000.0
                }
            })
            .unwrap_or(0.0);
        (
            self.connected_now.load(Ordering::Relaxed),
            (self.received.load(Ordering::Relaxed) + self.acks_received.load(Ordering::Relaxed))
                as f64,
            p99,
            self.failure_count(),
        )
    }

    /// Messages sent so far.
    pub fn messages_sent(&self) -> u64 {
        self.messages.lock().map(|m| m.len() as u64).unwrap_or(0)
    }

    /// Deliveries received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// The final accounting.
    pub fn summary(&self) -> Accounting {
        let (sent, expected, lost) = match self.messages.lock() {
            Ok(m) => {
                let expected: u64 = m.iter().map(|s| s.expected.count()).sum();
                let lost: u64 = m
                    .iter()
                    .map(|s| s.expected.count() - s.expected.and(&s.got).count())
                    .sum();
                (m.len() as u64, expected, lost)
            }
            Err(_) => (0, 0, 0),
        };
        Accounting {
            sent,
            expected,
            received: self.received.load(Ordering::Relaxed),
            late: self.late.load(Ordering::Relaxed),
            lost,
            duplicated: self.duplicated.load(Ordering::Relaxed),
            out_of_order: self.out_of_order.load(Ordering::Relaxed),
            unexpected: self.unexpected.load(Ordering::Relaxed),
            acks_sent: self.acks_sent.load(Ordering::Relaxed),
            acks_received: self.acks_received.load(Ordering::Relaxed),
            acks_timed_out: self.acks_timed_out.load(Ordering::Relaxed),
            latency_ms: self
                .latency
                .lock()
                .map(|h| percentiles(&h))
                .unwrap_or_default(),
            connect_ms: self
                .connect_time
                .lock()
                .map(|h| percentiles(&h))
                .unwrap_or_default(),
            reconnect_ms: self
                .reconnect_time
                .lock()
                .map(|h| percentiles(&h))
                .unwrap_or_default(),
            failures: self.failures.lock().map(|f| f.clone()).unwrap_or_default(),
            disconnects: self
                .disconnects
                .lock()
                .map(|d| d.clone())
                .unwrap_or_default(),
            latency_histogram: self.latency.lock().map(|h| buckets(&h)).unwrap_or_default(),
        }
    }
}

/// (upper bound ms, count) buckets on a log scale, for the distribution chart.
fn buckets(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_log(100, 2.0)
        .map(|v| {
            (
                v.value_iterated_to() as f64 / 1000.0,
                v.count_since_last_iteration(),
            )
        })
        .collect()
}

/// Message and latency accounting of a finished run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Accounting {
    /// Messages sent (broadcast/room).
    pub sent: u64,
    /// Deliveries expected: for each message, the clients that were members (connected, or
    /// reconnecting after losing their session) — and in its room — when it was sent.
    pub expected: u64,
    /// Unique deliveries received.
    pub received: u64,
    /// Of those, deliveries that arrived after the drain window (`--late-window`).
    pub late: u64,
    /// Expected deliveries that never arrived (not even within `--late-window`).
    pub lost: u64,
    /// Deliveries received more than once.
    pub duplicated: u64,
    /// Deliveries older than one already received from the same sender.
    pub out_of_order: u64,
    /// Deliveries to a client that was not expected to get them (it joined after the send).
    pub unexpected: u64,
    /// Ack requests sent (echo).
    pub acks_sent: u64,
    /// Acks received.
    pub acks_received: u64,
    /// Acks that timed out.
    pub acks_timed_out: u64,
    /// Delivery or round-trip latency.
    pub latency_ms: Percentiles,
    /// Connect time (to the Socket.IO CONNECT ack).
    pub connect_ms: Percentiles,
    /// Time from losing a session to having a new one.
    pub reconnect_ms: Percentiles,
    /// Failed connect attempts by reason.
    pub failures: BTreeMap<String, u64>,
    /// Disconnects by reason.
    pub disconnects: BTreeMap<String, u64>,
    /// Latency distribution: (upper bound ms, count).
    pub latency_histogram: Vec<(f64, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_accounting_is_exact() {
        let s = Stats::new(3);
        s.connected(0, 10, None);
        s.connected(1, 10, None);
        s.connected(2, 10, None);
        s.disconnected(2, "io client disconnect", true); // left on purpose
        let a = s.message_sent(None); // expected: 0, 1
        s.connected(2, 10, None);
        s.disconnected(2, "transport close", false); // lost its connection: still expected
        let b = s.message_sent(None); // expected: 0, 1, 2
        s.delivered(0, a, 0, 1, 100, 100);
        s.delivered(0, a, 0, 1, 100, 100); // duplicate
        s.delivered(2, a, 0, 1, 100, 100); // unexpected (joined later)
        s.delivered(0, b, 0, 2, 100, 100);
        s.delivered(1, b, 0, 2, 100, 100);
        s.delivered(1, a, 0, 1, 100, 100); // out of order for (1, sender 0)
        let acc = s.summary();
        assert_eq!((acc.sent, acc.expected), (2, 5));
        assert_eq!(acc.lost, 1); // b to client 2
        assert_eq!(acc.duplicated, 1);
        assert_eq!(acc.unexpected, 1);
        assert_eq!(acc.out_of_order, 1);
        assert_eq!(acc.received, 5);
        assert_eq!(acc.late, 0, "no late window: nothing is late");
    }

    #[test]
    fn deliveries_after_the_drain_are_late_and_not_lost() {
        let s = Stats::new(2);
        s.connected(0, 10, None);
        s.connected(1, 10, None);
        let a = s.message_sent(None);
        let b = s.message_sent(None);
        s.delivered(0, a, 0, 1, 100, 1_000);
        s.drain_ended(2_000);
        s.delivered(1, a, 0, 1, 5_000, 6_000); // late
        s.delivered(0, b, 0, 2, 5_000, 6_000); // late
        let acc = s.summary();
        assert_eq!(
            (acc.expected, acc.received, acc.late, acc.lost),
            (4, 3, 2, 1)
        );
    }
}

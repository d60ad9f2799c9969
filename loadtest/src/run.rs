//! Running one phase: spawn clients at the connect rate, drive the scenario, collect the
//! accounting, and stop cleanly.
//!
//! Scenarios (the chat contract of docs/protocol.md):
//! - `idle`: connect, hold (heartbeats only);
//! - `echo`: `echo` with an ack at the send rate; latency = ack round trip;
//! - `broadcast`: `chat:message` `{run, m, s, q, t, p}`; every receiver records latency, and the
//!   message is expected by every client connected when it was sent;
//! - `room`: clients spread over K rooms (`auth.room`), `room:message`; expected by the connected
//!   members of that room;
//! - `churn`: connect/disconnect at the rate while holding the client count;
//! - `storm`: once everyone is connected, every client drops its connection at once and
//!   reconnects; the time until all are back is measured.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use crate::bitset::BitSet;
use crate::client::{self, ClientOptions, Inbound, Session, Target, Transport};
use crate::protocol::{self, SioPacket};
use crate::stats::{Percentiles, Stats};

/// Which scenario a phase runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Connect and hold.
    Idle,
    /// Ack round trips.
    Echo,
    /// Broadcast to everyone.
    Broadcast,
    /// Room messages.
    Room,
    /// Connect/disconnect churn.
    Churn,
    /// Everyone drops and reconnects at once.
    Storm,
}

/// One phase's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Scenario.
    pub scenario: Scenario,
    /// Clients.
    pub clients: usize,
    /// New connections per second while ramping up (0 = all at once).
    #[serde(default)]
    pub connect_rate: f64,
    /// How long the scenario runs once the clients are connected.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Messages per second per client (echo, broadcast, room) or churn operations per second.
    #[serde(default)]
    pub rate: f64,
    /// Messages per second over all clients (overrides `rate`).
    #[serde(default)]
    pub total_rate: Option<f64>,
    /// Transport.
    pub transport: Transport,
    /// Rooms for the room scenario.
    #[serde(default = "one")]
    pub rooms: usize,
    /// Padding added to each message, in bytes.
    #[serde(default)]
    pub payload_bytes: usize,
    /// Reconnect like socket.io-client after a lost session.
    #[serde(default)]
    pub reconnect: bool,
}

fn one() -> usize {
    1
}

/// A `--scenario-file`: phases run one after another.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// The phases.
    pub phases: Vec<Phase>,
}

/// Everything a phase needs besides its settings.
#[derive(Debug, Clone)]
pub struct Env {
    /// Servers; client `i` uses `targets[i % len]` (several nodes of a cluster, or one LB).
    pub targets: Vec<Target>,
    /// Source addresses to spread clients over (empty = OS default).
    pub local_addrs: Vec<IpAddr>,
    /// RNG seed.
    pub seed: u64,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Ack timeout.
    pub ack_timeout: Duration,
    /// How long to wait for in-flight deliveries after the senders stop.
    pub drain: Duration,
    /// After the drain, how long to keep listening: deliveries then count as late, not lost.
    pub late_window: Duration,
    /// Give every client a cookie jar (kept across its reconnects).
    pub cookies: bool,
    /// Speak Socket.IO connection state recovery, as socket.io-client does: keep the session's
    /// `pid` and the offset of the last event processed, and send both when reconnecting.
    pub recovery: bool,
    /// `--ca`: the CA certificate(s) trusted for https:// and wss:// targets.
    pub ca: Option<crate::client::TlsTrust>,
}

/// A time-series point for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the phase started.
    pub t: f64,
    /// Connected clients.
    pub connected: u64,
    /// Deliveries/acks per second in this interval.
    pub rate: f64,
    /// Latency in this interval.
    pub latency: Percentiles,
}

/// Shared per-phase state.
pub struct Run {
    /// Accounting.
    pub stats: Stats,
    /// Phase settings.
    pub phase: Phase,
    env: Env,
    run_id: String,
    start: Instant,
    stop_sending: AtomicBool,
    go: tokio::sync::watch::Sender<bool>,
    stop_all: AtomicBool,
    stop_notify: Notify,
    storm_started: AtomicU64,
    /// Sessions by client index (for churn).
    sessions: std::sync::Mutex<Vec<Option<Session>>>,
    rooms: Vec<BitSet>,
    http: Vec<reqwest::Client>,
    /// Storm recovery time, µs (0 = not a storm).
    pub storm_recovery_us: AtomicU64,
}

impl Run {
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn per_client_interval(&self) -> Option<Duration> {
        let per_client = match self.phase.total_rate {
            Some(total) if total > 0.0 => total / self.phase.clients.max(1) as f64,
            _ => self.phase.rate,
        };
        (per_client > 0.0).then(|| Duration::from_secs_f64(1.0 / per_client))
    }

    fn padding(&self) -> String {
        "x".repeat(self.phase.payload_bytes)
    }

    /// The room client `i` belongs to in the room scenario.
    fn room_of(&self, i: usize) -> usize {
        i % self.phase.rooms.max(1)
    }

    fn room_name(&self, i: usize) -> String {
        format!("room-{}", self.room_of(i))
    }
}

/// Run one phase to completion, with a progress callback every 250 ms.
pub async fn run_phase(
    phase: Phase,
    env: Env,
    mut progress: impl FnMut(&Run, Duration),
) -> (Arc<Run>, Vec<Sample>) {
    let n = phase.clients;
    let rooms = phase.rooms.max(1);
    let mut room_sets = vec![BitSet::new(n); rooms];
    for i in 0..n {
        room_sets[i % rooms].set(i);
    }
    let addrs: Vec<Option<IpAddr>> = if env.local_addrs.is_empty() {
        vec![None]
    } else {
        env.local_addrs.iter().copied().map(Some).collect()
    };
    let http = addrs
        .iter()
        .map(|a| {
            let mut b = reqwest::Client::builder()
                .pool_max_idle_per_host(usize::MAX)
                .tcp_nodelay(true);
            for cert in env.ca.iter().flat_map(|t| t.certs.iter()) {
                b = b.add_root_certificate(cert.clone());
            }
            if let Some(ip) = a {
                b = b.local_address(*ip);
            }
            b.build().unwrap_or_default()
        })
        .collect();
    let run = Arc::new(Run {
        stats: Stats::new(n),
        run_id: format!(
            "{:x}",
            env.seed ^ (std::process::id() as u64) << 20 ^ rand::random::<u32>() as u64
        ),
        phase,
        env,
        start: Instant::now(),
        stop_sending: AtomicBool::new(false),
        go: tokio::sync::watch::channel(false).0,
        stop_all: AtomicBool::new(false),
        stop_notify: Notify::new(),
        storm_started: AtomicU64::new(0),
        sessions: std::sync::Mutex::new(vec![None; n]),
        rooms: room_sets,
        http,
        storm_recovery_us: AtomicU64::new(0),
    });
    let addrs = Arc::new(addrs);

    // Ramp up.
    let mut tasks = Vec::with_capacity(n);
    let ramp_start = Instant::now();
    for i in 0..n {
        if run.phase.connect_rate > 0.0 {
            let due = ramp_start + Duration::from_secs_f64(i as f64 / run.phase.connect_rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let task_run = run.clone();
        let addr = addrs[i % addrs.len()];
        let http = run.http[i % run.http.len()].clone();
        tasks.push(tokio::spawn(async move {
            client_task(task_run, i, addr, http).await
        }));
        if i % 64 == 0 {
            progress(&run, run.start.elapsed());
        }
    }
    // Wait (bounded) for the ramp to settle.
    let settle_deadline = Instant::now() + run.env.connect_timeout + Duration::from_secs(1);
    while Instant::now() < settle_deadline
        && run.stats.connected_now.load(Ordering::Relaxed) + run.stats.failure_count() < n as u64
    {
        progress(&run, run.start.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The scenario proper: senders start now, all together.
    run.go.send_replace(true);
    let mut samples = Vec::new();
    let mut last_received = 0u64;
    let mut last_acks = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let scenario_start = Instant::now();
    // Churn runs in its own task, paced on its own interval, so closes (and so reconnects) are
    // spread evenly over the second instead of arriving in bursts at every progress tick.
    let churner = (run.phase.scenario == Scenario::Churn && run.phase.rate > 0.0).then(|| {
        let run = run.clone();
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(run.env.seed);
            let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / run.phase.rate));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            every.tick().await;
            while !run.stop_sending.load(Ordering::Acquire) {
                every.tick().await;
                // Close a connected client: the slot is taken so the same session is not picked
                // again while it closes; a few tries skip clients that are reconnecting.
                if let Ok(mut s) = run.sessions.lock() {
                    for _ in 0..16 {
                        let i = rng.random_range(0..n.max(1));
                        if let Some(sess) = s.get_mut(i).and_then(Option::take) {
                            sess.close();
                            break;
                        }
                    }
                }
            }
        })
    });
    let mut last_sample = Instant::now();
    let mut stormed = false;
    while scenario_start.elapsed() < run.phase.duration {
        tick.tick().await;
        if run.phase.scenario == Scenario::Storm
            && !stormed
            && scenario_start.elapsed() >= run.phase.duration / 4
        {
            stormed = true;
            run.storm_started
                .store(run.now_us().max(1), Ordering::Relaxed);
            if let Ok(s) = run.sessions.lock() {
                for sess in s.iter().flatten() {
                    sess.drop_abruptly();
                }
            }
        }
        if last_sample.elapsed() >= Duration::from_secs(1) {
            let dt = last_sample.elapsed().as_secs_f64();
            last_sample = Instant::now();
            let received = run.stats.received();
            let acks = run.stats.acks_received.load(Ordering::Relaxed);
            samples.push(Sample {
                t: run.start.elapsed().as_secs_f64(),
                connected: run.stats.connected_now.load(Ordering::Relaxed),
                rate: ((received - last_received) + (acks - last_acks)) as f64 / dt,
                latency: run.stats.take_window(),
            });
            last_received = received;
            last_acks = acks;
        }
        progress(&run, run.start.elapsed());
    }
    // Stop sending, let in-flight messages land, then close everyone.
    run.stop_sending.store(true, Ordering::Release);
    if let Some(c) = churner {
        c.abort();
    }
    tokio::time::sleep(run.env.drain).await;
    if !run.env.late_window.is_zero() {
        // What arrives from now on was late; what never arrives is lost.
        run.stats.drain_ended(run.now_us());
        tokio::time::sleep(run.env.late_window).await;
    }
    run.stop_all.store(true, Ordering::Release);
    run.stop_notify.notify_waiters();
    // One bound for all clients to finish their goodbyes, not one per client; stragglers are
    // aborted.
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::future::join_all(tasks),
    )
    .await;
    for a in aborts {
        a.abort();
    }
    progress(&run, run.start.elapsed());
    (run, samples)
}

/// Resolves once the phase is over. Registers with the notifier *before* checking the flag, so a
/// stop that lands while the task is busy elsewhere is not missed (`notify_waiters` keeps no
/// permit for tasks that were not waiting at that instant).
async fn stopped(run: &Run) {
    let n = run.stop_notify.notified();
    tokio::pin!(n);
    n.as_mut().enable();
    if run.stop_all.load(Ordering::Acquire) {
        return;
    }
    n.await;
}

/// socket.io-client's reconnection delay: 1 s × 2^attempt, ±50 % jitter, capped at 5 s.
fn backoff(attempt: u32, rng: &mut impl Rng) -> Duration {
    let base = 1000f64 * 2f64.powi(attempt.min(10) as i32);
    let jittered = base * rng.random_range(0.5..1.5);
    Duration::from_millis(jittered.min(5000.0) as u64)
}

async fn client_task(run: Arc<Run>, i: usize, local: Option<IpAddr>, http: reqwest::Client) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(run.env.seed.wrapping_add(i as u64));
    let opts = ClientOptions {
        transport: run.phase.transport,
        connect_timeout: run.env.connect_timeout,
        http,
        local_addr: local,
        cookies: run
            .env
            .cookies
            .then(|| Arc::new(crate::cookies::CookieJar::default())),
        tls: run.env.ca.clone(),
    };
    let auth = if run.phase.scenario == Scenario::Room {
        json!({ "room": run.room_name(i) })
    } else {
        json!({})
    };
    // Connection state recovery: the session's pid and the last offset processed.
    let mut pid: Option<String> = None;
    let mut offset: Option<String> = None;
    let mut lost_at: Option<Instant> = None;
    let mut attempt = 0u32;
    // Reconnects rotate over the targets, so clients of a dead node move to a live one.
    let mut rotation = 0usize;
    let mut first = true;
    // Per-sender sequence numbers continue across reconnects.
    let mut seq = 0u32;
    loop {
        if run.stop_all.load(Ordering::Acquire) {
            return;
        }
        let t0 = Instant::now();
        let target = &run.env.targets[(i + rotation) % run.env.targets.len().max(1)];
        let connect_auth = match (&pid, run.env.recovery) {
            // As socket.io-client: `Object.assign({pid, offset}, auth)`.
            (Some(p), true) => {
                let mut a = json!({ "pid": p });
                if let Some(o) = &offset {
                    a["offset"] = json!(o);
                }
                if let (Some(a), Some(b)) = (a.as_object_mut(), auth.as_object()) {
                    a.extend(b.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                a
            }
            _ => auth.clone(),
        };
        match client::connect(target, &opts, &connect_auth).await {
            Ok((session, rx)) => {
                attempt = 0;
                if run.env.recovery {
                    if !first && pid.is_some() && session.pid == pid {
                        run.stats.recovered.fetch_add(1, Ordering::Relaxed);
                    }
                    pid = session.pid.clone();
                }
                let reconnect_us = lost_at.take().map(|t| t.elapsed().as_micros() as u64);
                run.stats.connected(
                    i,
                    t0.elapsed().as_micros() as u64,
                    if first { None } else { reconnect_us },
                );
                first = false;
                if let Ok(mut s) = run.sessions.lock()
                    && let Some(slot) = s.get_mut(i)
                {
                    *slot = Some(session.clone());
                }
                check_storm_recovered(&run);
                let reason = drive(&run, i, &session, rx, &mut rng, &mut seq, &mut offset).await;
                if let Ok(mut s) = run.sessions.lock()
                    && let Some(slot) = s.get_mut(i)
                {
                    *slot = None;
                }
                let voluntary = reason.starts_with("io client disconnect");
                if !voluntary {
                    tracing::debug!(client = i, %reason, "session lost");
                } else {
                    // A client that left on purpose starts a new session.
                    pid = None;
                    offset = None;
                }
                run.stats.disconnected(i, &reason, voluntary);
                if run.stop_all.load(Ordering::Acquire) {
                    return;
                }
                lost_at = Some(Instant::now());
                if reason.starts_with("transport") {
                    rotation += 1;
                }
                let churned = run.phase.scenario == Scenario::Churn;
                let stormed = run.phase.scenario == Scenario::Storm;
                if !(run.phase.reconnect || churned || stormed) {
                    return;
                }
                if !churned && !stormed {
                    let d = backoff(attempt, &mut rng);
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = stopped(&run) => return,
                    }
                }
            }
            Err(e) => {
                rotation += 1;
                run.stats.failed(e.reason);
                tracing::debug!(client = i, reason = e.reason, detail = %e.detail, "connect failed");
                if !run.phase.reconnect && run.phase.scenario != Scenario::Storm {
                    return;
                }
                let d = backoff(attempt, &mut rng);
                attempt += 1;
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = stopped(&run) => return,
                }
            }
        }
    }
}

fn check_storm_recovered(run: &Run) {
    let started = run.storm_started.load(Ordering::Relaxed);
    if started > 0
        && run.storm_recovery_us.load(Ordering::Relaxed) == 0
        && run.stats.connected_now.load(Ordering::Relaxed) >= run.phase.clients as u64
    {
        run.storm_recovery_us.store(
            run.now_us().saturating_sub(started).max(1),
            Ordering::Relaxed,
        );
    }
}

/// Drive one session until it ends; returns the disconnect reason.
async fn drive(
    run: &Run,
    i: usize,
    s: &Session,
    mut rx: mpsc::UnboundedReceiver<Inbound>,
    rng: &mut rand::rngs::StdRng,
    seq: &mut u32,
    offset: &mut Option<String>,
) -> String {
    let sends = matches!(
        run.phase.scenario,
        Scenario::Echo | Scenario::Broadcast | Scenario::Room
    );
    let interval = run.per_client_interval().filter(|_| sends);
    // Senders start when the phase says go (after the ramp); the first send is spread over one
    // interval so clients do not fire in lockstep.
    let mut go = run.go.subscribe();
    let first_send = |rng: &mut rand::rngs::StdRng| {
        interval.map(|iv| Instant::now() + iv.mul_f64(rng.random_range(0.0..1.0)))
    };
    let mut next_send = if *go.borrow() { first_send(rng) } else { None };
    let mut pending_acks: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    let mut ack_id = 0u64;
    let padding = run.padding();
    // Only echo waits for acks; idle clients must not wake up for nothing (10,000 timers).
    let echo = run.phase.scenario == Scenario::Echo;
    let mut ack_sweep = tokio::time::interval(Duration::from_millis(500));
    // Created once: it stays registered while this client is busy with inbound traffic.
    let stop = stopped(run);
    tokio::pin!(stop);
    loop {
        let send_at = next_send.filter(|_| !run.stop_sending.load(Ordering::Acquire));
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(Inbound::Packet(p)) => handle(run, i, p, &mut pending_acks, offset),
                Some(Inbound::Closed(reason)) => return reason,
                None => return "transport close".into(),
            },
            _ = async { match send_at { Some(t) => tokio::time::sleep_until(t.into()).await, None => std::future::pending().await } } => {
                // The senders may have been stopped while this one slept: a message sent now
                // would go out during the drain (or after it) and look lost or late.
                if run.stop_sending.load(Ordering::Acquire) {
                    next_send = None;
                    continue;
                }
                if let (Some(t), Some(iv)) = (next_send, interval) {
                    next_send = Some(t + iv);
                }
                match run.phase.scenario {
                    Scenario::Echo => {
                        ack_id += 1;
                        pending_acks.insert(ack_id, run.now_us());
                        run.stats.acks_sent.fetch_add(1, Ordering::Relaxed);
                        s.send(protocol::event("echo", &[json!({"p": padding})], Some(ack_id)));
                    }
                    Scenario::Broadcast | Scenario::Room => {
                        *seq += 1;
                        let seq = *seq;
                        let audience = (run.phase.scenario == Scenario::Room).then(|| &run.rooms[run.room_of(i)]);
                        let id = run.stats.message_sent(audience);
                        let msg = json!({"run": run.run_id, "m": id, "s": i, "q": seq, "t": run.now_us(), "p": padding});
                        let packet = if run.phase.scenario == Scenario::Room {
                            protocol::event("room:message", &[json!({"room": run.room_name(i), "data": msg})], None)
                        } else {
                            protocol::event("chat:message", &[msg], None)
                        };
                        s.send(packet);
                    }
                    _ => {}
                }
            }
            _ = ack_sweep.tick(), if echo => {
                let now = run.now_us();
                let timeout = run.env.ack_timeout.as_micros() as u64;
                let before = pending_acks.len();
                pending_acks.retain(|_, t| now.saturating_sub(*t) < timeout);
                run.stats.acks_timed_out.fetch_add((before - pending_acks.len()) as u64, Ordering::Relaxed);
            }
            _ = &mut stop => {
                s.close();
                // Wait briefly for the transport to finish the close.
                let _ = tokio::time::timeout(Duration::from_secs(1), async { while let Some(ev) = rx.recv().await { if matches!(ev, Inbound::Closed(_)) { break; } } }).await;
                return "io client disconnect".into();
            }
            r = go.changed(), if next_send.is_none() && interval.is_some() => {
                if r.is_ok() && *go.borrow() {
                    next_send = first_send(rng);
                }
            }
        }
    }
}

fn handle(
    run: &Run,
    i: usize,
    p: SioPacket,
    pending: &mut std::collections::HashMap<u64, u64>,
    offset: &mut Option<String>,
) {
    // As socket.io-client: with a session, an event's string last argument is its offset.
    if run.env.recovery
        && let SioPacket::Event(_, args, None) = &p
        && let Some(Value::String(o)) = args.last()
    {
        *offset = Some(o.clone());
    }
    match p {
        SioPacket::Ack(id, _) => {
            if let Some(t) = pending.remove(&id) {
                run.stats.acks_received.fetch_add(1, Ordering::Relaxed);
                run.stats.record_latency(run.now_us().saturating_sub(t));
            }
        }
        SioPacket::Event(name, args, _) => {
            let msg: Option<&Value> = match name.as_str() {
                "chat:message" => args.first(),
                "room:message" => args.first().and_then(|a| a.get("data")),
                _ => None,
            };
            let Some(m) = msg else { return };
            if m.get("run").and_then(|r| r.as_str()) != Some(run.run_id.as_str()) {
                return;
            }
            let (Some(id), Some(sender), Some(seq), Some(t)) = (
                m.get("m").and_then(Value::as_u64),
                m.get("s").and_then(Value::as_u64),
                m.get("q").and_then(Value::as_u64),
                m.get("t").and_then(Value::as_u64),
            ) else {
                return;
            };
            let now = run.now_us();
            run.stats
                .delivered(i, id, sender as u32, seq as u32, now.saturating_sub(t), now);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_scenario_file_parses() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/loadtest-phases.yaml"
        );
        let text = std::fs::read_to_string(path).expect("example file");
        let f: ScenarioFile = serde_yaml::from_str(&text).expect("valid");
        assert_eq!(f.phases.len(), 5);
        assert_eq!(f.phases[2].scenario, Scenario::Broadcast);
        assert_eq!(f.phases[2].total_rate, Some(20.0));
        assert_eq!(f.phases[3].transport, Transport::Polling);
    }

    #[test]
    fn reconnect_backoff_is_capped() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for attempt in 0..20 {
            let d = backoff(attempt, &mut rng);
            assert!(
                d >= Duration::from_millis(500) && d <= Duration::from_secs(5),
                "{d:?}"
            );
        }
    }
}

//! The backend registry: every backend the LB knows, its health and drain state, and its live
//! session counters.
//!
//! Counters live on the [`Backend`] (keyed by its stable id), not in a selector, so they are
//! exact (RAII guards) and survive config reloads for backends that stay. A reload swaps the
//! *configured* list atomically; a removed backend stays in the registry as `draining` until its
//! last session ends.
//!
//! Liveness and readiness are kept apart, because they mean different things to a session:
//!
//! - **down** — the backend failed its liveness (connects refused or timing out, a failed probe):
//!   its sessions are gone, so requests naming them get `400 Session ID unknown` at once;
//! - **draining** — it is alive but takes no new sessions: drained through the admin API, removed
//!   from the config, or *reporting* that it drains (its probe answers 503). Every live polling
//!   session and WebSocket keeps routing to it until the backend itself ends them;
//! - **pending** — configured but not checked yet: no new sessions, but requests of existing
//!   sessions pass (a freshly started or upgraded LB must not answer 400 for them);
//! - **up** — takes new sessions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::config::Upstream;
use crate::metrics::{BackendSeries, LbMetrics};

/// State reported by the admin API and the `iogate_lb_backend_state` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// Not checked yet: no new sessions; requests of existing sessions pass.
    Pending,
    /// Takes new sessions.
    Up,
    /// Alive, no new sessions; live ones continue (admin drain, removed, or reported by the
    /// backend).
    Draining,
    /// Failed its liveness (active or passive): its sessions are gone.
    Down,
}

impl BackendState {
    /// Every state, in metric label order.
    pub const ALL: [BackendState; 4] = [
        BackendState::Pending,
        BackendState::Up,
        BackendState::Draining,
        BackendState::Down,
    ];

    /// The lowercase name (JSON, metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Pending => "pending",
            BackendState::Up => "up",
            BackendState::Draining => "draining",
            BackendState::Down => "down",
        }
    }
}

/// What one active probe found (see [`crate::health`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Alive and taking new sessions.
    Ready,
    /// Alive, but it says it takes no new sessions (HTTP 503): it drains.
    Draining,
    /// Not alive: connect refused, timeout, or an answer that is not a healthy one.
    Failed,
}

impl ProbeOutcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeOutcome::Ready => "ready",
            ProbeOutcome::Draining => "draining",
            ProbeOutcome::Failed => "failed",
        }
    }
}

/// The address of an upstream did not parse (validation should have caught it).
#[derive(Debug, Clone, thiserror::Error)]
#[error("upstream `{id}`: `{address}` is not IP:port")]
pub struct BadAddress {
    /// The upstream id.
    pub id: String,
    /// The address as configured.
    pub address: String,
}

/// One backend and its counters.
#[derive(Debug)]
pub struct Backend {
    /// Stable id (metrics label, cookie value).
    pub id: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The session-id tag set in the config (`upstreams[].sid_tag`), if any.
    pub configured_tag: Option<String>,
    weight: AtomicU32,
    websockets: AtomicI64,
    polling: AtomicI64,
    pending: AtomicI64,
    alive: AtomicBool,
    checked: AtomicBool,
    reports_draining: AtomicBool,
    admin_drain: AtomicBool,
    removed: AtomicBool,
    passive_failures: AtomicU32,
    down_until: Mutex<Option<Instant>>,
    last_health: Mutex<String>,
    learned_tag: Mutex<Option<String>>,
    /// pingInterval + pingTimeout from the backend's open packet, in ms (0 = not seen yet).
    heartbeat_ms: AtomicU64,
    /// Its per-request metric series, resolved on first use.
    series: OnceLock<BackendSeries>,
}

impl Backend {
    fn new(u: &Upstream, checked: bool) -> Result<Backend, BadAddress> {
        let addr = u.address.parse().map_err(|_| BadAddress {
            id: u.id().to_string(),
            address: u.address.clone(),
        })?;
        Ok(Backend {
            id: u.id().to_string(),
            addr,
            configured_tag: u.sid_tag.clone(),
            weight: AtomicU32::new(u.weight.max(1)),
            websockets: AtomicI64::new(0),
            polling: AtomicI64::new(0),
            pending: AtomicI64::new(0),
            alive: AtomicBool::new(checked),
            checked: AtomicBool::new(checked),
            reports_draining: AtomicBool::new(false),
            admin_drain: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            passive_failures: AtomicU32::new(0),
            down_until: Mutex::new(None),
            last_health: Mutex::new(if checked {
                "not checked (active checks off)".into()
            } else {
                "pending first check".into()
            }),
            learned_tag: Mutex::new(None),
            heartbeat_ms: AtomicU64::new(0),
            series: OnceLock::new(),
        })
    }

    /// The metric series every request to this backend updates, resolved once. A backend
    /// removed and reaped loses its upstream-connection series ([`LbMetrics::forget_backend`]
    /// removes those two; its `requests_total` and duration series stay, as before); what
    /// requests still in flight to it count on them then is not published, where a label
    /// lookup would have brought the series back. One re-added under the same id is a new
    /// `Backend`, with series resolved anew.
    pub fn series(&self, m: &LbMetrics) -> &BackendSeries {
        self.series.get_or_init(|| m.backend_series(&self.id))
    }

    /// Relative capacity.
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed).max(1)
    }

    /// Open WebSocket tunnels.
    pub fn websockets(&self) -> i64 {
        self.websockets.load(Ordering::Relaxed)
    }

    /// Polling sessions in the sid table (not upgraded).
    pub fn polling(&self) -> i64 {
        self.polling.load(Ordering::Relaxed)
    }

    /// Live sessions: WebSocket tunnels + polling sessions.
    pub fn live(&self) -> i64 {
        self.websockets() + self.polling()
    }

    /// Live sessions plus handshakes in flight (what least-connections compares).
    pub fn load(&self) -> i64 {
        self.live() + self.pending.load(Ordering::Relaxed)
    }

    /// Whether it may take new sessions.
    pub fn ready(&self) -> bool {
        self.state() == BackendState::Up
    }

    /// Whether it holds live sessions that requests may still reach (not down).
    pub fn reachable(&self) -> bool {
        self.state() != BackendState::Down
    }

    fn passive_down(&self) -> bool {
        self.down_until
            .lock()
            .map(|g| g.is_some_and(|t| Instant::now() < t))
            .unwrap_or(false)
    }

    /// The state; see the module documentation.
    pub fn state(&self) -> BackendState {
        if !self.checked.load(Ordering::Acquire) {
            return if self.passive_down() {
                BackendState::Down
            } else {
                BackendState::Pending
            };
        }
        if !self.alive.load(Ordering::Acquire) || self.passive_down() {
            BackendState::Down
        } else if !self.draining_by().is_empty() {
            BackendState::Draining
        } else {
            BackendState::Up
        }
    }

    /// Who asked it to drain: `admin`, `config` (removed), `backend` (its probe says so).
    pub fn draining_by(&self) -> Vec<&'static str> {
        let mut by = Vec::new();
        if self.admin_drain.load(Ordering::Acquire) {
            by.push("admin");
        }
        if self.removed.load(Ordering::Acquire) {
            by.push("config");
        }
        if self.reports_draining.load(Ordering::Acquire) {
            by.push("backend");
        }
        by
    }

    /// Whether it was removed from the config.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// Description of the last health result.
    pub fn last_health(&self) -> String {
        self.last_health
            .lock()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The session-id tag: the configured one, else the one learned from its probes.
    pub fn sid_tag(&self) -> Option<String> {
        self.configured_tag.clone().or_else(|| {
            self.learned_tag
                .lock()
                .map(|g| g.clone())
                .unwrap_or_else(|p| p.into_inner().clone())
        })
    }

    /// Record the tag seen in a probe's session id; true when it changed.
    pub fn learn_tag(&self, tag: Option<&str>) -> bool {
        let mut g = self.learned_tag.lock().unwrap_or_else(|p| p.into_inner());
        if g.as_deref() == tag {
            return false;
        }
        *g = tag.map(str::to_string);
        true
    }

    /// pingInterval + pingTimeout of its sessions, when a probe has seen an open packet.
    pub fn heartbeat(&self) -> Option<Duration> {
        match self.heartbeat_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Record the heartbeat seen in an open packet.
    pub fn learn_heartbeat(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        self.heartbeat_ms.store(ms, Ordering::Relaxed);
    }

    /// Record an active probe; returns the state before and after when it changed.
    ///
    /// `Ready` and `Draining` both count as alive (for `rise`); `Failed` counts toward `fall`.
    /// The first result of a backend decides at once.
    pub fn record_probe(
        &self,
        outcome: &ProbeOutcome,
        detail: String,
        rise: u32,
        fall: u32,
        streak: &mut i64,
    ) -> Option<(BackendState, BackendState)> {
        let before = self.state();
        if let Ok(mut g) = self.last_health.lock() {
            *g = detail;
        }
        let ok = *outcome != ProbeOutcome::Failed;
        *streak = match (ok, *streak) {
            (true, s) if s > 0 => s + 1,
            (true, _) => 1,
            (false, s) if s < 0 => s - 1,
            (false, _) => -1,
        };
        let was = self.alive.load(Ordering::Acquire);
        let first = !self.checked.swap(true, Ordering::AcqRel);
        let now = if first {
            ok
        } else if ok && *streak >= i64::from(rise) {
            true
        } else if !ok && *streak <= -i64::from(fall) {
            false
        } else {
            was
        };
        if now {
            self.passive_failures.store(0, Ordering::Relaxed);
        }
        self.alive.store(now, Ordering::Release);
        match outcome {
            ProbeOutcome::Ready => self.reports_draining.store(false, Ordering::Release),
            ProbeOutcome::Draining => self.reports_draining.store(true, Ordering::Release),
            // A failed probe says nothing about readiness; keep what was last reported.
            ProbeOutcome::Failed => {}
        }
        let after = self.state();
        (before != after).then_some((before, after))
    }

    /// The backend answered a handshake with 503: it takes no new sessions until a probe says
    /// otherwise (passive readiness).
    pub fn reported_draining(&self) {
        self.reports_draining.store(true, Ordering::Release);
    }

    /// Record a failed connect; true when it takes the backend out (passive health).
    pub fn connect_failed(&self, threshold: u32, cooldown: Duration) -> bool {
        let n = self.passive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if threshold > 0 && n >= threshold {
            if let Ok(mut g) = self.down_until.lock() {
                *g = Some(Instant::now() + cooldown);
            }
            self.passive_failures.store(0, Ordering::Relaxed);
            if let Ok(mut g) = self.last_health.lock() {
                *g = format!("{n} consecutive connect failures");
            }
            return true;
        }
        false
    }

    /// A connect succeeded.
    pub fn connect_ok(&self) {
        self.passive_failures.store(0, Ordering::Relaxed);
    }

    /// Admin drain on/off.
    pub fn set_admin_drain(&self, on: bool) {
        self.admin_drain.store(on, Ordering::Release);
    }

    pub(crate) fn add_polling(&self, d: i64) {
        self.polling.fetch_add(d, Ordering::AcqRel);
    }
}

/// Counts one open WebSocket tunnel on a backend while alive.
#[derive(Debug)]
pub struct WsGuard(Arc<Backend>, LbMetrics);

impl WsGuard {
    /// Count a tunnel.
    pub fn new(b: Arc<Backend>, m: LbMetrics) -> WsGuard {
        b.websockets.fetch_add(1, Ordering::AcqRel);
        m.websockets.with_label_values(&[&b.id]).inc();
        WsGuard(b, m)
    }
}

impl Drop for WsGuard {
    fn drop(&mut self) {
        self.0.websockets.fetch_sub(1, Ordering::AcqRel);
        self.1.websockets.with_label_values(&[&self.0.id]).dec();
    }
}

/// Counts a handshake in flight (selected, response not seen yet).
#[derive(Debug)]
pub struct PendingGuard(Arc<Backend>);

impl PendingGuard {
    /// Count a pending handshake.
    pub fn new(b: Arc<Backend>) -> PendingGuard {
        b.pending.fetch_add(1, Ordering::AcqRel);
        PendingGuard(b)
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// New backend ids.
    pub added: Vec<String>,
    /// Removed backend ids (now draining).
    pub removed: Vec<String>,
}

/// Every backend: the configured ones (in config order) and removed ones still draining.
#[derive(Debug)]
pub struct Registry {
    configured: ArcSwap<Vec<Arc<Backend>>>,
    all: Mutex<HashMap<String, Arc<Backend>>>,
}

impl Registry {
    /// A registry from the initial upstreams. With active checks on (`checked` false), backends
    /// are pending until their first check.
    pub fn new(upstreams: &[Upstream], checked: bool) -> Result<Registry, BadAddress> {
        let list = upstreams
            .iter()
            .map(|u| Backend::new(u, checked).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let all = list.iter().map(|b| (b.id.clone(), b.clone())).collect();
        Ok(Registry {
            configured: ArcSwap::from_pointee(list),
            all: Mutex::new(all),
        })
    }

    /// The configured backends (a cheap snapshot).
    pub fn configured(&self) -> Arc<Vec<Arc<Backend>>> {
        self.configured.load_full()
    }

    fn all_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Backend>>> {
        // The map is only ever left consistent (single inserts/removes), so a poisoned lock
        // still holds a valid map.
        self.all.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every known backend, configured first, then draining removed ones.
    pub fn all(&self) -> Vec<Arc<Backend>> {
        let configured = self.configured();
        let mut out: Vec<Arc<Backend>> = configured.iter().cloned().collect();
        let mut removed: Vec<_> = self
            .all_map()
            .values()
            .filter(|b| b.is_removed() && !configured.iter().any(|c| Arc::ptr_eq(c, b)))
            .cloned()
            .collect();
        removed.sort_by(|a, b| a.id.cmp(&b.id));
        out.extend(removed);
        out
    }

    /// Look a backend up by id (configured or draining).
    pub fn get(&self, id: &str) -> Option<Arc<Backend>> {
        self.all_map().get(id).cloned()
    }

    /// Apply a new upstream list (validated). Backends whose id and address stay keep their
    /// counters and health; new ones are pending until checked (if `checked` is false); removed
    /// ones drain. Nothing changes when an address does not parse.
    pub fn apply(&self, upstreams: &[Upstream], checked: bool) -> Result<Applied, BadAddress> {
        let mut all = self.all_map();
        let mut applied = Applied::default();
        let mut list = Vec::with_capacity(upstreams.len());
        let mut replaced = Vec::new();
        for u in upstreams {
            let keep = all
                .get(u.id())
                .filter(|b| {
                    u.address.parse::<SocketAddr>().ok() == Some(b.addr)
                        && b.configured_tag == u.sid_tag
                })
                .cloned();
            let b = match keep {
                Some(b) => b,
                None => {
                    if let Some(old) = all.get(u.id()) {
                        // Same id, new address: the old one drains under its id until empty.
                        replaced.push(old.clone());
                    }
                    applied.added.push(u.id().to_string());
                    Arc::new(Backend::new(u, checked)?)
                }
            };
            list.push((b, u.weight));
        }
        // Every address parsed: now change things.
        for old in replaced {
            old.removed.store(true, Ordering::Release);
        }
        let list: Vec<Arc<Backend>> = list
            .into_iter()
            .map(|(b, w)| {
                b.weight.store(w.max(1), Ordering::Relaxed);
                b.removed.store(false, Ordering::Release);
                b
            })
            .collect();
        let keep_ids: std::collections::HashSet<&str> = upstreams.iter().map(|u| u.id()).collect();
        for (id, b) in all.iter() {
            if !keep_ids.contains(id.as_str()) && !b.is_removed() {
                b.removed.store(true, Ordering::Release);
                applied.removed.push(id.clone());
            }
        }
        // A replaced backend stays reachable (for its sessions) under a draining key.
        let displaced: Vec<Arc<Backend>> = list
            .iter()
            .filter_map(|b| all.get(&b.id).filter(|old| !Arc::ptr_eq(old, b)).cloned())
            .collect();
        for b in &list {
            all.insert(b.id.clone(), b.clone());
        }
        for old in displaced {
            all.insert(format!("{}~{}", old.id, old.addr), old);
        }
        self.configured.store(Arc::new(list));
        Ok(applied)
    }

    /// Forget removed backends that have no live session left; returns them.
    pub fn reap(&self) -> Vec<Arc<Backend>> {
        let configured = self.configured();
        let mut all = self.all_map();
        let gone: Vec<String> = all
            .iter()
            .filter(|(_, b)| {
                b.is_removed() && b.live() <= 0 && !configured.iter().any(|c| Arc::ptr_eq(c, b))
            })
            .map(|(key, _)| key.clone())
            .collect();
        gone.iter().filter_map(|key| all.remove(key)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(id: &str, port: u16) -> Upstream {
        Upstream {
            id: Some(id.into()),
            address: format!("127.0.0.1:{port}"),
            srv: None,
            weight: 1,
            sid_tag: None,
        }
    }

    #[test]
    fn draining_is_not_down() {
        let r = Registry::new(&[up("a", 1)], false).expect("valid");
        let b = r.configured()[0].clone();
        let mut streak = 0;
        assert_eq!(b.state(), BackendState::Pending);
        assert!(b.reachable() && !b.ready());
        // First probe decides at once.
        let t = b.record_probe(&ProbeOutcome::Ready, "ok".into(), 2, 2, &mut streak);
        assert_eq!(t, Some((BackendState::Pending, BackendState::Up)));
        // The backend says it drains: no new sessions, sessions still reach it.
        let t = b.record_probe(&ProbeOutcome::Draining, "503".into(), 2, 2, &mut streak);
        assert_eq!(t, Some((BackendState::Up, BackendState::Draining)));
        assert!(b.reachable() && !b.ready());
        assert_eq!(b.draining_by(), vec!["backend"]);
        // One failure is below `fall`: still draining; the second makes it down.
        assert_eq!(
            b.record_probe(&ProbeOutcome::Failed, "refused".into(), 2, 2, &mut streak),
            None
        );
        let t = b.record_probe(&ProbeOutcome::Failed, "refused".into(), 2, 2, &mut streak);
        assert_eq!(t, Some((BackendState::Draining, BackendState::Down)));
        assert!(!b.reachable());
        // Back: needs `rise` passes.
        assert_eq!(
            b.record_probe(&ProbeOutcome::Ready, "ok".into(), 2, 2, &mut streak),
            None
        );
        let t = b.record_probe(&ProbeOutcome::Ready, "ok".into(), 2, 2, &mut streak);
        assert_eq!(t, Some((BackendState::Down, BackendState::Up)));
        // Admin drain and a 503 to a handshake are draining too.
        b.set_admin_drain(true);
        assert_eq!(b.state(), BackendState::Draining);
        b.set_admin_drain(false);
        b.reported_draining();
        assert_eq!(b.state(), BackendState::Draining);
        // Passive failures make it down.
        assert!(b.connect_failed(1, Duration::from_secs(60)));
        assert_eq!(b.state(), BackendState::Down);
    }

    #[test]
    fn reload_keeps_counters_and_drains_removed() {
        let r = Registry::new(&[up("a", 1), up("b", 2)], true).expect("valid");
        let a = r.get("a").expect("a");
        a.add_polling(3);
        let applied = r.apply(&[up("a", 1), up("c", 3)], true).expect("valid");
        assert_eq!(applied.added, vec!["c".to_string()]);
        assert_eq!(applied.removed, vec!["b".to_string()]);
        assert!(Arc::ptr_eq(&r.get("a").expect("a"), &a));
        assert_eq!(r.get("b").expect("b").state(), BackendState::Draining);
        let reaped: Vec<String> = r.reap().iter().map(|b| b.id.clone()).collect();
        assert_eq!(reaped, vec!["b".to_string()]);
        // Same id, new address: the old one keeps draining under another key.
        r.apply(&[up("a", 9), up("c", 3)], true).expect("valid");
        let all = r.all();
        assert_eq!(all.len(), 3);
        assert!(all.iter().any(|b| Arc::ptr_eq(b, &a) && b.is_removed()));
        // A bad address changes nothing.
        let bad = Upstream {
            address: "nowhere".into(),
            ..up("d", 0)
        };
        assert!(r.apply(&[bad], true).is_err());
        assert_eq!(r.configured().len(), 2);
    }
}

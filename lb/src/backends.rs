//! The backend registry: every backend the LB knows, its health and drain state, and its live
//! session counters.
//!
//! Counters live on the [`Backend`] (keyed by its stable id), not in a selector, so they are
//! exact (RAII guards) and survive config reloads for backends that stay. A reload swaps the
//! *configured* list atomically; a removed backend stays in the registry as `draining` until its
//! last session ends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::config::Upstream;
use crate::metrics::LbMetrics;

/// State reported by the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// Takes new sessions.
    Up,
    /// Failing checks (active or passive) or not yet checked.
    Down,
    /// Removed from the config or drained by the admin API: no new sessions; live ones continue.
    Draining,
}

/// One backend and its counters.
#[derive(Debug)]
pub struct Backend {
    /// Stable id (metrics label, cookie value).
    pub id: String,
    /// Where it listens.
    pub addr: SocketAddr,
    weight: AtomicU32,
    websockets: AtomicI64,
    polling: AtomicI64,
    pending: AtomicI64,
    healthy: AtomicBool,
    checked: AtomicBool,
    admin_drain: AtomicBool,
    removed: AtomicBool,
    passive_failures: AtomicU32,
    down_until: Mutex<Option<Instant>>,
    last_health: Mutex<String>,
}

impl Backend {
    fn new(u: &Upstream, healthy: bool) -> Backend {
        Backend {
            id: u.id().to_string(),
            addr: u
                .address
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0))),
            weight: AtomicU32::new(u.weight.max(1)),
            websockets: AtomicI64::new(0),
            polling: AtomicI64::new(0),
            pending: AtomicI64::new(0),
            healthy: AtomicBool::new(healthy),
            checked: AtomicBool::new(healthy),
            admin_drain: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            passive_failures: AtomicU32::new(0),
            down_until: Mutex::new(None),
            last_health: Mutex::new(if healthy {
                "not checked".into()
            } else {
                "pending first check".into()
            }),
        }
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
        !self.removed.load(Ordering::Acquire)
            && !self.admin_drain.load(Ordering::Acquire)
            && self.healthy.load(Ordering::Acquire)
            && !self.passive_down()
    }

    fn passive_down(&self) -> bool {
        self.down_until
            .lock()
            .map(|g| g.is_some_and(|t| Instant::now() < t))
            .unwrap_or(false)
    }

    /// Admin/health view.
    pub fn state(&self) -> BackendState {
        if self.removed.load(Ordering::Acquire) || self.admin_drain.load(Ordering::Acquire) {
            BackendState::Draining
        } else if self.ready() {
            BackendState::Up
        } else {
            BackendState::Down
        }
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
            .unwrap_or_default()
    }

    /// Record an active check result; returns true when the up/down state changed.
    pub fn record_check(
        &self,
        ok: bool,
        detail: String,
        rise: u32,
        fall: u32,
        streak: &mut i64,
    ) -> bool {
        if let Ok(mut g) = self.last_health.lock() {
            *g = detail;
        }
        *streak = match (ok, *streak) {
            (true, s) if s > 0 => s + 1,
            (true, _) => 1,
            (false, s) if s < 0 => s - 1,
            (false, _) => -1,
        };
        let was = self.healthy.load(Ordering::Acquire);
        let first = !self.checked.swap(true, Ordering::AcqRel);
        let now = if ok && (*streak >= i64::from(rise) || (first && !was)) {
            true
        } else if !ok && *streak <= -i64::from(fall) {
            false
        } else {
            was
        };
        if now {
            self.passive_failures.store(0, Ordering::Relaxed);
        }
        self.healthy.store(now, Ordering::Release);
        now != was
    }

    /// Record a failed connect; true when it takes the backend out (passive health).
    pub fn connect_failed(&self, threshold: u32, cooldown: std::time::Duration) -> bool {
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

/// Every backend: the configured ones (in config order) and removed ones still draining.
#[derive(Debug)]
pub struct Registry {
    configured: ArcSwap<Vec<Arc<Backend>>>,
    all: Mutex<HashMap<String, Arc<Backend>>>,
}

impl Registry {
    /// A registry from the initial upstreams. With active checks on, backends start down until
    /// their first check passes.
    pub fn new(upstreams: &[Upstream], start_healthy: bool) -> Registry {
        let list: Vec<Arc<Backend>> = upstreams
            .iter()
            .map(|u| Arc::new(Backend::new(u, start_healthy)))
            .collect();
        let all = list.iter().map(|b| (b.id.clone(), b.clone())).collect();
        Registry {
            configured: ArcSwap::from_pointee(list),
            all: Mutex::new(all),
        }
    }

    /// The configured backends (a cheap snapshot).
    pub fn configured(&self) -> Arc<Vec<Arc<Backend>>> {
        self.configured.load_full()
    }

    /// Every known backend, configured first, then draining removed ones.
    pub fn all(&self) -> Vec<Arc<Backend>> {
        let configured = self.configured();
        let mut out: Vec<Arc<Backend>> = configured.iter().cloned().collect();
        if let Ok(all) = self.all.lock() {
            let mut removed: Vec<_> = all.values().filter(|b| b.is_removed()).cloned().collect();
            removed.sort_by(|a, b| a.id.cmp(&b.id));
            out.extend(removed);
        }
        out
    }

    /// Look a backend up by id (configured or draining).
    pub fn get(&self, id: &str) -> Option<Arc<Backend>> {
        self.all.lock().ok().and_then(|m| m.get(id).cloned())
    }

    /// Apply a new upstream list. Backends whose id and address stay keep their counters and
    /// health; new ones start down until checked (if `start_healthy` is false); removed ones
    /// drain. Returns (added, removed) ids.
    pub fn apply(&self, upstreams: &[Upstream], start_healthy: bool) -> (Vec<String>, Vec<String>) {
        let Ok(mut all) = self.all.lock() else {
            return (Vec::new(), Vec::new());
        };
        let mut added = Vec::new();
        let mut list = Vec::with_capacity(upstreams.len());
        for u in upstreams {
            let keep = all
                .get(u.id())
                .filter(|b| u.address.parse::<SocketAddr>().ok() == Some(b.addr))
                .cloned();
            let b = match keep {
                Some(b) => {
                    b.weight.store(u.weight.max(1), Ordering::Relaxed);
                    b.removed.store(false, Ordering::Release);
                    b
                }
                None => {
                    if let Some(old) = all.get(u.id()) {
                        // Same id, new address: the old one drains under its id until empty.
                        old.removed.store(true, Ordering::Release);
                    }
                    added.push(u.id().to_string());
                    Arc::new(Backend::new(u, start_healthy))
                }
            };
            list.push(b);
        }
        let keep_ids: std::collections::HashSet<&str> = upstreams.iter().map(|u| u.id()).collect();
        let mut removed = Vec::new();
        for (id, b) in all.iter() {
            if !keep_ids.contains(id.as_str()) && !b.is_removed() {
                b.removed.store(true, Ordering::Release);
                removed.push(id.clone());
            }
        }
        for b in &list {
            all.insert(b.id.clone(), b.clone());
        }
        self.configured.store(Arc::new(list));
        (added, removed)
    }

    /// Forget removed backends that have no live session left; returns their ids.
    pub fn reap(&self) -> Vec<String> {
        let configured = self.configured();
        let Ok(mut all) = self.all.lock() else {
            return Vec::new();
        };
        let gone: Vec<String> = all
            .iter()
            .filter(|(_, b)| {
                b.is_removed() && b.live() <= 0 && !configured.iter().any(|c| Arc::ptr_eq(c, b))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            all.remove(id);
        }
        gone
    }
}

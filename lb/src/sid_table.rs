//! The sid table: Engine.IO session id → the backend that minted it.
//!
//! Entries are learned from handshake responses (before their body reaches the client), touched
//! by every request that names the sid, and removed when the session ends: no request names it
//! for longer than pingInterval + pingTimeout (from the open packet) plus a margin.
//!
//! An entry is in one of four states. `Polling`: counted as a live polling session. `Upgraded`:
//! its WebSocket tunnel counts it, and it never expires while the tunnel is open. When the tunnel
//! ends the entry becomes `Closed`: no longer counted, kept only for `CLOSED_GRACE` — an upgrade
//! probe can fail and the client then goes on polling with the same sid, which revives the entry
//! as `Polling`. `Remote`: handed over by another LB process whose tunnel holds the session
//! (binary upgrade); not counted here, expires like a polling entry, revived by a poll.
//!
//! The table is bounded and sharded to keep lock hold times short. Every operation leaves a
//! shard's map whole, so a lock poisoned by a panicking thread is recovered, never reported as
//! something else. While an upgrade hands the table to a new process, every change is also sent
//! to the [`observe`](SidTable::observe) channel.

use ahash::RandomState;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tokio::sync::mpsc::UnboundedSender;

use crate::backends::Backend;
use crate::limits::ConnSlot;

const SHARDS: usize = 32;

/// How long the entry of a session whose WebSocket ended is kept (a failed upgrade probe goes
/// back to polling within milliseconds).
pub const CLOSED_GRACE: Duration = Duration::from_secs(5);

/// The state of one entry (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A live polling session, counted on its backend.
    Polling,
    /// Its WebSocket tunnel (in this process) counts it; never expires while open.
    Upgraded,
    /// Its tunnel ended; kept briefly for a failed upgrade probe.
    Closed,
    /// Its tunnel is held by another LB process (handed over on upgrade).
    Remote,
}

impl State {
    /// One-letter code used by the upgrade handover.
    pub fn code(self) -> char {
        match self {
            State::Polling => 'P',
            State::Upgraded => 'U',
            State::Closed => 'C',
            State::Remote => 'R',
        }
    }

    /// Inverse of [`code`](Self::code).
    pub fn from_code(c: char) -> Option<State> {
        Some(match c {
            'P' => State::Polling,
            'U' => State::Upgraded,
            'C' => State::Closed,
            'R' => State::Remote,
            _ => return None,
        })
    }
}

#[derive(Debug)]
struct Entry {
    backend: Arc<Backend>,
    last_seen: Instant,
    ttl: Duration,
    state: State,
    /// The client IP's share of `engineio.sid_table_max_per_ip`, held while the entry lives
    /// (none for entries routed by tag or cookie, or handed over in an upgrade).
    _owner: Option<ConnSlot>,
}

impl Entry {
    fn counted(&self) -> bool {
        self.state == State::Polling
    }
}

/// Why an insert was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// The table holds `max` entries.
    Full,
}

/// One entry as exported for an upgrade handover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// The sid.
    pub sid: String,
    /// The backend id.
    pub backend: String,
    /// Its state.
    pub state: State,
    /// Idle expiry.
    pub ttl: Duration,
    /// Time since the last request naming it.
    pub idle: Duration,
}

/// A change, sent to the observer while a handover runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Inserted or changed.
    Upsert(Exported),
    /// Forgotten.
    Remove(String),
}

/// Bounded, sharded sid → backend map.
#[derive(Debug)]
pub struct SidTable {
    /// Keyed by ahash with its own per-process random keys (the sids are client input); the
    /// shard is picked with another key, so a shard's entries do not share hash bits.
    shards: Vec<Mutex<HashMap<String, Entry, RandomState>>>,
    hasher: RandomState,
    len: AtomicUsize,
    max: AtomicUsize,
    observer: ArcSwapOption<UnboundedSender<Change>>,
}

fn export(sid: &str, e: &Entry, now: Instant) -> Exported {
    Exported {
        sid: sid.to_string(),
        backend: e.backend.id.clone(),
        state: e.state,
        ttl: e.ttl,
        idle: now.saturating_duration_since(e.last_seen),
    }
}

impl SidTable {
    /// A table holding at most `max` sessions.
    pub fn new(max: usize) -> SidTable {
        SidTable {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(RandomState::new())))
                .collect(),
            hasher: RandomState::new(),
            len: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
            observer: ArcSwapOption::empty(),
        }
    }

    /// Change the bound (reload); existing entries are kept.
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    fn shard(&self, sid: &str) -> MutexGuard<'_, HashMap<String, Entry, RandomState>> {
        let i = (self.hasher.hash_one(sid) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self, change: impl FnOnce() -> Change) {
        if let Some(tx) = self.observer.load().as_ref() {
            let _ = tx.send(change());
        }
    }

    /// Send every later change to `tx` (an upgrade handover), or stop with `None`.
    pub fn observe(&self, tx: Option<UnboundedSender<Change>>) {
        self.observer.store(tx.map(Arc::new));
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a new session would fit.
    pub fn has_room(&self) -> bool {
        self.len() < self.max.load(Ordering::Relaxed)
    }

    /// Record a polling session minted by `backend`.
    pub fn insert(
        &self,
        sid: &str,
        backend: Arc<Backend>,
        ttl: Duration,
    ) -> Result<(), InsertError> {
        self.insert_owned(sid, backend, ttl, None)
    }

    /// [`Self::insert`], the entry holding `owner` (its client IP's slot) while it lives.
    pub fn insert_owned(
        &self,
        sid: &str,
        backend: Arc<Backend>,
        ttl: Duration,
        owner: Option<ConnSlot>,
    ) -> Result<(), InsertError> {
        self.put(
            sid,
            backend,
            ttl,
            State::Polling,
            Instant::now(),
            true,
            owner,
        )
    }

    /// Record a session routed without an entry (by its tag or cookie) once its backend answered
    /// a poll for it; an existing entry is only touched.
    pub fn insert_if_absent(
        &self,
        sid: &str,
        backend: Arc<Backend>,
        ttl: Duration,
    ) -> Result<(), InsertError> {
        self.put(
            sid,
            backend,
            ttl,
            State::Polling,
            Instant::now(),
            false,
            None,
        )
    }

    /// Take over an entry exported by another process (upgrade handover).
    pub fn import(&self, e: &Exported, backend: Arc<Backend>) -> Result<(), InsertError> {
        let state = match e.state {
            // The tunnel stays in the old process.
            State::Upgraded | State::Remote => State::Remote,
            s => s,
        };
        let last_seen = Instant::now()
            .checked_sub(e.idle)
            .unwrap_or_else(Instant::now);
        self.put(&e.sid, backend, e.ttl, state, last_seen, true, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn put(
        &self,
        sid: &str,
        backend: Arc<Backend>,
        ttl: Duration,
        state: State,
        last_seen: Instant,
        replace: bool,
        owner: Option<ConnSlot>,
    ) -> Result<(), InsertError> {
        let mut shard = self.shard(sid);
        if let Some(e) = shard.get_mut(sid)
            && !replace
        {
            e.last_seen = Instant::now();
            return Ok(());
        }
        if !shard.contains_key(sid) && !self.has_room() {
            return Err(InsertError::Full);
        }
        let entry = Entry {
            backend,
            last_seen,
            ttl,
            state,
            _owner: owner,
        };
        if entry.counted() {
            entry.backend.add_polling(1);
        }
        self.notify(|| Change::Upsert(export(sid, &entry, Instant::now())));
        match shard.insert(sid.to_string(), entry) {
            Some(old) if old.counted() => old.backend.add_polling(-1),
            Some(_) => {}
            None => {
                self.len.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// The backend of `sid`, refreshing its idle timer. A polling request revives the entry of
    /// a session whose upgrade probe failed, or of one handed over from another process.
    pub fn lookup(&self, sid: &str, websocket: bool) -> Option<Arc<Backend>> {
        let mut shard = self.shard(sid);
        let e = shard.get_mut(sid)?;
        e.last_seen = Instant::now();
        if matches!(e.state, State::Closed | State::Remote) && !websocket {
            e.state = State::Polling;
            e.backend.add_polling(1);
        }
        Some(e.backend.clone())
    }

    /// The session moved to a WebSocket tunnel: stop counting it as polling (the tunnel counts
    /// it) and stop expiring it; [`tunnel_closed`](Self::tunnel_closed) runs when it ends.
    pub fn mark_upgraded(&self, sid: &str) {
        let mut shard = self.shard(sid);
        if let Some(e) = shard.get_mut(sid) {
            if e.counted() {
                e.backend.add_polling(-1);
            }
            e.state = State::Upgraded;
            self.notify(|| Change::Upsert(export(sid, e, Instant::now())));
        }
    }

    /// The session's WebSocket ended: keep the entry briefly, uncounted, in case the client goes
    /// on polling (a failed upgrade probe).
    pub fn tunnel_closed(&self, sid: &str) {
        let mut shard = self.shard(sid);
        if let Some(e) = shard.get_mut(sid)
            && e.state == State::Upgraded
        {
            e.state = State::Closed;
            e.last_seen = Instant::now();
        }
    }

    /// Forget `sid`.
    pub fn remove(&self, sid: &str) {
        let mut shard = self.shard(sid);
        if let Some(e) = shard.remove(sid) {
            self.len.fetch_sub(1, Ordering::Relaxed);
            if e.counted() {
                e.backend.add_polling(-1);
            }
            self.notify(|| Change::Remove(sid.to_string()));
        }
    }

    /// Every entry, for an upgrade handover.
    pub fn export(&self) -> Vec<Exported> {
        let now = Instant::now();
        let mut out = Vec::with_capacity(self.len());
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            out.extend(shard.iter().map(|(sid, e)| export(sid, e, now)));
        }
        out
    }

    /// Drop idle sessions; returns how many were removed.
    pub fn expire(&self, now: Instant) -> usize {
        let mut n = 0;
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.retain(|_, e| {
                let idle = now.saturating_duration_since(e.last_seen);
                let keep = match e.state {
                    State::Upgraded => true,
                    State::Polling | State::Remote => idle <= e.ttl,
                    State::Closed => idle <= CLOSED_GRACE,
                };
                if !keep {
                    if e.counted() {
                        e.backend.add_polling(-1);
                    }
                    n += 1;
                }
                keep
            });
        }
        self.len.fetch_sub(n, Ordering::Relaxed);
        n
    }
}

/// Marks an upgraded session's tunnel as ended when dropped (see [`SidTable::tunnel_closed`]).
#[derive(Debug)]
pub struct UpgradedSid {
    /// The table.
    pub table: Arc<SidTable>,
    /// The sid.
    pub sid: String,
}

impl Drop for UpgradedSid {
    fn drop(&mut self) {
        self.table.tunnel_closed(&self.sid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::Registry;
    use crate::config::Upstream;

    fn backend() -> Arc<Backend> {
        let r = Registry::new(
            &[Upstream {
                id: Some("a".into()),
                address: "127.0.0.1:1".into(),
                srv: None,
                weight: 1,
                sid_tag: None,
            }],
            true,
        )
        .expect("valid");
        r.configured()[0].clone()
    }

    #[test]
    fn an_entry_holds_its_ip_share_until_it_expires_or_is_removed() {
        let b = backend();
        let t = SidTable::new(10);
        let owners = Arc::new(crate::limits::ConnLimiter::default());
        let ip: std::net::IpAddr = [10, 0, 0, 1].into();
        let share = || owners.acquire(Some(ip), 0, 2);
        t.insert_owned("s1", b.clone(), Duration::from_millis(50), share().ok())
            .expect("room");
        t.insert_owned("s2", b.clone(), Duration::from_secs(60), share().ok())
            .expect("room");
        assert!(share().is_err(), "two entries hold the IP's share");
        assert_eq!(t.expire(Instant::now() + Duration::from_millis(100)), 1);
        let again = share().expect("the expired entry freed one");
        drop(again);
        t.remove("s2");
        assert_eq!(owners.total(), 0);
    }

    #[test]
    fn insert_lookup_expire_and_bound() {
        let b = backend();
        let t = SidTable::new(2);
        t.insert("s1", b.clone(), Duration::from_millis(50))
            .expect("room");
        t.insert("s2", b.clone(), Duration::from_secs(60))
            .expect("room");
        assert_eq!(
            t.insert("s3", b.clone(), Duration::from_secs(1)),
            Err(InsertError::Full)
        );
        assert_eq!(b.polling(), 2);
        assert!(t.lookup("s1", false).is_some());
        assert_eq!(t.expire(Instant::now() + Duration::from_millis(100)), 1);
        assert!(t.lookup("s1", false).is_none());
        assert_eq!(b.polling(), 1);
        t.mark_upgraded("s2");
        assert_eq!(b.polling(), 0);
        assert_eq!(t.expire(Instant::now() + Duration::from_secs(3600)), 0);
        // The tunnel ends (a failed probe): uncounted, but a poll revives it.
        t.tunnel_closed("s2");
        assert_eq!(b.polling(), 0);
        assert!(t.lookup("s2", false).is_some());
        assert_eq!(b.polling(), 1);
        // A tunnel that ends for good is forgotten after the grace.
        t.mark_upgraded("s2");
        t.tunnel_closed("s2");
        assert_eq!(
            t.expire(Instant::now() + CLOSED_GRACE + Duration::from_secs(1)),
            1
        );
        assert_eq!(t.len(), 0);
        assert_eq!(b.polling(), 0);
    }

    #[test]
    fn insert_if_absent_only_touches_existing_entries() {
        let b = backend();
        let t = SidTable::new(10);
        t.insert_if_absent("s", b.clone(), Duration::from_secs(60))
            .expect("room");
        t.insert_if_absent("s", b.clone(), Duration::from_secs(60))
            .expect("room");
        assert_eq!((t.len(), b.polling()), (1, 1));
    }

    #[test]
    fn export_import_and_observed_changes() {
        let b = backend();
        let old = SidTable::new(10);
        old.insert("p", b.clone(), Duration::from_secs(60))
            .expect("room");
        old.insert("w", b.clone(), Duration::from_secs(60))
            .expect("room");
        old.mark_upgraded("w");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        old.observe(Some(tx));
        let snapshot = old.export();
        old.insert("late", b.clone(), Duration::from_secs(60))
            .expect("room");
        old.remove("p");
        old.observe(None);
        old.insert("unseen", b.clone(), Duration::from_secs(60))
            .expect("room");

        let new = SidTable::new(10);
        for e in &snapshot {
            new.import(e, b.clone()).expect("room");
        }
        let mut changes = Vec::new();
        while let Ok(c) = rx.try_recv() {
            changes.push(c);
        }
        assert_eq!(changes.len(), 2, "{changes:?}");
        for c in changes {
            match c {
                Change::Upsert(e) => new.import(&e, b.clone()).expect("room"),
                Change::Remove(sid) => new.remove(&sid),
            }
        }
        assert!(new.lookup("p", false).is_none());
        assert!(new.lookup("late", false).is_some());
        assert!(new.lookup("unseen", false).is_none());
        // The upgraded session's tunnel stays in the old process: not counted here until a poll.
        let (p_old, p_new) = (b.polling(), new.len());
        assert_eq!(p_new, 2);
        assert!(new.lookup("w", true).is_some());
        assert_eq!(b.polling(), p_old);
        assert!(new.lookup("w", false).is_some());
        assert_eq!(b.polling(), p_old + 1);
    }
}

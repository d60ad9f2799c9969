//! The sid table: Engine.IO session id → the backend that minted it.
//!
//! Entries are learned from handshake responses (before their body reaches the client), touched
//! by every request that names the sid, and removed when the session ends: no request names it
//! for longer than pingInterval + pingTimeout (from the open packet) plus a margin.
//!
//! An entry is in one of three states. `Polling`: counted as a live polling session. `Upgraded`:
//! its WebSocket tunnel counts it, and it never expires while the tunnel is open. When the tunnel
//! ends the entry becomes `Closed`: no longer counted, kept only for `CLOSED_GRACE` — an upgrade
//! probe can fail and the client then goes on polling with the same sid, which revives the entry
//! as `Polling`. The table is bounded and sharded to keep lock hold times short.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backends::Backend;

const SHARDS: usize = 32;

/// How long the entry of a session whose WebSocket ended is kept (a failed upgrade probe goes
/// back to polling within milliseconds).
pub const CLOSED_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Polling,
    Upgraded,
    Closed,
}

#[derive(Debug)]
struct Entry {
    backend: Arc<Backend>,
    last_seen: Instant,
    ttl: Duration,
    state: State,
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

/// Bounded, sharded sid → backend map.
#[derive(Debug)]
pub struct SidTable {
    shards: Vec<Mutex<HashMap<String, Entry>>>,
    hasher: RandomState,
    len: AtomicUsize,
    max: AtomicUsize,
}

impl SidTable {
    /// A table holding at most `max` sessions.
    pub fn new(max: usize) -> SidTable {
        SidTable {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            len: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
        }
    }

    /// Change the bound (reload); existing entries are kept.
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    fn shard(&self, sid: &str) -> &Mutex<HashMap<String, Entry>> {
        let i = (self.hasher.hash_one(sid) as usize) % SHARDS;
        &self.shards[i]
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
        if !self.has_room() {
            return Err(InsertError::Full);
        }
        let Ok(mut shard) = self.shard(sid).lock() else {
            return Err(InsertError::Full);
        };
        backend.add_polling(1);
        let old = shard.insert(
            sid.to_string(),
            Entry {
                backend,
                last_seen: Instant::now(),
                ttl,
                state: State::Polling,
            },
        );
        match old {
            Some(e) if e.counted() => e.backend.add_polling(-1),
            Some(_) => {}
            None => {
                self.len.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// The backend of `sid`, refreshing its idle timer. A polling request revives the entry of
    /// a session whose upgrade probe failed.
    pub fn lookup(&self, sid: &str, websocket: bool) -> Option<Arc<Backend>> {
        let mut shard = self.shard(sid).lock().ok()?;
        let e = shard.get_mut(sid)?;
        e.last_seen = Instant::now();
        if e.state == State::Closed && !websocket {
            e.state = State::Polling;
            e.backend.add_polling(1);
        }
        Some(e.backend.clone())
    }

    /// The session moved to a WebSocket tunnel: stop counting it as polling (the tunnel counts
    /// it) and stop expiring it; [`tunnel_closed`](Self::tunnel_closed) runs when it ends.
    pub fn mark_upgraded(&self, sid: &str) {
        if let Ok(mut shard) = self.shard(sid).lock()
            && let Some(e) = shard.get_mut(sid)
        {
            if e.counted() {
                e.backend.add_polling(-1);
            }
            e.state = State::Upgraded;
        }
    }

    /// The session's WebSocket ended: keep the entry briefly, uncounted, in case the client goes
    /// on polling (a failed upgrade probe).
    pub fn tunnel_closed(&self, sid: &str) {
        if let Ok(mut shard) = self.shard(sid).lock()
            && let Some(e) = shard.get_mut(sid)
            && e.state == State::Upgraded
        {
            e.state = State::Closed;
            e.last_seen = Instant::now();
        }
    }

    /// Forget `sid`.
    pub fn remove(&self, sid: &str) {
        if let Ok(mut shard) = self.shard(sid).lock()
            && let Some(e) = shard.remove(sid)
        {
            self.len.fetch_sub(1, Ordering::Relaxed);
            if e.counted() {
                e.backend.add_polling(-1);
            }
        }
    }

    /// Drop idle sessions; returns how many were removed.
    pub fn expire(&self, now: Instant) -> usize {
        let mut n = 0;
        for shard in &self.shards {
            let Ok(mut shard) = shard.lock() else {
                continue;
            };
            shard.retain(|_, e| {
                let idle = now.duration_since(e.last_seen);
                let keep = match e.state {
                    State::Upgraded => true,
                    State::Polling => idle <= e.ttl,
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
                weight: 1,
            }],
            true,
        );
        r.configured()[0].clone()
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
}

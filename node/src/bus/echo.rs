//! Telling a lost cross-node message from this node's own missing subscription.
//!
//! Every node subscribes to a namespace's broadcast channel, the publisher included, so when
//! SPUBLISH reaches one subscriber fewer than the channel had, the one missing may be another
//! node — a lost message — or this node itself: in a Redis Cluster a moved slot (failover,
//! reshard) drops every subscriber, and the nodes re-subscribe one by one. Local delivery never
//! goes through Redis, so this node missing its own message loses nothing.
//!
//! The node tells the two apart by its own copy: a message it published comes back through its
//! subscription exactly when it was among the receivers. The copy may come back before the
//! SPUBLISH reply (Redis pushes it first on a shared connection), so [`Echoes`] remembers the
//! broadcast messages that arrived within the last [`ECHO_WAIT`], and holds an ambiguous
//! publish until its copy arrives or that time passes:
//! - copy seen (before or after) → another node missed it: counted as dropped;
//! - no copy within [`ECHO_WAIT`] → this node was the one missing: nothing lost.
//!
//! (Two or more missing means another node missed it whatever this one did; the caller counts
//! that at once.) Both tables are bounded ([`MAX_HELD`], [`MAX_RECENT`]); a full held table makes
//! the caller count at once — a drop too many rather than one hidden.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a held publish waits for its own copy, and how long arrivals are remembered.
pub(crate) const ECHO_WAIT: Duration = Duration::from_secs(1);
/// Held publishes at most.
pub(crate) const MAX_HELD: usize = 10_000;
/// Remembered arrivals at most (the oldest are forgotten first).
pub(crate) const MAX_RECENT: usize = 65_536;

/// What [`Echoes::hold`] did with an ambiguous publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// Waiting for its copy.
    Waiting,
    /// Its copy had already come back: another node missed it (count it now).
    CopyAlreadyArrived,
    /// The table is full (count it now).
    Full,
}

#[derive(Debug, Default)]
struct Tables {
    held: VecDeque<(u64, Instant)>,
    recent: VecDeque<(u64, Instant)>,
}

/// Held publishes and recent arrivals.
#[derive(Debug, Default)]
pub(crate) struct Echoes {
    tables: Mutex<Tables>,
}

fn digest(payload: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    payload.hash(&mut h);
    h.finish()
}

fn forget_before(q: &mut VecDeque<(u64, Instant)>, now: Instant) -> usize {
    let before = q.len();
    while q
        .front()
        .is_some_and(|(_, at)| now.saturating_duration_since(*at) >= ECHO_WAIT)
    {
        q.pop_front();
    }
    before - q.len()
}

impl Echoes {
    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        // Every change is one push or pop: a poisoned lock still holds consistent queues.
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A publish of `payload` at `now` reached one subscriber too few.
    pub(crate) fn hold(&self, payload: &[u8], now: Instant) -> Held {
        let d = digest(payload);
        let mut t = self.tables();
        forget_before(&mut t.recent, now);
        if let Some(i) = t.recent.iter().position(|(r, _)| *r == d) {
            t.recent.remove(i);
            return Held::CopyAlreadyArrived;
        }
        if t.held.len() >= MAX_HELD {
            return Held::Full;
        }
        t.held.push_back((d, now));
        Held::Waiting
    }

    /// A message arrived on a broadcast channel at `now`: true when it is the copy of a held
    /// publish (released: another node missed that message).
    pub(crate) fn arrived(&self, payload: &[u8], now: Instant) -> bool {
        let d = digest(payload);
        let mut t = self.tables();
        if let Some(i) = t.held.iter().position(|(h, _)| *h == d) {
            t.held.remove(i);
            return true;
        }
        forget_before(&mut t.recent, now);
        if t.recent.len() >= MAX_RECENT {
            t.recent.pop_front();
        }
        t.recent.push_back((d, now));
        false
    }

    /// Release the held publishes whose copy did not come within [`ECHO_WAIT`] of `now` (this
    /// node was the one missing: nothing lost). Returns how many were released.
    pub(crate) fn expire(&self, now: Instant) -> usize {
        let mut t = self.tables();
        forget_before(&mut t.recent, now);
        forget_before(&mut t.held, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_means_another_node_missed_it_no_copy_means_this_one_did() {
        let e = Echoes::default();
        let t0 = Instant::now();
        assert_eq!(e.hold(b"m1", t0), Held::Waiting);
        assert_eq!(
            e.hold(b"m2", t0 + Duration::from_millis(100)),
            Held::Waiting
        );
        // Unrelated traffic releases nothing.
        assert!(!e.arrived(b"other", t0));
        // m2's copy comes back: this node got it, so the missing subscriber was another node.
        assert!(e.arrived(b"m2", t0 + Duration::from_millis(150)));
        // m1's copy never comes: this node was the one missing.
        assert_eq!(e.expire(t0 + Duration::from_millis(999)), 0);
        assert_eq!(e.expire(t0 + ECHO_WAIT), 1);
        assert!(
            !e.arrived(b"m1", t0 + ECHO_WAIT),
            "a late copy is not counted"
        );
    }

    #[test]
    fn a_copy_that_came_before_the_reply_counts() {
        let e = Echoes::default();
        let t0 = Instant::now();
        assert!(!e.arrived(b"m3", t0));
        assert_eq!(
            e.hold(b"m3", t0 + Duration::from_millis(5)),
            Held::CopyAlreadyArrived
        );
        // Remembered arrivals are forgotten after ECHO_WAIT.
        assert!(!e.arrived(b"m4", t0));
        assert_eq!(e.hold(b"m4", t0 + ECHO_WAIT), Held::Waiting);
    }

    #[test]
    fn the_tables_are_bounded() {
        let e = Echoes::default();
        let t0 = Instant::now();
        for i in 0..MAX_HELD {
            assert_eq!(e.hold(&i.to_le_bytes(), t0), Held::Waiting);
        }
        assert_eq!(e.hold(b"one more", t0), Held::Full);
        assert_eq!(e.expire(t0 + ECHO_WAIT), MAX_HELD);
        for i in 0..MAX_RECENT + 10 {
            e.arrived(&((i as u64 + 1) << 32).to_le_bytes(), t0);
        }
        assert_eq!(e.tables().recent.len(), MAX_RECENT);
    }
}

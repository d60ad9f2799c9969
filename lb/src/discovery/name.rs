//! What is known about one DNS-named upstream: the addresses in force, when to ask again, and
//! what an answer changes. Pure, with time passed in, so every rule below is unit-tested.
//!
//! - An answer with records replaces the set; the name is asked again when the shortest TTL
//!   runs out, but not sooner than `resolver.min_interval` nor later than `resolver.interval`.
//! - No answer at all (timeout, SERVFAIL, refused, a network error): the set stays — DNS
//!   trouble must not take healthy backends away — and the name is asked again after
//!   `min_interval`.
//! - A definite "no such name" or "no records" (NXDOMAIN, NODATA): the set stays for
//!   `resolver.hold_empty`, then becomes empty and its backends drain (a Service scaled to
//!   zero, a name removed on purpose). A name never answered before is empty at once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::Resolver;

/// One backend address found through DNS, with its weight.
pub type Found = (SocketAddr, u32);

/// What one resolution gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Addresses, valid for `ttl`.
    Records {
        /// The addresses and weights (any order, duplicates allowed).
        addrs: Vec<Found>,
        /// The shortest TTL among the records used.
        ttl: Duration,
    },
    /// The name does not exist or has no records of the type asked.
    Empty(String),
    /// No usable answer.
    Failed(String),
}

/// What an answer did to the set in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The set changed (the registry must be given the new one).
    Changed,
    /// Same addresses as before.
    Unchanged,
    /// No answer: the last set stays. `streak` counts the failures in a row.
    Kept {
        /// Failed or empty resolutions in a row, this one included.
        streak: u32,
    },
}

/// The state of one name.
#[derive(Debug, Clone, Default)]
pub struct NameState {
    set: Option<Vec<Found>>,
    empty_since: Option<Instant>,
    next: Option<Instant>,
    streak: u32,
}

impl NameState {
    /// The addresses in force (none before the first answer).
    pub fn set(&self) -> &[Found] {
        self.set.as_deref().unwrap_or_default()
    }

    /// Whether an answer has ever given the set (empty included).
    pub fn answered(&self) -> bool {
        self.set.is_some()
    }

    /// Whether the name is due to be asked at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.next.is_none_or(|t| now >= t)
    }

    /// When it is next due (`None`: at once).
    pub fn next(&self) -> Option<Instant> {
        self.next
    }

    /// Failed or empty resolutions in a row before the last answer with records.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Take `answer`, received at `now`.
    pub fn observe(&mut self, answer: Answer, now: Instant, r: &Resolver) -> Verdict {
        match answer {
            Answer::Records { mut addrs, ttl } => {
                addrs.sort();
                addrs.dedup_by_key(|(a, _)| *a);
                self.next = Some(now + ttl.clamp(r.min_interval, r.interval));
                self.empty_since = None;
                self.streak = 0;
                self.replace(addrs)
            }
            Answer::Empty(_) => {
                self.next = Some(now + r.min_interval);
                self.streak += 1;
                let since = *self.empty_since.get_or_insert(now);
                if self.set.is_none() || now.duration_since(since) >= r.hold_empty {
                    self.replace(Vec::new())
                } else {
                    Verdict::Kept {
                        streak: self.streak,
                    }
                }
            }
            Answer::Failed(_) => {
                self.next = Some(now + r.min_interval);
                self.streak += 1;
                Verdict::Kept {
                    streak: self.streak,
                }
            }
        }
    }

    fn replace(&mut self, addrs: Vec<Found>) -> Verdict {
        if self.set.as_ref() == Some(&addrs) {
            Verdict::Unchanged
        } else {
            self.set = Some(addrs);
            Verdict::Changed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(port: u16) -> Found {
        (SocketAddr::from(([127, 0, 0, 1], port)), 1)
    }

    fn records(ports: &[u16], ttl: u64) -> Answer {
        Answer::Records {
            addrs: ports.iter().map(|p| at(*p)).collect(),
            ttl: Duration::from_secs(ttl),
        }
    }

    #[test]
    fn ttl_is_clamped_between_min_interval_and_interval() {
        let r = Resolver::default(); // 1 s .. 5 s
        let t0 = Instant::now();
        let mut s = NameState::default();
        assert!(s.due(t0) && !s.answered());
        assert_eq!(s.observe(records(&[2, 1, 1], 0), t0, &r), Verdict::Changed);
        assert_eq!(s.set(), &[at(1), at(2)], "sorted, duplicates gone");
        assert_eq!(s.next(), Some(t0 + Duration::from_secs(1)));
        assert!(!s.due(t0 + Duration::from_millis(999)));
        assert!(s.due(t0 + Duration::from_secs(1)));
        assert_eq!(s.observe(records(&[1, 2], 3), t0, &r), Verdict::Unchanged);
        assert_eq!(s.next(), Some(t0 + Duration::from_secs(3)));
        assert_eq!(
            s.observe(records(&[1, 2], 3600), t0, &r),
            Verdict::Unchanged
        );
        assert_eq!(s.next(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(s.observe(records(&[1, 2, 3], 1), t0, &r), Verdict::Changed);
        assert_eq!(s.set().len(), 3);
    }

    #[test]
    fn failures_keep_the_last_set() {
        let r = Resolver::default();
        let t0 = Instant::now();
        let mut s = NameState::default();
        // A name that never answered stays without addresses.
        assert_eq!(
            s.observe(Answer::Failed("timeout".into()), t0, &r),
            Verdict::Kept { streak: 1 }
        );
        assert!(!s.answered() && s.set().is_empty());
        s.observe(records(&[1, 2], 30), t0, &r);
        for (i, when) in [1u64, 60, 3600].into_iter().enumerate() {
            let now = t0 + Duration::from_secs(when);
            assert_eq!(
                s.observe(Answer::Failed("SERVFAIL".into()), now, &r),
                Verdict::Kept {
                    streak: i as u32 + 1
                }
            );
            assert_eq!(s.set(), &[at(1), at(2)]);
            assert_eq!(s.next(), Some(now + r.min_interval), "asked again soon");
        }
        assert_eq!(s.observe(records(&[1, 2], 30), t0, &r), Verdict::Unchanged);
        assert_eq!(s.streak(), 0);
    }

    #[test]
    fn empty_answers_drain_after_hold_empty() {
        let r = Resolver {
            hold_empty: Duration::from_secs(30),
            ..Resolver::default()
        };
        let t0 = Instant::now();
        let mut s = NameState::default();
        s.observe(records(&[1, 2], 5), t0, &r);
        let nx = || Answer::Empty("NXDOMAIN".into());
        assert_eq!(
            s.observe(nx(), t0 + Duration::from_secs(10), &r),
            Verdict::Kept { streak: 1 }
        );
        assert_eq!(
            s.observe(nx(), t0 + Duration::from_secs(39), &r),
            Verdict::Kept { streak: 2 }
        );
        assert_eq!(s.set().len(), 2);
        assert_eq!(
            s.observe(nx(), t0 + Duration::from_secs(40), &r),
            Verdict::Changed
        );
        assert!(s.answered() && s.set().is_empty());
        assert_eq!(
            s.observe(nx(), t0 + Duration::from_secs(41), &r),
            Verdict::Unchanged
        );
        // Records again: the hold starts over next time.
        assert_eq!(
            s.observe(records(&[3], 5), t0 + Duration::from_secs(50), &r),
            Verdict::Changed
        );
        assert_eq!(
            s.observe(nx(), t0 + Duration::from_secs(51), &r),
            Verdict::Kept { streak: 1 }
        );
        // A name empty from its first answer is empty at once.
        let mut fresh = NameState::default();
        assert_eq!(fresh.observe(nx(), t0, &r), Verdict::Changed);
        assert!(fresh.answered());
    }
}

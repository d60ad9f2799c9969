//! Admission limits: concurrent connections in total and per client IP (RAII-counted), a
//! token bucket for new sessions, and per-IP token buckets in fixed memory.
//!
//! Per-IP state is bounded: [`ConnLimiter`] keeps an IP only while it holds a slot (so its map
//! is never larger than the connections or sessions it counts), and [`IpBuckets`] hashes IPs
//! with a random per-process key into a fixed array of buckets — memory does not grow with the
//! number of addresses a client can spoof or rotate through, and nobody can aim another
//! address at a victim's bucket without the key.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Concurrent connection counters.
#[derive(Debug, Default)]
pub struct ConnLimiter {
    total: AtomicUsize,
    /// Keyed by ahash with per-process random keys: the keys are client addresses, and the
    /// map is touched twice per request (std's SipHash cost about 2 % of a polling request's
    /// instructions).
    per_ip: Mutex<HashMap<IpAddr, usize, ahash::RandomState>>,
}

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `limits.max_connections`.
    Total,
    /// `limits.max_connections_per_ip`.
    PerIp,
}

/// Holds one connection slot until dropped.
#[derive(Debug)]
pub struct ConnSlot {
    limiter: Arc<ConnLimiter>,
    ip: Option<IpAddr>,
}

impl ConnLimiter {
    /// Take a slot for `ip` unless a limit (0 = none) is reached.
    pub fn acquire(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
        max_total: usize,
        max_per_ip: usize,
    ) -> Result<ConnSlot, Refused> {
        let total = self.total.fetch_add(1, Ordering::AcqRel) + 1;
        if max_total > 0 && total > max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Total);
        }
        if let Some(ip) = ip {
            // Every update leaves the map whole: a poisoned lock still holds valid counts.
            let mut m = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let n = m.entry(ip).or_insert(0);
            if max_per_ip > 0 && *n >= max_per_ip {
                drop(m);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(Refused::PerIp);
            }
            *n += 1;
        }
        Ok(ConnSlot {
            limiter: self.clone(),
            ip,
        })
    }

    /// Connections held now.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.limiter.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            let mut m = self
                .limiter
                .per_ip
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let Some(n) = m.get_mut(&ip) else { return };
            *n -= 1;
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }
}

/// A token bucket: `rate` tokens per second, at most `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    state: Mutex<(f64, Instant)>,
}

impl Default for TokenBucket {
    fn default() -> Self {
        Self {
            state: Mutex::new((f64::MAX, Instant::now())),
        }
    }
}

impl TokenBucket {
    /// Take one token; `Err(seconds)` until the next one when empty. `rate == 0` always passes.
    pub fn take(&self, rate: u32, burst: u32) -> Result<(), u64> {
        if rate == 0 {
            return Ok(());
        }
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (tokens, last) = *g;
        let refill = now.duration_since(last).as_secs_f64() * f64::from(rate);
        let tokens = (if tokens == f64::MAX {
            f64::from(burst)
        } else {
            tokens + refill
        })
        .min(f64::from(burst));
        if tokens >= 1.0 {
            *g = (tokens - 1.0, now);
            Ok(())
        } else {
            *g = (tokens, now);
            Err(((1.0 - tokens) / f64::from(rate)).ceil().max(1.0) as u64)
        }
    }
}

/// Token buckets per client IP in fixed memory (see the module doc).
#[derive(Debug)]
pub struct IpBuckets {
    buckets: Box<[TokenBucket]>,
    hasher: std::collections::hash_map::RandomState,
}

impl IpBuckets {
    /// `n` buckets (at least 1).
    pub fn new(n: usize) -> IpBuckets {
        IpBuckets {
            buckets: (0..n.max(1)).map(|_| TokenBucket::default()).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Take a token from `ip`'s bucket (see [`TokenBucket::take`]).
    pub fn take(&self, ip: IpAddr, rate: u32, burst: u32) -> Result<(), u64> {
        use std::hash::BuildHasher;
        let i = (self.hasher.hash_one(ip) as usize) % self.buckets.len();
        self.buckets[i].take(rate, burst)
    }

    /// How many buckets there are.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Never true (at least one bucket).
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_and_total_limits() {
        let l = Arc::new(ConnLimiter::default());
        let ip: IpAddr = [10, 0, 0, 1].into();
        let a = l.acquire(Some(ip), 3, 2).expect("first");
        let _b = l.acquire(Some(ip), 3, 2).expect("second");
        assert_eq!(l.acquire(Some(ip), 3, 2).err(), Some(Refused::PerIp));
        let _c = l
            .acquire(Some([10, 0, 0, 2].into()), 3, 2)
            .expect("other ip");
        assert_eq!(
            l.acquire(Some([10, 0, 0, 3].into()), 3, 2).err(),
            Some(Refused::Total)
        );
        drop(a);
        assert!(l.acquire(Some(ip), 3, 2).is_ok());
    }

    #[test]
    fn per_ip_buckets_keep_addresses_apart_in_fixed_memory() {
        let b = IpBuckets::new(4096);
        let a: IpAddr = [10, 0, 0, 1].into();
        assert!(b.take(a, 1, 2).is_ok());
        assert!(b.take(a, 1, 2).is_ok());
        assert_eq!(b.take(a, 1, 2), Err(1));
        // Other addresses still have their burst (4096 buckets: a collision with `a` among 50
        // addresses is possible, so count the ones that pass).
        let passed = (2..52u8)
            .filter(|i| b.take([10, 0, 1, *i].into(), 1, 2).is_ok())
            .count();
        assert!(passed >= 48, "{passed} of 50 other addresses passed");
        // A million addresses later the memory is what it was.
        for i in 0..1_000_000u32 {
            let _ = b.take(IpAddr::from(i.to_be_bytes()), 1, 2);
        }
        assert_eq!(b.len(), 4096);
    }

    #[test]
    fn bucket_allows_burst_then_refuses() {
        let b = TokenBucket::default();
        assert!(b.take(1, 3).is_ok());
        assert!(b.take(1, 3).is_ok());
        assert!(b.take(1, 3).is_ok());
        assert_eq!(b.take(1, 3), Err(1));
        assert!(b.take(0, 0).is_ok());
    }
}

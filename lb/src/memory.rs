//! Giving memory back to the OS after a burst of connections. glibc's malloc keeps what a burst
//! freed in its arenas for reuse: after 10,000 slow-loris connections were all closed, the LB's
//! RSS stayed at their peak (362 MiB, `bench/slowloris.sh`). `malloc_trim` returns the free
//! pages. The control loop calls it when the open client connections have fallen well below
//! their peak since the last trim ([`Trimmer::observe`]) — at most once per burst, never per
//! request, and not at all in steady state.

/// Connections that must have closed since the peak before a trim is worth it.
pub const TRIM_AFTER_CLOSED: i64 = 1000;

/// Decides when to trim, from the open connection count sampled by the control loop.
#[derive(Debug, Default)]
pub struct Trimmer {
    peak: i64,
}

impl Trimmer {
    /// Feed the number of open client connections; true when memory should be trimmed now:
    /// at least [`TRIM_AFTER_CLOSED`] connections closed since the peak and at most half of the
    /// peak still open. The peak restarts from the current count after a trim.
    pub fn observe(&mut self, open: i64) -> bool {
        self.peak = self.peak.max(open);
        if self.peak - open >= TRIM_AFTER_CLOSED && open <= self.peak / 2 {
            self.peak = open;
            return true;
        }
        false
    }
}

/// Return free heap pages to the OS (glibc; a no-op elsewhere).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists under its locks; it may be
    // called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_after_a_burst_closes_and_never_in_steady_state() {
        let mut t = Trimmer::default();
        // Steady state around 500 connections: never.
        for n in [500, 520, 480, 510, 0, 300] {
            assert!(!t.observe(n), "{n}");
        }
        // A burst to 10,300, then it closes.
        assert!(!t.observe(10_300));
        assert!(!t.observe(9_000), "still more than half open");
        assert!(t.observe(200));
        // Once per burst: the peak restarted at 200.
        assert!(!t.observe(150));
        assert!(!t.observe(0));
    }
}

//! The allocator's memory, given back to the OS.
//!
//! - [`configure_allocator`]: iogate-lb's allocator is mimalloc, whose default on Linux commits
//!   its arenas eagerly; the pages it touched then stayed resident after they were freed
//!   (`MIMALLOC_PURGE_DECOMMITS=1` did not change that). Every thread that allocates touches
//!   pages of its own, so RSS started at 25 MiB and grew by 5–7 MiB for each extra thread
//!   (measured: 25.4 → 15.5 MiB at start, and 41 → 17 MiB with 300 WebSocket tunnels, with
//!   arena commit on demand instead). With commit on demand, freed memory is decommitted
//!   (`MADV_DONTNEED`) once mimalloc purges it, so RSS follows what is in use.
//! - After a burst of connections: glibc's malloc (what the LB used before mimalloc, and what the
//!   C libraries it links use) keeps what a burst freed in its arenas for reuse: after 10,000
//!   slow-loris connections were all closed, the LB's RSS stayed at their peak (362 MiB,
//!   `bench/slowloris.sh`). [`trim`] asks both allocators to give free pages back: glibc's
//!   `malloc_trim`, and mimalloc's `mi_collect` (the calling thread's heap and what the arenas
//!   can purge; every other thread's freed memory mimalloc purges as that thread runs). The control
//!   loop calls it when the open client connections have fallen well below their peak since
//!   the last trim ([`Trimmer::observe`]) — at most once per burst, never per request, and not
//!   at all in steady state.

use std::ffi::{c_int, c_long};

// The mimalloc library (linked through the `mimalloc` crate, iogate-lb's global allocator).
use mimalloc as _;

unsafe extern "C" {
    fn mi_option_set_default(option: c_int, value: c_long);
    fn mi_option_get(option: c_int) -> c_long;
    fn mi_collect(force: bool);
}

/// `mi_option_arena_eager_commit` in mimalloc v3's `mi_option_e` (`mimalloc.h`; the unit test
/// checks the layout through the defaults around it).
const MI_OPTION_ARENA_EAGER_COMMIT: c_int = 4;

/// Have mimalloc commit arena memory on demand (its default unless `MIMALLOC_ARENA_EAGER_COMMIT`
/// is set). Must run before mimalloc initialises, which is before `main`: iogate-lb calls it
/// from a constructor of its own that runs first (`.init_array` priority 101); an arena
/// reserved before it keeps the setting it was reserved with.
pub fn configure_allocator() {
    // SAFETY: sets the default of one integer option (no allocation, no other state).
    unsafe { mi_option_set_default(MI_OPTION_ARENA_EAGER_COMMIT, 0) }
}

/// mimalloc's value of `arena_eager_commit` (0 in iogate-lb, 2 by mimalloc's default).
pub fn arena_eager_commit() -> c_long {
    // SAFETY: reads one integer option.
    unsafe { mi_option_get(MI_OPTION_ARENA_EAGER_COMMIT) }
}

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

/// Return free heap pages to the OS: mimalloc's (Rust's allocations), then glibc's.
pub fn trim() {
    // SAFETY: collects the calling thread's heap and purges freed memory; callable any time.
    unsafe { mi_collect(true) };
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
    fn the_option_constant_names_mimallocs_arena_eager_commit() {
        // mimalloc v3's defaults: show_errors 0, show_stats 0, verbose 0, (deprecated) eager
        // commit 1, arena_eager_commit 2 (commit eagerly on overcommitting systems),
        // purge_decommits 1. Another layout would not give these values in this order.
        // SAFETY: reads integer options.
        let got: Vec<c_long> = (1..=5).map(|o| unsafe { mi_option_get(o) }).collect();
        assert_eq!(got, [0, 0, 1, 2, 1], "mimalloc's option layout changed");
        assert_eq!(arena_eager_commit(), 2);
    }

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

//! The generator's own CPU time and memory, from /proc (Linux).

use std::time::Duration;

/// CPU time (user + system) of this process.
pub fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime is field 14, stime 15 (1-based, counting pid and comm): indexes 11 and 12 here.
    let total = ticks(11) + ticks(12);
    let hz = 100; // sysconf(_SC_CLK_TCK) on Linux
    Duration::from_millis(total * 1000 / hz)
}

/// A `kB` field of /proc/self/status, in bytes (0 when unavailable).
fn status_bytes(field: &str) -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Resident set size in bytes.
pub fn rss_bytes() -> u64 {
    status_bytes("VmRSS:")
}

/// Peak resident set size in bytes.
pub fn peak_rss_bytes() -> u64 {
    status_bytes("VmHWM:")
}

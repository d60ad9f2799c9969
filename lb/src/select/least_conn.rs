//! Least-connections over live sessions: the ready backend with the fewest live sessions (open
//! WebSockets + polling sessions + handshakes in flight) per unit of weight. Ties rotate — a
//! burst of simultaneous handshakes spreads evenly instead of piling on the first backend.

use std::sync::Arc;

use crate::backends::Backend;

/// Pick from `candidates` (already filtered to ready ones). `turn` rotates ties.
pub fn pick(candidates: &[Arc<Backend>], turn: usize) -> Option<Arc<Backend>> {
    let n = candidates.len();
    if n == 0 {
        return None;
    }
    let mut best: Option<&Arc<Backend>> = None;
    // Visit in rotated order so that the first of equal candidates changes every call.
    for i in 0..n {
        let b = &candidates[(turn + i) % n];
        best = match best {
            None => Some(b),
            // b.load / b.weight < best.load / best.weight, without division.
            Some(cur)
                if (b.load() as i128) * (cur.weight() as i128)
                    < (cur.load() as i128) * (b.weight() as i128) =>
            {
                Some(b)
            }
            keep => keep,
        };
    }
    best.cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::{PendingGuard, Registry};
    use crate::config::Upstream;

    fn reg(weights: &[u32]) -> Registry {
        let ups: Vec<Upstream> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| Upstream {
                id: Some(format!("b{i}")),
                address: format!("127.0.0.1:{}", 5000 + i),
                srv: None,
                weight: *w,
                sid_tag: None,
            })
            .collect();
        Registry::new(&ups, true).expect("valid")
    }

    #[test]
    fn ties_rotate_and_load_is_respected() {
        let r = reg(&[1, 1, 1]);
        let list = r.configured();
        let mut guards = Vec::new();
        let mut counts = [0usize; 3];
        for turn in 0..300 {
            let b = pick(&list, turn).expect("a backend");
            counts[b.id[1..].parse::<usize>().unwrap_or(0)] += 1;
            guards.push(PendingGuard::new(b));
        }
        assert_eq!(counts, [100, 100, 100]);
    }

    #[test]
    fn weight_scales_the_share() {
        let r = reg(&[1, 3]);
        let list = r.configured();
        let mut guards = Vec::new();
        let mut counts = [0usize; 2];
        for turn in 0..400 {
            let b = pick(&list, turn).expect("a backend");
            counts[b.id[1..].parse::<usize>().unwrap_or(0)] += 1;
            guards.push(PendingGuard::new(b));
        }
        assert_eq!(counts, [100, 300]);
    }

    #[test]
    fn empty_gives_none() {
        assert!(pick(&[], 0).is_none());
    }
}

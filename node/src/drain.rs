//! Graceful drain: take the node out of rotation, then move its clients elsewhere at a paced,
//! jittered rate, then close the adapter.
//!
//! 1. `/readyz` turns 503 at once (the caller sets the flag before calling [`drain`]).
//! 2. Wait `drain.grace`, so load balancers stop sending new sessions.
//! 3. Every tick (100 ms ± 20 % jitter, or longer for rates under 10/s) cut the transport of the
//!    next `rate × tick` sockets. Clients see "transport close"/"transport error" and reconnect
//!    through the load balancer to another node; a polling client's next poll gets an Engine.IO
//!    `close` packet.
//! 4. Close the Socket.IO server (remaining sockets, adapter subscriptions) within what is left
//!    of `drain.timeout`.

use std::time::{Duration, Instant};

use rand::Rng;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;

use crate::config::DrainConfig;
use crate::connections::SessionConns;

fn local_sockets<A: Adapter>(io: &SocketIo<A>) -> Vec<socketioxide::extract::SocketRef<A>> {
    io.nsps().into_iter().flat_map(|ns| ns.sockets()).collect()
}

/// Run steps 2–4. Returns how many sockets were cut by pacing.
pub async fn drain<A: Adapter>(io: &SocketIo<A>, conns: &SessionConns, cfg: &DrainConfig) -> usize {
    let started = Instant::now();
    let deadline = started + cfg.timeout;
    tracing::info!(
        grace = ?cfg.grace,
        rate = cfg.rate,
        sockets = local_sockets(io).len(),
        "draining: /readyz is 503; disconnecting clients after the grace period"
    );
    tokio::time::sleep_until((started + cfg.grace).min(deadline).into()).await;

    let rate = cfg.rate.max(1) as f64;
    let (tick, per_tick) = if rate >= 10.0 {
        (
            Duration::from_millis(100),
            (rate / 10.0).round().max(1.0) as usize,
        )
    } else {
        (Duration::from_secs_f64(1.0 / rate), 1)
    };
    let mut cut = 0usize;
    loop {
        if Instant::now() >= deadline {
            tracing::warn!("drain timeout reached with sockets left; closing them now");
            break;
        }
        let pending: Vec<_> = local_sockets(io)
            .into_iter()
            .filter(|s| !conns.is_draining(&s.id.to_string()))
            .take(per_tick)
            .collect();
        if pending.is_empty() {
            break;
        }
        for s in &pending {
            if !conns.drain(&s.id.to_string()) {
                // Not tracked (should not happen): fall back to a Socket.IO disconnect.
                let _ = s.clone().disconnect();
            }
        }
        cut += pending.len();
        let jitter = rand::rng().random_range(0.8..1.2);
        let wait = tick.mul_f64(jitter);
        tokio::time::sleep_until((Instant::now() + wait).min(deadline).into()).await;
    }
    tracing::info!(cut, elapsed = ?started.elapsed(), "paced disconnects done; closing server");
    let left = deadline.saturating_duration_since(Instant::now());
    if tokio::time::timeout(left, io.close()).await.is_err() {
        tracing::warn!("closing the Socket.IO server did not finish before drain.timeout");
    }
    cut
}

//! The Redis bus that joins nodes into one Socket.IO cluster.
//!
//! socketioxide-redis does the Socket.IO side (request/response protocol, msgpack, per-namespace
//! channels); this module supplies the transport underneath it, a [`driver::BusDriver`] on fred,
//! built to survive Redis failures:
//!
//! - [`client`] builds the fred client from the config: RESP3, capped exponential backoff with
//!   jitter retried forever, a timeout on every command, a bounded command buffer.
//! - [`driver`] implements socketioxide-redis's `Driver`: publishes fail fast and are *counted*
//!   (never returned as errors) when Redis is unreachable, so local delivery goes on; inbound
//!   messages go through bounded per-channel queues whose overflow is counted, never a panic.
//! - [`supervisor`] watches the connection, re-subscribes every tracked channel after every
//!   reconnect, keeps the [`BusStatus`] (`up`, `reconnecting`, `down`) and logs each outage once.

pub mod client;
pub mod driver;
mod echo;
pub mod supervisor;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

/// Health of the Redis bus as reported by `/readyz` and `iogate_node_bus_up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusState {
    /// No Redis configured: the node runs alone with the in-memory adapter.
    Disabled,
    /// Connected and every channel subscribed.
    Up,
    /// Connection lost (or never made) and being retried, for less than `redis.down_after`.
    Reconnecting,
    /// Unreachable for longer than `redis.down_after`; still retried.
    Down,
}

impl BusState {
    /// The lowercase name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            BusState::Disabled => "disabled",
            BusState::Up => "up",
            BusState::Reconnecting => "reconnecting",
            BusState::Down => "down",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => BusState::Up,
            2 => BusState::Reconnecting,
            3 => BusState::Down,
            _ => BusState::Disabled,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            BusState::Disabled => 0,
            BusState::Up => 1,
            BusState::Reconnecting => 2,
            BusState::Down => 3,
        }
    }
}

/// Shared, lock-free view of the bus state plus the start of the current outage.
#[derive(Debug)]
pub struct BusStatus {
    state: AtomicU8,
    outage_since: Mutex<Option<Instant>>,
}

impl BusStatus {
    /// A status starting in `state`.
    pub fn new(state: BusState) -> Self {
        let since = (state != BusState::Up && state != BusState::Disabled).then(Instant::now);
        Self {
            state: AtomicU8::new(state.to_u8()),
            outage_since: Mutex::new(since),
        }
    }

    /// The current state.
    pub fn get(&self) -> BusState {
        BusState::from_u8(self.state.load(Ordering::Acquire))
    }

    fn set(&self, s: BusState) {
        self.state.store(s.to_u8(), Ordering::Release);
    }

    /// When the current outage began, if the bus is not up.
    pub fn outage_since(&self) -> Option<Instant> {
        self.outage_since.lock().map(|g| *g).unwrap_or(None)
    }

    fn set_outage_since(&self, v: Option<Instant>) {
        if let Ok(mut g) = self.outage_since.lock() {
            *g = v;
        }
    }
}

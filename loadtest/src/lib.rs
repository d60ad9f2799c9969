//! # iogate-loadtest
//!
//! A Socket.IO load generator with exact accounting. Module map:
//!
//! - [`protocol`] — Engine.IO v4 / Socket.IO v5 packets;
//! - [`client`] — one virtual client over WebSocket, polling, or polling upgraded to WebSocket;
//!   [`cookies`] — its optional browser-like cookie jar;
//! - [`run`] — the scenarios (idle, echo, broadcast, room, churn, storm) and the phase runner;
//! - [`stats`] — HDR latency histograms and per-message delivery accounting; [`bitset`];
//! - [`report`] — the summary table, JSON and the self-contained HTML report;
//! - [`assert`] — `--assert` thresholds; [`procstat`] — the generator's own CPU and RSS.

pub mod assert;
pub mod bitset;
pub mod client;
pub mod cookies;
pub mod procstat;
pub mod protocol;
pub mod report;
pub mod run;
pub mod stats;

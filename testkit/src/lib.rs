//! Test harness shared by the iogate crates: real `redis-server` processes (standalone and a
//! 3-master cluster), a real DNS server (dnsmasq), real `iogate-node` / `iogate-lb` processes
//! and a fleet of official socket.io-client sockets (`js/fleet.mjs`), all on free ports, all
//! killed on drop. Readiness is polled, never slept for.

mod dns;
pub mod eio;
mod fleet;
mod haproxy;
mod http;
mod lb;
mod loadtest;
mod metrics;
mod node;
mod process;
mod prometheus;
mod redis;
mod tls;

use std::path::{Path, PathBuf};

pub use dns::{Dnsmasq, SrvRecord, query_a};
pub use fleet::Fleet;
pub use haproxy::Haproxy;
pub use http::{http_exchange, http_get, http_get_at, http_post, http_raw};
pub use lb::{Lb, lb_yaml};
pub use loadtest::{Loadtest, accounting};
pub use metrics::metric_value;
pub use node::{Node, wait_bus_up};
pub use process::{Proc, bin, bin_command, free_port, heavy, node_bin, run_bin, run_cmd, wait_for};
pub use prometheus::Prometheus;
pub use redis::{ClusterNode, Redis, RedisCluster, redis_cmd, redis_cmd_full};
pub use tls::{CurlReply, TestCert, curl};

/// Directory of the JavaScript test clients (`testkit/js`).
pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// The proptest configuration of every property test: 256 cases a property; a failure is
/// reported with its minimal input, not saved to files in the source tree.
pub fn proptest_config() -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases: 256,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}

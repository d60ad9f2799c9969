//! SIGTERM drains: `/readyz` turns 503 at once, clients are cut at the configured rate with a
//! reason socket.io-client reconnects on, and the process exits 0.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use iogate_testkit::{Fleet, Node, wait_for};
use serde_json::json;

const CLIENTS: usize = 200;
const RATE: u64 = 100;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[test]
fn sigterm_drains_at_the_configured_rate_and_exits_zero() {
    let yaml = format!("drain:\n  grace: 1s\n  rate: {RATE}\n  timeout: 20s\n");
    let mut node = Node::start_with_config("drainer", &["--redis-url", "none"], Some(&yaml));
    let mut fleet = Fleet::start();
    // Half WebSocket, half long-polling.
    fleet.connect("ws", &node.url(), CLIENTS / 2, &["websocket"]);
    fleet.connect("poll", &node.url(), CLIENTS / 2, &["polling"]);
    assert_eq!(
        node.metric("iogate_node_sockets{transport=\"websocket\"}"),
        (CLIENTS / 2) as f64
    );
    assert_eq!(
        node.metric("iogate_node_sockets{transport=\"polling\"}"),
        (CLIENTS / 2) as f64
    );

    let t_signal = now_ms();
    node.signal("TERM");
    let start = Instant::now();
    wait_for(
        Duration::from_millis(500),
        "/readyz 503 right after SIGTERM",
        || (node.get("/readyz").0 == 503).then_some(()),
    );
    let readyz_503_after = start.elapsed();
    // New sessions are refused while draining.
    assert_eq!(node.get("/socket.io/?EIO=4&transport=polling").0, 503);

    let status = wait_for(Duration::from_secs(15), "every client disconnected", || {
        let st = fleet.status();
        st.values()
            .all(|c| c["connected"] == json!(false))
            .then_some(st)
    });
    let exit = wait_for(Duration::from_secs(20), "process exit", || node.try_wait());
    assert!(exit.success(), "exit status {exit:?}");

    let mut times: Vec<u64> = Vec::new();
    for (name, c) in &status {
        let d = &c["disconnects"][0];
        let reason = d["reason"].as_str().unwrap_or_default();
        assert!(
            reason == "transport close",
            "{name} disconnected with {reason:?}, expected the paced \"transport close\""
        );
        times.push(d["t"].as_u64().unwrap_or(0));
    }
    times.sort_unstable();
    let first = times[0] - t_signal;
    let spread = times[times.len() - 1] - times[0];
    let max_in_200ms = times
        .iter()
        .enumerate()
        .map(|(i, t)| times[i..].iter().take_while(|u| **u < t + 200).count())
        .max()
        .unwrap_or(0);
    eprintln!(
        "drain: readyz 503 after {readyz_503_after:?}; first disconnect {first} ms after SIGTERM; \
         {CLIENTS} clients over {spread} ms; max {max_in_200ms} in any 200 ms"
    );
    assert!(
        first >= 900,
        "disconnects began {first} ms after SIGTERM, before the 1 s grace"
    );
    // 200 clients at 100/s take about 2 s; all at once would be ~0.
    assert!(spread >= 1200, "disconnects spread over only {spread} ms");
    assert!(
        max_in_200ms <= 2 * (RATE as usize / 5) + 10,
        "burst of {max_in_200ms} in 200 ms"
    );
}

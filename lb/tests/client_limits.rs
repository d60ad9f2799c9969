//! Per-client limits against one misbehaving address while another is served: open TCP
//! connections per IP (counted from accept to close, refused at accept), new sessions per
//! second per IP, and each IP's share of the sid table. Source addresses 127.0.0.1 and
//! 127.0.0.2 are two clients (loopback answers the whole 127/8).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use iogate_testkit::{Lb, Node, curl, free_port, lb_yaml, wait_for};

const HANDSHAKE: &str = "/socket.io/?EIO=4&transport=polling";

/// A polling handshake from `source`: (status, body, Retry-After).
fn handshake_from(port: u16, source: &str) -> (u16, String, Option<String>) {
    let r = curl(
        &format!("http://127.0.0.1:{port}{HANDSHAKE}"),
        None,
        None,
        &["--interface", source],
    );
    let after = r.header("retry-after").map(str::to_string);
    (r.status, r.body, after)
}

#[test]
fn tcp_connections_per_ip_are_counted_from_accept_to_close() {
    let _serial = iogate_testkit::heavy();
    let node = Node::start("c1", &["--redis-url", "none"]);
    let (port, admin) = (free_port(), free_port());
    let extra = "limits:\n  max_tcp_connections_per_ip: 3\n";
    let lb = Lb::start(
        port,
        admin,
        &lb_yaml(port, admin, &[("c1", node.port)], extra),
        true,
    );
    let open = || lb.metric("iogate_lb_client_connections");
    let refused = || lb.metric("iogate_lb_rejected_total{reason=\"tcp_connections_per_ip\"}");
    assert_eq!(refused(), 0.0);
    // The limit itself is exported, for alerts that compare usage with it.
    assert_eq!(
        lb.metric("iogate_lb_limit{limit=\"max_tcp_connections_per_ip\"}"),
        3.0
    );
    assert_eq!(
        lb.metric("iogate_lb_limit{limit=\"max_tcp_connections\"}"),
        0.0
    );
    // Three connections that never send a byte: nginx's limit_conn would not count them.
    let mut held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    wait_for(Duration::from_secs(5), "3 open client connections", || {
        (open() == 3.0).then_some(())
    });
    // The fourth is closed at accept, before any response.
    let mut fourth = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    fourth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = fourth.write_all(
        format!("GET {HANDSHAKE} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let mut buf = [0u8; 64];
    match fourth.read(&mut buf) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!(
            "the 4th connection got an answer: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
    wait_for(Duration::from_secs(5), "the refusal counted", || {
        (refused() == 1.0).then_some(())
    });
    assert_eq!(open(), 3.0, "a refused connection is not counted as open");
    // Another address is served meanwhile.
    let (status, body, _) = handshake_from(port, "127.0.0.2");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("0{\"sid\":\"c1."), "{body}");
    // Closing one frees its slot: the next connection from 127.0.0.1 is answered.
    held.pop();
    wait_for(Duration::from_secs(5), "2 open client connections", || {
        (open() == 2.0).then_some(())
    });
    let (status, body, _) = handshake_from(port, "127.0.0.1");
    assert_eq!(status, 200, "{body}");
    assert_eq!(refused(), 1.0);
    drop(held);
    wait_for(Duration::from_secs(5), "no open client connection", || {
        (open() == 0.0).then_some(())
    });
}

/// An LB with `extra` over `node`: 2 handshakes from 127.0.0.1 pass, the third is refused
/// with `body` and counted as `reason`, and 127.0.0.2 is still served. Returns the LB.
fn one_address_over_its_limit(node: &Node, extra: &str, body: &str, reason: &str) -> Lb {
    let (port, admin) = (free_port(), free_port());
    let lb = Lb::start(
        port,
        admin,
        &lb_yaml(port, admin, &[(node.id.as_str(), node.port)], extra),
        true,
    );
    for _ in 0..2 {
        assert_eq!(handshake_from(port, "127.0.0.1").0, 200);
    }
    let (status, got, after) = handshake_from(port, "127.0.0.1");
    assert_eq!(
        (status, got.as_str(), after.as_deref()),
        (503, body, Some("1"))
    );
    assert_eq!(handshake_from(port, "127.0.0.2").0, 200, "another address");
    assert_eq!(
        lb.metric(&format!("iogate_lb_rejected_total{{reason=\"{reason}\"}}")),
        1.0
    );
    lb
}

#[test]
fn new_sessions_per_ip_and_sid_table_share_per_ip() {
    let _serial = iogate_testkit::heavy();
    let node = Node::start("s1", &["--redis-url", "none"]);
    // The rate: a burst of 2 per address, refilled at 1/s; the global rate is not touched.
    let lb = one_address_over_its_limit(
        &node,
        "limits:\n  new_sessions_per_second_per_ip: 1\n  new_sessions_burst_per_ip: 2\n",
        "too many new sessions from this address\n",
        "new_session_rate_per_ip",
    );
    assert_eq!(
        lb.metric("iogate_lb_rejected_total{reason=\"new_session_rate\"}"),
        0.0
    );
    drop(lb);
    // The share of the sid table: 2 polling sessions per address.
    let lb = one_address_over_its_limit(
        &node,
        "engineio:\n  sid_table_max_per_ip: 2\n",
        "too many sessions from this address\n",
        "sid_table_full_per_ip",
    );
    assert_eq!(lb.metric("iogate_lb_sid_table_entries"), 3.0);
}

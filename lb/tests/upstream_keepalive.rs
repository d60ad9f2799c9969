//! Keep-alive connections to the backends: requests reuse them, one the backend closes while it
//! is idle is neither reused nor left open on the LB's side, and a reload's limits reach the
//! pool.
//!
//! The backend is the Node.js socket.io reference server, whose HTTP server closes a keep-alive
//! connection after 5 s without a request (Node's `server.keepAliveTimeout` default) — what
//! any upstream with an idle timeout shorter than the LB's does.

use std::process::Command;
use std::time::{Duration, Instant};

use iogate_testkit::{Lb, Node, free_port, http_get, wait_for};

/// Sockets of process `pid` connected to 127.0.0.1:`port`, by TCP state (as `ss` names them).
fn sockets_to(pid: u32, port: u16) -> Vec<String> {
    let out = Command::new("ss")
        .args(["-Htanp", "dst", &format!("127.0.0.1:{port}")])
        .output()
        .expect("run ss (iproute2)");
    assert!(out.status.success(), "ss failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn handshake_through(lb: &Lb) {
    let (status, body) = http_get(lb.port, "/socket.io/?EIO=4&transport=polling").expect("answer");
    assert_eq!(status, 200, "handshake through the LB: {body}");
    assert!(
        body.starts_with("0{\"sid\":"),
        "an Engine.IO open packet: {body}"
    );
}

#[test]
fn keepalive_connections_are_reused_and_dropped_when_the_backend_closes_them() {
    let _serial = iogate_testkit::heavy();
    let node = Node::start_js("ka1");
    let (port, admin) = (free_port(), free_port());
    // No active checks: every connection from the LB to the backend is the proxy's.
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:{port}\nadmin:\n  listen: 127.0.0.1:{admin}\n\
         health:\n  active:\n    enabled: false\n\
         upstreams:\n  - id: ka1\n    address: 127.0.0.1:{}\n",
        node.port
    );
    let lb = Lb::start(port, admin, &yaml, true);
    let new = "iogate_lb_upstream_connections_total{backend=\"ka1\",reuse=\"new\"}";
    let reused = "iogate_lb_upstream_connections_total{backend=\"ka1\",reuse=\"reused\"}";
    assert_eq!(lb.metric(new) + lb.metric(reused), 0.0);

    // 40 requests one after another, each from a new client connection.
    for _ in 0..40 {
        handshake_through(&lb);
    }
    let (n, r) = (lb.metric(new), lb.metric(reused));
    eprintln!("40 requests: {n} new upstream connections, {r} reused");
    assert_eq!(n + r, 40.0, "every request counted once");
    assert!(
        r >= 35.0,
        "sequential requests reuse the idle connection: {n} new, {r} reused"
    );
    let pid = lb.pid();
    let open = sockets_to(pid, node.port);
    assert!(
        !open.is_empty() && open.iter().all(|s| s == "ESTAB"),
        "the LB keeps its idle upstream connection open: {open:?}"
    );

    // The backend closes the idle connection after 5 s; the LB's pool sees the close and
    // closes its side too, instead of holding it in CLOSE-WAIT until the next request.
    let idle_from = Instant::now();
    wait_for(
        Duration::from_secs(15),
        "the LB to let go of the closed upstream connection",
        || {
            sockets_to(pid, node.port)
                .iter()
                .all(|s| s != "ESTAB" && s != "CLOSE-WAIT")
                .then_some(())
        },
    );
    let took = idle_from.elapsed();
    eprintln!("upstream connection gone from the LB {took:?} after the last request");
    assert!(
        took >= Duration::from_secs(4),
        "the backend, not the LB, ends the idle connection (after its 5 s): gone after {took:?}"
    );

    // The next request goes over a new connection, not the closed one, and is answered.
    handshake_through(&lb);
    assert_eq!(
        lb.metric(new),
        n + 1.0,
        "a new connection for the request after the close"
    );
    assert_eq!(lb.metric(reused), r, "the closed connection was not reused");

    // A reload that keeps no idle connection reaches the pool: once the connection idle at
    // the reload has been used, every request connects anew.
    let reloads = lb.metric("iogate_lb_config_reloads_total{result=\"ok\"}");
    lb.rewrite(&format!(
        "{yaml}upstream_keepalive:\n  idle_per_backend: 0\n"
    ));
    wait_for(Duration::from_secs(10), "the reload", || {
        (lb.metric("iogate_lb_config_reloads_total{result=\"ok\"}") > reloads).then_some(())
    });
    handshake_through(&lb);
    let (n, r) = (lb.metric(new), lb.metric(reused));
    for _ in 0..5 {
        handshake_through(&lb);
    }
    assert_eq!(
        (lb.metric(new), lb.metric(reused)),
        (n + 5.0, r),
        "idle_per_backend: 0 after the reload keeps no connection to reuse"
    );
}

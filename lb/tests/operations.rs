//! Operating iogate-lb: a node killed under load, reloads that touch no live socket, invalid
//! reloads, limits, WebSocket bursts, messages of every size through the tunnel, and plain Node.js socket.io servers as backends.

use std::time::{Duration, Instant};

use iogate_testkit::{Fleet, Lb, Node, Redis, free_port, http_get, lb_yaml, wait_for};
use serde_json::json;

fn ups(nodes: &[&Node]) -> Vec<(String, u16)> {
    nodes.iter().map(|n| (n.id.clone(), n.port)).collect()
}

fn yaml(port: u16, admin: u16, ups: &[(String, u16)], extra: &str) -> String {
    let u: Vec<(&str, u16)> = ups.iter().map(|(i, p)| (i.as_str(), *p)).collect();
    lb_yaml(port, admin, &u, extra)
}

#[test]
fn killed_node_leaves_rotation_and_returns_after_checks() {
    let _serial = iogate_testkit::heavy();
    let redis = Redis::start();
    let a = Node::start("k1", &["--redis-url", &redis.url()]);
    let b = Node::start("k2", &["--redis-url", &redis.url()]);
    let mut c = Node::start("k3", &["--redis-url", &redis.url()]);
    let c_port = c.port;
    let (port, admin) = (free_port(), free_port());
    let lb = Lb::start(
        port,
        admin,
        &yaml(port, admin, &ups(&[&a, &b, &c]), ""),
        true,
    );
    let mut fleet = Fleet::start();
    fleet.cmd(
        json!({"cmd": "connect", "name": "c", "url": lb.url(), "count": 300,
                     "transports": ["websocket"], "reconnection": true}),
    );
    assert!(lb.backend("k3")["live_sessions"].as_i64().unwrap_or(0) > 50);

    c.signal("KILL");
    let _ = c.try_wait();
    let t = Instant::now();
    wait_for(
        Duration::from_secs(2),
        "k3 out of rotation within 2 s",
        || (lb.backend("k3")["state"] == json!("down")).then_some(()),
    );
    eprintln!("killed node marked down after {:?}", t.elapsed());
    // Every client is connected again, to the two live nodes.
    wait_for(Duration::from_secs(20), "all clients reconnected", || {
        fleet
            .status()
            .values()
            .all(|s| s["connected"] == json!(true))
            .then_some(())
    });
    let live: i64 = ["k1", "k2"]
        .iter()
        .map(|id| lb.backend(id)["live_sessions"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(live, 300);
    assert_eq!(lb.backend("k3")["live_sessions"], json!(0));

    // Restart it where it was: it takes sessions again once its checks pass.
    let _c2 = Node::start_on("k3", c_port, &["--redis-url", &redis.url()]);
    wait_for(Duration::from_secs(5), "k3 back up", || {
        (lb.backend("k3")["state"] == json!("up")).then_some(())
    });
    fleet.connect("late", &lb.url(), 30, &["websocket"]);
    assert!(
        lb.backend("k3")["live_sessions"].as_i64().unwrap_or(0) >= 20,
        "{}",
        lb.backend("k3")
    );
}

#[test]
fn reload_touches_no_live_socket_and_invalid_reloads_keep_the_old_config() {
    let _serial = iogate_testkit::heavy();
    let redis = Redis::start();
    let a = Node::start("r1", &["--redis-url", &redis.url()]);
    let b = Node::start("r2", &["--redis-url", &redis.url()]);
    let c = Node::start("r3", &["--redis-url", &redis.url()]);
    let d = Node::start("r4", &["--redis-url", &redis.url()]);
    let (port, admin) = (free_port(), free_port());
    let lb = Lb::start(
        port,
        admin,
        &yaml(port, admin, &ups(&[&a, &b, &c]), ""),
        true,
    );
    let mut fleet = Fleet::start();
    fleet.connect("ws", &lb.url(), 300, &["websocket"]);
    let r3_live = lb.backend("r3")["live_sessions"].as_i64().unwrap_or(0);
    assert!(r3_live > 50);

    // Remove r3, add r4.
    lb.rewrite(&yaml(port, admin, &ups(&[&a, &b, &d]), ""));
    wait_for(Duration::from_secs(5), "reload applied", || {
        (lb.backend("r4")["state"] == json!("up")).then_some(())
    });
    assert_eq!(lb.backend("r3")["state"], json!("draining"));
    assert_eq!(lb.backend("r3")["live_sessions"], json!(r3_live));
    std::thread::sleep(Duration::from_millis(500));
    let st = fleet.status();
    assert!(
        st.values()
            .all(|c| c["connected"] == json!(true) && c["disconnects"] == json!([])),
        "a reload disconnected a client"
    );
    // Sessions on the removed backend still work.
    for i in 0..300 {
        let who = fleet.emit_ack(&format!("ws#{i}"), "whoami", json!([]), 3000);
        assert!(who["node"].is_string());
    }
    assert_eq!(
        lb.metric("iogate_lb_config_reloads_total{result=\"ok\"}"),
        1.0
    );

    // An invalid file: the old config (with r4) stays whole.
    lb.rewrite("listeners:\n  - address: 127.0.0.1:1\nupstreams:\n  - id: x\n    address: nowhere\n    bogus: 1\n");
    wait_for(Duration::from_secs(5), "reload rejected", || {
        (lb.metric("iogate_lb_config_reloads_total{result=\"error\"}") >= 1.0).then_some(())
    });
    assert_eq!(lb.backend("r4")["state"], json!("up"));
    fleet.connect("after", &lb.url(), 10, &["websocket"]);
    assert!(
        fleet
            .status()
            .values()
            .all(|c| c["disconnects"] == json!([]))
    );

    // When the removed backend's sockets end, it leaves the listing.
    fleet.cmd(json!({"cmd": "close", "prefix": "ws"}));
    wait_for(Duration::from_secs(5), "r3 reaped", || {
        lb.backend("r3").is_null().then_some(())
    });
}

#[test]
fn per_ip_limit_and_new_session_rate_answer_503_with_retry_after() {
    let _serial = iogate_testkit::heavy();
    let node = Node::start("l1", &["--redis-url", "none"]);

    // Rate: a burst of 3 passes, then handshakes are refused with Retry-After.
    let (port, admin) = (free_port(), free_port());
    // Operational paths forwarded (blocked by default), so /healthz stands for any request that
    // is not Engine.IO.
    let extra = "exposure:\n  blocked_paths: []\nlimits:\n  new_sessions_per_second: 1\n  new_sessions_burst: 3\n";
    let lb = Lb::start(
        port,
        admin,
        &yaml(port, admin, &[("l1".into(), node.port)], extra),
        true,
    );
    let codes: Vec<u16> = (0..4)
        .map(|_| {
            http_get(port, "/socket.io/?EIO=4&transport=polling")
                .map(|r| r.0)
                .unwrap_or(0)
        })
        .collect();
    assert_eq!(codes, vec![200, 200, 200, 503]);
    let raw = iogate_testkit::http_raw(
        port,
        "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        raw.starts_with("HTTP/1.1 503") && raw.to_ascii_lowercase().contains("retry-after: 1"),
        "{raw}"
    );
    assert!(lb.metric("iogate_lb_rejected_total{reason=\"new_session_rate\"}") >= 2.0);
    // Requests of existing sessions and non-Engine.IO requests are not rate limited.
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));
    drop(lb);

    // Per IP: hold 5 WebSockets open, the 6th request is refused.
    let (port, admin) = (free_port(), free_port());
    let extra = "exposure:\n  blocked_paths: []\nlimits:\n  max_connections_per_ip: 5\n";
    let lb = Lb::start(
        port,
        admin,
        &yaml(port, admin, &[("l1".into(), node.port)], extra),
        true,
    );
    let mut fleet = Fleet::start();
    fleet.connect("ip", &lb.url(), 5, &["websocket"]);
    let raw = iogate_testkit::http_raw(
        port,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        raw.starts_with("HTTP/1.1 503") && raw.to_ascii_lowercase().contains("retry-after: 1"),
        "{raw}"
    );
    assert!(lb.metric("iogate_lb_rejected_total{reason=\"max_connections_per_ip\"}") >= 1.0);
    // Closing one frees a slot.
    fleet.cmd(json!({"cmd": "close", "prefix": "ip"}));
    wait_for(Duration::from_secs(5), "slots freed", || {
        (http_get(port, "/healthz").map(|r| r.0) == Some(200)).then_some(())
    });
}

/// The tunnel reads with a small buffer that grows only while reads fill it (vendored
/// pingora-core): messages of every size, across the growth and back, arrive whole and in order.
#[test]
fn websocket_tunnel_carries_small_and_large_messages_whole() {
    let _serial = iogate_testkit::heavy();
    let a = Node::start("t1", &["--redis-url", "none"]);
    let (port, admin) = (free_port(), free_port());
    let lb = Lb::start(port, admin, &yaml(port, admin, &ups(&[&a]), ""), true);
    let mut fleet = Fleet::start();
    fleet.connect("t", &lb.url(), 1, &["websocket"]);
    for (i, len) in [5usize, 1000, 1500, 70_000, 5, 300_000, 900, 2]
        .into_iter()
        .enumerate()
    {
        let text: String = (0..len)
            .map(|k| char::from(b'a' + ((k + i) % 26) as u8))
            .collect();
        let back = fleet.emit_ack("t#0", "echo", json!([text]), 10_000);
        assert_eq!(back.as_str().map(str::len), Some(len), "message {i}");
        assert_eq!(back, json!(text), "message {i} ({len} bytes)");
    }
}

#[test]
fn websocket_burst_none_closed_after_101() {
    let _serial = iogate_testkit::heavy();
    let redis = Redis::start();
    let a = Node::start("b1", &["--redis-url", &redis.url()]);
    let b = Node::start("b2", &["--redis-url", &redis.url()]);
    let (port, admin) = (free_port(), free_port());
    let lb = Lb::start(port, admin, &yaml(port, admin, &ups(&[&a, &b]), ""), true);
    let mut fleet = Fleet::start();
    fleet.connect("burst", &lb.url(), 500, &["websocket"]);
    std::thread::sleep(Duration::from_secs(1));
    let st = fleet.status();
    let closed: Vec<_> = st
        .iter()
        .filter(|(_, c)| c["disconnects"] != json!([]))
        .map(|(k, _)| k.clone())
        .collect();
    assert!(
        closed.is_empty(),
        "closed right after connecting: {closed:?}"
    );
    let live = |lb: &Lb| {
        lb.metric("iogate_lb_websockets{backend=\"b1\"}")
            + lb.metric("iogate_lb_websockets{backend=\"b2\"}")
    };
    assert_eq!(live(&lb), 500.0);
    // Each tunnel's request is logged at its 101, not when the tunnel ends.
    assert_eq!(
        lb.metric("iogate_lb_requests_total{backend=\"b1\",code=\"101\"}")
            + lb.metric("iogate_lb_requests_total{backend=\"b2\",code=\"101\"}"),
        500.0
    );
    // The tunnels' relay tasks hold the live counts and the connections: when the clients
    // leave, the counts come back to exactly 0 and the nodes see every socket go.
    fleet.cmd(json!({"cmd": "close", "prefix": "burst"}));
    wait_for(Duration::from_secs(10), "every tunnel uncounted", || {
        (live(&lb) == 0.0).then_some(())
    });
    wait_for(
        Duration::from_secs(10),
        "every socket gone from the nodes",
        || {
            let on = |n: &Node| n.metric("iogate_node_sockets{transport=\"websocket\"}");
            (on(&a) + on(&b) == 0.0).then_some(())
        },
    );
    assert_eq!(live(&lb), 0.0, "a tunnel was uncounted twice");
}

#[test]
fn polling_through_the_lb_to_nodejs_socketio_servers() {
    let _serial = iogate_testkit::heavy();
    let a = Node::start_js("js1");
    let b = Node::start_js("js2");
    let (port, admin) = (free_port(), free_port());
    let lb = Lb::start(port, admin, &yaml(port, admin, &ups(&[&a, &b]), ""), true);
    let mut fleet = Fleet::start();
    fleet.cmd(json!({"cmd": "connect", "name": "p", "url": lb.url(), "count": 100, "transports": ["polling"]}));
    fleet.cmd(json!({"cmd": "connect", "name": "u", "url": lb.url(), "count": 100, "transports": ["polling", "websocket"]}));
    let mut per_node = std::collections::BTreeMap::new();
    for round in 0..2 {
        for prefix in ["p", "u"] {
            for i in 0..100 {
                let c = format!("{prefix}#{i}");
                let who = fleet.emit_ack(&c, "whoami", json!([]), 3000);
                let node = who["node"].as_str().unwrap_or_default().to_string();
                if round == 0 {
                    per_node.insert(c, node);
                } else {
                    assert_eq!(per_node[&c], node, "{c} moved");
                }
            }
        }
    }
    assert!(
        fleet
            .status()
            .values()
            .all(|c| c["disconnects"] == json!([]) && c["connects"] == json!(1))
    );
    assert_eq!(lb.sid_400s(), 0.0);
    let on_js1 = per_node.values().filter(|n| *n == "js1").count();
    assert!((80..=120).contains(&on_js1), "js1 holds {on_js1} of 200");
}

//! Routing through iogate-lb to real iogate-node processes with the official socket.io-client:
//! sid stickiness for polling and upgrades, least-connections spread, unknown sids.

use std::collections::BTreeMap;
use std::time::Duration;

use iogate_testkit::{Fleet, Lb, Node, Redis, free_port, http_get, lb_yaml, wait_for};
use serde_json::{Value, json};

fn nodes(redis: &Redis, ids: &[&str]) -> Vec<Node> {
    ids.iter()
        .map(|id| Node::start(id, &["--redis-url", &redis.url()]))
        .collect()
}

fn ups(nodes: &[Node]) -> Vec<(&str, u16)> {
    nodes.iter().map(|n| (n.id.as_str(), n.port)).collect()
}

/// `whoami` for every client of `prefix` with `n` clients: client -> node.
fn whoami_all(fleet: &mut Fleet, prefix: &str, n: usize) -> BTreeMap<String, String> {
    (0..n)
        .map(|i| {
            let c = format!("{prefix}#{i}");
            let who = fleet.emit_ack(&c, "whoami", json!([]), 3000);
            (c, who["node"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

#[test]
fn polling_and_upgrade_sessions_stick_to_their_node() {
    let _serial = iogate_testkit::heavy();
    let redis = Redis::start();
    let ns = nodes(&redis, &["s1", "s2", "s3"]);
    let (port, admin) = (free_port(), free_port());
    let lb = Lb::start(port, admin, &lb_yaml(port, admin, &ups(&ns), ""), true);
    let mut fleet = Fleet::start();

    fleet.cmd(json!({"cmd": "connect", "name": "poll", "url": lb.url(), "count": 200, "transports": ["polling"]}));
    fleet.cmd(json!({"cmd": "connect", "name": "upg", "url": lb.url(), "count": 200, "transports": ["polling", "websocket"]}));
    // Let upgrades complete, then exercise every session with a request round trip.
    wait_for(Duration::from_secs(20), "upgrades done", || {
        let st = fleet.status();
        st.iter()
            .filter(|(k, _)| k.starts_with("upg#"))
            .all(|(_, v)| v["transport"] == json!("websocket"))
            .then_some(())
    });
    let first = whoami_all(&mut fleet, "poll", 200);
    let first_u = whoami_all(&mut fleet, "upg", 200);
    // A second round: the same node for every session.
    assert_eq!(first, whoami_all(&mut fleet, "poll", 200));
    assert_eq!(first_u, whoami_all(&mut fleet, "upg", 200));

    let st = fleet.status();
    for (name, c) in &st {
        assert_eq!(c["connected"], json!(true), "{name}");
        assert_eq!(c["disconnects"], json!([]), "{name} disconnected");
        assert_eq!(c["connects"], json!(1), "{name} reconnected");
    }
    assert_eq!(lb.sid_400s(), 0.0);
    // No backend answered 400: its code series never appeared, while its 200s did.
    let (_, body) = iogate_testkit::http_get(lb.admin_port, "/metrics").expect("metrics");
    for n in &ns {
        let series = |code: &str| {
            iogate_testkit::metric_value(
                &body,
                &format!(
                    "iogate_lb_requests_total{{backend=\"{}\",code=\"{code}\"}}",
                    n.id
                ),
            )
        };
        assert!(
            series("200").is_some_and(|v| v > 0.0),
            "{} served nothing",
            n.id
        );
        assert_eq!(series("400"), None, "{} answered 400", n.id);
    }
    // Every node served some sessions, and the LB's counts match the nodes' own.
    let b = lb.backends();
    let mut total = 0;
    for n in &ns {
        let (_, body) = n.get("/readyz");
        let on_node = serde_json::from_str::<Value>(&body).unwrap_or(Value::Null)["sockets"]
            .as_i64()
            .unwrap_or(0);
        let at_lb = b["backends"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["id"] == json!(n.id)))
            .map(|x| x["live_sessions"].as_i64().unwrap_or(0))
            .unwrap_or(0);
        assert!(on_node > 0, "{} got no session", n.id);
        assert_eq!(
            on_node, at_lb,
            "{}: node has {on_node} sockets, LB counts {at_lb}",
            n.id
        );
        total += on_node;
    }
    assert_eq!(total, 400);
}

#[test]
fn least_connections_spreads_websockets_and_new_nodes_take_new_sessions() {
    let _serial = iogate_testkit::heavy();
    let redis = Redis::start();
    let ns = nodes(&redis, &["w1", "w2", "w3"]);
    let (port, admin) = (free_port(), free_port());
    let lb = Lb::start(port, admin, &lb_yaml(port, admin, &ups(&ns), ""), true);
    let mut fleet = Fleet::start();
    fleet.connect("ws", &lb.url(), 300, &["websocket"]);
    let mut spread = Vec::new();
    for n in &ns {
        let live = lb.backend(&n.id)["live_sessions"].as_i64().unwrap_or(0);
        spread.push(live);
        assert!((90..=110).contains(&live), "{} holds {live}", n.id);
    }
    eprintln!("least_conn spread over 3 nodes for 300 websockets: {spread:?}");

    // Add a 4th node by editing the config: the next 100 sessions all land on it.
    let n4 = Node::start("w4", &["--redis-url", &redis.url()]);
    let mut all = ups(&ns);
    all.push(("w4", n4.port));
    lb.rewrite(&lb_yaml(port, admin, &all, ""));
    wait_for(Duration::from_secs(10), "w4 up", || {
        (lb.backend("w4")["state"] == json!("up")).then_some(())
    });
    fleet.connect("new", &lb.url(), 100, &["websocket"]);
    let who = whoami_all(&mut fleet, "new", 100);
    assert!(who.values().all(|n| n == "w4"), "{who:?}");
    assert_eq!(lb.backend("w4")["live_sessions"], json!(100));
    // Nothing was disconnected by the reload.
    assert!(
        fleet
            .status()
            .values()
            .all(|c| c["disconnects"] == json!([]))
    );
}

#[test]
fn unknown_sid_gets_the_engineio_error() {
    let _serial = iogate_testkit::heavy();
    let node = Node::start("u1", &["--redis-url", "none"]);
    let (port, admin) = (free_port(), free_port());
    let _lb = Lb::start(
        port,
        admin,
        &lb_yaml(port, admin, &[("u1", node.port)], ""),
        true,
    );
    let (code, body) =
        http_get(port, "/socket.io/?EIO=4&transport=polling&sid=doesnotexist").expect("response");
    assert_eq!(code, 400);
    assert_eq!(body, r#"{"code":1,"message":"Session ID unknown"}"#);
}

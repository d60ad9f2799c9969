//! Three iogate-node processes on one real redis-server, driven by the official
//! socket.io-client over both transports.

use std::collections::BTreeMap;
use std::time::Duration;

use iogate_testkit::{Fleet, Node, Redis, wait_for};
use serde_json::{Value, json};

fn cluster(redis: &Redis) -> Vec<Node> {
    ["n1", "n2", "n3"]
        .iter()
        .map(|id| Node::start(id, &["--redis-url", &redis.url()]))
        .collect()
}

/// Wait until every client has `expected` events named `event`, then return them.
fn wait_events(
    fleet: &mut Fleet,
    event: &str,
    clients: usize,
    expected: usize,
) -> BTreeMap<String, Vec<Value>> {
    wait_for(
        Duration::from_secs(10),
        &format!("{expected} `{event}` on {clients} clients"),
        || {
            let ev = fleet.events(event);
            let done = ev.len() == clients
                && ev
                    .values()
                    .all(|v| v.as_array().map_or(0, |a| a.len()) >= expected);
            done.then(|| {
                ev.into_iter()
                    .map(|(k, v)| (k, v.as_array().cloned().unwrap_or_default()))
                    .collect()
            })
        },
    )
}

fn run_cluster_contract(transports: &[&str]) {
    let redis = Redis::start();
    let nodes = cluster(&redis);
    let mut fleet = Fleet::start();
    // Two clients per node; the "a" clients start in room "red" (auth), the "b" clients do not.
    for n in &nodes {
        fleet.cmd(
            json!({"cmd": "connect", "name": format!("{}a", n.id), "url": n.url(),
                         "count": 1, "transports": transports, "auth": {"room": "red"}}),
        );
        fleet.cmd(
            json!({"cmd": "connect", "name": format!("{}b", n.id), "url": n.url(),
                         "count": 1, "transports": transports}),
        );
    }
    let clients = 6;

    // whoami names the node each client is on, and the socket's own room.
    for n in &nodes {
        let who = fleet.emit_ack(&format!("{}a#0", n.id), "whoami", json!([]), 2000);
        assert_eq!(who["node"], json!(n.id), "{who}");
        let sid = who["sid"].as_str().unwrap_or_default().to_string();
        let rooms: Vec<String> = serde_json::from_value(who["rooms"].clone()).unwrap_or_default();
        assert!(
            rooms.contains(&sid) && rooms.contains(&"red".to_string()),
            "{who}"
        );
    }

    // The nodes see each other through Redis before we broadcast.
    iogate_testkit::wait_bus_up(&nodes);

    // A broadcast from a client on n1 reaches every client on every node exactly once.
    fleet.emit(
        "n1a#0",
        "chat:message",
        json!([{"text": "hello", "seq": 1}]),
    );
    let got = wait_events(&mut fleet, "chat:message", clients, 1);
    std::thread::sleep(Duration::from_millis(300)); // let any duplicate arrive
    let got_after = fleet.events("chat:message");
    for (client, events) in &got {
        assert_eq!(events.len(), 1, "{client} got {events:?}");
        assert_eq!(events[0], json!([{"text": "hello", "seq": 1}]));
        assert_eq!(
            got_after[client].as_array().map(|a| a.len()),
            Some(1),
            "{client} duplicate"
        );
    }

    // A room message from n3 reaches only the room members, on all nodes.
    fleet.clear();
    fleet.emit(
        "n3b#0",
        "room:message",
        json!([{"room": "red", "data": "only red"}]),
    );
    let expected = json!([{"room": "red", "data": "only red"}]);
    wait_for(
        Duration::from_secs(10),
        "room message on every red client",
        || {
            let ev = fleet.events("room:message");
            nodes
                .iter()
                .all(|n| {
                    ev.get(&format!("{}a#0", n.id))
                        .and_then(|v| v.as_array())
                        .is_some_and(|a| a.len() == 1)
                })
                .then_some(())
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    let ev = fleet.events("room:message");
    for n in &nodes {
        assert_eq!(ev[&format!("{}a#0", n.id)], json!([expected]));
        assert_eq!(
            ev[&format!("{}b#0", n.id)],
            json!([]),
            "non-member got a room message"
        );
    }

    // join over the wire, then the joined client on n2 receives a room message sent from n1.
    assert_eq!(
        fleet.emit_ack("n2b#0", "join", json!(["blue"]), 2000),
        json!(true)
    );
    fleet.clear();
    fleet.emit(
        "n1b#0",
        "room:message",
        json!([{"room": "blue", "data": 42}]),
    );
    wait_for(Duration::from_secs(10), "blue room message", || {
        let ev = fleet.events("room:message");
        ev.get("n2b#0")
            .and_then(|v| v.as_array())
            .is_some_and(|a| a.len() == 1)
            .then_some(())
    });

    // echo with and without an ack; ping:ts.
    assert_eq!(
        fleet.emit_ack("n2a#0", "echo", json!([{"x": [1, 2]}]), 2000),
        json!({"x": [1, 2]})
    );
    fleet.clear();
    fleet.emit("n2a#0", "echo", json!(["back"]));
    wait_events_single(&mut fleet, "n2a#0", "echo", json!(["back"]));
    let pong = fleet.emit_ack("n3a#0", "ping:ts", json!([123]), 2000);
    assert_eq!(pong["ts"], json!(123));
    assert_eq!(pong["node"], json!("n3"));
    assert!(pong["serverTs"].as_u64().is_some_and(|t| t > 0));

    // io.to(sid) from another node reaches exactly that socket.
    let target = fleet.emit_ack("n3b#0", "whoami", json!([]), 2000)["sid"].clone();
    fleet.clear();
    fleet.emit(
        "n1a#0",
        "room:message",
        json!([{"room": target, "data": "direct"}]),
    );
    wait_events_single(
        &mut fleet,
        "n3b#0",
        "room:message",
        json!([{"room": target, "data": "direct"}]),
    );

    // Metrics count what happened.
    let n1 = &nodes[0];
    assert!(n1.metric("iogate_node_connects_total") >= 2.0);
    assert!(n1.metric("iogate_node_events_total{event=\"chat:message\"}") >= 1.0);
    assert!(n1.metric("iogate_node_bus_published_total") >= 1.0);
    assert!(nodes[1].metric("iogate_node_bus_received_total") >= 1.0);
    let (code, body) = n1.get("/readyz");
    assert_eq!(code, 200);
    let ready: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_eq!(ready["bus"], json!("up"));
    assert_eq!(ready["node"], json!("n1"));
    assert_eq!(ready["sockets"], json!(2));
}

fn wait_events_single(fleet: &mut Fleet, client: &str, event: &str, expected: Value) {
    wait_for(
        Duration::from_secs(10),
        &format!("{event} on {client}"),
        || {
            let ev = fleet.events(event);
            (ev.get(client) == Some(&json!([expected.clone()]))).then_some(())
        },
    );
}

#[test]
fn cluster_contract_over_websocket() {
    run_cluster_contract(&["websocket"]);
}

#[test]
fn cluster_contract_over_polling() {
    run_cluster_contract(&["polling"]);
}

#[test]
fn malformed_input_closes_only_that_client() {
    let node = Node::start("solo", &["--redis-url", "none"]);
    let mut fleet = Fleet::start();
    fleet.connect("good", &node.url(), 1, &["websocket"]);

    // Garbage on the Engine.IO path: a clear 4xx, never a crash.
    for path in [
        "/socket.io/?EIO=4&transport=polling&sid=nope",
        "/socket.io/?EIO=99&transport=polling",
        "/socket.io/?transport=bogus",
    ] {
        let (code, _) = node.get(path);
        assert!((400..500).contains(&code), "{path} -> {code}");
    }
    // A polling session that posts an undecodable packet is closed, alone.
    let (code, body) = node.get("/socket.io/?EIO=4&transport=polling");
    assert_eq!(code, 200);
    let sid = body
        .split("\"sid\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("sid")
        .to_string();
    let resp = iogate_testkit::http_post(
        node.port,
        &format!("/socket.io/?EIO=4&transport=polling&sid={sid}"),
        "4{garbage",
    );
    assert!(resp.is_some());
    let oversized = "4".repeat(2_000_000);
    let _ = iogate_testkit::http_post(
        node.port,
        "/socket.io/?EIO=4&transport=polling&sid=unknown",
        &oversized,
    );

    // The good client is untouched and the node still answers.
    assert_eq!(
        fleet.emit_ack("good#0", "echo", json!(["still here"]), 2000),
        json!("still here")
    );
    assert_eq!(node.get("/healthz").0, 200);
    assert!(node.metric("iogate_node_engineio_rejected_total{code=\"400\"}") >= 3.0);
}

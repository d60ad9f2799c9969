//! Sessions survive the operations people run every day: a node's paced drain, a binary upgrade
//! of the LB, two LB replicas behind an L4 round-robin, and the quick form in front of plain
//! Node.js socket.io servers. Real processes: Redis, iogate-node, iogate-lb, HAProxy, socket.io
//! from npm; the official socket.io-client and iogate-loadtest (exact message accounting).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use iogate_testkit::{
    Fleet, Haproxy, Lb, Loadtest, Node, Redis, accounting, free_port, lb_yaml, wait_bus_up,
    wait_for,
};
use serde_json::{Value, json};

fn yaml(port: u16, admin: u16, nodes: &[&Node], extra: &str) -> String {
    let ups: Vec<(&str, u16)> = nodes.iter().map(|n| (n.id.as_str(), n.port)).collect();
    lb_yaml(port, admin, &ups, extra)
}

/// Which node each client of `prefixes` is on (`whoami` through the LB).
fn placement(fleet: &mut Fleet, prefixes: &[(&str, usize)]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (prefix, n) in prefixes {
        for i in 0..*n {
            let c = format!("{prefix}#{i}");
            let who = fleet.emit_ack(&c, "whoami", json!([]), 5000);
            out.insert(c, who["node"].as_str().unwrap_or_default().to_string());
        }
    }
    out
}

/// Broadcast through the LB (`transport`), reconnecting like socket.io-client.
fn broadcast(url: &str, transport: &str, clients: usize, duration: &str) -> Loadtest {
    Loadtest::spawn(&[
        "--url",
        url,
        "--scenario",
        "broadcast",
        "--transport",
        transport,
        "--clients",
        &clients.to_string(),
        "--total-rate",
        "4",
        "--duration",
        duration,
        "--reconnect",
        "--drain",
        "2s",
    ])
}

/// Echo with acks through the LB (for servers without a cluster adapter).
fn echo(url: &str, transport: &str, clients: usize, duration: &str, extra: &[&str]) -> Loadtest {
    let clients = clients.to_string();
    let mut args = vec![
        "--url",
        url,
        "--scenario",
        "echo",
        "--transport",
        transport,
        "--clients",
        &clients,
        "--total-rate",
        "40",
        "--duration",
        duration,
        "--reconnect",
    ];
    args.extend_from_slice(extra);
    Loadtest::spawn(&args)
}

/// Every client connected once and never lost its session; every message or ack arrived.
fn assert_no_loss(what: &str, s: &Value) {
    let clients = s["clients"].as_u64().unwrap_or(0);
    let lost = accounting(s, "lost");
    let (expected, received) = (accounting(s, "expected"), accounting(s, "received"));
    let (acks_sent, acks) = (accounting(s, "acks_sent"), accounting(s, "acks_received"));
    eprintln!(
        "{what}: connects {} of {clients} clients, reconnects {}, failures {}, disconnects {}, \
         messages lost {lost} of {expected}, acks {acks} of {acks_sent}",
        s["connects"], s["reconnects"], s["accounting"]["failures"], s["accounting"]["disconnects"]
    );
    assert!(clients > 0, "{what}: {s}");
    assert_eq!(s["connects"].as_u64(), Some(clients), "{what}: {s}");
    assert_eq!(s["reconnects"].as_u64(), Some(0), "{what}: {s}");
    assert_eq!(s["accounting"]["failures"], json!({}), "{what}");
    assert_eq!(lost, 0, "{what}: lost {lost} of {expected}");
    assert_eq!(received, expected, "{what}");
    assert_eq!(accounting(s, "duplicated"), 0, "{what}");
    assert_eq!(accounting(s, "acks_timed_out"), 0, "{what}");
    assert_eq!(acks, acks_sent, "{what}");
    assert!(
        expected > 0 || acks_sent > 0,
        "{what}: nothing was measured"
    );
}

fn live(lb: &Lb) -> i64 {
    lb.backends()["backends"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|b| b["live_sessions"].as_i64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn a_draining_node_keeps_its_sessions_until_it_moves_them_and_nobody_else_notices() {
    let _serial = iogate_testkit::heavy();
    let redis = Redis::start();
    // 100 sessions at 50/s: the drain takes about 2 s after a 2 s grace.
    let drain = "drain:\n  grace: 2s\n  rate: 50\n  timeout: 30s\n";
    let a = Node::start_with_config("dr1", &["--redis-url", &redis.url()], Some(drain));
    let b = Node::start_with_config("dr2", &["--redis-url", &redis.url()], Some(drain));
    wait_bus_up([&a, &b]);
    let (port, admin) = (free_port(), free_port());
    let lb = Lb::start(port, admin, &yaml(port, admin, &[&a, &b], ""), true);
    let mut fleet = Fleet::start();
    for (name, transports) in [("p", json!(["polling"])), ("w", json!(["websocket"]))] {
        fleet.cmd(
            json!({"cmd": "connect", "name": name, "url": lb.url(), "count": 100,
                         "transports": transports, "reconnection": true,
                         "reconnectionDelay": 100, "reconnectionDelayMax": 500}),
        );
    }
    let before = placement(&mut fleet, &[("p", 100), ("w", 100)]);
    let on_a: Vec<String> = before
        .iter()
        .filter(|(_, n)| *n == "dr1")
        .map(|(c, _)| c.clone())
        .collect();
    assert!(
        on_a.len() >= 60,
        "least-connections put {} of 200 on dr1",
        on_a.len()
    );

    let mut a = a;
    let t0 = Instant::now();
    a.signal("TERM");
    // Sample the LB's view of dr1 until the node has gone.
    let mut states = Vec::new();
    let exit = wait_for(Duration::from_secs(30), "dr1 drained and exited", || {
        let s = lb.backend("dr1")["state"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        if states.last() != Some(&s) {
            states.push(s);
        }
        a.try_wait()
    });
    assert!(exit.success(), "{exit:?}");
    let drained_in = t0.elapsed();
    wait_for(
        Duration::from_secs(20),
        "every client connected again",
        || {
            fleet
                .status()
                .values()
                .all(|c| c["connected"] == json!(true))
                .then_some(())
        },
    );
    let status = fleet.status();
    let after = placement(&mut fleet, &[("p", 100), ("w", 100)]);

    let mut times = Vec::new();
    for (c, node) in &before {
        let st = &status[c];
        let reasons: Vec<&str> = st["disconnects"]
            .as_array()
            .map(|d| d.iter().filter_map(|x| x["reason"].as_str()).collect())
            .unwrap_or_default();
        if node == "dr1" {
            assert_eq!(
                reasons,
                vec!["transport close"],
                "{c} left dr1 with {reasons:?}"
            );
            times.push(st["disconnects"][0]["t"].as_u64().unwrap_or(0));
            assert_eq!(after[c], "dr2", "{c} reconnected to {}", after[c]);
        } else {
            assert!(
                reasons.is_empty(),
                "{c} on dr2 was disconnected: {reasons:?}"
            );
            assert_eq!(after[c], "dr2");
        }
    }
    times.sort_unstable();
    let spread = times.last().copied().unwrap_or(0) - times.first().copied().unwrap_or(0);
    let sid_400s = lb.sid_400s();
    eprintln!(
        "drain behind the LB: {} clients moved over {spread} ms (drain done {drained_in:?} after SIGTERM), \
         LB states of dr1 {states:?}, 400s {sid_400s}",
        on_a.len()
    );
    assert_eq!(sid_400s, 0.0, "requests of live sessions got 400");
    assert_eq!(
        states.first().map(String::as_str),
        Some("up"),
        "states {states:?}"
    );
    assert!(
        states.iter().any(|s| s == "draining"),
        "dr1 never showed as draining: {states:?}"
    );
    // 60+ clients at 50/s: paced over more than a second, not cut at once.
    assert!(spread >= 1000, "disconnects spread over only {spread} ms");
}

#[test]
fn a_binary_upgrade_loses_no_session_and_no_message() {
    let _serial = iogate_testkit::heavy();
    let redis = Redis::start();
    let a = Node::start("up1", &["--redis-url", &redis.url()]);
    let b = Node::start("up2", &["--redis-url", &redis.url()]);
    wait_bus_up([&a, &b]);
    let (port, admin) = (free_port(), free_port());
    let extra = "shutdown:\n  grace: 120s\n";
    let mut lb = Lb::start(port, admin, &yaml(port, admin, &[&a, &b], extra), true);
    let polling = broadcast(&lb.url(), "polling", 150, "14s");
    let websocket = broadcast(&lb.url(), "websocket", 150, "14s");
    wait_for(Duration::from_secs(30), "300 live sessions", || {
        (live(&lb) == 300).then_some(())
    });
    let routed_before = lb.metric("iogate_lb_sid_routed_total{via=\"tag\"}");
    let old = lb.upgrade();
    // The new process serves the sessions from now on (its counters start at 0).
    wait_for(
        Duration::from_secs(10),
        "the new process routing polls",
        || {
            let now = lb.metric("iogate_lb_sid_routed_total{via=\"tag\"}");
            (now > 0.0 && now < routed_before).then_some(())
        },
    );
    let p = polling.finish(Duration::from_secs(60));
    let w = websocket.finish(Duration::from_secs(60));
    assert_no_loss("binary upgrade, 150 polling", &p);
    assert_no_loss("binary upgrade, 150 websocket", &w);
    eprintln!(
        "binary upgrade: 400s from the new process {}",
        lb.sid_400s()
    );
    assert_eq!(lb.sid_400s(), 0.0);
    drop(old);
}

#[test]
fn a_binary_upgrade_hands_untagged_sessions_over() {
    let _serial = iogate_testkit::heavy();
    // Plain Node.js servers: their sids carry no tag, only the sid table knows them.
    let a = Node::start_js_with("ujs1", &["--plain"]);
    let b = Node::start_js_with("ujs2", &["--plain"]);
    let (port, admin) = (free_port(), free_port());
    let extra = "shutdown:\n  grace: 120s\n";
    let mut lb = Lb::start(port, admin, &yaml(port, admin, &[&a, &b], extra), true);
    let polling = echo(&lb.url(), "polling", 150, "12s", &[]);
    wait_for(Duration::from_secs(30), "150 live sessions", || {
        (live(&lb) == 150).then_some(())
    });
    let _old = lb.upgrade();
    wait_for(Duration::from_secs(10), "the sid table handed over", || {
        (lb.metric("iogate_lb_upgrade_handover_entries_total{direction=\"received\"}") >= 150.0)
            .then_some(())
    });
    let p = polling.finish(Duration::from_secs(60));
    assert_no_loss("binary upgrade, 150 polling on Node.js socket.io", &p);
    let received = lb.metric("iogate_lb_upgrade_handover_entries_total{direction=\"received\"}");
    eprintln!(
        "binary upgrade (untagged): {received} sid entries handed over, 400s {}",
        lb.sid_400s()
    );
    assert_eq!(lb.sid_400s(), 0.0);
    assert!(lb.metric("iogate_lb_sid_routed_total{via=\"table\"}") > 0.0);
}

/// Two replicas (same config) behind HAProxy `mode tcp` round-robin.
fn replicas(nodes: &[&Node], extra: &str) -> (Lb, Lb, Haproxy) {
    let (p1, a1, p2, a2) = (free_port(), free_port(), free_port(), free_port());
    let one = Lb::start(p1, a1, &yaml(p1, a1, nodes, extra), true);
    let two = Lb::start(p2, a2, &yaml(p2, a2, nodes, extra), true);
    let front = Haproxy::tcp_round_robin(&[p1, p2]);
    (one, two, front)
}

fn assert_both_routed(what: &str, one: &Lb, two: &Lb, via: &str) {
    let key = format!("iogate_lb_sid_routed_total{{via=\"{via}\"}}");
    let (r1, r2) = (one.metric(&key), two.metric(&key));
    let (e1, e2) = (one.sid_400s(), two.sid_400s());
    eprintln!("{what}: routed by {via}: replica 1 {r1}, replica 2 {r2}; 400s {e1} + {e2}");
    assert!(
        r1 > 0.0 && r2 > 0.0,
        "both replicas route sessions they did not learn"
    );
    assert_eq!(e1 + e2, 0.0, "{what}: 400s");
}

#[test]
fn two_replicas_behind_an_l4_round_robin_route_every_session() {
    let _serial = iogate_testkit::heavy();
    let redis = Redis::start();
    let a = Node::start("rp1", &["--redis-url", &redis.url()]);
    let b = Node::start("rp2", &["--redis-url", &redis.url()]);
    wait_bus_up([&a, &b]);
    let (one, two, front) = replicas(&[&a, &b], "");
    let polling = broadcast(&front.url(), "polling", 100, "8s");
    let upgrade = broadcast(&front.url(), "upgrade", 100, "8s");
    assert_no_loss(
        "2 replicas, iogate-node, 100 polling",
        &polling.finish(Duration::from_secs(60)),
    );
    assert_no_loss(
        "2 replicas, iogate-node, 100 polling→websocket",
        &upgrade.finish(Duration::from_secs(60)),
    );
    assert_both_routed("2 replicas, iogate-node", &one, &two, "tag");
}

#[test]
fn two_replicas_in_front_of_nodejs_servers_with_tagged_ids() {
    let _serial = iogate_testkit::heavy();
    let a = Node::start_js_with("tj1", &["--plain", "--sid-tag", "tj1"]);
    let b = Node::start_js_with("tj2", &["--plain", "--sid-tag", "tj2"]);
    let (one, two, front) = replicas(&[&a, &b], "");
    let polling = echo(&front.url(), "polling", 100, "8s", &[]);
    let upgrade = echo(&front.url(), "upgrade", 100, "8s", &[]);
    assert_no_loss(
        "2 replicas, Node.js tagged, 100 polling",
        &polling.finish(Duration::from_secs(60)),
    );
    assert_no_loss(
        "2 replicas, Node.js tagged, 100 polling→websocket",
        &upgrade.finish(Duration::from_secs(60)),
    );
    assert_both_routed("2 replicas, Node.js tagged", &one, &two, "tag");

    // Untagged ids need the cookie: it is looked up when neither tag nor table knows the sid.
    let c = Node::start_js_with("cj1", &["--plain"]);
    let d = Node::start_js_with("cj2", &["--plain"]);
    let (one, two, front) = replicas(&[&c, &d], "stickiness:\n  mode: cookie\n");
    let polling = echo(&front.url(), "polling", 100, "8s", &["--cookies"]);
    assert_no_loss(
        "2 replicas, Node.js untagged + cookie, 100 polling",
        &polling.finish(Duration::from_secs(60)),
    );
    assert_both_routed(
        "2 replicas, Node.js untagged + cookie",
        &one,
        &two,
        "cookie",
    );
}

#[test]
fn the_quick_form_serves_plain_socketio_servers_and_leaves_no_probe_session_behind() {
    let _serial = iogate_testkit::heavy();
    let a = Node::start_js_with("q1", &["--plain"]);
    let b = Node::start_js_with("q2", &["--plain"]);
    assert_eq!(
        a.get("/readyz").0,
        404,
        "a plain server has no health route"
    );
    let (port, admin) = (free_port(), free_port());
    let lb = Lb::start_quick(port, admin, &[a.port, b.port]);
    let mut fleet = Fleet::start();
    fleet.connect("p", &lb.url(), 100, &["polling"]);
    fleet.connect("w", &lb.url(), 100, &["websocket"]);
    let placed = placement(&mut fleet, &[("p", 100), ("w", 100)]);
    let on_q1 = placed.values().filter(|n| *n == "q1").count();
    assert!((60..=140).contains(&on_q1), "q1 holds {on_q1} of 200");
    // Let several health checks run, then count each server's Engine.IO sessions.
    let checks = |lb: &Lb| {
        [a.port, b.port]
            .iter()
            .map(|p| {
                lb.metric(&format!(
                    "iogate_lb_health_checks_total{{backend=\"127.0.0.1:{p}\",result=\"ready\"}}"
                ))
            })
            .fold(f64::MAX, f64::min)
    };
    let start = checks(&lb);
    wait_for(
        Duration::from_secs(20),
        "3 more health checks on each server",
        || (checks(&lb) >= start + 3.0).then_some(()),
    );
    for (node, expect) in [("q1", on_q1), ("q2", 200 - on_q1)] {
        let client = placed
            .iter()
            .find(|(_, n)| *n == node)
            .map(|(c, _)| c.clone());
        let client = client.expect("a client on each server");
        let sessions = fleet.emit_ack(&client, "engine:clients", json!([]), 3000);
        eprintln!("quick form: {node} holds {sessions} Engine.IO sessions for {expect} clients");
        assert_eq!(
            sessions,
            json!(expect),
            "{node}: probe sessions left behind"
        );
    }
    let again = placement(&mut fleet, &[("p", 100), ("w", 100)]);
    assert_eq!(placed, again, "a session moved");
    let st = fleet.status();
    assert!(
        st.values()
            .all(|c| c["connects"] == json!(1) && c["disconnects"] == json!([])),
        "a client lost its session"
    );
    assert_eq!(lb.sid_400s(), 0.0);
}

//! DNS discovery against a real DNS server (dnsmasq on loopback): an upstream `NAME:port`
//! follows the name's A records as nodes come and go under load, DNS trouble keeps the last
//! good set, a name gone drains after `resolver.hold_empty`, and SRV records through the quick
//! form give each target at its own port.

use std::time::{Duration, Instant};

use iogate_testkit::{
    Dnsmasq, Lb, Loadtest, Node, Redis, accounting, free_port, http_get, wait_for,
};
use serde_json::{Value, json};

const NAME: &str = "nodes.test";

fn yaml(port: u16, admin: u16, node_port: u16, dns: &Dnsmasq, extra: &str) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:{port}\nadmin:\n  listen: 127.0.0.1:{admin}\n\
         health:\n  active:\n    interval: 200ms\n    timeout: 1s\n    fall: 2\n\
         upstreams:\n  - address: {NAME}:{node_port}\n\
         resolver:\n  servers: [\"{}\"]\n{extra}",
        dns.addr()
    )
}

fn ids(lb: &Lb) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = lb.backends()["backends"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|b| {
                    (
                        b["id"].as_str().unwrap_or_default().to_string(),
                        b["state"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn state(lb: &Lb, id: &str) -> Value {
    lb.backend(id)["state"].clone()
}

fn live(lb: &Lb, id: &str) -> i64 {
    lb.backend(id)["live_sessions"].as_i64().unwrap_or(0)
}

fn handshakes(lb: &Lb, id: &str) -> f64 {
    lb.metric(&format!("iogate_lb_handshakes_total{{backend=\"{id}\"}}"))
}

/// One new polling session through the LB; panics unless it was opened.
fn new_session(lb: &Lb) {
    let (status, body) =
        http_get(lb.port, "/socket.io/?EIO=4&transport=polling").expect("handshake through the LB");
    assert_eq!(status, 200, "handshake: {body}");
    assert!(
        body.starts_with('0') && body.contains("\"sid\""),
        "open packet: {body}"
    );
}

fn dns_metric(lb: &Lb, upstream: &str, result: &str) -> f64 {
    lb.metric(&format!(
        "iogate_lb_dns_resolutions_total{{result=\"{result}\",upstream=\"{upstream}\"}}"
    ))
}

#[test]
fn a_dns_name_follows_nodes_two_three_two_under_load() {
    let _serial = iogate_testkit::heavy();
    let redis = Redis::start();
    let node_port = free_port();
    let redis_args = ["--redis-url", &redis.url()];
    let a = Node::start_at("d1", "127.0.0.2", node_port, &redis_args, None);
    let b = Node::start_at("d2", "127.0.0.3", node_port, &redis_args, None);
    let (ia, ib, ic) = (
        format!("127.0.0.2:{node_port}"),
        format!("127.0.0.3:{node_port}"),
        format!("127.0.0.4:{node_port}"),
    );
    let two = [("127.0.0.2", NAME), ("127.0.0.3", NAME)];
    let dns = Dnsmasq::start(&two, &[]);
    let (port, admin) = (free_port(), free_port());
    let lb = Lb::start(port, admin, &yaml(port, admin, node_port, &dns, ""), false);
    wait_for(Duration::from_secs(10), "both addresses up", || {
        (ids(&lb) == [(ia.clone(), "up".into()), (ib.clone(), "up".into())]).then_some(())
    });
    let upstream = format!("{NAME}:{node_port}");
    assert_eq!(
        lb.metric(&format!(
            "iogate_lb_dns_addresses{{upstream=\"{upstream}\"}}"
        )),
        2.0
    );

    // Under load: 100 WebSocket clients broadcasting through the LB for the whole test.
    let run = Loadtest::spawn(&[
        "--url",
        &lb.url(),
        "--scenario",
        "broadcast",
        "--transport",
        "websocket",
        "--clients",
        "100",
        "--total-rate",
        "10",
        "--duration",
        "14s",
        "--drain",
        "2s",
    ]);
    wait_for(
        Duration::from_secs(15),
        "the load's sessions on both nodes",
        || (live(&lb, &ia) + live(&lb, &ib) >= 100).then_some(()),
    );

    // 2 -> 3: a third node appears in DNS.
    let c = Node::start_at("d3", "127.0.0.4", node_port, &redis_args, None);
    let three = [two[0], two[1], ("127.0.0.4", NAME)];
    dns.set_hosts(&three, NAME);
    let t = Instant::now();
    // New sessions keep coming; the time until one lands on the new node is what users see.
    let taken = wait_for(
        Duration::from_secs(15),
        "a new session on the new node",
        || {
            new_session(&lb);
            (live(&lb, &ic) > 0).then(|| t.elapsed())
        },
    );
    eprintln!("DNS change -> the new node takes a new session: {taken:?}");
    assert_eq!(state(&lb, &ic), json!("up"));
    // Least-connections: the next sessions go to the empty node.
    let before = handshakes(&lb, &ic);
    for _ in 0..10 {
        new_session(&lb);
    }
    assert_eq!(
        handshakes(&lb, &ic) - before,
        10.0,
        "the new node takes new sessions"
    );

    // 3 -> 2: the first node leaves DNS. It drains: no new session, its live ones stay.
    let on_a = live(&lb, &ia);
    assert!(on_a >= 40, "sessions on the node about to leave: {on_a}");
    dns.set_hosts(&three[1..], NAME);
    let t = Instant::now();
    wait_for(
        Duration::from_secs(10),
        "the vanished address draining",
        || (state(&lb, &ia) == json!("draining")).then_some(()),
    );
    eprintln!("DNS change -> the vanished node drains: {:?}", t.elapsed());
    let before = handshakes(&lb, &ia);
    for _ in 0..20 {
        new_session(&lb);
    }
    assert_eq!(
        handshakes(&lb, &ia),
        before,
        "no new session on a draining node"
    );
    assert!(
        live(&lb, &ia) >= on_a,
        "its live sessions stay: {}",
        live(&lb, &ia)
    );
    assert_eq!(lb.backend(&ia)["draining_by"], json!(["config"]));

    // The load ran through it all without losing a session or a message.
    let s = run.finish(Duration::from_secs(40));
    eprintln!(
        "load: connects {} of {}, reconnects {}, lost {} of {}",
        s["connects"],
        s["clients"],
        s["reconnects"],
        accounting(&s, "lost"),
        accounting(&s, "expected")
    );
    assert_eq!(s["connects"], json!(100), "{s}");
    assert_eq!(s["reconnects"], json!(0), "{s}");
    assert_eq!(s["accounting"]["failures"], json!({}), "{s}");
    assert_eq!(accounting(&s, "lost"), 0, "{s}");
    assert!(accounting(&s, "expected") > 0, "{s}");
    assert_eq!(lb.sid_400s(), 0.0, "no 400 Session ID unknown");
    // Its WebSockets closed with the load; it stays listed (draining) only while polling
    // sessions opened above live, and is forgotten after them.
    wait_for(
        Duration::from_secs(10),
        "the drained WebSockets gone",
        || (lb.backend(&ia)["websockets"].as_i64().unwrap_or(0) == 0).then_some(()),
    );
    let now = ids(&lb);
    assert!(
        now == [
            (ia.clone(), "draining".into()),
            (ib.clone(), "up".into()),
            (ic.clone(), "up".into())
        ] || now == [(ib.clone(), "up".into()), (ic.clone(), "up".into())],
        "{now:?}"
    );
    drop((a, b, c));
}

#[test]
fn dns_trouble_keeps_the_last_good_set_and_a_vanished_name_drains_after_hold_empty() {
    let _serial = iogate_testkit::heavy();
    let node_port = free_port();
    let a = Node::start_at("e1", "127.0.0.5", node_port, &[], None);
    let b = Node::start_at("e2", "127.0.0.6", node_port, &[], None);
    let (ia, ib) = (
        format!("127.0.0.5:{node_port}"),
        format!("127.0.0.6:{node_port}"),
    );
    let hosts = [("127.0.0.5", NAME), ("127.0.0.6", NAME)];
    let mut dns = Dnsmasq::start(&hosts, &[]);
    let (port, admin) = (free_port(), free_port());
    let extra = "  min_interval: 200ms\n  interval: 1s\n  timeout: 500ms\n  hold_empty: 3s\n";
    let lb = Lb::start(
        port,
        admin,
        &yaml(port, admin, node_port, &dns, extra),
        false,
    );
    let up = vec![
        (ia.clone(), "up".to_string()),
        (ib.clone(), "up".to_string()),
    ];
    wait_for(Duration::from_secs(10), "both addresses up", || {
        (ids(&lb) == up).then_some(())
    });
    let upstream = format!("{NAME}:{node_port}");

    // The DNS server dies: resolutions fail, are counted, and the backends stay.
    let errors = dns_metric(&lb, &upstream, "error");
    dns.stop();
    wait_for(
        Duration::from_secs(10),
        "failed resolutions counted",
        || (dns_metric(&lb, &upstream, "error") >= errors + 3.0).then_some(()),
    );
    assert_eq!(ids(&lb), up, "DNS down: the last good set stays");
    new_session(&lb);

    // Back: resolutions succeed again, same set.
    dns.restart();
    let ok = dns_metric(&lb, &upstream, "ok");
    wait_for(
        Duration::from_secs(10),
        "resolutions answered again",
        || (dns_metric(&lb, &upstream, "ok") > ok).then_some(()),
    );
    assert_eq!(ids(&lb), up);

    // The name vanishes (NXDOMAIN): kept for hold_empty (3 s), then its addresses drain.
    assert_eq!(dns.a(NAME).map(|v| v.len()), Some(2));
    dns.set_hosts(&[], NAME);
    let t = Instant::now();
    let empty = dns_metric(&lb, &upstream, "empty");
    wait_for(Duration::from_secs(5), "empty answers counted", || {
        (dns_metric(&lb, &upstream, "empty") > empty).then_some(())
    });
    assert_eq!(ids(&lb), up, "within hold_empty the set stays");
    let drained = wait_for(
        Duration::from_secs(10),
        "the vanished name's backends gone",
        || {
            lb.backends()["backends"]
                .as_array()
                .is_some_and(|all| all.iter().all(|b| b["state"] != json!("up")))
                .then(|| t.elapsed())
        },
    );
    eprintln!("NXDOMAIN -> backends out of rotation after {drained:?} (hold_empty 3s)");
    assert!(
        drained >= Duration::from_secs(3),
        "held for hold_empty: {drained:?}"
    );
    assert_eq!(
        lb.metric(&format!(
            "iogate_lb_dns_addresses{{upstream=\"{upstream}\"}}"
        )),
        0.0
    );
    let (status, _) = http_get(lb.port, "/socket.io/?EIO=4&transport=polling").expect("answer");
    assert_eq!(status, 503, "no backend left for new sessions");

    // A reload that replaces the name with a fixed address: the name's series go with it.
    let fixed = yaml(port, admin, node_port, &dns, extra).replace(
        &format!("address: {NAME}:{node_port}"),
        &format!("address: 127.0.0.5:{node_port}"),
    );
    lb.rewrite(&fixed);
    wait_for(Duration::from_secs(10), "the fixed address up", || {
        (state(&lb, &ia) == json!("up")).then_some(())
    });
    let (_, metrics) = http_get(admin, "/metrics").expect("metrics");
    assert!(
        !metrics.contains(&format!("upstream=\"{upstream}\"")),
        "the removed name's series are gone"
    );
    drop((a, b));
}

#[test]
fn srv_records_through_the_quick_form() {
    let _serial = iogate_testkit::heavy();
    let a = Node::start("s1", &[]);
    let b = Node::start("s2", &[]);
    let c = Node::start("s3", &[]);
    let srv = "_sio._tcp.nodes.test";
    // a and b at priority 10; c at 20 is a backup in SRV's sense and is not used.
    let dns = Dnsmasq::start(
        &[("127.0.0.1", "host.test")],
        &[
            (srv, "host.test", a.port, 10, 5),
            (srv, "host.test", b.port, 10, 0),
            (srv, "host.test", c.port, 20, 0),
        ],
    );
    let (port, admin) = (free_port(), free_port());
    let lb = Lb::start_quick_with(
        port,
        admin,
        &[],
        &[
            "--upstream",
            &format!("srv:{srv}"),
            "--resolver",
            &dns.addr(),
        ],
    );
    let mut want: Vec<(String, String)> = [a.port, b.port]
        .iter()
        .map(|p| (format!("127.0.0.1:{p}"), "up".to_string()))
        .collect();
    want.sort();
    wait_for(
        Duration::from_secs(10),
        "the two priority-10 targets up",
        || (ids(&lb) == want).then_some(()),
    );
    let weight = |p: u16| lb.backend(&format!("127.0.0.1:{p}"))["weight"].clone();
    assert_eq!(weight(a.port), json!(5), "the record's weight");
    assert_eq!(weight(b.port), json!(1), "weight 0: the upstream's (1)");
    new_session(&lb);
    drop(c);
}

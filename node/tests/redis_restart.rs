//! Redis dies and comes back: local delivery never stops, nothing hangs, cross-node delivery
//! resumes by itself within 2 s, and every cross-node message that could not be published is
//! counted in `iogate_node_bus_dropped_total`.

use std::time::{Duration, Instant};

use iogate_testkit::{Fleet, Node, Redis, wait_for};
use serde_json::{Value, json};

fn dropped(n: &Node) -> f64 {
    n.metric_sum(
        "iogate_node_bus_dropped_total",
        "reason",
        iogate_node::metrics::BUS_DROP_REASONS,
    )
}

fn bus_state(n: &Node) -> String {
    let (_, body) = n.get("/readyz");
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["bus"].as_str().unwrap_or_default().to_string()
}

fn seqs(fleet: &mut Fleet, client: &str) -> Vec<u64> {
    fleet.events("chat:message")[client]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|args| args[0]["seq"].as_u64())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn survives_redis_restart() {
    let mut redis = Redis::start();
    let n1 = Node::start("r1", &["--redis-url", &redis.url()]);
    let n2 = Node::start("r2", &["--redis-url", &redis.url()]);
    let mut fleet = Fleet::start();
    fleet.connect("a", &n1.url(), 2, &["websocket"]);
    fleet.connect("b", &n2.url(), 2, &["websocket"]);
    wait_for(Duration::from_secs(10), "bus up", || {
        (n1.metric("iogate_node_bus_up") == 1.0 && n2.metric("iogate_node_bus_up") == 1.0)
            .then_some(())
    });

    // Baseline: cross-node works.
    fleet.emit("a#0", "chat:message", json!([{"seq": 0}]));
    wait_for(Duration::from_secs(5), "baseline delivery", || {
        (seqs(&mut fleet, "b#0") == vec![0]).then_some(())
    });
    let dropped_before = dropped(&n1);

    // Redis goes away.
    redis.kill();
    wait_for(Duration::from_secs(5), "both nodes notice", || {
        (bus_state(&n1) != "up" && bus_state(&n2) != "up").then_some(())
    });
    // Readiness does not depend on Redis.
    assert_eq!(n1.get("/readyz").0, 200);

    // During the outage: local delivery continues, acks answer within 1 s.
    let outage_msgs = 5u64;
    for seq in 1..=outage_msgs {
        fleet.emit("a#0", "chat:message", json!([{"seq": seq}]));
    }
    wait_for(
        Duration::from_secs(5),
        "local delivery during outage",
        || (seqs(&mut fleet, "a#1").len() as u64 == 1 + outage_msgs).then_some(()),
    );
    let t = Instant::now();
    assert_eq!(
        fleet.emit_ack("a#1", "echo", json!(["alive"]), 1000),
        json!("alive")
    );
    assert_eq!(
        fleet.emit_ack("b#1", "whoami", json!([]), 1000)["node"],
        json!("r2")
    );
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "acks took {:?}",
        t.elapsed()
    );
    assert_eq!(
        seqs(&mut fleet, "b#0"),
        vec![0],
        "no cross-node delivery while Redis is down"
    );

    // Redis comes back on the same port; keep sending until a message crosses.
    redis.restart();
    let back = Instant::now();
    let mut seq = outage_msgs;
    let recovered = loop {
        seq += 1;
        fleet.emit("a#0", "chat:message", json!([{"seq": seq}]));
        std::thread::sleep(Duration::from_millis(25));
        if seqs(&mut fleet, "b#0").len() > 1 {
            break back.elapsed();
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "no cross-node delivery 5 s after Redis came back"
        );
    };
    let sent_after_kill = seq; // seqs 1..=seq
    // Let in-flight messages land, then account.
    std::thread::sleep(Duration::from_millis(300));
    let got_b: Vec<u64> = seqs(&mut fleet, "b#0");
    let delivered_after_kill = got_b.iter().filter(|s| **s >= 1).count() as u64;
    let lost = sent_after_kill - delivered_after_kill;
    let counted = (dropped(&n1) - dropped_before) as u64;
    eprintln!(
        "redis restart: first cross-node delivery {recovered:?} after restart; \
         sent {sent_after_kill} during outage+recovery, lost {lost}, counted dropped {counted}"
    );
    assert!(
        recovered < Duration::from_secs(2),
        "recovery took {recovered:?}"
    );
    assert!(
        counted >= outage_msgs,
        "every outage message must be counted ({counted})"
    );
    assert_eq!(
        counted, lost,
        "every lost cross-node message is counted, and only those"
    );
    // Every node's clients got every local message exactly once.
    let a1 = seqs(&mut fleet, "a#1");
    let mut dedup = a1.clone();
    dedup.dedup();
    assert_eq!(a1, dedup, "duplicate local delivery");
    assert_eq!(a1.len() as u64, sent_after_kill + 1);

    // After recovery the cluster is whole: a broadcast from node 2 reaches all four once.
    wait_for(Duration::from_secs(3), "bus up again", || {
        (bus_state(&n1) == "up" && bus_state(&n2) == "up").then_some(())
    });
    fleet.clear();
    fleet.emit("b#1", "chat:message", json!([{"seq": 1000}]));
    wait_for(Duration::from_secs(5), "post-recovery broadcast", || {
        ["a#0", "a#1", "b#0", "b#1"]
            .iter()
            .all(|c| seqs(&mut fleet, c) == vec![1000])
            .then_some(())
    });
    assert!(n1.metric("iogate_node_bus_reconnects_total") >= 1.0);
}

#[test]
fn starts_while_redis_is_down_and_joins_later() {
    let port = iogate_testkit::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let n1 = Node::start("late1", &["--redis-url", &url]);
    let n2 = Node::start("late2", &["--redis-url", &url]);
    assert_ne!(bus_state(&n1), "up");
    let mut fleet = Fleet::start();
    fleet.connect("a", &n1.url(), 1, &["websocket"]);
    fleet.connect("b", &n2.url(), 1, &["websocket"]);
    assert_eq!(fleet.emit_ack("a#0", "echo", json!([1]), 1000), json!(1));

    let _redis = Redis::start_on(port);
    wait_for(Duration::from_secs(5), "bus up after Redis appears", || {
        (bus_state(&n1) == "up" && bus_state(&n2) == "up").then_some(())
    });
    fleet.emit("a#0", "chat:message", json!([{"seq": 7}]));
    wait_for(Duration::from_secs(5), "cross-node delivery", || {
        (seqs(&mut fleet, "b#0") == vec![7]).then_some(())
    });
}

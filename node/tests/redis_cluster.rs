//! Cross-node broadcast and rooms through a real 3-master Redis Cluster (sharded pub/sub).

use std::time::Duration;

use iogate_testkit::{Fleet, Node, RedisCluster, wait_for};
use serde_json::json;

#[test]
fn broadcast_and_rooms_through_redis_cluster() {
    let cluster = RedisCluster::start();
    let yaml = cluster.node_yaml();
    let nodes: Vec<Node> = ["c1", "c2", "c3"]
        .iter()
        .map(|id| Node::start_with_config(id, &[], Some(&yaml)))
        .collect();
    iogate_testkit::wait_bus_up(&nodes);

    let mut fleet = Fleet::start();
    for n in &nodes {
        fleet.cmd(
            json!({"cmd": "connect", "name": n.id, "url": n.url(), "count": 1,
                         "transports": ["websocket"], "query": {"room": format!("room-{}", n.id)}}),
        );
    }
    fleet.emit("c2#0", "chat:message", json!(["through the cluster"]));
    wait_for(Duration::from_secs(10), "broadcast on all nodes", || {
        let ev = fleet.events("chat:message");
        nodes
            .iter()
            .all(|n| ev[&format!("{}#0", n.id)] == json!([["through the cluster"]]))
            .then_some(())
    });

    // A room that lives on c3 only, addressed from c1.
    fleet.emit(
        "c1#0",
        "room:message",
        json!([{"room": "room-c3", "data": 3}]),
    );
    wait_for(Duration::from_secs(10), "room message on c3", || {
        let ev = fleet.events("room:message");
        (ev["c3#0"] == json!([[{"room": "room-c3", "data": 3}]])).then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    let ev = fleet.events("room:message");
    assert_eq!(ev["c1#0"], json!([]));
    assert_eq!(ev["c2#0"], json!([]));
    // Acks still work on the node that holds the room.
    let who = fleet.emit_ack("c3#0", "whoami", json!([]), 2000);
    assert_eq!(who["node"], json!("c3"));
}

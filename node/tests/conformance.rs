//! The conformance profile answers like the socket.io-protocol test-suite server, on `/` and
//! `/custom`, checked with the official socket.io-client.

use std::time::Duration;

use iogate_testkit::{Fleet, Node, wait_for};
use serde_json::json;

#[test]
fn conformance_profile_handlers() {
    let node = Node::start("conf", &["--redis-url", "none", "--profile", "conformance"]);
    let (_, body) = node.get("/socket.io/?EIO=4&transport=polling");
    assert!(
        body.contains("\"pingInterval\":300") && body.contains("\"pingTimeout\":200"),
        "{body}"
    );
    assert!(body.contains("\"maxPayload\":1000000"), "{body}");

    let mut fleet = Fleet::start();
    for ns in ["", "/custom"] {
        let name = if ns.is_empty() { "root" } else { "custom" };
        fleet.cmd(
            json!({"cmd": "connect", "name": name, "url": format!("{}{ns}", node.url()),
                         "count": 1, "transports": ["websocket"], "auth": {"token": "123"},
                         "autoAck": true}),
        );
        let c = format!("{name}#0");
        wait_for(Duration::from_secs(5), "auth event", || {
            (fleet.events("auth")[&c] == json!([[{"token": "123"}]])).then_some(())
        });
        fleet.emit(&c, "message", json!([1, "2", {"3": [true]}]));
        wait_for(Duration::from_secs(5), "message-back", || {
            (fleet.events("message-back")[&c] == json!([[1, "2", {"3": [true]}]])).then_some(())
        });
        assert_eq!(
            fleet.emit_ack(&c, "message-with-ack", json!(["a", 2]), 2000),
            json!("a")
        );
        // The server emits with an ack; our client acks with the same args; the server re-emits them.
        fleet.clear();
        fleet.emit(&c, "emit-with-ack", json!([1, "2", {"3": [true]}]));
        wait_for(Duration::from_secs(5), "emit-with-ack twice", || {
            let ev = fleet.events("emit-with-ack");
            (ev[&c].as_array().map(|a| a.len()) == Some(2)).then_some(())
        });
        assert_eq!(
            fleet.events("emit-with-ack")[&c],
            json!([[1, "2", {"3": [true]}], [1, "2", {"3": [true]}]])
        );
    }
}

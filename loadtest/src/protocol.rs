//! Engine.IO v4 and Socket.IO v5 packets, text encoding only (what the chat contract uses).
//!
//! Engine.IO: `0` open, `1` close, `2` ping, `3` pong, `4` message, `5` upgrade, `6` noop; polling
//! payloads join packets with the record separator 0x1e. Socket.IO (inside an Engine.IO message):
//! `0` CONNECT, `1` DISCONNECT, `2` EVENT, `3` ACK, `4` CONNECT_ERROR, with an optional ack id
//! between the type and the JSON array.

use serde_json::Value;
use std::time::Duration;

/// Polling payload packet separator.
pub const SEPARATOR: char = '\u{1e}';

/// The open packet's fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Open {
    /// Engine.IO session id.
    pub sid: String,
    /// Transports the server offers to upgrade to.
    pub upgrades: Vec<String>,
    /// Server ping interval.
    pub ping_interval: Duration,
    /// Server ping timeout.
    pub ping_timeout: Duration,
}

/// A decoded Engine.IO packet.
#[derive(Debug, Clone, PartialEq)]
pub enum EioPacket {
    /// `0{...}`
    Open(Open),
    /// `1`
    Close,
    /// `2` (with optional data, e.g. `probe`)
    Ping(String),
    /// `3`
    Pong(String),
    /// `4...`
    Message(String),
    /// `5`
    Upgrade,
    /// `6`
    Noop,
}

/// Decode one Engine.IO packet.
pub fn decode_eio(s: &str) -> Option<EioPacket> {
    let (t, rest) = s.split_at_checked(1)?;
    Some(match t {
        "0" => {
            let v: Value = serde_json::from_str(rest).ok()?;
            EioPacket::Open(Open {
                sid: v.get("sid")?.as_str()?.to_string(),
                upgrades: v
                    .get("upgrades")
                    .and_then(|u| u.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                ping_interval: Duration::from_millis(
                    v.get("pingInterval")
                        .and_then(|x| x.as_u64())
                        .unwrap_or(25_000),
                ),
                ping_timeout: Duration::from_millis(
                    v.get("pingTimeout")
                        .and_then(|x| x.as_u64())
                        .unwrap_or(20_000),
                ),
            })
        }
        "1" => EioPacket::Close,
        "2" => EioPacket::Ping(rest.to_string()),
        "3" => EioPacket::Pong(rest.to_string()),
        "4" => EioPacket::Message(rest.to_string()),
        "5" => EioPacket::Upgrade,
        "6" => EioPacket::Noop,
        _ => return None,
    })
}

/// A decoded Socket.IO packet on the root namespace.
#[derive(Debug, Clone, PartialEq)]
pub enum SioPacket {
    /// CONNECT acknowledged, with the socket id and — when the server keeps sessions for
    /// connection state recovery — the private session id.
    Connect {
        /// The socket id.
        sid: Option<String>,
        /// The private session id (`pid`).
        pid: Option<String>,
    },
    /// DISCONNECT from the server.
    Disconnect,
    /// EVENT name, args, ack id.
    Event(String, Vec<Value>, Option<u64>),
    /// ACK id, args.
    Ack(u64, Vec<Value>),
    /// CONNECT_ERROR message.
    ConnectError(String),
}

/// Decode a Socket.IO packet (the payload of an Engine.IO message). Only the root namespace is
/// used; other namespaces decode as `None`.
pub fn decode_sio(s: &str) -> Option<SioPacket> {
    let (t, mut rest) = s.split_at_checked(1)?;
    if rest.starts_with('/') {
        // Namespaced: "/nsp,..." — not used by the load generator.
        return None;
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = if digits > 0 {
        rest[..digits].parse::<u64>().ok()
    } else {
        None
    };
    rest = &rest[digits..];
    match t {
        "0" => {
            let v = serde_json::from_str::<Value>(rest).ok();
            let field = |k: &str| {
                v.as_ref()
                    .and_then(|v| v.get(k).and_then(|s| s.as_str()).map(str::to_string))
            };
            Some(SioPacket::Connect {
                sid: field("sid"),
                pid: field("pid"),
            })
        }
        "1" => Some(SioPacket::Disconnect),
        "2" => {
            let mut arr: Vec<Value> = serde_json::from_str(rest).ok()?;
            if arr.is_empty() {
                return None;
            }
            let name = arr.remove(0).as_str()?.to_string();
            Some(SioPacket::Event(name, arr, id))
        }
        "3" => Some(SioPacket::Ack(id?, serde_json::from_str(rest).ok()?)),
        "4" => {
            let msg = serde_json::from_str::<Value>(rest)
                .ok()
                .and_then(|v| {
                    v.get("message")
                        .and_then(|m| m.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_else(|| rest.to_string());
            Some(SioPacket::ConnectError(msg))
        }
        _ => None,
    }
}

/// Socket.IO CONNECT: `0` + auth JSON (the transport adds the Engine.IO `4`).
pub fn connect(auth: &Value) -> String {
    if auth.is_null() || auth.as_object().is_some_and(|o| o.is_empty()) {
        "0".to_string()
    } else {
        format!("0{auth}")
    }
}

/// Socket.IO EVENT: `2[ack]["event", ...args]` (the transport adds the Engine.IO `4`).
pub fn event(name: &str, args: &[Value], ack: Option<u64>) -> String {
    let mut arr = Vec::with_capacity(args.len() + 1);
    arr.push(Value::String(name.to_string()));
    arr.extend_from_slice(args);
    let body = Value::Array(arr).to_string();
    match ack {
        Some(id) => format!("2{id}{body}"),
        None => format!("2{body}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn engineio_packets() {
        let open = decode_eio(
            r#"0{"sid":"abc","upgrades":["websocket"],"pingInterval":300,"pingTimeout":200,"maxPayload":1000000}"#,
        );
        assert_eq!(
            open,
            Some(EioPacket::Open(Open {
                sid: "abc".into(),
                upgrades: vec!["websocket".into()],
                ping_interval: Duration::from_millis(300),
                ping_timeout: Duration::from_millis(200),
            }))
        );
        assert_eq!(decode_eio("2"), Some(EioPacket::Ping(String::new())));
        assert_eq!(decode_eio("3probe"), Some(EioPacket::Pong("probe".into())));
        assert_eq!(decode_eio("6"), Some(EioPacket::Noop));
        assert_eq!(decode_eio(""), None);
        assert_eq!(decode_eio("9"), None);
    }

    #[test]
    fn socketio_packets() {
        assert_eq!(
            decode_sio(r#"0{"sid":"x"}"#),
            Some(SioPacket::Connect {
                sid: Some("x".into()),
                pid: None
            })
        );
        assert_eq!(
            decode_sio(r#"2["chat:message",{"a":1}]"#),
            Some(SioPacket::Event(
                "chat:message".into(),
                vec![json!({"a":1})],
                None
            ))
        );
        assert_eq!(
            decode_sio(r#"312["ok"]"#),
            Some(SioPacket::Ack(12, vec![json!("ok")]))
        );
        assert_eq!(
            decode_sio(r#"27["echo",1]"#),
            Some(SioPacket::Event("echo".into(), vec![json!(1)], Some(7)))
        );
        assert_eq!(
            decode_sio(r#"4{"message":"nope"}"#),
            Some(SioPacket::ConnectError("nope".into()))
        );
        assert_eq!(decode_sio("1"), Some(SioPacket::Disconnect));
        assert_eq!(decode_sio(r#"2/chat,["x"]"#), None);
        assert_eq!(event("echo", &[json!(1)], Some(3)), r#"23["echo",1]"#);
        assert_eq!(connect(&json!({"room":"r"})), r#"0{"room":"r"}"#);
        assert_eq!(connect(&json!({})), "0");
    }
}

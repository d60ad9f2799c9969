//! One tracked packet as a stream entry: its audience (rooms, exceptions, a target or an
//! excluded sender) and its data, and the rule that decides whether a session was in that
//! audience — used to replay what a recovering session missed.
//!
//! Sockets are named by their session's private id (`pid`), not their socket id: a socket id
//! is the Engine.IO session id and changes when a client reconnects, while the pid stays with
//! the session across nodes.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use socketioxide_core::Value;
use socketioxide_core::adapter::{BroadcastFlags, BroadcastOptions, Room};

/// A tracked packet in the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Rooms it went to (empty: every socket, if `all`).
    #[serde(rename = "r", default)]
    pub rooms: Vec<String>,
    /// Rooms excluded.
    #[serde(rename = "x", default)]
    pub except: Vec<String>,
    /// A broadcast to every socket (or every socket of `rooms`) — socketioxide's `Broadcast`
    /// flag: the sender, if any, is excluded.
    #[serde(rename = "b", default)]
    pub broadcast: bool,
    /// The sending session, excluded from a broadcast.
    #[serde(rename = "s", default)]
    pub sender: Option<String>,
    /// The one session it went to (`socket.emit`).
    #[serde(rename = "t", default)]
    pub target: Option<String>,
    /// The event data (`["event", args…]`), without the offset.
    #[serde(rename = "d")]
    pub data: Value,
}

/// Why an entry could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("undecodable stream entry: {0}")]
pub struct DecodeError(String);

impl Entry {
    /// The entry for a broadcast with `opts`; `sender` is the pid of `opts.sid` when that socket
    /// is a local session.
    pub fn broadcast(opts: &BroadcastOptions, sender: Option<String>, data: Value) -> Entry {
        let broadcast = opts.has_flag(BroadcastFlags::Broadcast);
        Entry {
            rooms: opts.rooms.iter().map(|r| r.to_string()).collect(),
            except: opts.except.iter().map(|r| r.to_string()).collect(),
            broadcast,
            sender: if broadcast { sender } else { None },
            target: None,
            data,
        }
    }

    /// The entry for a `socket.emit` to the session `pid`.
    pub fn to_session(pid: String, data: Value) -> Entry {
        Entry {
            rooms: Vec::new(),
            except: Vec::new(),
            broadcast: false,
            sender: None,
            target: Some(pid),
            data,
        }
    }

    /// MessagePack bytes.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        rmp_serde::to_vec_named(self).map_err(|e| DecodeError(e.to_string()))
    }

    /// From MessagePack bytes.
    pub fn decode(bytes: &[u8]) -> Result<Entry, DecodeError> {
        rmp_serde::from_slice(bytes).map_err(|e| DecodeError(e.to_string()))
    }

    /// Whether the session `pid`, in `rooms`, was in this entry's audience.
    pub fn reaches(&self, pid: &str, rooms: &HashSet<String>) -> bool {
        if let Some(target) = &self.target {
            return target == pid;
        }
        if self.except.iter().any(|r| rooms.contains(r)) {
            return false;
        }
        if self.broadcast && self.sender.as_deref() == Some(pid) {
            return false;
        }
        if self.rooms.is_empty() {
            self.broadcast
        } else {
            self.rooms.iter().any(|r| rooms.contains(r))
        }
    }

    /// The broadcast options that deliver it to local sockets: `sender` is the local socket of
    /// the sending session (excluded from a broadcast), `hold` the rooms of sockets that must not
    /// get it (sessions still catching up).
    pub fn local_options(
        &self,
        sender: Option<socketioxide::socket::Sid>,
        hold: Option<&Room>,
    ) -> BroadcastOptions {
        let mut opts = BroadcastOptions::default();
        if self.broadcast {
            opts.add_flag(BroadcastFlags::Broadcast);
            opts.sid = sender;
        }
        opts.rooms = self.rooms.iter().map(|r| Room::from(r.clone())).collect();
        opts.except = self.except.iter().map(|r| Room::from(r.clone())).collect();
        if let Some(h) = hold {
            opts.except.push(h.clone());
        }
        opts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socketioxide_core::Str;

    fn data() -> Value {
        Value::Str(Str::from(r#"["e",1]"#.to_string()), None)
    }

    fn rooms(r: &[&str]) -> HashSet<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    fn opts(rooms: &[&str], except: &[&str], broadcast: bool) -> BroadcastOptions {
        let mut o = BroadcastOptions::default();
        if broadcast {
            o.add_flag(BroadcastFlags::Broadcast);
        }
        o.rooms = rooms.iter().map(|r| Room::from(r.to_string())).collect();
        o.except = except.iter().map(|r| Room::from(r.to_string())).collect();
        o
    }

    #[test]
    fn audiences() {
        let lobby = rooms(&["lobby", "me"]);
        // io.emit: everyone, the sender too.
        let all = Entry::broadcast(&opts(&[], &[], true), None, data());
        assert!(all.reaches("p", &lobby));
        // socket.broadcast.emit: everyone but the sender.
        let others = Entry::broadcast(&opts(&[], &[], true), Some("p".into()), data());
        assert!(!others.reaches("p", &lobby) && others.reaches("q", &lobby));
        // io.to(room): members only; except wins.
        let room = Entry::broadcast(&opts(&["lobby"], &[], false), None, data());
        assert!(room.reaches("p", &lobby) && !room.reaches("p", &rooms(&["other"])));
        let except = Entry::broadcast(&opts(&["lobby"], &["me"], false), None, data());
        assert!(!except.reaches("p", &lobby));
        // A room broadcast without the flag keeps the sender (io.to), with it not (socket.to).
        let io_to = Entry::broadcast(&opts(&["lobby"], &[], false), Some("p".into()), data());
        assert!(io_to.reaches("p", &lobby));
        let sock_to = Entry::broadcast(&opts(&["lobby"], &[], true), Some("p".into()), data());
        assert!(!sock_to.reaches("p", &lobby));
        // socket.emit: that session only.
        let one = Entry::to_session("p".into(), data());
        assert!(one.reaches("p", &rooms(&[])) && !one.reaches("q", &lobby));
        // No rooms, no flag, no target: nobody.
        let none = Entry::broadcast(&opts(&[], &[], false), None, data());
        assert!(!none.reaches("p", &lobby));
    }

    #[test]
    fn entries_round_trip() {
        let e = Entry::broadcast(&opts(&["a"], &["b"], true), Some("p".into()), data());
        let back = Entry::decode(&e.encode().expect("encode")).expect("decode");
        assert_eq!(back, e);
        assert!(Entry::decode(b"\xc1garbage").is_err());
    }
}

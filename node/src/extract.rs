//! Extractors for handlers, beyond socketioxide's own (`socketioxide::extract`).
//!
//! - [`Reply`]: answer the way the client asked — as the acknowledgement when it asked for one,
//!   else as an event back to it.
//! - [`AckRequested`]: whether the client asked for an acknowledgement.
//! - [`AllArgs`]: every argument of an event, any count, binary attachments kept — to relay an
//!   event's arguments unchanged.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use socketioxide::SendError;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef};
use socketioxide::handler::{FromMessageParts, Value};
use socketioxide::socket::Socket;

use crate::NodeAdapter;

/// Extractor: answer the way the client asked — as the acknowledgement when the event came
/// with an ack id, else as an event back to the sender.
///
/// ```
/// # use iogate_node::extract::Reply;
/// # use iogate_node::socketioxide::extract::Data;
/// async fn echo(Data(v): Data<serde_json::Value>, reply: Reply) {
///     let _ = reply.send("echo", &v);
/// }
/// ```
pub struct Reply<A: Adapter = NodeAdapter> {
    socket: SocketRef<A>,
    ack: Option<AckSender<A>>,
}

impl<A: Adapter> FromMessageParts<A> for Reply<A> {
    type Error = Infallible;
    fn from_message_parts(
        s: &Arc<Socket<A>>,
        v: &mut Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        let ack = match ack_id {
            Some(_) => Some(AckSender::from_message_parts(s, v, ack_id)?),
            None => None,
        };
        Ok(Reply {
            socket: SocketRef::from(s.clone()),
            ack,
        })
    }
}

impl<A: Adapter> Reply<A> {
    /// Send `data` as the ack, or — when the client asked for none — as event `event`.
    pub fn send<T: Serialize + ?Sized>(self, event: &str, data: &T) -> Result<(), SendError> {
        match self.ack {
            Some(ack) => ack.send(data),
            None => self.socket.emit(event, data),
        }
    }

    /// Whether the client asked for an acknowledgement.
    pub fn is_ack(&self) -> bool {
        self.ack.is_some()
    }
}

/// Extractor: whether the client asked for an acknowledgement.
#[derive(Debug, Clone, Copy)]
pub struct AckRequested(pub bool);

impl<A: Adapter> FromMessageParts<A> for AckRequested {
    type Error = Infallible;
    fn from_message_parts(
        _: &Arc<Socket<A>>,
        _: &mut Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        Ok(AckRequested(ack_id.is_some()))
    }
}

/// Every argument of an event (any count, binary attachments kept), re-emitted as the same
/// argument list. socketioxide treats tuples as argument lists; this type presents itself as a
/// tuple of any length.
#[derive(Debug, Clone, Default)]
pub struct AllArgs(pub Vec<rmpv::Value>);

impl<'de> Deserialize<'de> for AllArgs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AllArgs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of event arguments")
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<AllArgs, S::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<rmpv::Value>()? {
                    out.push(v);
                }
                Ok(AllArgs(out))
            }
        }
        d.deserialize_tuple(usize::MAX, V)
    }
}

impl Serialize for AllArgs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(self.0.len())?;
        for v in &self.0 {
            t.serialize_element(v)?;
        }
        t.end()
    }
}

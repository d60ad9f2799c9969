//! The applications the `iogate-node` binary serves (`profile` in the config), built on the
//! public API like any user's application ([`Node::app`](crate::Node::app)).
//!
//! - [`chat`]: the reference chat application (docs/protocol.md).
//! - [`conformance`]: the handlers the official socket.io-protocol test suite expects.

pub mod chat;
pub mod conformance;

use crate::config::Profile;
use crate::server::SetupError;
use crate::{Io, NodeContext};

/// Register the configured profile's namespaces (the `iogate-node` binary's application).
pub async fn register(io: Io, ctx: NodeContext) -> Result<(), SetupError> {
    match ctx.config().profile {
        Profile::Chat => chat::register(io, ctx).await,
        Profile::Conformance => conformance::register(io, ctx).await,
    }
}

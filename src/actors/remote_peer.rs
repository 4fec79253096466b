//! The RemotePeer actor: a session on another cluster node, as this node's
//! sessions see it.
//!
//! A `/msg` to a nick held on another node finds a [`Peer`](crate::Peer)
//! whose handle feeds this actor's inbox instead of a socket; each event
//! sent through it goes to the cluster engine, which appends it to the
//! holder node's direct stream, and that node hands it to the session. The
//! actor lives as long as the handle: when the last clone is dropped its
//! inbox (and the address in it) goes, and the actor stops.

use std::sync::Arc;

use actix::prelude::*;

use super::cluster::{Cluster, Direct};
use crate::config::{DEFAULT_OUTBOUND_BYTES, DEFAULT_OUTBOUND_QUEUE};
use crate::event::Wire;
use crate::handle::{Delivery, Inbox, OutboundBound, SessionHandle, SessionId, TakeInbox};

/// Forwards what a remote session is sent to its node. See the module docs.
pub struct RemotePeer {
    node: Arc<str>,
    id: SessionId,
    inbox: Arc<Inbox>,
    cluster: Addr<Cluster>,
}

impl RemotePeer {
    /// Starts a peer for session `id` of `node` on the current thread, and
    /// answers the handle to send it events through.
    pub(crate) fn handle(node: Arc<str>, id: SessionId, cluster: Addr<Cluster>) -> SessionHandle {
        // Events leave for the other node at once; the bound only guards
        // against a cluster connection that stalls.
        let bound = OutboundBound {
            frames: DEFAULT_OUTBOUND_QUEUE,
            bytes: DEFAULT_OUTBOUND_BYTES,
        };
        let inbox = Arc::new(Inbox::new(Wire::Json, bound));
        let peer = RemotePeer {
            node,
            id,
            inbox: inbox.clone(),
            cluster,
        };
        let address = peer.start();
        inbox.set_wake(address.recipient());
        SessionHandle::new(id, inbox)
    }
}

impl Actor for RemotePeer {
    type Context = Context<Self>;
}

impl Handler<TakeInbox> for RemotePeer {
    type Result = ();

    fn handle(&mut self, _: TakeInbox, _: &mut Context<Self>) {
        for delivery in self.inbox.take() {
            if let Delivery::Event(event) = delivery {
                self.cluster.do_send(Direct {
                    node: self.node.clone(),
                    id: self.id,
                    event,
                });
            }
        }
    }
}

//! The Directory actor: one shard of the name directory, which keeps names
//! (the lobby's nicks) unique, compared case-insensitively.
//!
//! Names are spread over shards by a hash of their lower-cased form, one
//! shard per thread, so a claim is decided by exactly one actor and two
//! sessions claiming the same name at once cannot both win. A rename is rare,
//! so a round trip to the shard is fine; the session holds back its own
//! input meanwhile.

use std::sync::Arc;

use actix::prelude::*;
use foldhash::HashMap;

use crate::handle::{RequestId, SessionHandle, SessionId};
use crate::room::{Answer, Peer, Response};

/// Take `name` for `owner` if nobody else holds it (its owner taking it
/// again, in another spelling, is allowed).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Claim {
    pub name: Arc<str>,
    pub owner: SessionHandle,
    pub request: RequestId,
}

/// `owner` gives `name` up (a later claim or its end).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Release {
    pub name: Arc<str>,
    pub owner: SessionId,
}

/// Answer `requester` with the holder of `name`, if any.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct FindName {
    pub name: Arc<str>,
    pub requester: SessionHandle,
    pub request: RequestId,
}

/// Which shard a name belongs to.
pub(crate) fn shard_of(name: &str, shards: usize) -> usize {
    super::sequencer::room_thread(&name.to_ascii_lowercase(), shards)
}

struct Holder {
    /// The name in its owner's spelling.
    name: Arc<str>,
    handle: SessionHandle,
}

/// One shard of the name directory. See the module docs.
#[derive(Default)]
pub struct Directory {
    /// Lower-cased name → holder.
    names: HashMap<String, Holder>,
}

impl Actor for Directory {
    type Context = Context<Self>;
}

impl Handler<Claim> for Directory {
    type Result = ();

    fn handle(&mut self, claim: Claim, _: &mut Context<Self>) {
        let Claim {
            name,
            owner,
            request,
        } = claim;
        if owner.is_closed() {
            // Ended while its claim was on the way: its Release follows.
            return;
        }
        let key = name.to_ascii_lowercase();
        let taken = self
            .names
            .get(&key)
            .is_some_and(|holder| holder.handle.id() != owner.id() && !holder.handle.is_closed());
        if taken {
            return owner.answer(request, Answer::NameTaken { name }.into());
        }
        let holder = Holder {
            name,
            handle: owner.clone(),
        };
        self.names.insert(key, holder);
        owner.answer(request, Response::Claimed);
    }
}

impl Handler<Release> for Directory {
    type Result = ();

    fn handle(&mut self, Release { name, owner }: Release, _: &mut Context<Self>) {
        let key = name.to_ascii_lowercase();
        if self
            .names
            .get(&key)
            .is_some_and(|holder| holder.handle.id() == owner)
        {
            self.names.remove(&key);
        }
    }
}

impl Handler<FindName> for Directory {
    type Result = ();

    fn handle(&mut self, find: FindName, _: &mut Context<Self>) {
        let key = find.name.to_ascii_lowercase();
        let holder = self
            .names
            .get(&key)
            .filter(|holder| !holder.handle.is_closed());
        let peer = holder.map(|holder| Peer {
            id: holder.handle.id(),
            name: holder.name.clone(),
            handle: holder.handle.clone(),
        });
        find.requester
            .answer(find.request, Answer::Found(peer).into());
    }
}

//! The actors: one per file, each with the messages it handles beside it.

pub mod cluster;
pub mod directory;
pub mod dispatcher;
pub mod http_listener;
pub mod listener;
pub mod remote_peer;
pub mod room_index;
pub mod sequencer;
pub mod session;
pub mod udp;
pub mod udp_peer;
pub mod udp_sessions;
pub mod ws_session;

//! The actors: one per file, each with the messages it handles beside it.

pub mod listener;
pub mod registry;
pub mod session;
pub mod udp;
pub mod udp_peer;
pub mod udp_sessions;

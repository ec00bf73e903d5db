//! The daemon's decisions: one store, kept on disk in a snapshot before the kernel sees them.

pub mod snapshot;
pub mod store;

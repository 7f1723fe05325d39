//! The storage node: `memgate node`.

pub mod auth;
pub mod caches;
pub mod session;
pub mod stats;
pub mod store;

//! The sidecar proxy: key placement (ketama) and, later, upstream pools and sessions.

pub mod ring;

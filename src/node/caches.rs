//! Tenants (caches) and their credentials, as the caches file declares
//! them.
//!
//! - [`file`](mod@file): the caches TOML file: its format and rules,
//!   validation, and atomic persistence ([`CachesFile`]).
//! - [`directory`]: the login [`Directory`] built from a validated file.
//! - [`refused`]: the login attempts it refused after a hash, so that a
//!   repeat is not hashed again.

pub mod directory;
pub mod file;
pub mod refused;
#[cfg(test)]
mod tests;

pub use directory::{Directory, LoginError, LoginOk};
pub use file::{
    CacheConfig, CachesError, CachesFile, Capabilities, Credential, Invalid, MAX_USERNAME_LEN,
};

//! Builders and proptest strategies shared by the crate's unit tests, so that
//! each test module writes out only what is particular to it.

use bytes::Bytes;
use proptest::collection::{vec, SizeRange};
use proptest::prelude::*;

use super::request::{Arith, Delete, Get, Key, MetaFrame, Opaque, Store, StoreMode};
use super::{Dialect, Limits, Parsed, ProtocolError};

/// Parse one text-dialect request (classic or meta), as a connection does.
pub(crate) fn parse_text(buf: &[u8], limits: &Limits) -> Result<Parsed, ProtocolError> {
    super::parse(Dialect::Text, buf, limits)
}

pub(crate) fn key(k: &str) -> Key {
    Key::copy_from_slice(k.as_bytes())
}

/// A meta frame that asks for everything it can (every return flag, `q`,
/// `O<opaque>`), with the key as given (not base64) and in canonical order.
pub(crate) fn every_return_flag(opaque: &[u8]) -> MetaFrame {
    MetaFrame {
        opaque: Opaque::new(opaque),
        return_key: true,
        quiet: true,
        return_value: true,
        return_cas: true,
        return_flags: true,
        return_size: true,
        return_ttl: true,
        return_hit: true,
        return_last_access: true,
        ..MetaFrame::default()
    }
}

/// A one-key get without options.
pub(crate) fn get(k: &str) -> Get {
    Get {
        keys: smallvec::smallvec![key(k)],
        ..Get::default()
    }
}

/// A store of `data` under `k` with no flags, expiry, CAS or meta options.
pub(crate) fn store(mode: StoreMode, k: &str, data: &[u8]) -> Store {
    Store {
        mode,
        key: key(k),
        flags: 0,
        exptime: 0,
        data: Bytes::copy_from_slice(data),
        cas: None,
        invalidate: false,
        vivify: None,
    }
}

/// incr or decr by `delta`, with no CAS, vivify, initial value or touch.
pub(crate) fn arith(k: &str, incr: bool, delta: u64) -> Arith {
    Arith {
        key: key(k),
        incr,
        delta,
        cas: None,
        vivify: None,
        initial: 0,
        touch: None,
    }
}

/// A delete with no CAS or meta options.
pub(crate) fn delete(k: &str) -> Delete {
    Delete {
        key: key(k),
        cas: None,
        invalidate: false,
        exptime: None,
    }
}

/// Any bytes, `len` of them.
pub(crate) fn arb_bytes(len: impl Into<SizeRange>) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), len).prop_map(Bytes::from)
}

pub(crate) fn arb_mode() -> impl Strategy<Value = StoreMode> {
    prop_oneof![
        Just(StoreMode::Set),
        Just(StoreMode::Add),
        Just(StoreMode::Replace),
        Just(StoreMode::Append),
        Just(StoreMode::Prepend),
    ]
}

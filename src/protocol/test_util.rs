//! Builders and proptest strategies shared by the crate's unit tests, so that
//! each test module says only what is particular to it.

use super::{Dialect, Limits, Parsed, ProtocolError};

/// Parse one text-dialect request (classic or meta), as a connection does.
pub(crate) fn parse_text(buf: &[u8], limits: &Limits) -> Result<Parsed, ProtocolError> {
    super::parse(Dialect::Text, buf, limits)
}

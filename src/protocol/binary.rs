//! Binary protocol (placeholder signatures; being written).
use super::{Limits, Parsed, ProtocolError, Response};
use bytes::BytesMut;
pub const REQUEST_MAGIC: u8 = 0x80;
pub const RESPONSE_MAGIC: u8 = 0x81;
/// Response status codes.
pub mod status {
    pub const NO_ERROR: u16 = 0x00;
    pub const KEY_NOT_FOUND: u16 = 0x01;
    pub const KEY_EXISTS: u16 = 0x02;
    pub const VALUE_TOO_LARGE: u16 = 0x03;
    pub const INVALID_ARGUMENTS: u16 = 0x04;
    pub const ITEM_NOT_STORED: u16 = 0x05;
    pub const NON_NUMERIC: u16 = 0x06;
    pub const AUTH_ERROR: u16 = 0x20;
    pub const AUTH_CONTINUE: u16 = 0x21;
    pub const UNKNOWN_COMMAND: u16 = 0x81;
    pub const OUT_OF_MEMORY: u16 = 0x82;
    pub const INTERNAL_ERROR: u16 = 0x84;
}
pub fn parse_request(_buf: &[u8], _limits: &Limits) -> Result<Parsed, ProtocolError> {
    todo!()
}
pub fn encode_response(_opcode: u8, _opaque: u32, _response: &Response, _out: &mut BytesMut) {
    todo!()
}

//! Classic text protocol (placeholder signatures; being written).
use super::{request::TextFrame, Limits, Parsed, ProtocolError, Response};
use bytes::BytesMut;
pub fn parse(_buf: &[u8], _limits: &Limits) -> Result<Parsed, ProtocolError> {
    todo!()
}
pub fn encode(_frame: &TextFrame, _response: &Response, _out: &mut BytesMut) {
    todo!()
}

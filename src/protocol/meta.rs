//! Meta protocol (placeholder signatures; being written).
use super::{request::MetaFrame, Response};
use bytes::BytesMut;
pub fn encode(_frame: &MetaFrame, _response: &Response, _out: &mut BytesMut) {
    todo!()
}

use super::*;

#[test]
fn requests_one_at_a_time_and_refused_values_are_discarded_as_they_arrive() {
    let limits = Limits { max_item_size: 16 };
    let mut input = Input::default();
    input
        .read_buf()
        .extend_from_slice(b"set k 0 0 20\r\n0123456789");
    match input.next(&limits).unwrap() {
        Some(Next::Reject { error, unlink, .. }) => {
            assert_eq!(error, ErrorReply::TooLarge);
            assert_eq!(unlink.as_deref(), Some(&b"k"[..]));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(input.next(&limits).unwrap(), None, "value still arriving");
    input
        .read_buf()
        .extend_from_slice(b"0123456789\r\nget k\r\n");
    assert!(matches!(
        input.next(&limits).unwrap(),
        Some(Next::Request(_))
    ));
    assert_eq!(input.next(&limits).unwrap(), None);
    assert_eq!(input.dialect, Some(Dialect::Text));
}

#[test]
fn big_buffers_are_released_once_drained() {
    let mut input = Input::default();
    input.read_buf().reserve(1 << 20);
    assert!(input.buf.capacity() > KEEP);
    assert_eq!(input.next(&Limits::default()).unwrap(), None);
    assert!(input.buf.capacity() <= KEEP);
    let mut out = BytesMut::with_capacity(1 << 20);
    out.extend_from_slice(b"x");
    written(&mut out);
    assert!(out.is_empty() && out.capacity() <= KEEP);
}

//! A node's meta/text reply stream as the sidecar reads it: the request is
//! encoded with `meta::client::encode_request` for the client's frame (which
//! says what reply to expect), replies are parsed one after another with
//! that `Expect`, decoded against the command and written back to the
//! client. The first byte picks the command, the second the client's frame;
//! commands with no upstream form read an ASCII login's reply instead.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use memgate::protocol::meta::client::{self as meta_client, Expect};
use memgate_fuzz::{client_frame, command, encode_for_client, LIMITS};

/// The opaque the sidecar puts on the request (`O7`); the seeds use it.
const SEQ: u32 = 7;
/// Replies at most this long also have every strict prefix parsed.
const PREFIX_CHECK_LEN: usize = 64;

fuzz_target!(|data: &[u8]| {
    let [pick_command, pick_frame, stream @ ..] = data else {
        return;
    };
    let command = command(*pick_command);
    let frame = client_frame(*pick_frame);
    let expect = meta_client::encode_request(&command, &frame, SEQ, &mut BytesMut::new())
        .unwrap_or(Expect::Login);
    // The small limit reaches the over-size `VA` refusal.
    let limits = &LIMITS[usize::from(*pick_frame >> 7)];
    let mut rest = stream;
    while let Ok(Some((reply, used))) = meta_client::parse_reply(rest, expect, limits) {
        assert!(used > 0 && used <= rest.len());
        if used <= PREFIX_CHECK_LEN {
            for end in 0..used {
                assert_eq!(
                    meta_client::parse_reply(&rest[..end], expect, limits),
                    Ok(None)
                );
            }
        }
        if expect == Expect::Login {
            let _ = meta_client::login_result(&reply);
        } else if let Ok(response) = meta_client::decode(command.clone(), reply) {
            encode_for_client(&frame, &command, &response);
        }
        rest = &rest[used..];
    }
});

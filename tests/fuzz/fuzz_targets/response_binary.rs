//! A node's binary reply stream as the sidecar reads it: packets parsed one
//! after another, each decoded against the command in flight and written
//! back to a client. The first byte picks the command, the second the
//! client's frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memgate::protocol::binary::{self, HEADER_LEN};
use memgate_fuzz::{client_frame, command, encode_for_client};

/// Replies at most this long also have every strict prefix parsed.
const PREFIX_CHECK_LEN: usize = 64;

fuzz_target!(|data: &[u8]| {
    let [pick_command, pick_frame, stream @ ..] = data else {
        return;
    };
    let command = command(*pick_command);
    let frame = client_frame(*pick_frame);
    let mut rest = stream;
    while let Ok(Some((packet, used))) = binary::parse_response(rest) {
        assert!(used >= HEADER_LEN && used <= rest.len());
        if used <= PREFIX_CHECK_LEN {
            for end in 0..used {
                assert_eq!(binary::parse_response(&rest[..end]), Ok(None));
            }
        }
        let response = binary::decode_response(&command, &packet);
        let _ = binary::ends_reply(&command, &packet);
        encode_for_client(&frame, &command, &response);
        rest = &rest[used..];
    }
});

//! SASL PLAIN payloads: whatever parses re-encodes to the same credentials,
//! and a payload with an empty authzid (what clients send) is exactly what
//! `encode_plain` writes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memgate::protocol::sasl::{encode_plain, parse_plain, PlainCredentials};

fuzz_target!(|data: &[u8]| {
    let Some(creds) = parse_plain(data) else {
        return;
    };
    assert!(!creds.username.is_empty() && !creds.password.is_empty());
    let encoded = encode_plain(&creds.username, &creds.password);
    if creds.authzid.is_empty() {
        assert_eq!(encoded, data);
    }
    let expected = PlainCredentials {
        authzid: String::new(),
        ..creds
    };
    assert_eq!(parse_plain(&encoded), Some(expected));
});

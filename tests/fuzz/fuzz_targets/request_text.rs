//! Text and meta request parsing (they share a connection and a line
//! discipline), with the encode round trip and the prefix invariant.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memgate::protocol::Dialect;
use memgate_fuzz::{check_request, LIMITS};

fuzz_target!(|data: &[u8]| {
    for limits in &LIMITS {
        check_request(Dialect::Text, data, limits);
    }
});

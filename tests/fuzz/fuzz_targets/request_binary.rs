//! Binary request parsing, with the client-side encode round trip the proxy
//! relies on and the prefix invariant.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memgate::protocol::Dialect;
use memgate_fuzz::{check_request, LIMITS};

fuzz_target!(|data: &[u8]| {
    for limits in &LIMITS {
        check_request(Dialect::Binary, data, limits);
    }
});

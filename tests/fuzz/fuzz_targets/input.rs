//! The connection input splitter: the same bytes delivered at once or in
//! arbitrary reads must give the same requests, rejects and fatal error.
//! The first byte seeds the read sizes (and picks the limits).
#![no_main]

use libfuzzer_sys::fuzz_target;
use memgate::protocol::input::{Input, Next};
use memgate::protocol::{Limits, ProtocolError};
use memgate_fuzz::LIMITS;

/// Everything `next` returns until it wants more input or fails.
fn drain(input: &mut Input, limits: &Limits, seen: &mut Vec<Result<Next, ProtocolError>>) -> bool {
    loop {
        match input.next(limits) {
            Ok(Some(next)) => seen.push(Ok(next)),
            Ok(None) => return true,
            Err(e) => {
                seen.push(Err(e));
                return false;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let limits = &LIMITS[usize::from(seed & 1)];

    let mut whole = Vec::new();
    let mut input = Input::default();
    input.read_buf().extend_from_slice(stream);
    drain(&mut input, limits, &mut whole);

    let mut pieces = Vec::new();
    let mut input = Input::default();
    // Read sizes 1..=16 from a tiny linear congruential sequence.
    let mut state = u32::from(seed);
    let mut rest = stream;
    while !rest.is_empty() {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = (((state >> 16) % 16 + 1) as usize).min(rest.len());
        input.read_buf().extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        if !drain(&mut input, limits, &mut pieces) {
            break;
        }
    }
    assert_eq!(whole, pieces);
});

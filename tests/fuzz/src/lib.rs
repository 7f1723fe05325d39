//! What the fuzz targets share: the request checks that every dialect must
//! pass, and the commands whose replies the response targets decode.

use bytes::{Bytes, BytesMut};
use memgate::protocol::request::{Arith, Delete, Get, MetaFrame, Opaque, Store, StoreMode};
use memgate::protocol::{self, binary, Command, Dialect, Frame, Limits, Parsed, Request};

/// Requests at most this long also have every strict prefix parsed: cheap
/// enough to run on every input, long enough for most commands.
const PREFIX_CHECK_LEN: usize = 64;

/// The limits requests are parsed under: the default, and one small enough
/// that the fuzzer reaches the over-size paths with short inputs.
pub const LIMITS: [Limits; 2] = [
    Limits {
        max_item_size: protocol::DEFAULT_MAX_ITEM_SIZE,
    },
    Limits { max_item_size: 8 },
];

/// Parse the front of `buf` and check what `protocol::parse` documents:
/// consumption stays inside the buffer, a whole request is `Incomplete` at
/// every strict prefix, and a request encodes back to itself.
pub fn check_request(dialect: Dialect, buf: &[u8], limits: &Limits) {
    let Ok(parsed) = protocol::parse(dialect, buf, limits) else {
        return;
    };
    match parsed {
        Parsed::Incomplete => {}
        Parsed::Reject { consumed, .. } => assert!(consumed > 0 && consumed <= buf.len()),
        Parsed::Request(request, used) => {
            assert!(
                used > 0 && used <= buf.len(),
                "consumed {used} of {}",
                buf.len()
            );
            if used <= PREFIX_CHECK_LEN {
                for end in 0..used {
                    assert_eq!(
                        protocol::parse(dialect, &buf[..end], limits),
                        Ok(Parsed::Incomplete),
                        "prefix of {end} bytes"
                    );
                }
            }
            match dialect {
                Dialect::Text => round_trip_text(&request, limits),
                Dialect::Binary => round_trip_binary(&request, limits),
            }
        }
    }
}

/// `protocol::encode_request` promises that `parse` returns the request again.
fn round_trip_text(request: &Request, limits: &Limits) {
    let mut out = BytesMut::new();
    if protocol::encode_request(request, &mut out).is_err() {
        return;
    }
    assert_eq!(
        protocol::parse(Dialect::Text, &out, limits),
        Ok(Parsed::Request(request.clone(), out.len())),
        "re-encoded as {:?}",
        String::from_utf8_lossy(&out)
    );
}

/// The proxy re-encodes a binary client's command for its upstream with the
/// client-side encoder; the node must read the same command back, framed by
/// the opcode the encoder chose (loud or quiet).
fn round_trip_binary(request: &Request, limits: &Limits) {
    let Frame::Binary { opaque, .. } = request.frame else {
        panic!("binary parse gave {:?}", request.frame);
    };
    for quiet in [false, true] {
        let mut out = BytesMut::new();
        let Ok(opcode) = binary::encode_request(&request.command, quiet, opaque, &mut out) else {
            continue;
        };
        let again = Request {
            command: request.command.clone(),
            frame: Frame::Binary { opcode, opaque },
        };
        assert_eq!(
            protocol::parse(Dialect::Binary, &out, limits),
            Ok(Parsed::Request(again, out.len())),
            "re-encoded (quiet: {quiet}) as {out:02x?}"
        );
    }
}

/// One command of each shape a node's reply can answer, for the response
/// targets: the first input byte picks one.
pub fn command(pick: u8) -> Command {
    let key = || Bytes::from_static(b"key");
    let store = |mode, cas| {
        Command::Store(Store {
            mode,
            key: key(),
            flags: 5,
            exptime: 0,
            data: Bytes::from_static(b"value"),
            cas,
            invalidate: false,
            vivify: None,
        })
    };
    let arith = |incr| {
        Command::Arith(Arith {
            key: key(),
            incr,
            delta: 1,
            cas: None,
            vivify: None,
            initial: 0,
            touch: None,
        })
    };
    let get = |touch| {
        Command::Get(Get {
            keys: vec![key()].into(),
            touch,
            ..Get::default()
        })
    };
    let all = [
        get(None),
        get(Some(30)),
        store(StoreMode::Set, None),
        store(StoreMode::Set, Some(7)),
        store(StoreMode::Add, None),
        store(StoreMode::Replace, None),
        store(StoreMode::Append, None),
        store(StoreMode::Prepend, None),
        Command::Delete(Delete {
            key: key(),
            cas: None,
            invalidate: false,
            exptime: None,
        }),
        arith(true),
        arith(false),
        Command::Touch {
            key: key(),
            exptime: 30,
        },
        Command::FlushAll { delay: 0 },
        Command::Version,
        Command::Verbosity,
        Command::Stats { group: None },
        Command::Stats {
            group: Some("settings".into()),
        },
        Command::Quit,
        Command::Noop,
        Command::MetaDebug { key: key() },
        Command::SaslList,
        Command::SaslAuth {
            mechanism: Bytes::from_static(b"PLAIN"),
            data: Bytes::from_static(b"\0user\0pass"),
        },
        Command::SaslStep {
            mechanism: Bytes::from_static(b"PLAIN"),
            data: Bytes::new(),
        },
    ];
    let index = usize::from(pick) % all.len();
    all.into_iter().nth(index).unwrap_or(Command::Noop)
}

/// A client's frame, which decides what the sidecar asks of the node and
/// how it writes the answer back: the low bits pick the dialect, the others
/// a meta client's return flags.
pub fn client_frame(pick: u8) -> Frame {
    let bit = |n: u8| pick & (1 << n) != 0;
    match pick & 3 {
        0 => Frame::Text(protocol::request::TextFrame {
            noreply: false,
            with_cas: bit(2),
        }),
        1 => Frame::Binary {
            opcode: if bit(2) {
                binary::opcode::GETKQ
            } else {
                binary::opcode::GET
            },
            opaque: 9,
        },
        _ => Frame::Meta(Box::new(MetaFrame {
            opaque: bit(2).then(|| Opaque::new(b"client")).flatten(),
            return_key: bit(3),
            quiet: bit(4),
            return_value: bit(5),
            return_cas: bit(6),
            return_flags: bit(7),
            return_size: bit(5) && bit(7),
            return_ttl: bit(6) && bit(3),
            ..MetaFrame::default()
        })),
    }
}

/// Write `response` to a client framed by `frame`, as the sidecar does with
/// a decoded node reply; nothing is asserted but that it does not panic.
pub fn encode_for_client(frame: &Frame, command: &Command, response: &protocol::Response) {
    let mut out = BytesMut::new();
    protocol::encode(frame, command.key().map(|k| &k[..]), response, &mut out);
}

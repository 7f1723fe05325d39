use super::*;
use crate::protocol::line::client_error;
use crate::protocol::request::{
    Arith, Command, Delete, Frame, Get, Keys, Request, Store, StoreMode, TextFrame,
};
use crate::protocol::test_util::{arb_bytes, arb_mode, key, parse_text as parse};
use crate::protocol::{
    encode_request,
    request::{FlagOrder, MetaFrame, Opaque},
    Found, ProtocolError, MAX_LINE_LEN,
};
use crate::protocol::{ErrorReply, Limits, Parsed, Response};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

fn limits() -> Limits {
    Limits::default()
}

fn parse_ok(buf: &[u8]) -> (Request, usize) {
    match parse(buf, &limits()) {
        Ok(Parsed::Request(req, used)) => (req, used),
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
    }
}

/// The error and consumed count of a rejected line, checking `skip` is 0.
fn rejected(buf: &[u8]) -> (String, bool, usize) {
    match parse(buf, &limits()) {
        Ok(Parsed::Reject {
            frame,
            error,
            consumed,
            skip: 0,
            unlink: None,
        }) => {
            let noreply = matches!(frame, Frame::Text(TextFrame { noreply: true, .. }));
            (error.text(), noreply, consumed)
        }
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
    }
}

fn text(noreply: bool) -> Frame {
    Frame::Text(TextFrame {
        noreply,
        with_cas: false,
    })
}

fn store(mode: StoreMode, k: &str, flags: u32, exptime: i64, data: &str) -> Store {
    Store {
        flags,
        exptime,
        ..crate::protocol::test_util::store(mode, k, data.as_bytes())
    }
}

#[test]
fn retrievals() {
    let (req, used) = parse_ok(b"get a bb  ccc\r\n");
    assert_eq!(used, 15);
    assert_eq!(req.frame, text(false));
    let keys: Keys = smallvec::smallvec![key("a"), key("bb"), key("ccc")];
    let want = Get {
        keys: keys.clone(),
        ..Get::default()
    };
    assert_eq!(req.command, Command::Get(want));

    let (req, _) = parse_ok(b"gats -5 a bb ccc\r\n");
    let frame = TextFrame {
        noreply: false,
        with_cas: true,
    };
    assert_eq!(req.frame, Frame::Text(frame));
    let want = Get {
        keys,
        touch: Some(-5),
        ..Get::default()
    };
    assert_eq!(req.command, Command::Get(want));
    let (req, _) = parse_ok(b"gets k\n");
    assert!(matches!(
        req.frame,
        Frame::Text(TextFrame { with_cas: true, .. })
    ));
    let (req, _) = parse_ok(b"gat 10 k\r\n");
    assert!(matches!(
        req.command,
        Command::Get(Get {
            touch: Some(10),
            ..
        })
    ));

    assert_eq!(rejected(b"get\r\n").0, "ERROR");
    assert_eq!(
        rejected(b"gat x k\r\n").0,
        "CLIENT_ERROR invalid exptime argument"
    );
    let long = format!("get a {}\r\n", "k".repeat(251));
    assert_eq!(
        rejected(long.as_bytes()).0,
        "CLIENT_ERROR bad command line format"
    );
    // Control characters other than the line's own delimiters are
    // accepted, as memcached does (memcaslap's keys begin with 0x10s).
    let (req, _) = parse_ok(b"get a\x10b\r\n");
    assert!(matches!(req.command, Command::Get(ref g) if g.keys[0].as_ref() == b"a\x10b"));
    // A NUL ends the line (a_command_line_ends_at_its_first_nul).
    // 250 bytes is fine.
    parse_ok(format!("get {}\r\n", "k".repeat(250)).as_bytes());
}

#[test]
fn storage_commands() {
    let cases: [(&[u8], StoreMode); 5] = [
        (b"set", StoreMode::Set),
        (b"add", StoreMode::Add),
        (b"replace", StoreMode::Replace),
        (b"append", StoreMode::Append),
        (b"prepend", StoreMode::Prepend),
    ];
    for (name, mode) in cases {
        let mut buf = name.to_vec();
        buf.extend_from_slice(b" k 4294967295 -1 5\r\nhe\r\no\r\nget k\r\n");
        let (req, used) = parse_ok(&buf);
        assert_eq!(used, buf.len() - 7);
        assert_eq!(req.frame, text(false));
        let want = store(mode, "k", u32::MAX, -1, "he\r\no");
        assert_eq!(req.command, Command::Store(want));
    }
    let (req, used) = parse_ok(b"cas k 1 2 0 99 noreply\r\n\r\n");
    assert_eq!(used, 26);
    assert_eq!(req.frame, text(true));
    let want = Store {
        cas: Some(99),
        ..store(StoreMode::Set, "k", 1, 2, "")
    };
    assert_eq!(req.command, Command::Store(want));
    // A token other than `noreply` in its place is ignored, as memcached does.
    let (req, _) = parse_ok(b"set k 0 0 1 whatever\r\nx\r\n");
    assert_eq!(req.frame, text(false));
}

#[test]
fn storage_errors() {
    let bad = "CLIENT_ERROR bad command line format";
    assert_eq!(rejected(b"set k 0 0\r\n"), ("ERROR".into(), false, 11));
    assert_eq!(rejected(b"cas k 0 0 1\r\n").0, "ERROR");
    assert_eq!(rejected(b"set k x 0 1\r\n").0, bad);
    assert_eq!(rejected(b"set k 4294967296 0 1\r\n").0, bad);
    assert_eq!(rejected(b"set k 0 2147483648 1\r\n").0, bad);
    assert_eq!(rejected(b"set k 0 0 -1\r\n").0, bad);
    assert_eq!(rejected(b"cas k 0 0 1 -1\r\n").0, bad);
    // noreply also silences the error its own line provokes.
    assert_eq!(rejected(b"set k 0 0 x noreply\r\n"), (bad.into(), true, 21));
    let long = format!("set {} 0 0 1\r\n", "k".repeat(251));
    assert_eq!(rejected(long.as_bytes()).0, bad);
}

#[test]
fn bad_data_chunk_consumes_line_and_block() {
    let buf = b"set k 0 0 3\r\nabcde\r\nget k\r\n";
    match parse(buf, &limits()) {
        Ok(Parsed::Reject {
            error, consumed, ..
        }) => {
            assert_eq!(error.text(), "CLIENT_ERROR bad data chunk");
            assert_eq!(consumed, 13 + 5);
        }
        other => panic!("{other:?}"),
    }
    // A bare \n does not end a data block.
    assert!(matches!(
        parse(b"set k 0 0 1\r\nx\nzz", &limits()),
        Ok(Parsed::Reject { .. })
    ));
}

#[test]
fn oversize_values_are_refused_before_buffering() {
    let limits = Limits { max_item_size: 10 };
    // 1 + 9 fits exactly; it waits for its data.
    assert_eq!(parse(b"set k 0 0 9\r\n", &limits), Ok(Parsed::Incomplete));
    let cases: [(&[u8], Option<&str>); 5] = [
        (b"set k 0 0 10\r\n", Some("k")),
        (b"add k 0 0 10\r\n", None),
        (b"replace k 0 0 10\r\n", None),
        (b"cas k 0 0 10 1\r\n", None),
        (b"append k 0 0 2000000000 noreply\r\n", None),
    ];
    for (line, unlink) in cases {
        let noreply = line.ends_with(b"noreply\r\n");
        let size: usize = if noreply { 2_000_000_000 } else { 10 };
        assert_eq!(
            parse(line, &limits),
            Ok(Parsed::Reject {
                frame: text(noreply),
                error: ErrorReply::TooLarge,
                consumed: line.len(),
                skip: size + 2,
                unlink: unlink.map(key),
            })
        );
    }
}

#[test]
fn arith_touch_delete() {
    let (req, _) = parse_ok(b"incr k 18446744073709551615\r\n");
    let Command::Arith(arith) = req.command else {
        panic!()
    };
    assert!(arith.incr);
    assert_eq!(arith.delta, u64::MAX);
    let (req, _) = parse_ok(b"decr k 1 noreply\r\n");
    assert_eq!(req.frame, text(true));
    assert!(matches!(
        req.command,
        Command::Arith(Arith {
            incr: false,
            delta: 1,
            ..
        })
    ));
    assert_eq!(
        rejected(b"incr k -1\r\n").0,
        "CLIENT_ERROR invalid numeric delta argument"
    );
    assert_eq!(rejected(b"incr k\r\n").0, "ERROR");

    let (req, _) = parse_ok(b"touch k -1 noreply\r\n");
    assert_eq!(req.frame, text(true));
    let want = Command::Touch {
        key: key("k"),
        exptime: -1,
    };
    assert_eq!(req.command, want);
    assert_eq!(
        rejected(b"touch k soon\r\n").0,
        "CLIENT_ERROR invalid exptime argument"
    );

    let delete = Command::Delete(Delete {
        key: key("k"),
        cas: None,
        invalidate: false,
        exptime: None,
    });
    for (line, noreply) in [
        (&b"delete k\r\n"[..], false),
        (b"delete k 0\r\n", false),
        (b"delete k noreply\r\n", true),
        (b"delete k 0 noreply\r\n", true),
    ] {
        let (req, _) = parse_ok(line);
        assert_eq!((req.command, req.frame), (delete.clone(), text(noreply)));
    }
    let usage = "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]";
    assert_eq!(rejected(b"delete k 5\r\n").0, usage);
    assert_eq!(rejected(b"delete k 0 0\r\n").0, usage);
    assert_eq!(
        rejected(b"delete k 1 noreply\r\n"),
        (usage.into(), true, 20)
    );
    assert_eq!(rejected(b"delete k 0 noreply x\r\n").0, "ERROR");
}

#[test]
fn other_commands() {
    let cases: [(&[u8], Command, bool); 10] = [
        (b"flush_all\r\n", Command::FlushAll { delay: 0 }, false),
        (b"flush_all 10\r\n", Command::FlushAll { delay: 10 }, false),
        (
            b"flush_all noreply\r\n",
            Command::FlushAll { delay: 0 },
            true,
        ),
        (
            b"flush_all -3 noreply\r\n",
            Command::FlushAll { delay: -3 },
            true,
        ),
        (b"version\r\n", Command::Version, false),
        (b"verbosity 1\r\n", Command::Verbosity, false),
        (b"verbosity 1 noreply\r\n", Command::Verbosity, true),
        (b"quit\r\n", Command::Quit, false),
        (b"stats\r\n", Command::Stats { group: None }, false),
        (
            b"stats  detail dump\r\n",
            Command::Stats {
                group: Some("detail dump".into()),
            },
            false,
        ),
    ];
    for (line, command, noreply) in cases {
        let (req, used) = parse_ok(line);
        assert_eq!(
            (req.command, req.frame, used),
            (command, text(noreply), line.len())
        );
    }
    let (req, _) = parse_ok(b"stats settings\r\n");
    let group = Some(Bytes::from_static(b"settings"));
    assert_eq!(req.command, Command::Stats { group });
    // A group that is not UTF-8 is kept byte for byte, so that it encodes
    // back to the line it came from (the fuzzer found a lossy repair
    // lengthening it past the line limit).
    let line = b"stats \xff\xdd detail\r\n";
    let (req, _) = parse_ok(line);
    let group = Some(Bytes::from_static(b"\xff\xdd detail"));
    assert_eq!(req.command, Command::Stats { group });
    let mut out = BytesMut::new();
    encode_request(&req, &mut out).expect("encodes");
    assert_eq!(&out[..], &line[..]);
    // A group that fits a line only with a bare `\n` is not re-encoded
    // (with `\r\n` the line would be one byte past the limit).
    let mut long = b"stats ".to_vec();
    long.resize(MAX_LINE_LEN - 1, b'g');
    long.push(b'\n');
    let (req, used) = parse_ok(&long);
    assert_eq!(used, MAX_LINE_LEN);
    assert!(encode_request(&req, &mut BytesMut::new()).is_err());
    long.truncate(MAX_LINE_LEN - 2);
    long.extend_from_slice(b"\r\n");
    let (req, _) = parse_ok(&long);
    let mut out = BytesMut::new();
    encode_request(&req, &mut out).expect("a group that fits encodes");
    assert_eq!(&out[..], &long[..]);
    // The same bound holds for every command, a retrieval's being its own.
    let many_keys = |n: usize| Request {
        command: Command::Get(Get {
            keys: smallvec::smallvec![Bytes::from(vec![b'k'; 250]); n],
            ..Get::default()
        }),
        frame: Frame::Text(TextFrame::default()),
    };
    let fits = MAX_RETRIEVAL_LINE_LEN / 251 - 1;
    assert!(encode_request(&many_keys(fits), &mut BytesMut::new()).is_ok());
    assert!(encode_request(&many_keys(fits + 2), &mut BytesMut::new()).is_err());
    assert_eq!(
        rejected(b"flush_all soon\r\n").0,
        "CLIENT_ERROR invalid exptime argument"
    );
    assert_eq!(rejected(b"flush_all 1 2 3\r\n").0, "ERROR");
    assert_eq!(
        rejected(b"verbosity x\r\n").0,
        "CLIENT_ERROR bad command line format"
    );
    assert_eq!(rejected(b"verbosity\r\n").0, "ERROR");
}

/// Commands that change the whole server are read as memcached 1.6.18 reads
/// them, and then refused (replies measured against memcached).
#[test]
fn server_changing_commands_are_refused_after_memcacheds_checks() {
    let refused = |line: &[u8]| rejected(line).0;
    assert_eq!(
        refused(b"cache_memlimit 50\r\n"),
        "CLIENT_ERROR cache_memlimit not allowed"
    );
    assert_eq!(
        rejected(b"cache_memlimit 50 noreply\r\n"),
        ("CLIENT_ERROR cache_memlimit not allowed".into(), true, 27)
    );
    assert_eq!(refused(b"cache_memlimit\r\n"), "ERROR");
    assert_eq!(refused(b"cache_memlimit abc\r\n"), "ERROR");
    assert_eq!(refused(b"cache_memlimit 1 2 3\r\n"), "ERROR");
    assert_eq!(
        refused(b"slabs automove 1\r\n"),
        "CLIENT_ERROR slabs automove not allowed"
    );
    assert_eq!(
        refused(b"slabs automove invalid\r\n"),
        "CLIENT_ERROR bad command line format"
    );
    assert_eq!(refused(b"slabs automove 5\r\n"), "ERROR");
    assert_eq!(refused(b"slabs automove ratio\r\n"), "ERROR");
    assert_eq!(refused(b"slabs reassign 1 2\r\n"), "ERROR");
    assert_eq!(refused(b"slabs\r\n"), "ERROR");
}

/// memcached reads a command line as a C string: it ends at the first NUL,
/// and the whole line is still consumed.
#[test]
fn a_command_line_ends_at_its_first_nul() {
    assert_eq!(rejected(b"incr \x00 1\r\n"), ("ERROR".into(), false, 10));
    assert_eq!(rejected(b"get \x00\r\n").0, "ERROR");
    let (request, used) = parse_ok(b"get a\x00b\r\n");
    assert_eq!(used, 9);
    assert_eq!(
        request.command,
        Command::Get(Get {
            keys: smallvec::smallvec![key("a")],
            ..Get::default()
        })
    );
}

#[test]
fn unknown_and_empty_lines_are_error() {
    assert_eq!(rejected(b"\r\n"), ("ERROR".into(), false, 2));
    assert_eq!(rejected(b"\n"), ("ERROR".into(), false, 1));
    assert_eq!(rejected(b"   \r\n").0, "ERROR");
    assert_eq!(rejected(b"GET k\r\n").0, "ERROR");
    assert_eq!(rejected(b"bogus a b c\r\n"), ("ERROR".into(), false, 13));
    assert_eq!(rejected(b"mx k\r\n").0, "ERROR");
}

#[test]
fn pipelined_requests_parse_one_at_a_time() {
    let buf = b"set a 0 0 1\r\nx\r\nget a\nmn\r\n";
    let (first, used) = parse_ok(buf);
    assert!(matches!(first.command, Command::Store(_)));
    let (second, used2) = parse_ok(&buf[used..]);
    assert_eq!(used2, 6);
    assert!(matches!(second.command, Command::Get(_)));
    let (third, used3) = parse_ok(&buf[used + used2..]);
    assert_eq!(third.command, Command::Noop);
    assert_eq!(used + used2 + used3, buf.len());
}

#[test]
fn line_length_limits() {
    let l = limits();
    let long = vec![b'x'; MAX_LINE_LEN - 1];
    assert_eq!(parse(&long, &l), Ok(Parsed::Incomplete));
    let long = vec![b'x'; MAX_LINE_LEN];
    assert_eq!(parse(&long, &l), Err(ProtocolError::LineTooLong));
    // A line of exactly MAX_LINE_LEN bytes, newline included, is fine.
    let mut line = vec![b'x'; MAX_LINE_LEN - 2];
    line.extend_from_slice(b"\r\n");
    assert_eq!(rejected(&line).0, "ERROR");

    // Retrieval lines may grow to MAX_RETRIEVAL_LINE_LEN.
    let mut get = b"  get".to_vec();
    while get.len() < MAX_RETRIEVAL_LINE_LEN - 300 {
        get.extend_from_slice(b" some_key");
    }
    assert_eq!(parse(&get, &l), Ok(Parsed::Incomplete));
    get.extend_from_slice(b"\r\n");
    let (req, used) = parse_ok(&get);
    assert_eq!(used, get.len());
    assert!(matches!(req.command, Command::Get(g) if g.keys.len() > 20_000));
    get.truncate(get.len() - 2);
    get.resize(MAX_RETRIEVAL_LINE_LEN, b'k');
    assert_eq!(parse(&get, &l), Err(ProtocolError::LineTooLong));
}

fn found(k: &str, data: &str) -> Found {
    Found {
        key: key(k),
        flags: 7,
        cas: 42,
        data: key(data),
        ..Found::default()
    }
}

fn encoded(frame: TextFrame, response: Response) -> String {
    let mut out = BytesMut::new();
    encode(&frame, &response, &mut out);
    String::from_utf8(out.to_vec()).unwrap()
}

proptest! {
    /// Consuming the response encodes the same bytes, for gets (the case
    /// it handles itself, with room reserved for the largest header) and
    /// for anything else, noreply or not.
    #[test]
    fn encoding_owned_matches_encoding(
        items in proptest::collection::vec(proptest::option::of(("[a-z]{1,250}", arb_bytes(0..64))), 0..8),
        flags in any::<u32>(),
        cas in any::<u64>(),
        with_cas in any::<bool>(),
        noreply in any::<bool>(),
    ) {
        let frame = TextFrame { noreply, with_cas };
        let items: Vec<Option<Found>> = items
            .into_iter()
            .map(|item| item.map(|(k, data)| Found {
                key: key(&k),
                flags,
                cas,
                data,
                ..Found::default()
            }))
            .collect();
        for response in [Response::Get(items), Response::NotFound] {
            let mut owned = BytesMut::new();
            encode_owned(&frame, response.clone(), &mut owned);
            let mut borrowed = BytesMut::new();
            encode(&frame, &response, &mut borrowed);
            prop_assert_eq!(owned, borrowed);
        }
    }
}

#[test]
fn encodes_replies() {
    let plain = TextFrame::default();
    let gets = TextFrame {
        noreply: false,
        with_cas: true,
    };
    let items = Response::Get(vec![Some(found("a", "xy")), None, Some(found("b", ""))]);
    assert_eq!(
        encoded(plain, items.clone()),
        "VALUE a 7 2\r\nxy\r\nVALUE b 7 0\r\n\r\nEND\r\n"
    );
    assert_eq!(
        encoded(gets, items),
        "VALUE a 7 2 42\r\nxy\r\nVALUE b 7 0 42\r\n\r\nEND\r\n"
    );
    assert_eq!(encoded(plain, Response::Get(vec![None])), "END\r\n");
    let lines = [
        (Response::Stored { cas: 1 }, "STORED\r\n"),
        (Response::AuthOk, "STORED\r\n"),
        (Response::NotStored, "NOT_STORED\r\n"),
        (Response::Exists, "EXISTS\r\n"),
        (Response::NotFound, "NOT_FOUND\r\n"),
        (Response::Deleted, "DELETED\r\n"),
        (Response::Touched, "TOUCHED\r\n"),
        (
            Response::Number {
                value: u64::MAX,
                cas: 1,
                ttl: 1,
            },
            "18446744073709551615\r\n",
        ),
        (Response::Ok, "OK\r\n"),
        (Response::Version("1.6.18".into()), "VERSION 1.6.18\r\n"),
        (
            Response::Stats(vec![
                ("pid".into(), "1".into()),
                ("uptime".into(), "2".into()),
            ]),
            "STAT pid 1\r\nSTAT uptime 2\r\nEND\r\n",
        ),
        (Response::Error(ErrorReply::UnknownCommand), "ERROR\r\n"),
        (
            Response::Error(ErrorReply::TooLarge),
            "SERVER_ERROR object too large for cache\r\n",
        ),
        (Response::Silent, ""),
        (Response::Noop, "SERVER_ERROR unexpected reply\r\n"),
    ];
    for (response, want) in lines {
        assert_eq!(encoded(plain, response), want);
    }
}

#[test]
fn noreply_silences_everything() {
    let frame = TextFrame {
        noreply: true,
        with_cas: false,
    };
    for response in [
        Response::Stored { cas: 1 },
        Response::NotFound,
        Response::Error(ErrorReply::TooLarge),
        Response::Error(client_error("bad data chunk")),
    ] {
        assert_eq!(encoded(frame, response), "");
    }
}

#[test]
fn encode_request_refuses_what_parse_cannot_return() {
    let mut out = BytesMut::new();
    let bad = [
        Request {
            command: Command::Version,
            frame: text(true),
        },
        Request {
            command: Command::SaslList,
            frame: text(false),
        },
        Request {
            command: Command::Touch {
                key: key("a b"),
                exptime: 0,
            },
            frame: text(false),
        },
        Request {
            command: Command::Store(Store {
                cas: Some(1),
                ..store(StoreMode::Add, "k", 0, 0, "")
            }),
            frame: text(false),
        },
        Request {
            command: Command::Version,
            frame: Frame::Meta(Box::default()),
        },
        Request {
            command: Command::Version,
            frame: Frame::Binary {
                opcode: 0,
                opaque: 0,
            },
        },
    ];
    for req in bad {
        assert!(encode_request(&req, &mut out).is_err(), "{req:?}");
    }
    assert!(out.is_empty());
}

// --- property tests -------------------------------------------------

fn arb_key() -> impl Strategy<Value = Bytes> {
    "[a-zA-Z0-9_:.!~-]{1,40}".prop_map(|k| Bytes::from(k.into_bytes()))
}

fn arb_exptime() -> impl Strategy<Value = i64> {
    prop_oneof![Just(0i64), any::<i32>().prop_map(i64::from)]
}

fn arb_text_request() -> impl Strategy<Value = Request> {
    let frame = |noreply, with_cas| Frame::Text(TextFrame { noreply, with_cas });
    prop_oneof![
        (
            proptest::collection::vec(arb_key(), 1..6),
            proptest::option::of(arb_exptime()),
            any::<bool>()
        )
            .prop_map(move |(keys, touch, with_cas)| Request {
                command: Command::Get(Get {
                    keys: keys.into(),
                    touch,
                    ..Get::default()
                }),
                frame: frame(false, with_cas),
            }),
        (
            arb_mode(),
            arb_key(),
            any::<u32>(),
            arb_exptime(),
            arb_bytes(0..64),
            any::<Option<u64>>(),
            any::<bool>()
        )
            .prop_map(move |(mode, key, flags, exptime, data, cas, noreply)| {
                let mode = if cas.is_some() { StoreMode::Set } else { mode };
                Request {
                    command: Command::Store(Store {
                        mode,
                        key,
                        flags,
                        exptime,
                        data,
                        cas,
                        invalidate: false,
                        vivify: None,
                    }),
                    frame: frame(noreply, false),
                }
            }),
        (arb_key(), any::<bool>(), any::<u64>(), any::<bool>()).prop_map(
            move |(key, incr, delta, noreply)| Request {
                command: Command::Arith(Arith {
                    key,
                    incr,
                    delta,
                    cas: None,
                    vivify: None,
                    initial: 0,
                    touch: None,
                }),
                frame: frame(noreply, false),
            }
        ),
        (arb_key(), any::<bool>()).prop_map(move |(key, noreply)| Request {
            command: Command::Delete(Delete {
                key,
                cas: None,
                invalidate: false,
                exptime: None,
            }),
            frame: frame(noreply, false),
        }),
        (arb_key(), arb_exptime(), any::<bool>()).prop_map(move |(key, exptime, noreply)| {
            Request {
                command: Command::Touch { key, exptime },
                frame: frame(noreply, false),
            }
        }),
        (arb_exptime(), any::<bool>()).prop_map(move |(delay, noreply)| Request {
            command: Command::FlushAll { delay },
            frame: frame(noreply, false),
        }),
        any::<bool>().prop_map(move |noreply| Request {
            command: Command::Verbosity,
            frame: frame(noreply, false),
        }),
        proptest::option::of("[a-z]{1,8}( [a-z0-9]{1,4})?").prop_map(move |group| Request {
            command: Command::Stats {
                group: group.map(Bytes::from)
            },
            frame: frame(false, false),
        }),
        Just(Request {
            command: Command::Version,
            frame: frame(false, false),
        }),
        Just(Request {
            command: Command::Quit,
            frame: frame(false, false),
        }),
    ]
}

/// Frame flags that apply to every meta command, the return flags in a
/// random order.
fn arb_meta_frame(readable: bool) -> impl Strategy<Value = (MetaFrame, bool)> {
    (
        proptest::collection::vec(any::<bool>(), 10),
        proptest::option::of("[a-zA-Z0-9]{0,31}"),
        Just(FlagOrder::CANONICAL.to_vec()).prop_shuffle(),
    )
        .prop_map(move |(b, opaque, shuffled)| {
            let on = |i: usize| b.get(i).copied().unwrap_or(false);
            let mut frame = MetaFrame {
                opaque: opaque.and_then(|o| Opaque::new(o.as_bytes())),
                return_key: on(0),
                base64_key: on(1),
                quiet: on(2),
                return_cas: on(3),
                // Item-reading flags only where they mean something, so
                // that lines stay under memcached's token limit.
                return_value: readable && on(4),
                return_flags: readable && on(5),
                return_size: readable && on(6),
                return_ttl: readable && on(7),
                return_hit: readable && on(8),
                return_last_access: readable && on(9),
                order: FlagOrder::default(),
                stores: false,
            };
            for flag in shuffled {
                if frame.asks(flag) {
                    frame.order.push(flag);
                }
            }
            frame.order.normalise();
            let base64 = frame.base64_key;
            (frame, base64)
        })
}

fn meta_key(base64: bool) -> BoxedStrategy<Bytes> {
    if base64 {
        arb_bytes(1..40).boxed()
    } else {
        arb_key().boxed()
    }
}

fn arb_meta_request() -> impl Strategy<Value = Request> {
    let get = arb_meta_frame(true).prop_flat_map(|(frame, base64)| {
        (
            Just(frame),
            meta_key(base64),
            proptest::option::of(arb_exptime()),
            proptest::option::of(arb_exptime()),
            proptest::option::of(arb_exptime()),
            any::<bool>(),
        )
            .prop_map(
                |(frame, key, touch, vivify, recache_below, no_bump)| Request {
                    command: Command::Get(Get {
                        keys: smallvec::smallvec![key],
                        touch,
                        vivify,
                        recache_below,
                        no_bump,
                    }),
                    frame: Frame::Meta(Box::new(frame)),
                },
            )
    });
    let set = arb_meta_frame(false).prop_flat_map(|(frame, base64)| {
        (
            Just(frame),
            meta_key(base64),
            arb_mode(),
            any::<u32>(),
            arb_exptime(),
            arb_bytes(0..64),
            any::<Option<u64>>(),
            any::<bool>(),
            proptest::option::of(arb_exptime()),
        )
            .prop_map(
                |(frame, key, mode, flags, exptime, data, cas, invalidate, vivify)| {
                    let appends = matches!(mode, StoreMode::Append | StoreMode::Prepend);
                    Request {
                        command: Command::Store(Store {
                            mode,
                            key,
                            flags,
                            exptime,
                            data,
                            cas,
                            invalidate,
                            vivify: vivify.filter(|_| appends),
                        }),
                        frame: Frame::Meta(Box::new(MetaFrame {
                            stores: true,
                            ..frame
                        })),
                    }
                },
            )
    });
    let delete = arb_meta_frame(false).prop_flat_map(|(frame, base64)| {
        (
            Just(frame),
            meta_key(base64),
            any::<Option<u64>>(),
            any::<bool>(),
            proptest::option::of(arb_exptime()),
        )
            .prop_map(|(frame, key, cas, invalidate, exptime)| Request {
                command: Command::Delete(Delete {
                    key,
                    cas,
                    invalidate,
                    exptime,
                }),
                frame: Frame::Meta(Box::new(frame)),
            })
    });
    let arith = arb_meta_frame(true).prop_flat_map(|(frame, base64)| {
        (
            Just(frame),
            meta_key(base64),
            any::<bool>(),
            any::<u64>(),
            any::<Option<u64>>(),
            proptest::option::of(arb_exptime()),
            any::<u64>(),
            proptest::option::of(arb_exptime()),
        )
            .prop_map(
                |(frame, key, incr, delta, cas, vivify, initial, touch)| Request {
                    command: Command::Arith(Arith {
                        key,
                        incr,
                        delta,
                        cas,
                        vivify,
                        initial,
                        touch,
                    }),
                    frame: Frame::Meta(Box::new(frame)),
                },
            )
    });
    let debug = any::<bool>().prop_flat_map(|base64| {
        meta_key(base64).prop_map(move |key| Request {
            command: Command::MetaDebug { key },
            frame: Frame::Meta(Box::new(MetaFrame {
                base64_key: base64,
                ..MetaFrame::default()
            })),
        })
    });
    let noop = Just(Request {
        command: Command::Noop,
        frame: Frame::Meta(Box::default()),
    });
    prop_oneof![get, set, delete, arith, debug, noop]
}

fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![arb_text_request(), arb_meta_request()]
}

fn encode_req(req: &Request) -> BytesMut {
    let mut out = BytesMut::new();
    encode_request(req, &mut out).expect("generated requests are encodable");
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trip(req in arb_request()) {
        let wire = encode_req(&req);
        prop_assert_eq!(parse(&wire, &limits()), Ok(Parsed::Request(req, wire.len())));
    }

    #[test]
    fn strict_prefixes_are_incomplete(req in arb_request()) {
        let wire = encode_req(&req);
        for end in 0..wire.len() {
            let prefix = wire.get(..end).unwrap_or_default();
            prop_assert_eq!(parse(prefix, &limits()), Ok(Parsed::Incomplete), "prefix {}", end);
        }
    }

    #[test]
    fn pipelines_parse_in_order(reqs in proptest::collection::vec(arb_request(), 1..5)) {
        let mut wire = BytesMut::new();
        for req in &reqs {
            wire.extend_from_slice(&encode_req(req));
        }
        let mut at = 0;
        for req in reqs {
            let rest = wire.get(at..).unwrap_or_default();
            match parse(rest, &limits()) {
                Ok(Parsed::Request(got, used)) => {
                    prop_assert_eq!(got, req);
                    at += used;
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
        prop_assert_eq!(at, wire.len());
    }

    #[test]
    fn garbage_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..300)) {
        check_progress(&buf)?;
    }

    #[test]
    fn token_soup_never_panics(words in proptest::collection::vec(
        prop_oneof![
            Just("get"), Just("gat"), Just("set"), Just("cas"), Just("delete"),
            Just("incr"), Just("flush_all"), Just("noreply"), Just("0"), Just("-1"),
            Just("5"), Just("99999999999"), Just("mg"), Just("ms"), Just("md"),
            Just("ma"), Just("me"), Just("mn"), Just("k"), Just("b"), Just("v"),
            Just("T-1"), Just("Oab"), Just("MA"), Just("Mx"), Just("C1"), Just("N"),
            Just("q"), Just("\r\n"), Just("\n"), Just("  "), Just("Zm9v"), Just("D"),
        ],
        0..24,
    )) {
        check_progress(words.join(" ").as_bytes())?;
    }
}

/// Whatever `buf` holds, parsing never panics and always makes progress
/// within the buffer.
fn check_progress(buf: &[u8]) -> Result<(), TestCaseError> {
    match parse(buf, &limits()) {
        Ok(Parsed::Request(_, used)) | Ok(Parsed::Reject { consumed: used, .. }) => {
            prop_assert!(used > 0 && used <= buf.len());
        }
        Ok(Parsed::Incomplete) | Err(_) => {}
    }
    Ok(())
}

#[test]
fn http_request_lines_are_fatal() {
    use crate::protocol::{parse, Dialect};
    for line in [
        &b"GET / HTTP/1.0\r\n"[..],
        b"PUT /x HTTP/1.1\r\n",
        b"DELETE HTTP/1.1\r\n",
        b"HTTP/1.1\n",
    ] {
        assert_eq!(
            parse(Dialect::Text, line, &Limits::default()),
            Err(ProtocolError::HttpRequest),
            "{line:?}"
        );
    }
    for line in [
        &b"x HTTP/1.1\r\n"[..],
        b"get a HTTP/1.1\r\n",
        b"GET / HTTP/1.1 x\r\n",
        b"stats HTTP/1.1\r\n",
        b"mx HTTP/1.1\r\n",
    ] {
        assert!(
            parse(Dialect::Text, line, &Limits::default()).is_ok(),
            "{line:?}"
        );
    }
}

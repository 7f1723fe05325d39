use super::*;
use crate::protocol::request::{Arith, Delete, Opaque, Store, StoreMode};
use crate::protocol::test_util::{arb_mode, arith, every_return_flag, get, store};
use crate::protocol::{self, binary::opcode, Parsed};
use proptest::collection::vec;
use proptest::prelude::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn text_frame(with_cas: bool) -> Frame {
    Frame::Text(TextFrame {
        noreply: false,
        with_cas,
    })
}

fn binary_frame(op: u8) -> Frame {
    Frame::Binary {
        opcode: op,
        opaque: 77,
    }
}

fn meta_frame(frame: MetaFrame) -> Frame {
    Frame::Meta(Box::new(frame))
}

/// The upstream bytes for `command` from a client framed by `frame`, seq 7.
fn wire(command: &Command, frame: &Frame) -> (String, Expect) {
    let mut out = BytesMut::new();
    let expect = encode_request(command, frame, 7, &mut out).expect("encodable");
    (String::from_utf8(out.to_vec()).unwrap(), expect)
}

#[test]
fn text_and_binary_commands_ask_for_what_their_dialect_prints() {
    let m = Expect::Meta(Some(7));
    let cases: Vec<(Command, Frame, &str)> = vec![
        (
            Command::Get(get("foo")),
            text_frame(false),
            "mg foo f v O7\r\n",
        ),
        (
            Command::Get(get("foo")),
            text_frame(true),
            "mg foo c f v O7\r\n",
        ),
        (
            Command::Get(Get {
                touch: Some(30),
                ..get("foo")
            }),
            text_frame(true),
            "mg foo T30 c f v O7\r\n",
        ),
        (
            Command::Touch {
                key: b("foo"),
                exptime: -1,
            },
            text_frame(false),
            "mg foo T-1 O7\r\n",
        ),
        (
            Command::Get(get("foo")),
            binary_frame(opcode::GETK),
            "mg foo c f v O7\r\n",
        ),
        (
            Command::Store(Store {
                flags: 5,
                exptime: 10,
                ..store(StoreMode::Set, "foo", b"hi")
            }),
            text_frame(false),
            "ms foo 2 O7 F5 T10\r\nhi\r\n",
        ),
        (
            Command::Store(Store {
                cas: Some(9),
                ..store(StoreMode::Set, "foo", b"hi")
            }),
            text_frame(false),
            "ms foo 2 O7 C9\r\nhi\r\n",
        ),
        (
            Command::Store(store(StoreMode::Add, "foo", b"")),
            binary_frame(opcode::ADD),
            "ms foo 0 c O7 ME\r\n\r\n",
        ),
        (
            Command::Store(store(StoreMode::Prepend, "foo", b"x")),
            text_frame(false),
            "ms foo 1 O7 MP\r\nx\r\n",
        ),
        (
            Command::Delete(Delete {
                key: b("foo"),
                cas: None,
                invalidate: false,
                exptime: None,
            }),
            text_frame(false),
            "md foo O7\r\n",
        ),
        (
            Command::Arith(arith("n", true, 5)),
            text_frame(false),
            "ma n D5 v O7\r\n",
        ),
        (
            Command::Arith(Arith {
                vivify: Some(0),
                initial: 3,
                ..arith("n", false, 1)
            }),
            binary_frame(opcode::DECREMENT),
            "ma n MD J3 N0 c v O7\r\n",
        ),
    ];
    for (command, frame, want) in cases {
        assert_eq!(wire(&command, &frame), (want.to_string(), m), "{command:?}");
    }
    let text = text_frame(false);
    for (command, want, expect) in [
        (Command::FlushAll { delay: 0 }, "flush_all\r\n", Expect::Ok),
        (
            Command::FlushAll { delay: 9 },
            "flush_all 9\r\n",
            Expect::Ok,
        ),
        (Command::Version, "version\r\n", Expect::Version),
        (Command::Stats { group: None }, "stats\r\n", Expect::Stats),
        (
            Command::Stats {
                group: Some("slabs".into()),
            },
            "stats slabs\r\n",
            Expect::Stats,
        ),
        (
            Command::Stats {
                group: Some("cachedump 1 0".into()),
            },
            "stats cachedump 1 0\r\n",
            Expect::Items,
        ),
        (Command::Noop, "mn\r\n", Expect::Meta(None)),
        (
            Command::MetaDebug { key: b("foo") },
            "me foo\r\n",
            Expect::Debug,
        ),
    ] {
        assert_eq!(wire(&command, &text), (want.to_string(), expect));
    }
}

#[test]
fn meta_requests_pass_through_without_q_k_or_the_clients_opaque() {
    let client = every_return_flag(b"123");
    let lease = Command::Get(Get {
        touch: Some(30),
        vivify: Some(-1),
        recache_below: Some(5),
        no_bump: true,
        ..get("foo")
    });
    assert_eq!(
        wire(&lease, &meta_frame(client.clone())).0,
        "mg foo u N-1 R5 T30 c f h l t v O7\r\n"
    );
    // `s` alone fetches the value instead: the size is the data's length.
    let size_only = MetaFrame {
        return_size: true,
        ..MetaFrame::default()
    };
    assert_eq!(
        wire(&Command::Get(get("foo")), &meta_frame(size_only)).0,
        "mg foo v O7\r\n"
    );
    let stale = Command::Delete(Delete {
        key: b("foo"),
        cas: Some(4),
        invalidate: true,
        exptime: Some(30),
    });
    assert_eq!(
        wire(&stale, &meta_frame(MetaFrame::default())).0,
        "md foo O7 C4 I T30\r\n"
    );
    let invalidate = Command::Store(Store {
        cas: Some(4),
        invalidate: true,
        ..store(StoreMode::Set, "foo", b"v")
    });
    assert_eq!(
        wire(&invalidate, &meta_frame(client)).0,
        "ms foo 1 c O7 C4 I\r\nv\r\n"
    );
    // A base64 key travels decoded when it is a valid text key, and encoded
    // when it is not (a binary client's key, say).
    let b64 = meta_frame(MetaFrame {
        base64_key: true,
        return_key: true,
        ..MetaFrame::default()
    });
    assert_eq!(wire(&Command::Get(get("foo")), &b64).0, "mg foo O7\r\n");
    let spaced = Command::Get(Get {
        keys: smallvec::smallvec![Bytes::from_static(b"a b\0")],
        ..Get::default()
    });
    assert_eq!(
        wire(&spaced, &binary_frame(opcode::GETK)).0,
        "mg YSBiAA== b c f v O7\r\n"
    );
    assert_eq!(
        wire(
            &Command::MetaDebug {
                key: Bytes::from_static(b"\r\n")
            },
            &b64
        )
        .0,
        "me DQo= b\r\n"
    );
}

#[test]
fn what_the_proxy_answers_itself_is_not_encoded() {
    let text = text_frame(false);
    let multi = Command::Get(Get {
        keys: smallvec::smallvec![b("a"), b("b")],
        ..Get::default()
    });
    let long_binary_key = Command::Get(Get {
        keys: smallvec::smallvec![Bytes::from(vec![b' '; 200])],
        ..Get::default()
    });
    for command in [
        Command::Quit,
        Command::Verbosity,
        Command::SaslList,
        Command::SaslAuth {
            mechanism: b("PLAIN"),
            data: b("x"),
        },
        multi,
        long_binary_key,
    ] {
        let mut out = BytesMut::new();
        assert!(
            encode_request(&command, &text, 1, &mut out).is_err(),
            "{command:?}"
        );
    }
}

fn parse(buf: &[u8], expect: Expect) -> Result<Option<(NodeReply, usize)>, ReplyError> {
    parse_reply(buf, expect, &Limits::default())
}

/// Parse a whole reply, checking that it uses all of `buf` and that every
/// strict prefix is incomplete.
fn whole(buf: &[u8], expect: Expect) -> NodeReply {
    for end in 0..buf.len() {
        assert_eq!(
            parse(&buf[..end], expect),
            Ok(None),
            "prefix {end} of {buf:?}"
        );
    }
    let mut extra = buf.to_vec();
    extra.extend_from_slice(b"HD O1\r\n");
    match parse(&extra, expect) {
        Ok(Some((reply, used))) => {
            assert_eq!(used, buf.len());
            reply
        }
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
    }
}

fn meta(code: Code, flags: ReturnFlags, value: Option<&str>) -> NodeReply {
    NodeReply::Meta(MetaReply {
        code,
        flags,
        value: value.map(b),
    })
}

#[test]
fn memcached_replies_parse() {
    // Captured from memcached 1.6.18.
    let hit = whole(
        b"VA 2 t99 c1 O1 f7 s2 kfoo h1 l1\r\nhi\r\n",
        Expect::Meta(Some(1)),
    );
    let flags = ReturnFlags {
        cas: Some(1),
        client_flags: Some(7),
        hit: Some(true),
        last_access: Some(1),
        opaque: Some(1),
        size: Some(2),
        ttl: Some(99),
        ..ReturnFlags::default()
    };
    assert_eq!(hit, meta(Code::Value, flags, Some("hi")));
    let won = whole(b"VA 0 O9 c4 W\r\n\r\n", Expect::Meta(Some(9)));
    let flags = ReturnFlags {
        cas: Some(4),
        opaque: Some(9),
        won: true,
        ..ReturnFlags::default()
    };
    assert_eq!(won, meta(Code::Value, flags, Some("")));
    let opaque = |n| ReturnFlags {
        opaque: Some(n),
        ..ReturnFlags::default()
    };
    for (line, code) in [
        (&b"EN O12 knokey\r\n"[..], Code::Miss),
        (b"NF O12\r\n", Code::NotFound),
        (b"NS O12\r\n", Code::NotStored),
        (b"EX O12\r\n", Code::Exists),
        (b"HD O12 X Z\r\n", Code::Hit),
    ] {
        let mut want = opaque(12);
        want.stale = line.starts_with(b"HD");
        want.win_sent = want.stale;
        assert_eq!(whole(line, Expect::Meta(Some(12))), meta(code, want, None));
    }
    assert_eq!(
        whole(b"MN\r\n", Expect::Meta(None)),
        meta(Code::Noop, ReturnFlags::default(), None)
    );
    assert_eq!(
        whole(
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
            Expect::Meta(Some(4))
        ),
        NodeReply::Error(ErrorReply::NonNumeric)
    );
    assert_eq!(
        whole(b"CLIENT_ERROR bad data chunk\r\n", Expect::Meta(Some(4))),
        NodeReply::Error(ErrorReply::Client("bad data chunk".into()))
    );
    assert_eq!(
        whole(
            b"SERVER_ERROR object too large for cache\r\n",
            Expect::Meta(Some(4))
        ),
        NodeReply::Error(ErrorReply::TooLarge)
    );
    assert_eq!(
        whole(b"SERVER_ERROR busy\r\n", Expect::Stats),
        NodeReply::Error(ErrorReply::Server("busy".into()))
    );
    assert_eq!(
        whole(b"ERROR\r\n", Expect::Stats),
        NodeReply::Error(ErrorReply::UnknownCommand)
    );
    assert_eq!(
        whole(
            b"ME foo exp=-99 la=0 cas=1 fetch=yes cls=1 size=68\r\n",
            Expect::Debug
        ),
        NodeReply::Debug(Some(
            [
                ("exp", "-99"),
                ("la", "0"),
                ("cas", "1"),
                ("fetch", "yes"),
                ("cls", "1"),
                ("size", "68")
            ]
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .to_vec()
        ))
    );
    assert_eq!(whole(b"EN\r\n", Expect::Debug), NodeReply::Debug(None));
    assert_eq!(whole(b"OK\r\n", Expect::Ok), NodeReply::Ok);
    assert_eq!(
        whole(b"VERSION 1.6.18\r\n", Expect::Version),
        NodeReply::Version("1.6.18".into())
    );
    assert_eq!(
        whole(
            b"STAT pid 1\r\nSTAT version 1.6.18\r\nSTAT odd a b\r\nEND\r\n",
            Expect::Stats
        ),
        NodeReply::Stats(
            [("pid", "1"), ("version", "1.6.18"), ("odd", "a b")]
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .to_vec()
        )
    );
    assert_eq!(whole(b"STORED\r\n", Expect::Login), NodeReply::Stored);
    // A cachedump's key is all before the last " [": memcached does not
    // escape it.
    assert_eq!(
        whole(
            b"ITEM a [b [1 b; 0 s]\r\nITEM c [2 b; 5 s]\r\nEND\r\n",
            Expect::Items
        ),
        NodeReply::Items(vec![
            (b"a [b".to_vec(), "[1 b; 0 s]".to_string()),
            (b"c".to_vec(), "[2 b; 5 s]".to_string()),
        ])
    );
    assert_eq!(whole(b"END\r\n", Expect::Items), NodeReply::Items(vec![]));
}

#[test]
fn broken_streams_are_errors() {
    let m = Expect::Meta(Some(3));
    assert_eq!(parse(b"HD O4\r\n", m), Err(ReplyError::OpaqueMismatch));
    assert_eq!(parse(b"HD\r\n", m), Err(ReplyError::OpaqueMismatch));
    assert_eq!(parse(b"MN\r\n", m), Err(ReplyError::OpaqueMismatch));
    assert_eq!(parse(b"HD Ox\r\n", m), Err(ReplyError::OpaqueMismatch));
    assert_eq!(
        parse(b"HD O3\r\n", Expect::Meta(None)),
        Err(ReplyError::OpaqueMismatch)
    );
    assert_eq!(parse(b"STORED\r\n", m), Err(ReplyError::Unexpected));
    assert_eq!(
        parse(b"OK\r\n", Expect::Version),
        Err(ReplyError::Unexpected)
    );
    assert_eq!(
        parse(b"HD O3\r\n", Expect::Login),
        Err(ReplyError::Unexpected)
    );
    assert_eq!(
        parse(b"STAT a 1\r\nHD\r\n", Expect::Stats),
        Err(ReplyError::Unexpected)
    );
    assert_eq!(
        parse(b"STAT a 1\r\nEND\r\n", Expect::Items),
        Err(ReplyError::Unexpected)
    );
    assert_eq!(
        parse(b"ITEM a\r\nEND\r\n", Expect::Items),
        Err(ReplyError::Malformed("ITEM line without its [info]"))
    );
    assert_eq!(
        parse(b"VA x O3\r\n", m),
        Err(ReplyError::Malformed("VA without a size"))
    );
    assert_eq!(
        parse(b"HD O3 cx\r\n", m),
        Err(ReplyError::Malformed("bad return flag"))
    );
    assert_eq!(
        parse(b"VA 2 O3\r\nhiX\r\n", m),
        Err(ReplyError::Malformed("value not followed by CRLF"))
    );
    // The size is checked from the line, before the value is buffered.
    let limits = Limits { max_item_size: 100 };
    assert_eq!(
        parse_reply(b"VA 101 O3\r\n", m, &limits),
        Err(ReplyError::ValueTooLarge(101))
    );
    assert_eq!(parse_reply(b"VA 100 O3\r\n", m, &limits), Ok(None));
    let long = vec![b'H'; MAX_LINE_LEN];
    assert_eq!(parse(&long, m), Err(ReplyError::LineTooLong));
    assert_eq!(parse(&long[..MAX_LINE_LEN - 1], m), Ok(None));
}

/// What a client framed by `frame` receives for `response` to `command`.
fn client_sees(command: &Command, frame: &Frame, response: &Response) -> Vec<u8> {
    let mut out = BytesMut::new();
    protocol::encode(frame, command.key().map(|k| &k[..]), response, &mut out);
    out.to_vec()
}

/// A node's reply to the upstream request for `command`, decoded.
fn through(command: &Command, frame: &Frame, reply: &[u8]) -> Response {
    let (_, expect) = wire(command, frame);
    let (parsed, used) = parse(reply, expect).unwrap().unwrap();
    assert_eq!(used, reply.len());
    decode(command.clone(), parsed).unwrap()
}

#[test]
fn decoded_replies_print_as_memcached_would() {
    let text = text_frame(true);
    let gets = Command::Get(get("foo"));
    let hit = through(&gets, &text, b"VA 2 c1 f7 O7\r\nhi\r\n");
    assert_eq!(
        client_sees(&gets, &text, &hit),
        b"VALUE foo 7 2 1\r\nhi\r\nEND\r\n"
    );
    let miss = through(&gets, &text, b"EN O7\r\n");
    assert_eq!(client_sees(&gets, &text, &miss), b"END\r\n");
    let touch = Command::Touch {
        key: b("foo"),
        exptime: 5,
    };
    assert_eq!(through(&touch, &text, b"HD O7\r\n"), Response::Touched);
    assert_eq!(through(&touch, &text, b"EN O7\r\n"), Response::NotFound);
    let incr = Command::Arith(arith("n", true, 1));
    let number = through(&incr, &text, b"VA 2 O7\r\n42\r\n");
    assert_eq!(client_sees(&incr, &text, &number), b"42\r\n");
    let add = Command::Store(store(StoreMode::Add, "foo", b"v"));
    let bin = binary_frame(opcode::ADD);
    assert_eq!(
        through(&add, &bin, b"HD c9 O7\r\n"),
        Response::Stored { cas: 9 }
    );
    assert_eq!(through(&add, &bin, b"NS O7\r\n"), Response::NotStored);
    // A meta client's quiet miss stays silent, its opaque comes back.
    let quiet = meta_frame(MetaFrame {
        quiet: true,
        opaque: Opaque::new(b"abc"),
        return_key: true,
        ..MetaFrame::default()
    });
    let mg = Command::Get(get("foo"));
    let miss = through(&mg, &quiet, b"EN O7\r\n");
    assert_eq!(client_sees(&mg, &quiet, &miss), b"");
    let hit = through(&mg, &quiet, b"HD O7 W\r\n");
    assert_eq!(client_sees(&mg, &quiet, &hit), b"HD kfoo Oabc W\r\n");
    assert_eq!(
        through(&mg, &quiet, b"CLIENT_ERROR bad command line format\r\n"),
        Response::Error(ErrorReply::Client("bad command line format".into()))
    );
    // A code the command cannot get means the stream is out of step.
    let (_, expect) = wire(&mg, &quiet);
    let (reply, _) = parse(b"NS O7\r\n", expect).unwrap().unwrap();
    assert_eq!(decode(mg.clone(), reply), Err(ReplyError::Unexpected));
    assert_eq!(
        decode(Command::Version, NodeReply::Ok),
        Err(ReplyError::Unexpected)
    );
}

/// memgate's copies go upstream as `ms … G`, with ` E<version>` when they
/// carry the CAS to store and `MS` for a replica's set (a "mirror"); each
/// reply comes back as a store's: `HD` stored (with the version as its CAS),
/// `NS` (a tombstone, or an add over an item), `EX` (a mirror no newer than
/// the item). Binary and classic text have no form for them.
#[test]
fn copies_travel_and_their_replies_come_back() {
    let copy = |mode, version| Command::Copy {
        store: store(mode, "foo", b"v"),
        version,
    };
    let mirror = copy(StoreMode::Set, Some(42));
    let with_cas = meta_frame(MetaFrame {
        return_cas: true,
        ..MetaFrame::default()
    });
    let m = Expect::Meta(Some(7));
    assert_eq!(
        wire(&mirror, &with_cas),
        ("ms foo 1 c O7 MS G E42\r\nv\r\n".into(), m)
    );
    assert_eq!(
        through(&mirror, &with_cas, b"HD c42 O7\r\n"),
        Response::Stored { cas: 42 }
    );
    assert_eq!(
        through(&mirror, &with_cas, b"EX c0 O7\r\n"),
        Response::Exists
    );
    assert_eq!(
        through(&mirror, &with_cas, b"NS c0 O7\r\n"),
        Response::NotStored
    );
    let text = text_frame(false);
    let repair = copy(StoreMode::Add, Some(42));
    assert_eq!(
        wire(&repair, &text),
        ("ms foo 1 O7 ME G E42\r\nv\r\n".into(), m)
    );
    let warm_up = copy(StoreMode::Add, None);
    assert_eq!(
        wire(&warm_up, &text),
        ("ms foo 1 O7 ME G\r\nv\r\n".into(), m)
    );
    assert_eq!(through(&warm_up, &text, b"NS O7\r\n"), Response::NotStored);
    // A copy never gets a value: the stream would be out of step.
    let (_, expect) = wire(&mirror, &with_cas);
    let (reply, _) = parse(b"VA 1 O7\r\nv\r\n", expect).unwrap().unwrap();
    assert_eq!(decode(mirror.clone(), reply), Err(ReplyError::Unexpected));
    for command in [mirror, repair, warm_up] {
        let mut out = BytesMut::new();
        assert!(protocol::binary::encode_request(&command, false, 1, &mut out).is_err());
        assert!(protocol::binary::cannot_carry(&command, &text).is_some());
        let request = Request {
            command,
            frame: text.clone(),
        };
        assert!(text::encode_request(&request, &mut out).is_err());
        assert!(out.is_empty());
    }
}

/// memgate's tombstones go upstream as `md <key> G<ttl>`, with ` E<version>`
/// for a replica's and ` c` when the delete must report the removed item's
/// CAS, whatever the client's frame asks; `HD c<cas>` comes back as
/// DeletedCas, which every dialect prints as the delete it is.
#[test]
fn tombstones_travel_and_report_the_removed_cas() {
    let bury = |version, report| Command::Bury {
        key: b("foo"),
        ttl: 10,
        version,
        report,
    };
    let m = Expect::Meta(Some(7));
    let text = text_frame(false);
    let reporting = bury(None, true);
    assert_eq!(wire(&reporting, &text), ("md foo c O7 G10\r\n".into(), m));
    assert_eq!(
        through(&reporting, &text, b"HD c123 O7\r\n"),
        Response::DeletedCas { cas: 123 }
    );
    assert_eq!(through(&reporting, &text, b"NF O7\r\n"), Response::NotFound);
    assert_eq!(
        through(&reporting, &text, b"NF c124 O7\r\n"),
        Response::NotFoundCas { cas: 124 }
    );
    let versioned = bury(Some(123), false);
    assert_eq!(
        wire(&versioned, &text),
        ("md foo O7 G10 E123\r\n".into(), m)
    );
    assert_eq!(through(&versioned, &text, b"HD O7\r\n"), Response::Deleted);
    assert_eq!(through(&versioned, &text, b"NF O7\r\n"), Response::NotFound);
    // A meta client's `c` is the report's, never sent twice nor without it.
    let with_cas = meta_frame(MetaFrame {
        return_cas: true,
        ..MetaFrame::default()
    });
    assert_eq!(
        wire(&bury(Some(5), true), &with_cas),
        ("md foo c O7 G10 E5\r\n".into(), m)
    );
    assert_eq!(
        wire(&bury(Some(5), false), &with_cas),
        ("md foo O7 G10 E5\r\n".into(), m)
    );
    // A node from before the report answers a plain delete; a code no
    // delete gets breaks the stream.
    assert_eq!(through(&reporting, &text, b"HD O7\r\n"), Response::Deleted);
    let (_, expect) = wire(&reporting, &text);
    let (reply, _) = parse(b"NS O7\r\n", expect).unwrap().unwrap();
    assert_eq!(
        decode(reporting.clone(), reply),
        Err(ReplyError::Unexpected)
    );
    // Every dialect prints the reported delete as a delete, and the
    // reported miss as a miss.
    let deleted = Response::DeletedCas { cas: 123 };
    let missed = Response::NotFoundCas { cas: 124 };
    for frame in [
        text_frame(true),
        binary_frame(opcode::DELETE),
        meta_frame(MetaFrame::default()),
    ] {
        assert_eq!(
            client_sees(&reporting, &frame, &deleted),
            client_sees(&reporting, &frame, &Response::Deleted),
            "{frame:?}"
        );
        assert_eq!(
            client_sees(&reporting, &frame, &missed),
            client_sees(&reporting, &frame, &Response::NotFound),
            "{frame:?}"
        );
    }
    // Binary and classic text have no form for a tombstone.
    for command in [reporting, versioned] {
        let mut out = BytesMut::new();
        assert!(protocol::binary::encode_request(&command, false, 1, &mut out).is_err());
        assert!(protocol::binary::cannot_carry(&command, &text).is_some());
        let request = Request {
            command,
            frame: text.clone(),
        };
        assert!(text::encode_request(&request, &mut out).is_err());
        assert!(out.is_empty());
    }
}

#[test]
fn ascii_login() {
    let mut out = BytesMut::new();
    let expect = encode_login(LoginForm::MemCachier, "user", "p w", &mut out).unwrap();
    assert_eq!(
        (&out[..], expect),
        (&b"set user 0 -1 3\r\np w\r\n"[..], Expect::Login)
    );
    let mut out = BytesMut::new();
    encode_login(LoginForm::Memcached, "user", "pw", &mut out).unwrap();
    assert_eq!(&out[..], b"set memgate-login 0 -1 7\r\nuser pw\r\n");
    // The node reads it as the set it is.
    let parsed =
        crate::protocol::parse(crate::protocol::Dialect::Text, &out, &Limits::default()).unwrap();
    assert!(matches!(parsed, Parsed::Request(_, used) if used == out.len()));
    assert!(encode_login(LoginForm::Memcached, "a b", "pw", &mut out).is_err());
    assert!(encode_login(LoginForm::MemCachier, "a b", "pw", &mut out).is_err());
    assert!(encode_login(LoginForm::MemCachier, "", "pw", &mut out).is_err());

    assert_eq!(login_result(&NodeReply::Stored), Ok(()));
    let refused = whole(b"CLIENT_ERROR authentication failure\r\n", Expect::Login);
    assert_eq!(login_result(&refused), Err(LoginReplyError::Refused));
    let other = whole(b"ERROR\r\n", Expect::Login);
    assert_eq!(
        login_result(&other),
        Err(LoginReplyError::NotAscii("ERROR".into()))
    );
}

fn key() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        "[a-z0-9_:/]{1,40}".prop_map(|k| Bytes::from(k.into_bytes())),
        vec(any::<u8>(), 1..100).prop_map(Bytes::from),
    ]
}

fn exptime() -> impl Strategy<Value = i64> {
    any::<i32>().prop_map(i64::from)
}

/// Commands a client may send that go upstream.
fn command() -> impl Strategy<Value = Command> {
    let get = (
        key(),
        proptest::option::of(exptime()),
        proptest::option::of(exptime()),
        proptest::option::of(exptime()),
        any::<bool>(),
    )
        .prop_map(|(key, touch, vivify, recache_below, no_bump)| {
            Command::Get(Get {
                keys: smallvec::smallvec![key],
                touch,
                vivify,
                recache_below,
                no_bump,
            })
        });
    let store = (
        arb_mode(),
        key(),
        any::<u32>(),
        exptime(),
        vec(any::<u8>(), 0..64),
        proptest::option::of(any::<u64>()),
        any::<bool>(),
        proptest::option::of(exptime()),
    )
        .prop_map(
            |(mode, key, flags, exptime, data, cas, invalidate, vivify)| {
                let appends = matches!(mode, StoreMode::Append | StoreMode::Prepend);
                Command::Store(Store {
                    mode,
                    key,
                    flags,
                    exptime,
                    data: data.into(),
                    cas,
                    invalidate,
                    vivify: vivify.filter(|_| appends),
                })
            },
        );
    let delete = (
        key(),
        proptest::option::of(any::<u64>()),
        any::<bool>(),
        proptest::option::of(exptime()),
    )
        .prop_map(|(key, cas, invalidate, exptime)| {
            Command::Delete(Delete {
                key,
                cas,
                invalidate,
                exptime,
            })
        });
    let arith = (
        key(),
        any::<bool>(),
        any::<u64>(),
        proptest::option::of(any::<u64>()),
        proptest::option::of(exptime()),
        any::<u64>(),
        proptest::option::of(exptime()),
    )
        .prop_map(|(key, incr, delta, cas, vivify, initial, touch)| {
            Command::Arith(Arith {
                key,
                incr,
                delta,
                cas,
                vivify,
                initial,
                touch,
            })
        });
    // A copy is an add, with or without a version, or a versioned set.
    let copy = (
        key(),
        any::<u32>(),
        exptime(),
        vec(any::<u8>(), 0..64),
        proptest::option::of(any::<u64>()),
        any::<bool>(),
    )
        .prop_map(|(key, flags, exptime, data, version, mirror)| {
            let mode = match mirror && version.is_some() {
                true => StoreMode::Set,
                false => StoreMode::Add,
            };
            Command::Copy {
                store: Store {
                    mode,
                    key,
                    flags,
                    exptime,
                    data: data.into(),
                    cas: None,
                    invalidate: false,
                    vivify: None,
                },
                version,
            }
        });
    let bury = (
        key(),
        exptime(),
        proptest::option::of(1..=u64::MAX),
        any::<bool>(),
    )
        .prop_map(|(key, ttl, version, report)| Command::Bury {
            key,
            ttl,
            version,
            report,
        });
    let touch = (key(), exptime()).prop_map(|(key, exptime)| Command::Touch { key, exptime });
    prop_oneof![
        get,
        store,
        copy,
        bury,
        delete,
        arith,
        touch,
        key().prop_map(|key| Command::MetaDebug { key }),
        (0..1_000_000i64).prop_map(|delay| Command::FlushAll { delay }),
        Just(Command::Version),
        Just(Command::Noop),
        prop_oneof![Just(None), Just(Some(Bytes::from_static(b"slabs")))]
            .prop_map(|group| Command::Stats { group }),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    let meta = (vec(any::<bool>(), 11), "[a-z0-9]{0,8}").prop_map(|(f, opaque)| {
        meta_frame(MetaFrame {
            opaque: Opaque::new(opaque.as_bytes()).filter(|o| !o.is_empty()),
            return_key: f[0],
            base64_key: f[1],
            quiet: f[2],
            return_value: f[3],
            return_cas: f[4],
            return_flags: f[5],
            return_size: f[6],
            return_ttl: f[7],
            return_hit: f[8],
            return_last_access: f[9],
            ..MetaFrame::default()
        })
    });
    prop_oneof![
        (any::<bool>(), any::<bool>())
            .prop_map(|(noreply, with_cas)| Frame::Text(TextFrame { noreply, with_cas })),
        (0u8..0x1f, any::<u32>()).prop_map(|(opcode, opaque)| Frame::Binary { opcode, opaque }),
        meta,
    ]
}

/// The command a node parses from the upstream encoding of `command`.
fn as_sent(command: &Command) -> Command {
    match command {
        Command::Touch { key, exptime } => Command::Get(Get {
            keys: smallvec::smallvec![key.clone()],
            touch: Some(*exptime),
            ..Get::default()
        }),
        other => other.clone(),
    }
}

fn found(key: &Bytes) -> impl Strategy<Value = Found> {
    let key = key.clone();
    (
        any::<u32>(),
        any::<u64>(),
        vec(any::<u8>(), 0..64),
        prop_oneof![Just(-1i64), 0..3_000_000i64],
        any::<u64>(),
        vec(any::<bool>(), 4),
    )
        .prop_map(move |(flags, cas, data, ttl, last_access, bits)| Found {
            key: key.clone(),
            flags,
            cas,
            data: data.into(),
            ttl,
            last_access,
            fetched: bits[0],
            won: bits[1],
            stale: bits[2],
            win_sent: bits[3],
        })
}

fn error() -> impl Strategy<Value = Response> {
    prop_oneof![
        Just(ErrorReply::UnknownCommand),
        Just(ErrorReply::TooLarge),
        Just(ErrorReply::NonNumeric),
        Just(ErrorReply::PermissionDenied),
        "[a-z ]{1,20}".prop_map(ErrorReply::Client),
        "[a-z ]{1,20}".prop_map(ErrorReply::Server),
    ]
    .prop_map(Response::Error)
}

/// A node's possible answers to `sent`.
fn node_response(sent: &Command) -> BoxedStrategy<Response> {
    let outcome = match sent {
        Command::Get(get) => {
            let key = get.keys.first().cloned().unwrap_or_default();
            prop_oneof![
                found(&key).prop_map(|f| Response::Get(vec![Some(f)])),
                Just(Response::Get(vec![None])),
            ]
            .boxed()
        }
        Command::Store(_) | Command::Copy { .. } => prop_oneof![
            any::<u64>().prop_map(|cas| Response::Stored { cas }),
            Just(Response::NotStored),
            Just(Response::Exists),
            Just(Response::NotFound),
        ]
        .boxed(),
        Command::Delete(_) => prop_oneof![
            Just(Response::Deleted),
            Just(Response::NotFound),
            Just(Response::Exists),
        ]
        .boxed(),
        Command::Bury { report: true, .. } => prop_oneof![
            any::<u64>().prop_map(|cas| Response::DeletedCas { cas }),
            any::<u64>().prop_map(|cas| Response::NotFoundCas { cas }),
            Just(Response::NotFound),
        ]
        .boxed(),
        Command::Bury { .. } => {
            prop_oneof![Just(Response::Deleted), Just(Response::NotFound)].boxed()
        }
        Command::Arith(_) => prop_oneof![
            (
                any::<u64>(),
                any::<u64>(),
                prop_oneof![Just(-1i64), 0..100i64]
            )
                .prop_map(|(value, cas, ttl)| Response::Number { value, cas, ttl }),
            Just(Response::NotFound),
            Just(Response::NotStored),
            Just(Response::Exists),
        ]
        .boxed(),
        Command::MetaDebug { .. } => prop_oneof![
            Just(Response::MetaDebug(None)),
            Just(Response::MetaDebug(Some(vec![
                ("exp".into(), "-1".into()),
                ("la".into(), "3".into())
            ]))),
        ]
        .boxed(),
        Command::FlushAll { .. } => Just(Response::Ok).boxed(),
        Command::Version => Just(Response::Version("1.6.18".into())).boxed(),
        Command::Noop => Just(Response::Noop).boxed(),
        _ => Just(Response::Stats(vec![
            ("pid".into(), "1".into()),
            ("version".into(), "1.6.18".into()),
        ]))
        .boxed(),
    };
    prop_oneof![4 => outcome, 1 => error()].boxed()
}

/// What the client's own node would have answered `command`, given the
/// node's answer to what the proxy sent instead (a touch went as a get; the
/// node answers a binary TOUCH from the item, as a get).
fn direct(command: &Command, frame: &Frame, response: Response) -> Response {
    match (command, response) {
        (Command::Touch { .. }, response @ Response::Get(_)) if matches!(frame, Frame::Binary { opcode, .. } if *opcode == crate::protocol::binary::opcode::TOUCH) => {
            response
        }
        (Command::Touch { .. }, Response::Get(items)) => match items.first() {
            Some(Some(_)) => Response::Touched,
            _ => Response::NotFound,
        },
        (_, response) => response,
    }
}

fn case() -> impl Strategy<Value = (Command, Frame, Response)> {
    (command(), frame())
        .prop_filter("encodable", |(command, frame)| {
            encode_request(command, frame, 1, &mut BytesMut::new()).is_ok()
        })
        .prop_flat_map(|(command, frame)| {
            let response = node_response(&as_sent(&command));
            (Just(command), Just(frame), response)
        })
}

proptest! {
    /// The node parses the upstream encoding back into the client's command
    /// (a touch as `mg T`), with the proxy's opaque and neither `q` nor `k`.
    #[test]
    fn node_parses_what_was_sent((command, frame, _) in case(), seq in any::<u32>()) {
        let mut out = BytesMut::new();
        let expect = encode_request(&command, &frame, seq, &mut out).unwrap();
        match crate::protocol::parse(crate::protocol::Dialect::Text, &out, &Limits::default()) {
            Ok(Parsed::Request(request, used)) => {
                prop_assert_eq!(used, out.len());
                prop_assert_eq!(&request.command, &as_sent(&command));
                if let Frame::Meta(sent) = &request.frame {
                    prop_assert!(!sent.quiet && !sent.return_key);
                    let opaque = sent.opaque.as_ref().map(|o| o.to_vec());
                    let want = match expect {
                        Expect::Meta(Some(seq)) => Some(seq.to_string().into_bytes()),
                        _ => None,
                    };
                    prop_assert_eq!(opaque, want);
                }
            }
            other => prop_assert!(false, "{:?}: {:?}", out, other),
        }
    }

    /// The node's reply, parsed and decoded, prints to the client exactly
    /// what the node would have printed to it directly; and every strict
    /// prefix of the reply is incomplete.
    #[test]
    fn replies_print_as_from_the_node((command, frame, response) in case()) {
        let mut out = BytesMut::new();
        let expect = encode_request(&command, &frame, 42, &mut out).unwrap();
        let Ok(Parsed::Request(sent, _)) = crate::protocol::parse(crate::protocol::Dialect::Text, &out, &Limits::default()) else {
            panic!("unparsable upstream request");
        };
        let mut reply = BytesMut::new();
        protocol::encode(&sent.frame, sent.command.key().map(|k| &k[..]), &response, &mut reply);
        for end in 0..reply.len() {
            prop_assert_eq!(parse(&reply[..end], expect), Ok(None));
        }
        let (parsed, used) = parse(&reply, expect).unwrap().unwrap();
        prop_assert_eq!(used, reply.len());
        let decoded = decode(command.clone(), parsed).unwrap();
        let want = direct(&command, &frame, response);
        prop_assert_eq!(
            client_sees(&command, &frame, &decoded),
            client_sees(&command, &frame, &want)
        );
    }
}

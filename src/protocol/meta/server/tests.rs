use super::*;
use crate::protocol::meta::client::encode_line;
use crate::protocol::test_util::{every_return_flag, key, parse_text as parse};
use crate::protocol::ErrorReply;

fn parse_ok(buf: &[u8]) -> (Command, MetaFrame, usize) {
    match parse(buf, &Limits::default()) {
        Ok(Parsed::Request(
            Request {
                command,
                frame: Frame::Meta(frame),
            },
            used,
        )) => (command, *frame, used),
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
    }
}

/// A frame's order for these return flags, given in this order.
fn order(flags: &[u8]) -> crate::protocol::request::FlagOrder {
    let mut order = crate::protocol::request::FlagOrder::default();
    for &flag in flags {
        order.push(flag);
    }
    order
}

/// The error text and `skip` of a refused meta line.
fn refused(buf: &[u8]) -> (String, usize) {
    match parse(buf, &Limits::default()) {
        Ok(Parsed::Reject {
            frame: Frame::Meta(_),
            error,
            consumed,
            skip,
            ..
        }) => {
            assert!(consumed > 0);
            (error.text(), skip)
        }
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
    }
}

#[test]
fn mg_flags() {
    let (command, frame, used) = parse_ok(b"mg foo s v f t c k h l q u O123 T30 N-1 R5 P/x L\r\n");
    assert_eq!(used, 50);
    let want = Get {
        keys: smallvec::smallvec![key("foo")],
        touch: Some(30),
        vivify: Some(-1),
        recache_below: Some(5),
        no_bump: true,
    };
    assert_eq!(command, Command::Get(want));
    let want = MetaFrame {
        order: order(b"sftckhlO"),
        ..every_return_flag(b"123")
    };
    assert_eq!(frame, want);
    // Flags of other commands are accepted and ignored, as in memcached.
    let (command, frame, _) = parse_ok(b"mg foo F5 MA I\n");
    assert_eq!(
        command,
        Command::Get(Get {
            keys: smallvec::smallvec![key("foo")],
            ..Get::default()
        })
    );
    assert_eq!(frame, MetaFrame::default());
}

#[test]
fn base64_keys() {
    let (command, frame, _) = parse_ok(b"mg AAEC/w== b k v\r\n");
    assert_eq!(command.key(), Some(&Bytes::from_static(&[0, 1, 2, 255])));
    assert!(frame.base64_key && frame.return_key);
    assert_eq!(
        refused(b"mg !!!! b\r\n").0,
        "CLIENT_ERROR error decoding key"
    );
    assert_eq!(
        refused(b"md abc b\r\n").0,
        "CLIENT_ERROR invalid or duplicate flag"
    );
    let (command, frame, _) = parse_ok(b"me Zm9v b\r\n");
    assert_eq!(command, Command::MetaDebug { key: key("foo") });
    assert!(frame.base64_key);
    assert_eq!(
        refused(b"me Zm9 b\r\n").0,
        "CLIENT_ERROR bad command line format"
    );
}

#[test]
fn ms_modes_and_flags() {
    let modes = [
        ("", StoreMode::Set),
        (" MS", StoreMode::Set),
        (" ME", StoreMode::Add),
        (" MA", StoreMode::Append),
        (" MP", StoreMode::Prepend),
        (" MR", StoreMode::Replace),
    ];
    for (flag, mode) in modes {
        let line = format!("ms k 2 T-1 F9 C7 I N30 c k q Oz{flag}\r\nhi\r\n");
        let (command, frame, used) = parse_ok(line.as_bytes());
        assert_eq!(used, line.len());
        let appends = matches!(mode, StoreMode::Append | StoreMode::Prepend);
        let want = Store {
            mode,
            key: key("k"),
            flags: 9,
            exptime: -1,
            data: key("hi"),
            cas: Some(7),
            invalidate: true,
            vivify: appends.then_some(30),
        };
        assert_eq!(command, Command::Store(want));
        assert!(frame.return_cas && frame.return_key && frame.quiet);
        assert_eq!(frame.opaque, Opaque::new(b"z"));
    }
    let (command, _, _) = parse_ok(b"ms k 0\r\n\r\n");
    assert!(matches!(
        command,
        Command::Store(Store {
            flags: 0,
            exptime: 0,
            cas: None,
            ..
        })
    ));
}

#[test]
fn ms_errors_swallow_the_data_once_its_length_is_known() {
    let bad = "CLIENT_ERROR bad command line format";
    assert_eq!(refused(b"ms k\r\n"), (bad.into(), 0));
    assert_eq!(refused(b"ms k x\r\n"), (bad.into(), 0));
    assert_eq!(refused(b"ms k -1\r\n"), (bad.into(), 0));
    // memcached 1.6.18 takes its modes in upper case only.
    for mode in ["Mx", "Ms", "Me", "Ma", "Mp", "Mr"] {
        assert_eq!(
            refused(format!("ms k 3 {mode}\r\n").as_bytes()),
            ("CLIENT_ERROR invalid mode for ms M token".into(), 5)
        );
    }
    assert_eq!(
        refused(b"ms k 3 MSS\r\n"),
        ("CLIENT_ERROR incorrect length for M token".into(), 5)
    );
    assert_eq!(refused(b"ms k 3 Fx\r\n"), (bad.into(), 5));
    assert_eq!(
        refused(b"ms k 3 Tx Fx\r\n"),
        ("CLIENT_ERROR bad token in command line format".into(), 5)
    );
    assert_eq!(
        refused(b"ms k 3 c c\r\n"),
        ("CLIENT_ERROR duplicate flag".into(), 5)
    );
    assert_eq!(
        refused(b"ms k 3 !\r\n"),
        ("CLIENT_ERROR invalid flag".into(), 5)
    );
    let opaque = format!("ms k 3 O{}\r\n", "o".repeat(32));
    assert_eq!(
        refused(opaque.as_bytes()),
        ("CLIENT_ERROR opaque token too long".into(), 5)
    );
    let many = format!("ms k 1{}\r\n", " P".repeat(17));
    assert_eq!(
        refused(many.as_bytes()),
        ("CLIENT_ERROR options flags too long".into(), 0)
    );
    assert_eq!(
        refused(b"ms k 1\r\nxyz"),
        ("CLIENT_ERROR bad data chunk".into(), 0)
    );
}

#[test]
fn ms_too_large_unlinks_and_skips() {
    let limits = Limits { max_item_size: 8 };
    let got = parse(b"ms key 6 MA q\r\n", &limits);
    let want = Parsed::Reject {
        frame: meta_frame(MetaFrame {
            quiet: true,
            ..MetaFrame::default()
        }),
        error: ErrorReply::TooLarge,
        consumed: 15,
        skip: 8,
        unlink: Some(key("key")),
    };
    assert_eq!(got, Ok(want));
    assert_eq!(parse(b"ms key 5 MA q\r\n", &limits), Ok(Parsed::Incomplete));
}

#[test]
fn md_ma_mn_me() {
    let (command, frame, _) = parse_ok(b"md k C5 I T30 q k Oo\r\n");
    let want = Delete {
        key: key("k"),
        cas: Some(5),
        invalidate: true,
        exptime: Some(30),
    };
    assert_eq!(command, Command::Delete(want));
    assert!(frame.quiet && frame.return_key);

    let (command, frame, _) = parse_ok(b"ma k N0 J10 D3 T9 M- C2 v t c\r\n");
    let want = Arith {
        key: key("k"),
        incr: false,
        delta: 3,
        cas: Some(2),
        vivify: Some(0),
        initial: 10,
        touch: Some(9),
    };
    assert_eq!(command, Command::Arith(want));
    assert!(frame.return_value && frame.return_ttl && frame.return_cas);
    let (command, _, _) = parse_ok(b"ma k\r\n");
    assert!(matches!(
        command,
        Command::Arith(Arith {
            incr: true,
            delta: 1,
            initial: 0,
            ..
        })
    ));

    let (command, frame, used) = parse_ok(b"mn\r\n");
    assert_eq!(
        (command, frame, used),
        (Command::Noop, MetaFrame::default(), 4)
    );
    let (command, _, _) = parse_ok(b"me foo\n");
    assert_eq!(command, Command::MetaDebug { key: key("foo") });
}

#[test]
fn md_ma_mg_errors() {
    let flag = "CLIENT_ERROR invalid or duplicate flag";
    assert_eq!(refused(b"md k x\r\n").0, flag);
    assert_eq!(refused(b"ma k Dx\r\n").0, flag);
    assert_eq!(refused(b"ma k q q\r\n").0, flag);
    for mode in ["Mx", "Mi", "Md"] {
        assert_eq!(
            refused(format!("ma k {mode}\r\n").as_bytes()).0,
            "CLIENT_ERROR invalid mode for ma M token"
        );
    }
    assert_eq!(
        refused(b"mg k Dx\r\n").0,
        "CLIENT_ERROR invalid numeric delta value"
    );
    assert_eq!(
        refused(b"mg k Jx\r\n").0,
        "CLIENT_ERROR invalid numeric initial value"
    );
    assert_eq!(
        refused(b"mg k T\r\n").0,
        "CLIENT_ERROR bad token in command line format"
    );
    assert_eq!(refused(b"mg k \x7f\r\n").0, "CLIENT_ERROR duplicate flag");
    let many = format!("mg k{}\r\n", " P".repeat(18));
    assert_eq!(
        refused(many.as_bytes()).0,
        "CLIENT_ERROR options flags are too long"
    );
    let key = format!("mg {}\r\n", "k".repeat(251));
    assert_eq!(
        refused(key.as_bytes()).0,
        "CLIENT_ERROR bad command line format"
    );
    assert_eq!(refused(b"me\r\n").0, "CLIENT_ERROR bad command line format");
    for line in [&b"mg\r\n"[..], b"md\r\n", b"ma \r\n", b"ms\r\n"] {
        assert_eq!(refused(line).0, "ERROR");
    }
    // 31 opaque bytes are fine, 32 are not.
    parse_ok(format!("mg k O{}\r\n", "o".repeat(31)).as_bytes());
    let long = format!("md k O{}\r\n", "o".repeat(32));
    assert_eq!(
        refused(long.as_bytes()).0,
        "CLIENT_ERROR opaque token too long"
    );
}

fn reply(frame: &MetaFrame, key: Option<&str>, response: Response) -> String {
    let mut out = BytesMut::new();
    let frame = Frame::Meta(Box::new(frame.clone()));
    crate::protocol::encode(&frame, key.map(str::as_bytes), &response, &mut out);
    String::from_utf8(out.to_vec()).unwrap()
}

fn hit() -> Found {
    Found {
        key: key("foo"),
        flags: 5,
        cas: 99,
        data: key("hello"),
        ttl: -1,
        last_access: 12,
        fetched: true,
        ..Found::default()
    }
}

#[test]
fn mg_replies() {
    let all = MetaFrame {
        quiet: false,
        ..every_return_flag(b"op")
    };
    let found = Response::Get(vec![Some(hit())]);
    assert_eq!(
        reply(&all, None, found.clone()),
        "VA 5 c99 f5 h1 kfoo l12 s5 t-1 Oop\r\nhello\r\n"
    );
    let plain = MetaFrame::default();
    assert_eq!(reply(&plain, None, found.clone()), "HD\r\n");
    let quiet = MetaFrame {
        quiet: true,
        ..MetaFrame::default()
    };
    // memcached 1.6.18 hides only the miss under q.
    assert_eq!(reply(&quiet, None, found), "HD\r\n");
    assert_eq!(reply(&quiet, None, Response::Get(vec![None])), "");
    assert_eq!(reply(&plain, None, Response::Get(vec![None])), "EN\r\n");
    assert_eq!(
        reply(&all, Some("foo"), Response::Get(vec![None])),
        "EN kfoo Oop\r\n"
    );

    let states = Found {
        won: true,
        stale: true,
        win_sent: true,
        ..hit()
    };
    assert_eq!(
        reply(&plain, None, Response::Get(vec![Some(states)])),
        "HD Z X W\r\n"
    );

    let base64 = MetaFrame {
        base64_key: true,
        return_key: true,
        ..MetaFrame::default()
    };
    let binary = Found {
        key: Bytes::from_static(&[0, 1, 2, 255]),
        ..hit()
    };
    assert_eq!(
        reply(&base64, None, Response::Get(vec![Some(binary)])),
        "HD kAAEC/w== b\r\n"
    );
}

#[test]
fn ms_md_ma_replies() {
    let plain = MetaFrame::default();
    let quiet = MetaFrame {
        quiet: true,
        ..MetaFrame::default()
    };
    let cas = MetaFrame {
        return_cas: true,
        return_key: true,
        ..MetaFrame::default()
    };
    assert_eq!(reply(&plain, None, Response::Stored { cas: 3 }), "HD\r\n");
    assert_eq!(
        reply(&cas, Some("k"), Response::Stored { cas: 3 }),
        "HD c3 kk\r\n"
    );
    assert_eq!(reply(&quiet, None, Response::Stored { cas: 3 }), "");
    assert_eq!(reply(&quiet, None, Response::Deleted), "");
    for (response, code) in [
        (Response::NotStored, "NS"),
        (Response::Exists, "EX"),
        (Response::NotFound, "NF"),
    ] {
        assert_eq!(reply(&quiet, None, response), format!("{code}\r\n"));
    }
    assert_eq!(reply(&plain, None, Response::Deleted), "HD\r\n");
    let number = Response::Number {
        value: 42,
        cas: 8,
        ttl: 30,
    };
    let full = MetaFrame {
        return_value: true,
        return_ttl: true,
        return_cas: true,
        ..MetaFrame::default()
    };
    assert_eq!(reply(&full, None, number.clone()), "VA 2 c8 t30\r\n42\r\n");
    assert_eq!(reply(&plain, None, number.clone()), "HD\r\n");
    assert_eq!(reply(&quiet, None, number), "");
}

#[test]
fn other_replies() {
    let quiet = MetaFrame {
        quiet: true,
        ..MetaFrame::default()
    };
    assert_eq!(reply(&quiet, None, Response::Noop), "MN\r\n");
    let error = Response::Error(ErrorReply::Client("bad data chunk".into()));
    assert_eq!(
        reply(&quiet, None, error),
        "CLIENT_ERROR bad data chunk\r\n"
    );
    assert_eq!(
        reply(&quiet, None, Response::Error(ErrorReply::TooLarge)),
        "SERVER_ERROR object too large for cache\r\n"
    );
    assert_eq!(reply(&quiet, None, Response::Silent), "");
    let pairs = vec![("exp".into(), "-1".into()), ("la".into(), "3".into())];
    assert_eq!(
        reply(&quiet, Some("foo"), Response::MetaDebug(Some(pairs))),
        "ME foo exp=-1 la=3\r\n"
    );
    let base64 = MetaFrame {
        base64_key: true,
        ..MetaFrame::default()
    };
    let pairs = vec![("cas".into(), "1".into())];
    assert_eq!(
        reply(&base64, Some("foo"), Response::MetaDebug(Some(pairs))),
        "ME Zm9v cas=1\r\n"
    );
    assert_eq!(reply(&quiet, None, Response::MetaDebug(None)), "EN\r\n");
    let mut out = BytesMut::new();
    assert!(encode_keyed(
        &MetaFrame::default(),
        None,
        &Response::Noop,
        &mut out
    ));
    assert_eq!(&out[..], b"MN\r\n");
}

#[test]
fn return_flags_come_back_in_request_order() {
    let (_, frame, _) = parse_ok(b"mg foo t O1 s k v\r\n");
    let found = Response::Get(vec![Some(hit())]);
    assert_eq!(
        reply(&frame, Some("foo"), found.clone()),
        "VA 5 t-1 O1 s5 kfoo\r\nhello\r\n"
    );
    // The canonical order is kept as no order at all.
    let (_, frame, _) = parse_ok(b"mg foo c s t O1\r\n");
    assert_eq!(frame.order, order(b""));
    assert_eq!(reply(&frame, None, found), "HD c99 s5 t-1 O1\r\n");
    let (_, frame, _) = parse_ok(b"mg foo O2 k\r\n");
    assert_eq!(
        reply(&frame, Some("foo"), Response::Get(vec![None])),
        "EN O2 kfoo\r\n"
    );
}

#[test]
fn ms_failures_report_cas_0_and_md_ma_none() {
    let ms = |line: &str| parse_ok(format!("{line}\r\nx\r\n").as_bytes()).1;
    let frame = ms("ms foo 1 c k O3");
    assert!(frame.stores);
    for (response, code) in [
        (Response::Exists, "EX"),
        (Response::NotStored, "NS"),
        (Response::NotFound, "NF"),
    ] {
        assert_eq!(
            reply(&frame, Some("foo"), response),
            format!("{code} c0 kfoo O3\r\n")
        );
    }
    let (_, frame, _) = parse_ok(b"md foo c k O3\r\n");
    assert_eq!(
        reply(&frame, Some("foo"), Response::Exists),
        "EX kfoo O3\r\n"
    );
}

#[test]
fn only_ms_can_encode_more_tokens_than_memcached_takes() {
    let every_flag = MetaFrame {
        base64_key: true,
        ..every_return_flag(b"opaque")
    };
    let k = || key("k");
    let fits = [
        Command::Get(Get {
            keys: smallvec::smallvec![k()],
            touch: Some(30),
            vivify: Some(30),
            recache_below: Some(30),
            no_bump: true,
        }),
        Command::Arith(Arith {
            key: k(),
            incr: false,
            delta: 2,
            cas: Some(7),
            vivify: Some(30),
            initial: 5,
            touch: Some(30),
        }),
        Command::Delete(Delete {
            key: k(),
            cas: Some(7),
            invalidate: true,
            exptime: Some(30),
        }),
    ];
    for command in fits {
        let mut out = BytesMut::new();
        encode_line(&every_flag, &command, None, &mut out).expect("within the limit");
        let (parsed, _, used) = parse_ok(&out);
        assert_eq!((parsed, used), (command, out.len()));
    }
    let store = Command::Store(Store {
        mode: StoreMode::Append,
        key: k(),
        flags: 5,
        exptime: 30,
        data: Bytes::from_static(b"v"),
        cas: Some(7),
        invalidate: true,
        vivify: Some(30),
    });
    let mut out = BytesMut::new();
    let refused = encode_line(&every_flag, &store, None, &mut out);
    assert_eq!(
        refused,
        Err(crate::protocol::text::Unencodable(
            "more meta flags than memcached accepts"
        ))
    );
    assert!(out.is_empty(), "a refused request leaves nothing behind");
}

/// memgate's tombstone flag: `md <key> G<ttl>` buries, `ms <key> … G` is a
/// copy (an add), and both round-trip through the sidecar's encoder. Any
/// other combination is refused as memcached refuses an unknown flag.
#[test]
fn tombstone_flag() {
    let (command, _, _) = parse_ok(b"md k G30\r\n");
    assert_eq!(
        command,
        Command::Bury {
            key: key("k"),
            ttl: 30,
            version: None,
            report: false,
        }
    );
    let (command, _, _) = parse_ok(b"ms k 2 G T100 F5\r\nvv\r\n");
    let Command::Copy { store, version } = command else {
        panic!("{command:?}")
    };
    assert_eq!(
        (store.mode, store.exptime, store.flags, version),
        (StoreMode::Add, 100, 5, None)
    );
    for line in [&b"ms k 2 G MS\r\nvv\r\n"[..], b"ms k 2 G C5\r\nvv\r\n"] {
        assert_eq!(refused(line).0, "CLIENT_ERROR invalid flag");
    }
    assert_eq!(refused(b"md k G30 C5\r\n").0, "CLIENT_ERROR invalid flag");
    let copy = Command::Copy {
        store: Store {
            mode: StoreMode::Add,
            key: key("k"),
            flags: 5,
            exptime: 100,
            data: bytes::Bytes::from_static(b"vv"),
            cas: None,
            invalidate: false,
            vivify: None,
        },
        version: None,
    };
    for command in [
        Command::Bury {
            key: key("k"),
            ttl: 30,
            version: None,
            report: false,
        },
        copy,
    ] {
        let mut out = bytes::BytesMut::new();
        encode_line(&MetaFrame::default(), &command, None, &mut out).unwrap();
        assert_eq!(parse_ok(&out).0, command, "{out:?}");
    }
}

/// memgate's versioned copy, `ms <key> <len> G E<version> [MS|ME]`: with
/// `E` the copy carries the CAS its item must take, and with `MS` it is a
/// replica's set (a "mirror"), which needs a version. Both round-trip
/// through the sidecar's encoder, whatever the order of the flags.
#[test]
fn versioned_copy_flag() {
    let copy = |mode, version| {
        let store = Store {
            mode,
            key: key("k"),
            flags: 5,
            exptime: 100,
            data: bytes::Bytes::from_static(b"vv"),
            cas: None,
            invalidate: false,
            vivify: None,
        };
        Command::Copy { store, version }
    };
    let mirror = copy(StoreMode::Set, Some(1234));
    for line in [
        &b"ms k 2 G E1234 MS F5 T100\r\nvv\r\n"[..],
        b"ms k 2 MS T100 E1234 F5 G\r\nvv\r\n",
    ] {
        assert_eq!(
            parse_ok(line).0,
            mirror,
            "{}",
            String::from_utf8_lossy(line)
        );
    }
    let add = copy(StoreMode::Add, Some(u64::MAX));
    for line in [
        &b"ms k 2 G E18446744073709551615 F5 T100\r\nvv\r\n"[..],
        b"ms k 2 ME G E18446744073709551615 F5 T100\r\nvv\r\n",
    ] {
        assert_eq!(parse_ok(line).0, add, "{}", String::from_utf8_lossy(line));
    }
    // The reply shape is a store's: `c` reports the CAS stored, 0 on `EX`.
    let (_, frame, _) = parse_ok(b"ms k 2 G E7 MS c O9\r\nvv\r\n");
    assert!(frame.stores && frame.return_cas);
    for command in [mirror, add, copy(StoreMode::Add, None)] {
        let mut out = bytes::BytesMut::new();
        encode_line(&MetaFrame::default(), &command, None, &mut out).unwrap();
        assert_eq!(parse_ok(&out).0, command, "{out:?}");
    }
    let mut out = bytes::BytesMut::new();
    encode_line(
        &MetaFrame::default(),
        &copy(StoreMode::Set, Some(9)),
        None,
        &mut out,
    )
    .unwrap();
    assert_eq!(&out[..], b"ms k 2 F5 T100 MS G E9\r\nvv\r\n");
    // A set without a version, another mode, a compare or an invalidation
    // is no copy; a bad version is a bad token; data is skipped each time.
    for line in [
        &b"ms k 2 G MS\r\nvv\r\n"[..],
        b"ms k 2 G E5 MA\r\nvv\r\n",
        b"ms k 2 G E5 MP\r\nvv\r\n",
        b"ms k 2 G E5 MR\r\nvv\r\n",
        b"ms k 2 G E5 MS C5\r\nvv\r\n",
        b"ms k 2 G E5 MS I\r\nvv\r\n",
        b"ms k 2 G E5 C5\r\nvv\r\n",
    ] {
        let (error, skip) = refused(line);
        assert_eq!(
            error,
            "CLIENT_ERROR invalid flag",
            "{}",
            String::from_utf8_lossy(line)
        );
        assert_eq!(skip, 4);
    }
    for line in [
        &b"ms k 2 G Ex MS\r\nvv\r\n"[..],
        b"ms k 2 G E MS\r\nvv\r\n",
        b"ms k 2 G E18446744073709551616\r\nvv\r\n",
    ] {
        assert_eq!(
            refused(line).0,
            "CLIENT_ERROR bad token in command line format",
            "{}",
            String::from_utf8_lossy(line)
        );
    }
    assert_eq!(
        refused(b"ms k 2 G E5 E6\r\nvv\r\n").0,
        "CLIENT_ERROR duplicate flag"
    );
}

/// memgate's versioned tombstone, `md <key> G<ttl> [E<version>] [c]`: `E`
/// names the newest mirror the tombstone refuses, `c` asks for the removed
/// item's CAS; each shape round-trips through the sidecar's encoder,
/// whatever the order of the flags, and the reply is `HD c<cas>` only for
/// the `c` that asked for it.
#[test]
fn versioned_tombstone_flag() {
    let bury = |version, report| Command::Bury {
        key: key("k"),
        ttl: 30,
        version,
        report,
    };
    for (line, want) in [
        (&b"md k G30 E5\r\n"[..], bury(Some(5), false)),
        (b"md k E5 G30\r\n", bury(Some(5), false)),
        (b"md k G30 c\r\n", bury(None, true)),
        (
            b"md k c E18446744073709551615 q O1 G30\r\n",
            bury(Some(u64::MAX), true),
        ),
        (b"md k G30\r\n", bury(None, false)),
    ] {
        assert_eq!(parse_ok(line).0, want, "{}", String::from_utf8_lossy(line));
    }
    let (_, frame, _) = parse_ok(b"md k G30 E5 c O9 k\r\n");
    assert!(frame.return_cas && frame.return_key && !frame.stores);
    assert_eq!(
        reply(&frame, Some("k"), Response::DeletedCas { cas: 77 }),
        "HD c77 O9 kk\r\n"
    );
    assert_eq!(reply(&frame, Some("k"), Response::NotFound), "NF O9 kk\r\n");
    assert_eq!(
        reply(
            &MetaFrame::default(),
            None,
            Response::DeletedCas { cas: 77 }
        ),
        "HD\r\n"
    );
    let quiet = parse_ok(b"md k G30 c q\r\n").1;
    assert_eq!(reply(&quiet, None, Response::DeletedCas { cas: 7 }), "");
    for command in [
        bury(Some(5), false),
        bury(Some(5), true),
        bury(None, true),
        bury(None, false),
    ] {
        let mut out = bytes::BytesMut::new();
        encode_line(&MetaFrame::default(), &command, None, &mut out).unwrap();
        assert_eq!(parse_ok(&out).0, command, "{out:?}");
    }
    let mut out = bytes::BytesMut::new();
    encode_line(&MetaFrame::default(), &bury(Some(5), true), None, &mut out).unwrap();
    assert_eq!(&out[..], b"md k G30 E5 c\r\n");
    // A version 0 names no write, a bad one is a bad token; a version with
    // a compare, an invalidation or a stale TTL is no tombstone.
    for (line, error) in [
        (&b"md k G30 E0\r\n"[..], "CLIENT_ERROR invalid flag"),
        (b"md k G30 Ex\r\n", "CLIENT_ERROR invalid or duplicate flag"),
        (b"md k G30 E\r\n", "CLIENT_ERROR invalid or duplicate flag"),
        (
            b"md k G30 E5 E6\r\n",
            "CLIENT_ERROR invalid or duplicate flag",
        ),
        (b"md k G30 E5 C5\r\n", "CLIENT_ERROR invalid flag"),
        (b"md k G30 E5 I\r\n", "CLIENT_ERROR invalid flag"),
        (b"md k G30 E5 T5\r\n", "CLIENT_ERROR invalid flag"),
    ] {
        assert_eq!(refused(line).0, error, "{}", String::from_utf8_lossy(line));
    }
}

/// memcached 1.6.18 has no `E` (a client-chosen CAS, in later releases): every
/// meta command but memgate's copy and tombstone (`ms … G`, `md … G<ttl>`,
/// above) refuses it, as
/// memcached does (`node_vs_memcached`'s failure cases) and with the same
/// error whatever else the line holds, so that no client's own command
/// picks the CAS an item holds.
#[test]
fn e_flag_is_refused_as_in_1_6_18() {
    for line in [
        &b"ms k 1 E5\r\nx\r\n"[..],
        b"ms k 1 E0\r\nx\r\n",
        b"ms k 1 E5 MS\r\nx\r\n",
        b"ms k 1 Tx E5\r\nx\r\n",
        b"ms k 1 E5 E6\r\nx\r\n",
        b"mg k E5 c\r\n",
        b"md k E0\r\n",
        b"md k E5\r\n",
        b"md k E5 c\r\n",
        b"md k T30 E5\r\n",
        b"md k E5 E6\r\n",
        b"ma k E0\r\n",
    ] {
        // ms and mg say "invalid flag"; md and ma "invalid or duplicate
        // flag", as memcached does.
        let error = refused(line).0;
        assert!(
            error.starts_with("CLIENT_ERROR invalid"),
            "{}: {error}",
            String::from_utf8_lossy(line)
        );
    }
}

use super::*;

#[test]
fn sizes() {
    assert_eq!(parse_size("0").unwrap(), 0);
    assert_eq!(parse_size("123").unwrap(), 123);
    assert_eq!(parse_size("123B").unwrap(), 123);
    assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
    assert_eq!(parse_size("64 MiB").unwrap(), 64 << 20);
    assert_eq!(parse_size("  64mib ").unwrap(), 64 << 20);
    assert_eq!(parse_size("64M").unwrap(), 64 << 20);
    assert_eq!(parse_size("64m").unwrap(), 64 << 20);
    assert_eq!(parse_size("1MB").unwrap(), 1_000_000);
    assert_eq!(parse_size("1kb").unwrap(), 1_000);
    assert_eq!(parse_size("2KiB").unwrap(), 2048);
    assert_eq!(parse_size("2k").unwrap(), 2048);
    assert_eq!(parse_size("3GiB").unwrap(), 3 << 30);
    assert_eq!(parse_size("3GB").unwrap(), 3_000_000_000);
    assert_eq!(parse_size("1T").unwrap(), 1 << 40);
    assert_eq!(parse_size("1TB").unwrap(), 1_000_000_000_000);
}

#[test]
fn bad_sizes() {
    assert!(matches!(parse_size(""), Err(UnitError::Empty { .. })));
    assert!(matches!(parse_size("  "), Err(UnitError::Empty { .. })));
    assert!(matches!(
        parse_size("MiB"),
        Err(UnitError::InvalidNumber { .. })
    ));
    assert!(matches!(
        parse_size("-1"),
        Err(UnitError::InvalidNumber { .. })
    ));
    assert!(matches!(
        parse_size("1.5GiB"),
        Err(UnitError::UnknownUnit { .. })
    ));
    assert!(matches!(
        parse_size("64XB"),
        Err(UnitError::UnknownUnit { .. })
    ));
    assert!(matches!(
        parse_size("64 MiB x"),
        Err(UnitError::UnknownUnit { .. })
    ));
    assert!(matches!(
        parse_size("99999999999999999999"),
        Err(UnitError::Overflow { .. })
    ));
    assert!(matches!(
        parse_size("17000000TiB"),
        Err(UnitError::Overflow { .. })
    ));
    let msg = parse_size("64XB").unwrap_err().to_string();
    assert!(
        msg.contains("\"64XB\"") && msg.contains("\"XB\"") && msg.contains("MiB"),
        "{msg}"
    );
}

#[test]
fn durations() {
    assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
    assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
    assert_eq!(parse_duration("5 sec").unwrap(), Duration::from_secs(5));
    assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
    assert_eq!(parse_duration("50us").unwrap(), Duration::from_micros(50));
    assert_eq!(parse_duration("50µs").unwrap(), Duration::from_micros(50));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert_eq!(parse_duration("2MIN").unwrap(), Duration::from_secs(120));
    assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
    assert_eq!(
        parse_duration("30d").unwrap(),
        Duration::from_secs(2_592_000)
    );
    assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
}

#[test]
fn bad_durations() {
    assert!(matches!(parse_duration(""), Err(UnitError::Empty { .. })));
    assert!(matches!(
        parse_duration("s"),
        Err(UnitError::InvalidNumber { .. })
    ));
    assert!(matches!(
        parse_duration("-5s"),
        Err(UnitError::InvalidNumber { .. })
    ));
    assert!(matches!(
        parse_duration("5w"),
        Err(UnitError::UnknownUnit { .. })
    ));
    assert!(matches!(
        parse_duration("1.5s"),
        Err(UnitError::UnknownUnit { .. })
    ));
    assert!(matches!(
        parse_duration("18446744073709551615d"),
        Err(UnitError::Overflow { .. })
    ));
}

#[test]
fn clap_style_parsers() {
    assert_eq!(parse_size_arg("1K"), Ok(1024));
    assert!(parse_size_arg("1X").unwrap_err().contains("unknown unit"));
    assert_eq!(parse_duration_arg("1m"), Ok(Duration::from_secs(60)));
    assert_eq!("64MiB".parse::<Size>(), Ok(Size(64 << 20)));
    assert_eq!("2h".parse::<Dur>(), Ok(Dur(Duration::from_secs(7200))));
}

#[test]
fn format_round_trips() {
    for n in [
        0,
        1,
        1000,
        1024,
        1536,
        64 << 20,
        3 << 30,
        (1 << 40) + 1,
        5 << 40,
    ] {
        assert_eq!(
            parse_size(&format_size(n)).unwrap(),
            n,
            "{}",
            format_size(n)
        );
    }
    assert_eq!(format_size(64 << 20), "64MiB");
    assert_eq!(format_size(1000), "1000B");
    for d in [0, 1, 999, 1000, 1500, 60_000, 3_600_000, 86_400_000 * 30] {
        let d = Dur(Duration::from_millis(d));
        assert_eq!(d.to_string().parse::<Dur>().unwrap(), d, "{d}");
    }
    assert_eq!(Dur(Duration::from_secs(90)).to_string(), "90s");
    assert_eq!(Dur(Duration::from_secs(86_400)).to_string(), "1d");
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
struct T {
    a: Size,
    #[serde(with = "size_serde")]
    b: u64,
    t: Dur,
}

#[test]
fn serde_from_integer_or_string() {
    let t: T = toml::from_str("a = \"64MiB\"\nb = 1024\nt = \"100ms\"").unwrap();
    assert_eq!(
        t,
        T {
            a: Size(64 << 20),
            b: 1024,
            t: Dur(Duration::from_millis(100))
        }
    );
    let t: T = toml::from_str("a = 5\nb = \"1 KB\"\nt = 30").unwrap();
    assert_eq!(
        t,
        T {
            a: Size(5),
            b: 1000,
            t: Dur(Duration::from_secs(30))
        }
    );
    let e = toml::from_str::<T>("a = \"64XB\"\nb = 1\nt = 1")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown unit"), "{e}");
    let e = toml::from_str::<T>("a = -1\nb = 1\nt = 1")
        .unwrap_err()
        .to_string();
    assert!(e.contains("negative"), "{e}");
    let back: T = toml::from_str(&toml::to_string(&t).unwrap()).unwrap();
    assert_eq!(back, t);
}

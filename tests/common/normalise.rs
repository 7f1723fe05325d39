//! The one reply normaliser of the differential tests, which send the same
//! requests to memcached 1.6.18 and to memgate (a node, or the sidecar) and
//! compare the replies. A reply becomes text in which only what legitimately
//! differs between two servers, or between two runs a second apart, reads as
//! a placeholder: CAS uniques, TTLs (rounded up to ten seconds, as a second
//! may tick between the runs), last-access times, and `me`'s times. All
//! else, value blocks included, stays byte for byte. It also remembers the
//! last CAS unique a reply carried, which the next request may quote.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dialect {
    /// Text and meta replies.
    Text,
    Binary,
}

/// A normaliser for the replies of one connection.
#[derive(Default)]
pub struct Normaliser {
    /// The last CAS unique a reply carried (0 before any).
    pub last_cas: u64,
    /// Whether `me`'s `size=` is hidden too: memgate reports an item's size
    /// by its own accounting, not memcached's slab item size (README,
    /// "Differences from memcached"). Only where memgate's reply is held
    /// against memcached's.
    pub hide_item_size: bool,
}

impl Normaliser {
    /// A normaliser that hides `me`'s item size too (see `hide_item_size`).
    pub fn hiding_item_size() -> Normaliser {
        Normaliser {
            hide_item_size: true,
            ..Normaliser::default()
        }
    }

    pub fn reply(&mut self, dialect: Dialect, reply: &[u8]) -> String {
        match dialect {
            Dialect::Text => self.text(reply),
            Dialect::Binary => self.binary(reply),
        }
    }

    /// Text and meta replies, line by line; a value block after the line
    /// that announces it is kept as it is.
    pub fn text(&mut self, reply: &[u8]) -> String {
        let mut out = String::new();
        let mut at = 0;
        while at < reply.len() {
            let (line, ended) = match reply[at..].windows(2).position(|w| w == b"\r\n") {
                Some(n) => (&reply[at..at + n], true),
                None => (&reply[at..], false),
            };
            at += line.len() + if ended { 2 } else { 0 };
            let line = String::from_utf8_lossy(line);
            out.push_str(&self.text_line(&line));
            if ended {
                out.push_str("\r\n");
            }
            if let Some(len) = value_len(line.as_bytes()) {
                let end = (at + len + 2).min(reply.len());
                out.push_str(&String::from_utf8_lossy(&reply[at..end]));
                at = end;
            }
        }
        out
    }

    fn text_line(&mut self, line: &str) -> String {
        let words: Vec<&str> = line.split(' ').collect();
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        match words[0] {
            "VALUE" if words.len() == 5 => {
                if let Ok(cas) = words[4].parse() {
                    self.last_cas = cas;
                }
                format!("{} <cas>", words[..4].join(" "))
            }
            "ME" => words
                .iter()
                .map(|w| match w.split_once('=') {
                    Some(("cas", n)) if digits(n) => "cas=<cas>".to_string(),
                    Some((field @ ("exp" | "la"), n)) if digits(n) => format!("{field}=<secs>"),
                    Some(("size", n)) if digits(n) && self.hide_item_size => {
                        "size=<bytes>".to_string()
                    }
                    _ => w.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" "),
            "VA" | "HD" | "EN" | "NF" | "NS" | "EX" => {
                let mut words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
                for w in words.iter_mut().skip(1) {
                    let (flag, n) = w.split_at(w.len().min(1));
                    match flag {
                        "c" if digits(n) => {
                            if let Ok(cas) = n.parse() {
                                self.last_cas = cas;
                            }
                            if n != "0" {
                                *w = "c<cas>".into();
                            }
                        }
                        "t" if digits(n) && n != "0" => {
                            if let Ok(ttl) = n.parse::<u64>() {
                                *w = format!("t~{}", ttl.div_ceil(10) * 10);
                            }
                        }
                        "l" if digits(n) => *w = "l<secs>".into(),
                        _ => {}
                    }
                }
                words.join(" ")
            }
            _ => line.to_string(),
        }
    }

    /// Binary replies, packet by packet, with a CAS other than 0 hidden;
    /// whatever follows the last packet is kept as text.
    pub fn binary(&mut self, reply: &[u8]) -> String {
        let mut out = String::new();
        let mut at = 0;
        for packet in packets(reply) {
            at += packet.len();
            let cas = u64::from_be_bytes(packet[16..24].try_into().unwrap());
            let shown = if cas == 0 {
                "0".to_string()
            } else {
                self.last_cas = cas;
                "<cas>".to_string()
            };
            let body = &packet[24..];
            let body = match std::str::from_utf8(body) {
                Ok(text) => format!("{text:?}"),
                Err(_) => format!("{body:02x?}"),
            };
            out.push_str(&format!("{:02x?} cas={shown} {body}\n", &packet[..16]));
        }
        out.push_str(&String::from_utf8_lossy(&reply[at..]));
        out
    }
}

/// The binary packets of `reply`: each whole one, and a last one that may be
/// cut short.
pub fn packets(reply: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 24 <= reply.len() {
        let body = u32::from_be_bytes(reply[at + 8..at + 12].try_into().unwrap()) as usize;
        let end = (at + 24 + body).min(reply.len());
        out.push(&reply[at..end]);
        at = end;
    }
    out
}

/// The length of the data block a reply line announces (`VA n`, `VALUE k f n`).
pub fn value_len(line: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(line).ok()?;
    let mut words = text.split(' ');
    match words.next()? {
        "VA" => words.next()?.parse().ok(),
        "VALUE" => words.nth(2)?.parse().ok(),
        _ => None,
    }
}

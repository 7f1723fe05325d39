//! Ketama key placement, byte-for-byte libmemcached `MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED`
//! (= php-memcached `LIBKETAMA_COMPATIBLE`, pylibmc `ketama_weighted`), so a cache filled
//! by those clients keeps its hits behind memgate. Pinned by golden vectors from the real
//! libmemcached: `tests/data/ketama/`.
//!
//! Where libmemcached 1.1.4 is more specific than a prose description of ketama:
//! - the points-per-server formula runs in single-precision `float` (see [`points_for`]);
//! - equal point values are ordered by server index (its qsort comparator);
//! - weight 0 counts as 1;
//! - `[v6]:port` keeps its brackets in the ring identity, as `memcached_servers_parse` does.

use md5::{Digest, Md5};
use std::fmt::Write as _;

/// memcached's default port: the only port left out of a ring identity.
pub const DEFAULT_PORT: u16 = 11211;

/// One configured server. Servers are identified by their index in the slice given to
/// [`Ring::new`]; `name` is what ketama hashes, `host`/`port` is where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// Ring identity: `host` when the port is 11211, else `host:port`, unless set with `name=`.
    pub name: String,
    /// Host to connect to, IPv6 without brackets.
    pub host: String,
    pub port: u16,
    pub weight: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingError {
    #[error("no servers configured")]
    NoServers,
    #[error("server entry {0:?}: empty host")]
    EmptyHost(String),
    #[error("server entry {0:?}: empty name before '='")]
    EmptyName(String),
    #[error("server entry {0:?}: whitespace or control character")]
    BadChar(String),
    #[error("server entry {0:?}: port must be a number 1-65535")]
    BadPort(String),
    #[error("server entry {0:?}: weight must be a number 1-4294967295")]
    BadWeight(String),
    #[error("server entry {0:?}: expected [name=]host[:port[:weight]]")]
    Syntax(String),
    #[error("server entry {0:?}: bad IPv6 address; write it bracketed, e.g. [::1]:11211")]
    BadIpv6(String),
}

/// Parses `host[:port[:weight]]`, `[v6addr][:port[:weight]]`, or `name=` before either
/// (`name` then is the ring identity verbatim). Port defaults to 11211, weight to 1.
pub fn parse_server_entry(entry: &str) -> Result<ServerSpec, RingError> {
    let err = |f: fn(String) -> RingError| f(entry.to_owned());
    let entry_t = entry.trim();
    if entry_t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(RingError::BadChar));
    }
    let (name, addr) = match entry_t.split_once('=') {
        Some(("", _)) => return Err(err(RingError::EmptyName)),
        Some((n, a)) => (Some(n), a),
        None => (None, entry_t),
    };
    // Split off the host; `rest` is "" or ":port[:weight]".
    let (host, ident_host, rest) = if let Some(v6) = addr.strip_prefix('[') {
        let (h, rest) = v6.split_once(']').ok_or_else(|| err(RingError::BadIpv6))?;
        if h.parse::<std::net::Ipv6Addr>().is_err() || !(rest.is_empty() || rest.starts_with(':')) {
            return Err(err(RingError::BadIpv6));
        }
        // Identity keeps the brackets: memcached_servers_parse("[::1]:11211") stores "[::1]".
        (h, &addr[..h.len() + 2], rest)
    } else if addr.matches(':').count() > 2 || addr.contains("::") {
        // Unbracketed IPv6 ("fe80::1:11211"): where the port starts is a guess; refuse.
        return Err(err(RingError::BadIpv6));
    } else {
        let end = addr.find(':').unwrap_or(addr.len());
        (&addr[..end], &addr[..end], &addr[end..])
    };
    if host.is_empty() {
        return Err(err(RingError::EmptyHost));
    }
    let mut fields = rest
        .strip_prefix(':')
        .into_iter()
        .flat_map(|r| r.split(':'));
    let port = match fields.next() {
        None => DEFAULT_PORT,
        Some(p) => positive(p).ok_or_else(|| err(RingError::BadPort))?,
    };
    let weight = match fields.next() {
        None => 1,
        Some(w) => positive(w).ok_or_else(|| err(RingError::BadWeight))?,
    };
    if fields.next().is_some() {
        return Err(err(RingError::Syntax));
    }
    let name = match name {
        Some(n) => n.to_owned(),
        None if port == DEFAULT_PORT => ident_host.to_owned(),
        None => format!("{ident_host}:{port}"),
    };
    Ok(ServerSpec {
        name,
        host: host.to_owned(),
        port,
        weight,
    })
}

/// Plain decimal digits (no sign, no blanks) of a non-zero number.
fn positive<T: std::str::FromStr + Default + PartialEq>(s: &str) -> Option<T> {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits
        .then(|| s.parse().ok())
        .flatten()
        .filter(|v| *v != T::default())
}

/// The most replicas a key may have (`--replicas`).
pub const MAX_REPLICAS: usize = 8;

/// A key's replicas as server indices, in ring order, held inline: every
/// replicated request asks for them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Replicas {
    servers: [u32; MAX_REPLICAS],
    len: usize,
}

impl Replicas {
    fn as_slice(&self) -> &[u32] {
        &self.servers[..self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The server indices, first replica first.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.as_slice().iter().map(|&s| s as usize)
    }
}

/// A ketama continuum over the live subset of a fixed server list.
#[derive(Debug, Clone)]
pub struct Ring {
    /// (identity, weight) of every configured server, live or not, to rebuild from.
    servers: Vec<(String, u32)>,
    live: Vec<bool>,
    /// Sorted by (point, server index): exactly libmemcached's `continuum_item_cmp`.
    points: Vec<(u32, u32)>,
}

impl Ring {
    /// Builds the ring over all `servers`; indices into the slice are what [`Ring::locate`]
    /// returns.
    pub fn new(servers: &[ServerSpec]) -> Result<Ring, RingError> {
        if servers.is_empty() {
            return Err(RingError::NoServers);
        }
        let live = vec![true; servers.len()];
        Ok(Ring::build(
            servers.iter().map(|s| (s.name.clone(), s.weight)).collect(),
            live,
        ))
    }

    /// The ring libmemcached's auto-eject would rebuild with `down` (and anything already
    /// down here) removed; indices stay those of the original list. `None` if none is left.
    pub fn without(&self, down: &[usize]) -> Option<Ring> {
        let mut live = self.live.clone();
        for &i in down {
            if let Some(l) = live.get_mut(i) {
                *l = false;
            }
        }
        live.contains(&true)
            .then(|| Ring::build(self.servers.clone(), live))
    }

    /// Index of the server owning `key`: the first point ≥ the first 4 bytes (LE) of
    /// MD5(key), wrapping to the first point.
    /// One live server gets every key, as with libmemcached's one-server shortcut.
    pub fn locate(&self, key: &[u8]) -> usize {
        let d = Md5::digest(key);
        let hash = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
        // Lower bound, like libmemcached's dispatch_host: among equal points the lowest
        // server index wins, which the (point, index) sort puts first.
        let i = self.points.partition_point(|&(p, _)| p < hash);
        let (_, server) = self
            .points
            .get(i)
            .or(self.points.first())
            .copied()
            .unwrap_or_default(); // never empty: the largest share alone gets ≥ 156 points
        server as usize
    }

    /// The first `n` distinct servers at and after `key`'s point, going
    /// round the ring: where `--replicas n` keeps the key, in the order its
    /// writes visit them. The first is [`Ring::locate`]'s. Fewer if the ring
    /// has fewer live servers.
    pub fn replicas(&self, key: &[u8], n: usize) -> Replicas {
        let d = Md5::digest(key);
        let hash = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
        let start = self.points.partition_point(|&(p, _)| p < hash);
        let mut found = Replicas::default();
        let n = n.min(MAX_REPLICAS);
        let (after, before) = self.points.split_at(start.min(self.points.len()));
        for &(_, server) in before.iter().chain(after) {
            if found.len == n {
                break;
            }
            if !found.as_slice().contains(&server) {
                found.servers[found.len] = server;
                found.len += 1;
            }
        }
        found
    }

    /// Whether `other` places every key on the same server index.
    pub fn same_placement(&self, other: &Ring) -> bool {
        self.servers == other.servers && self.live == other.live
    }

    /// Number of configured servers (live or not).
    pub fn server_count(&self) -> usize {
        self.servers.len()
    }

    pub fn is_live(&self, index: usize) -> bool {
        self.live.get(index).copied().unwrap_or(false)
    }

    /// libmemcached's update_continuum: N and W count live servers only, and a server's
    /// point names are `"{identity}-{i}"`, each MD5 giving four little-endian points.
    fn build(servers: Vec<(String, u32)>, live: Vec<bool>) -> Ring {
        let alive = || servers.iter().zip(&live).filter(|(_, &l)| l);
        let n_live = alive().count() as u32;
        let total: u64 = alive().map(|((_, w), _)| u64::from((*w).max(1))).sum();
        let mut points = Vec::with_capacity(160 * n_live as usize);
        let mut label = String::new();
        for (index, ((ident, w), _)) in servers
            .iter()
            .zip(&live)
            .enumerate()
            .filter(|(_, (_, &l))| l)
        {
            // Weight 0 is stored as 1 by libmemcached (instance_create_with).
            for i in 0..points_for((*w).max(1), total, n_live) / 4 {
                label.clear();
                let _ = write!(label, "{ident}-{i}"); // writing to a String cannot fail
                let d = Md5::digest(label.as_bytes());
                for c in d.chunks_exact(4) {
                    points.push((u32::from_le_bytes([c[0], c[1], c[2], c[3]]), index as u32));
                }
            }
        }
        points.sort_unstable();
        Ring {
            servers,
            live,
            points,
        }
    }
}

/// Points for one server: libmemcached's
/// `floor((float)(pct * 160 / 4 * (float)live + 1e-10F)) * 4` with `float pct = w / W`.
/// Single precision is observable: weights 1,3,7,7,7 give the first server
/// 1/25·40·5 = 7.9999995 → 28 points, where exact arithmetic says 32.
fn points_for(weight: u32, total: u64, live: u32) -> u32 {
    let pct = weight as f32 / total as f32;
    (pct * 160.0 / 4.0 * live as f32 + 1e-10_f32).floor() as u32 * 4
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTORS: &str = include_str!("../../tests/data/ketama/vectors.tsv");

    fn spec(entry: &str) -> ServerSpec {
        parse_server_entry(entry).expect(entry)
    }

    fn ring(entries: &[&str]) -> Ring {
        Ring::new(&entries.iter().map(|e| spec(e)).collect::<Vec<_>>()).expect("ring")
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// The rings named by the `# set name: host/port/weight ... [(index K down)]` header,
    /// built through `parse_server_entry` so identity derivation is pinned too.
    fn vector_sets() -> Vec<(String, Ring)> {
        let sets: Vec<_> = VECTORS
            .lines()
            .filter_map(|l| l.strip_prefix("# set "))
            .map(|l| {
                let (name, rest) = l.split_once(':').expect("set name");
                let (list, down) = match rest.split_once(" (index ") {
                    Some((list, d)) => (list, d.split(' ').next().map(|d| d.parse().expect("idx"))),
                    None => (rest, None),
                };
                let entries: Vec<_> = list
                    .split_whitespace()
                    .map(|s| s.replace('/', ":"))
                    .collect();
                let full =
                    Ring::new(&entries.iter().map(|e| spec(e)).collect::<Vec<_>>()).expect("ring");
                let ring = match down {
                    Some(d) => full.without(&[d]).expect("live servers"),
                    None => full,
                };
                (name.to_owned(), ring)
            })
            .collect();
        assert_eq!(sets.len(), 7, "every vector set parsed");
        sets
    }

    #[test]
    fn matches_libmemcached_golden_vectors() {
        let sets = vector_sets();
        let mut lines = VECTORS.lines().filter(|l| !l.starts_with('#'));
        let header: Vec<_> = lines
            .next()
            .expect("column names")
            .split('\t')
            .skip(1)
            .collect();
        let names: Vec<_> = sets.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(header, names);
        let (mut keys, mut bad) = (0, Vec::new());
        for line in lines {
            let mut cols = line.split('\t');
            let key = unhex(cols.next().expect("key"));
            for ((name, ring), want) in sets.iter().zip(cols) {
                let want: usize = want.parse().expect("index");
                if ring.locate(&key) != want {
                    bad.push((
                        name.clone(),
                        String::from_utf8_lossy(&key).into_owned(),
                        want,
                    ));
                }
            }
            keys += 1;
        }
        assert_eq!(keys, 2000);
        assert!(
            bad.is_empty(),
            "{} mismatches, first: {:?}",
            bad.len(),
            &bad[..bad.len().min(5)]
        );
    }

    #[test]
    fn points_per_server_uses_f32_like_libmemcached() {
        assert_eq!(points_for(1, 3, 3), 160); // equal weights: 160 each
        assert_eq!(points_for(5, 12, 5), 332); // 5/12·200 = 83.3 → 83 hashes
        assert_eq!(points_for(1, 25, 5), 28); // exact math would give 32
        let r = ring(&["n1", "n2:11211:3", "n3:11211:7", "n4:11211:7", "n5:11211:7"]);
        assert_eq!(r.points.iter().filter(|p| p.1 == 0).count(), 28);
    }

    #[test]
    fn replicas_start_at_the_key_and_are_distinct() {
        let r = ring(&["a:1", "b:2", "c:3", "d:4"]);
        for i in 0..2000 {
            let key = format!("key{i}");
            let set: Vec<usize> = r.replicas(key.as_bytes(), 3).iter().collect();
            assert_eq!(set.len(), 3);
            assert_eq!(
                set[0],
                r.locate(key.as_bytes()),
                "the first is the key's node"
            );
            assert!(set[0] != set[1] && set[1] != set[2] && set[0] != set[2]);
            let one: Vec<usize> = r.replicas(key.as_bytes(), 1).iter().collect();
            assert_eq!(one, vec![set[0]]);
            let two: Vec<usize> = r.replicas(key.as_bytes(), 2).iter().collect();
            assert_eq!(&two[..], &set[..2]);
        }
        assert_eq!(
            r.replicas(b"k", 9).len(),
            4,
            "no more than there are servers"
        );
        // With the node a key lives on removed, its second replica becomes
        // its first: the keys a dead node held are already where they go.
        let without = r.without(&[0]).unwrap();
        for i in 0..2000 {
            let key = format!("key{i}");
            let set: Vec<usize> = r.replicas(key.as_bytes(), 2).iter().collect();
            if set[0] == 0 {
                assert_eq!(without.locate(key.as_bytes()), set[1]);
            }
        }
    }

    #[test]
    fn single_server_takes_everything() {
        let r = ring(&["mc1.example.com:11219"]);
        assert!((0..500).all(|i| r.locate(format!("k{i}").as_bytes()) == 0));
        assert_eq!(Ring::new(&[]).err(), Some(RingError::NoServers));
    }

    #[test]
    fn eject_keeps_keys_of_live_servers() {
        let keys: Vec<_> = (0..5000).map(|i| format!("key:{i}")).collect();
        // Equal weights: per-server point counts don't change, so no live key moves.
        let full = ring(&["10.0.1.1", "10.0.1.2", "10.0.1.3"]);
        let ej = full.without(&[1]).expect("live");
        for k in &keys {
            let (a, b) = (full.locate(k.as_bytes()), ej.locate(k.as_bytes()));
            assert!(b != 1 && (a == 1 || a == b), "{k}: {a} -> {b}");
        }
        // Weighted: survivors gain points (W and N shrink), so a few keys move between them.
        let full = ring(&[
            "a:11211:1",
            "b:11211:2",
            "c:11219:3",
            "d:11211:1",
            "e:11219:5",
        ]);
        let ej = full.without(&[2]).expect("live");
        assert!(!ej.is_live(2) && ej.is_live(0) && ej.server_count() == 5);
        let live: Vec<_> = keys
            .iter()
            .filter(|k| full.locate(k.as_bytes()) != 2)
            .collect();
        let moved = live
            .iter()
            .filter(|k| full.locate(k.as_bytes()) != ej.locate(k.as_bytes()));
        assert!(
            moved.count() * 20 < live.len(),
            "ejecting one server moved over 5% of the rest"
        );
        assert!(keys.iter().all(|k| ej.locate(k.as_bytes()) != 2));
        // Ejections compose; nothing left → None.
        let both = ej.without(&[4]).expect("live");
        assert!(keys
            .iter()
            .all(|k| ![2, 4].contains(&both.locate(k.as_bytes()))));
        assert!(ring(&["a"]).without(&[0, 7]).is_none());
    }

    #[test]
    fn parses_entries() {
        let s = |name: &str, host: &str, port, weight| ServerSpec {
            name: name.into(),
            host: host.into(),
            port,
            weight,
        };
        assert_eq!(
            spec("mc1.example.com:11211"),
            s("mc1.example.com", "mc1.example.com", 11211, 1)
        );
        assert_eq!(
            spec("mc2.example.com:11219"),
            s("mc2.example.com:11219", "mc2.example.com", 11219, 1)
        );
        assert_eq!(
            spec(" 10.0.0.3:11219:3 "),
            s("10.0.0.3:11219", "10.0.0.3", 11219, 3)
        );
        assert_eq!(spec("cache"), s("cache", "cache", 11211, 1));
        assert_eq!(spec("[::1]:11211"), s("[::1]", "::1", 11211, 1));
        assert_eq!(
            spec("[2001:db8::2]:11219:2"),
            s("[2001:db8::2]:11219", "2001:db8::2", 11219, 2)
        );
        assert_eq!(spec("mc1=10.0.0.9:11219"), s("mc1", "10.0.0.9", 11219, 1));
        assert_eq!(
            spec("old:11219=[::1]:11219:4"),
            s("old:11219", "::1", 11219, 4)
        );
    }

    #[test]
    fn rejects_bad_entries() {
        use RingError::*;
        type Case = (&'static str, fn(String) -> RingError);
        let cases: &[Case] = &[
            ("", EmptyHost),
            (":11211", EmptyHost),
            ("=mc1:11211", EmptyName),
            ("mc1=", EmptyHost),
            ("mc 1:11211", BadChar),
            ("mc1:", BadPort),
            ("mc1:0", BadPort),
            ("mc1:65536", BadPort),
            ("mc1:+5", BadPort),
            ("mc1:11211:0", BadWeight),
            ("mc1:11211:x", BadWeight),
            ("mc1:11211:", BadWeight),
            ("::1", BadIpv6),
            ("fe80::1:11211", BadIpv6),
            ("[::1", BadIpv6),
            ("[nope]:11211", BadIpv6),
            ("[::1]x", BadIpv6),
            ("[::1]:1:2:3", Syntax),
        ];
        for (entry, want) in cases {
            assert_eq!(
                parse_server_entry(entry),
                Err(want(entry.to_string())),
                "{entry:?}"
            );
        }
        assert_eq!(
            parse_server_entry("mc1:0").map_err(|e| e.to_string()),
            Err("server entry \"mc1:0\": port must be a number 1-65535".into())
        );
    }
}

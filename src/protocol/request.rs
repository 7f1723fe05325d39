//! The dialect-neutral request model.
//!
//! Every dialect (text, meta, binary) parses into the same [`Request`]: a
//! [`Command`] that says *what* to do, and a [`Frame`] that says *how the
//! answer must be written back* (noreply, meta return flags, binary opcode and
//! opaque). The node executes commands without caring about the dialect; the
//! proxy re-encodes commands in binary for its upstream and encodes the answer
//! in the client's own dialect using the frame.
//!
//! Meta commands are the richest dialect, so the command model is meta-shaped:
//! classic text and binary commands are the special cases with most options off.

use bytes::Bytes;
use smallvec::SmallVec;

/// A key as sent by the client (already base64-decoded for meta `b`).
pub type Key = Bytes;

/// A retrieval's keys: one is kept inline, as nearly every get has one
/// (every `mg` and binary GET), so that parsing a get allocates no list
/// (callgrind, benches/STORE.md).
pub type Keys = SmallVec<[Key; 1]>;

/// An expiry exactly as the client sent it: 0 never, up to 30 days relative,
/// larger absolute unix time, negative already expired. The store converts it.
pub type Exptime = i64;

/// A parsed request: what to do and how to frame the reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub frame: Frame,
}

impl Request {
    /// The key the reply must echo, for a caller that keeps it past the
    /// request: meta replies asked for `k`, `me`'s, and binary GETK misses
    /// carry it. Only those keep it; others get `None`, since the first
    /// clone of a key read from a client allocates.
    pub fn echoed_key(&self) -> Option<Key> {
        self.echoes_key()
            .then(|| self.command.key().cloned())
            .flatten()
    }

    /// [`Self::echoed_key`], borrowed, for a reply written at once.
    pub fn echoed_key_ref(&self) -> Option<&[u8]> {
        self.echoes_key()
            .then(|| self.command.key().map(|k| &k[..]))
            .flatten()
    }

    fn echoes_key(&self) -> bool {
        match &self.frame {
            Frame::Meta(frame) => {
                frame.return_key || matches!(self.command, Command::MetaDebug { .. })
            }
            Frame::Binary { .. } => true,
            Frame::Text(_) => false,
        }
    }
}

/// How the reply to a request must be framed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A classic text command (`get`, `set`, ...).
    Text(TextFrame),
    /// A meta command (`mg`, `ms`, ...).
    Meta(Box<MetaFrame>),
    /// A binary request: the reply echoes the opcode and opaque. Quiet opcodes
    /// (GETQ, SETQ, ...) suppress the replies memcached suppresses.
    Binary { opcode: u8, opaque: u32 },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextFrame {
    /// `noreply` was given: write nothing back.
    pub noreply: bool,
    /// `gets`/`gats`: values carry their CAS unique.
    pub with_cas: bool,
}

/// A meta request's opaque token (`O`), copied back verbatim in its reply.
/// memcached takes at most [`Opaque::MAX`] bytes; held inline rather than
/// allocated, since every request the sidecar sends a node carries one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Opaque {
    len: u8,
    bytes: [u8; Opaque::MAX],
}

impl Opaque {
    /// memcached's MFLAG_MAX_OPAQUE_LENGTH (32) counts the `O` itself.
    pub const MAX: usize = 31;

    /// The token, or `None` if it is longer than [`Opaque::MAX`].
    pub fn new(token: &[u8]) -> Option<Opaque> {
        let mut bytes = [0; Opaque::MAX];
        bytes.get_mut(..token.len())?.copy_from_slice(token);
        Some(Opaque {
            len: token.len() as u8,
            bytes,
        })
    }
}

impl std::ops::Deref for Opaque {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for Opaque {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Opaque({:?})", self.escape_ascii().to_string())
    }
}

/// The meta flags that shape a reply (rather than change what is done).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetaFrame {
    /// `O(token)`: copied back verbatim.
    pub opaque: Option<Opaque>,
    /// `k`: echo the key (`b` set means echo it base64-encoded).
    pub return_key: bool,
    /// `b`: the key travelled base64-encoded.
    pub base64_key: bool,
    /// `q`: suppress the "nothing interesting" code (EN for mg, HD for ms/md/ma, NF for md).
    pub quiet: bool,
    /// `v`: include the value (mg, ma).
    pub return_value: bool,
    /// `c`: include the CAS unique.
    pub return_cas: bool,
    /// `f`: include the client flags.
    pub return_flags: bool,
    /// `s`: include the value size.
    pub return_size: bool,
    /// `t`: include the remaining TTL (-1 for none).
    pub return_ttl: bool,
    /// `h`: include whether the item was fetched before.
    pub return_hit: bool,
    /// `l`: include seconds since last access.
    pub return_last_access: bool,
    /// The order the request gave its return flags in, which memcached
    /// writes them back in.
    pub order: FlagOrder,
    /// The frame is an `ms`'s: its `c` reports the stored item's CAS, which
    /// is 0 on `NS`, `EX` and `NF`.
    pub stores: bool,
}

impl MetaFrame {
    /// Whether the frame carries the argument-less flag `flag` (`c f h k l q
    /// s t v`), or an opaque for `O`.
    pub fn asks(&self, flag: u8) -> bool {
        match flag {
            b'c' => self.return_cas,
            b'f' => self.return_flags,
            b'h' => self.return_hit,
            b'k' => self.return_key,
            b'l' => self.return_last_access,
            b'q' => self.quiet,
            b's' => self.return_size,
            b't' => self.return_ttl,
            b'v' => self.return_value,
            b'O' => self.opaque.is_some(),
            _ => false,
        }
    }
}

/// The return flags of a meta request (`c f h k l s t O`) in request order,
/// kept only when that differs from [`FlagOrder::CANONICAL`]: empty means
/// canonical, so a frame built in code and the same frame parsed back from
/// its encoding compare equal. A fixed array: no allocation per request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlagOrder {
    flags: [u8; FlagOrder::CANONICAL.len()],
    len: u8,
}

impl FlagOrder {
    /// The order flags set without an order (frames built in code) are
    /// written in; `b` always follows `k`, `W`/`X`/`Z` come last.
    pub const CANONICAL: &'static [u8; 8] = b"cfhklstO";

    /// Note that `flag` came next in the request; anything but a return
    /// flag, or a repeat, is ignored.
    pub fn push(&mut self, flag: u8) {
        let len = usize::from(self.len);
        if Self::CANONICAL.contains(&flag) && !self.flags[..len].contains(&flag) {
            self.flags[len] = flag;
            self.len += 1;
        }
    }

    /// Forget the order if it is the canonical one.
    pub fn normalise(&mut self) {
        let rank = |f: &u8| Self::CANONICAL.iter().position(|c| c == f);
        if self.given().windows(2).all(|w| rank(&w[0]) < rank(&w[1])) {
            *self = FlagOrder::default();
        }
    }

    /// The flags in the request's order (none if canonical).
    pub fn given(&self) -> &[u8] {
        &self.flags[..usize::from(self.len)]
    }

    /// Every return flag, those the request ordered first.
    pub fn sequence(&self) -> impl Iterator<Item = u8> + '_ {
        let given = self.given();
        let rest = Self::CANONICAL.iter().filter(move |f| !given.contains(f));
        given.iter().chain(rest).copied()
    }
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// get/gets/gat/gats (many keys), binary GET/GETK/GAT and quiet forms, mg.
    Get(Get),
    /// set/add/replace/append/prepend/cas, binary SET..PREPEND, ms.
    Store(Store),
    /// delete, binary DELETE, md.
    Delete(Delete),
    /// incr/decr, binary INCREMENT/DECREMENT, ma.
    Arith(Arith),
    /// touch, binary TOUCH.
    Touch {
        key: Key,
        exptime: Exptime,
    },
    /// flush_all [delay]: invalidate everything now or `delay` seconds from now.
    FlushAll {
        delay: Exptime,
    },
    Version,
    /// verbosity N (accepted and ignored, as a memcached without logging would).
    Verbosity,
    /// stats [group]. The group is kept as the client's bytes, so that the
    /// sidecar forwards exactly what it was sent (memcached compares the
    /// words as bytes; none of its groups needs UTF-8).
    Stats {
        group: Option<Bytes>,
    },
    /// quit, binary QUIT: close after replying (binary QUIT replies, QUITQ does not).
    Quit,
    /// mn, binary NOOP: flushes pipelined quiet replies.
    Noop,
    /// me <key>: human-readable item metadata.
    MetaDebug {
        key: Key,
    },
    /// Binary 0x20: list SASL mechanisms.
    SaslList,
    /// Binary 0x21: start SASL with a mechanism and initial response.
    SaslAuth {
        mechanism: Bytes,
        data: Bytes,
    },
    /// Binary 0x22: a further SASL step.
    SaslStep {
        mechanism: Bytes,
        data: Bytes,
    },
    /// memgate's `md <key> G<ttl> [E<version>] [c]`: delete the key and
    /// leave a tombstone that refuses [`Command::Copy`] of it for `ttl`
    /// seconds. The sidecar's warm-up and replicas send it; memcached has no
    /// such flag.
    /// - `version: Some(v)` (`E<v>`, v ≥ 1): the tombstone refuses a
    ///   replica's mirror only if its version is `v` or less: the key's
    ///   first node gave every write before the delete a CAS up to the
    ///   removed item's, `v`, and every later one a greater CAS. Other
    ///   copies it refuses whatever their version. `None`: every copy.
    /// - `report` (`c`): answer [`Response::DeletedCas`] with the removed
    ///   item's CAS (`HD c<cas>`) instead of `Deleted`.
    ///
    /// [`Response::DeletedCas`]: super::response::Response::DeletedCas
    Bury {
        key: Key,
        ttl: Exptime,
        version: Option<u64>,
        report: bool,
    },
    /// memgate's `ms <key> <len> G [E<version>] [MS|ME] …`: a sidecar's
    /// write that a tombstone of the key refuses (`NS`), in one of three
    /// shapes (`store.cas` is `None` and `store.invalidate` false in each):
    /// - `store.mode` [`StoreMode::Add`], no version: the warm-up's copy of
    ///   an item to the node it moved to, stored only if the key is absent,
    ///   so that it never passes a write or delete made since it read the
    ///   item (`HD` / `NS`).
    /// - `Add` with `version: Some(v)`: the same, the stored item taking
    ///   `v` as its CAS (a read-repair copy that keeps the source's CAS).
    /// - [`StoreMode::Set`] with `version: Some(v)`: a replica's write (a
    ///   "mirror") of the item its first node stored with CAS `v`. A live
    ///   item whose CAS is `v` or more refuses it (`EX`): a newer write is
    ///   there already, as the first node ordered them. Otherwise it is
    ///   stored as a set with CAS `v` (`HD`).
    ///
    /// A Set without a version is no copy (the parser refuses it). Storing
    /// with a version moves the shard's CAS counter past it, so that every
    /// CAS the node hands out afterwards is greater and a key's CAS uniques
    /// keep increasing on this node.
    Copy {
        store: Store,
        version: Option<u64>,
    },
}

impl Command {
    /// The key a single-key command acts on (for routing and tracing).
    pub fn key(&self) -> Option<&Key> {
        match self {
            Command::Get(g) if g.keys.len() == 1 => g.keys.first(),
            Command::Store(s) => Some(&s.key),
            Command::Delete(d) => Some(&d.key),
            Command::Arith(a) => Some(&a.key),
            Command::Touch { key, .. } | Command::MetaDebug { key } => Some(key),
            Command::Bury { key, .. } => Some(key),
            Command::Copy { store, .. } => Some(&store.key),
            _ => None,
        }
    }

    /// The command's kind, a small bounded set (for metric labels).
    pub fn kind(&self) -> CommandKind {
        match self {
            Command::Get(g) if g.touch.is_some() => CommandKind::Gat,
            Command::Get(_) => CommandKind::Get,
            Command::Store(s) if s.cas.is_some() => CommandKind::Cas,
            Command::Store(s) => match s.mode {
                StoreMode::Set => CommandKind::Set,
                StoreMode::Add => CommandKind::Add,
                StoreMode::Replace => CommandKind::Replace,
                StoreMode::Append => CommandKind::Append,
                StoreMode::Prepend => CommandKind::Prepend,
            },
            Command::Delete(_) | Command::Bury { .. } => CommandKind::Delete,
            // A replica's mirror is the set it repeats; other copies are adds.
            Command::Copy { store, .. } if store.mode == StoreMode::Set => CommandKind::Set,
            Command::Copy { .. } => CommandKind::Add,
            Command::Arith(a) if a.incr => CommandKind::Incr,
            Command::Arith(_) => CommandKind::Decr,
            Command::Touch { .. } => CommandKind::Touch,
            Command::FlushAll { .. } => CommandKind::FlushAll,
            Command::Version => CommandKind::Version,
            Command::Verbosity => CommandKind::Verbosity,
            Command::Stats { .. } => CommandKind::Stats,
            Command::Quit => CommandKind::Quit,
            Command::Noop => CommandKind::Noop,
            Command::MetaDebug { .. } => CommandKind::MetaDebug,
            Command::SaslList | Command::SaslAuth { .. } | Command::SaslStep { .. } => {
                CommandKind::Auth
            }
        }
    }
}

/// What kind of command a request is, without its arguments. The
/// discriminant (`kind as usize`) indexes `metrics::COMMAND_LABELS`, so the
/// request path labels a metric without comparing strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum CommandKind {
    Get,
    /// A get that also touches (gat/gats, binary GAT, meta `T`).
    Gat,
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    /// A store with a CAS check.
    Cas,
    Delete,
    Incr,
    Decr,
    Touch,
    FlushAll,
    Version,
    Verbosity,
    Stats,
    Quit,
    Noop,
    MetaDebug,
    /// Any SASL command.
    Auth,
    /// No command: a bad or refused request, answered with an error.
    Other,
}

impl CommandKind {
    /// How many kinds there are (the length of a table indexed by kind).
    pub const COUNT: usize = CommandKind::Other as usize + 1;
}

/// A retrieval, possibly touching, possibly creating (meta vivify).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Get {
    pub keys: Keys,
    /// gat/gats, binary GAT, meta `T`: set a new expiry on every hit.
    pub touch: Option<Exptime>,
    /// meta `N`: on a miss, create an empty item with this TTL and win the recache.
    pub vivify: Option<Exptime>,
    /// meta `R`: win the recache if the remaining TTL is below this.
    pub recache_below: Option<Exptime>,
    /// meta `u`: do not bump the LRU nor mark the item fetched.
    pub no_bump: bool,
}

/// How a store combines with an existing item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreMode {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
}

/// A storage command. Classic `cas` is `Set` with `cas: Some(..)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Store {
    pub mode: StoreMode,
    pub key: Key,
    pub flags: u32,
    pub exptime: Exptime,
    pub data: Bytes,
    /// Only store if the item's CAS unique equals this (0 in binary means "no check").
    pub cas: Option<u64>,
    /// meta `I`: with a CAS older than the item's, mark it stale instead of failing.
    pub invalidate: bool,
    /// meta `N` with append/prepend modes: create the item on miss with this TTL.
    pub vivify: Option<Exptime>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    pub key: Key,
    pub cas: Option<u64>,
    /// meta `I`: mark stale (bumping the CAS) instead of removing.
    pub invalidate: bool,
    /// meta `T` (with `I`): new TTL for the stale item.
    pub exptime: Option<Exptime>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arith {
    pub key: Key,
    /// true for incr (wraps at 2^64), false for decr (floors at 0).
    pub incr: bool,
    pub delta: u64,
    pub cas: Option<u64>,
    /// Binary INCR/DECR and meta `N`: create with `initial` and this TTL on miss.
    pub vivify: Option<Exptime>,
    pub initial: u64,
    /// meta `T`: update the TTL on success.
    pub touch: Option<Exptime>,
}

/// What kind of reply a `stats <group>` gets, read as memcached reads the
/// group: its first word, and `detail`'s second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsReply {
    /// `STAT <name> <value>` lines, then `END`.
    Pairs,
    /// `stats reset`: `RESET`.
    Reset,
    /// `stats detail on|off`: `OK`.
    Ok,
    /// `stats cachedump`: `ITEM <key> [<bytes> b; <exptime> s]` lines,
    /// then `END` (binary: one packet per item, the key as its key).
    Items,
    /// Lines of another form (`PREFIX` for `detail dump`), named.
    Dump(&'static str),
}

impl StatsReply {
    pub fn of(group: Option<&[u8]>) -> StatsReply {
        let mut words = group.unwrap_or_default().split(|&b| b == b' ');
        match (words.next(), words.next()) {
            (Some(b"reset"), _) => StatsReply::Reset,
            (Some(b"detail"), Some(b"on" | b"off")) => StatsReply::Ok,
            (Some(b"detail"), Some(b"dump")) => StatsReply::Dump("stats detail dump"),
            (Some(b"cachedump"), _) => StatsReply::Items,
            _ => StatsReply::Pairs,
        }
    }
}

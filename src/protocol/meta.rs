//! memcached's meta commands (`mg ms md ma mn me`, 1.6.18), sans-IO, split by
//! direction: [`server`] parses a client's meta line and writes the node's
//! reply; [`client`] writes the proxy's upstream requests and reads the
//! node's replies. Both sides share [`ReturnFlags`], the item facts a reply
//! carries.

pub mod client;
pub mod server;

pub(crate) use server::parse_line;
pub use server::{encode_keyed, put_get};

/// memcached refuses a meta line with more tokens than this, counting the
/// command and a terminating empty token (MFLAG_MAX_OPT_LENGTH).
pub(crate) const MAX_META_TOKENS: usize = 20;

/// The return flags of a meta reply (those the proxy reads).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReturnFlags {
    pub cas: Option<u64>,
    pub client_flags: Option<u32>,
    pub hit: Option<bool>,
    pub last_access: Option<u64>,
    pub opaque: Option<u32>,
    pub size: Option<usize>,
    pub ttl: Option<i64>,
    /// `W`: this request won the recache.
    pub won: bool,
    /// `X`: the item is stale.
    pub stale: bool,
    /// `Z`: a win was already handed out.
    pub win_sent: bool,
}

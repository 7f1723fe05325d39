//! `--upstream-protocol auto`: which dialect each node speaks, found at
//! every connection's login, and what was found last, per node.
//!
//! A connection logs in with memcached `-Y`'s ASCII form, which memgate
//! nodes take too, and a `version` behind it in the same write: the reply
//! says memgate node (meta) or memcached `-Y` (meta with `-Y`'s login), in
//! the round trip a login takes anyway. memcached `-S` speaks no text and
//! closes the connection; the proxy then connects again and logs in with
//! SASL. The dialect found last for a node is tried first on its next
//! connection, so a `-S` node costs the second connect only once, and a
//! node that comes back from a restart speaking another dialect is found
//! out at that connection's login and tried the other way.
//!
//! The choice is logged when a node's dialect is first found or changes,
//! not per connection, and shown as `memgate_proxy_upstream_protocol`.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use super::{Target, UpstreamProtocol};
use crate::metrics as m;
use crate::sync::lock;

/// The dialects a node may be found to speak, by their metric label.
const FOUND: [UpstreamProtocol; 3] = [
    UpstreamProtocol::Meta,
    UpstreamProtocol::MetaMemcached,
    UpstreamProtocol::Binary,
];

/// The dialect found last for each node, by name and address: a reload
/// that points a name elsewhere starts afresh.
fn last_found() -> &'static Mutex<HashMap<(String, String), UpstreamProtocol>> {
    static LAST: OnceLock<Mutex<HashMap<(String, String), UpstreamProtocol>>> = OnceLock::new();
    LAST.get_or_init(Mutex::default)
}

/// The dialect `target` was found to speak last, if any.
pub(super) fn remembered(target: &Target) -> Option<UpstreamProtocol> {
    lock(last_found())
        .get(&(target.name.clone(), target.addr.clone()))
        .copied()
}

/// `target` logged in speaking `protocol`: logged and shown if that is new.
pub(super) fn found(target: &Target, protocol: UpstreamProtocol) {
    let key = (target.name.clone(), target.addr.clone());
    let before = lock(last_found()).insert(key, protocol);
    if before == Some(protocol) {
        return;
    }
    match before {
        None => tracing::info!(
            node = %target.name,
            protocol = protocol.as_str(),
            "upstream protocol found: {}",
            protocol.speaker()
        ),
        Some(before) => tracing::warn!(
            node = %target.name,
            protocol = protocol.as_str(),
            before = before.as_str(),
            "upstream protocol changed: now {}",
            protocol.speaker()
        ),
    }
    show(&target.name, Some(protocol));
}

/// From start-up (and for a node a reload adds), the protocol gauge of
/// `target` for the configured `protocol`: 1 on the dialect in use; under
/// `auto`, on the one found last, or all 0 until a login finds it.
pub fn announce(target: &Target, protocol: UpstreamProtocol) {
    let known = match protocol {
        UpstreamProtocol::Auto => remembered(target),
        fixed => Some(fixed),
    };
    show(&target.name, known);
}

fn show(name: &str, protocol: Option<UpstreamProtocol>) {
    for dialect in FOUND {
        let value = if Some(dialect) == protocol { 1.0 } else { 0.0 };
        metrics::gauge!(
            m::PROXY_UPSTREAM_PROTOCOL,
            "node" => name.to_string(),
            "protocol" => dialect.as_str()
        )
        .set(value);
    }
}

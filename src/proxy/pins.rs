//! Which upstream connection a client uses on each node while it has
//! requests in flight.
//!
//! Requests from one client to one node must run in the order the client
//! sent them: a `get` after a `set` must see the set (read-your-writes), and
//! two sets must land in order. The node runs each connection's requests in
//! order, so the client keeps to one connection per node while anything of
//! its is in flight, and is placed afresh (by load) only when it has nothing
//! in flight at all.
//!
//! The pin is per node. One slot index shared by all nodes let a client move
//! to another connection of node B because node A's slot of that index was
//! not connected yet (at warm-up, after a connection was lost, after a
//! reload added a node), while its earlier requests to B were still queued
//! on the old one: a later `get` overtook the `set` before it.
//!
//! With replicas (`proxy::session::replica`) one node per key is not
//! enough: which replica a request goes to depends on the nodes' health
//! when it is sent, and may change between two of the client's requests.
//! So the pins also track this client's writes through replicas still in
//! flight, and a later request of such a key is only sent once every
//! request before it has been answered: it cannot reach one replica before
//! the earlier write, sent to another, has reached it too.
//!
//! A reload is a barrier: a client whose requests in flight were routed by
//! the previous ring sends nothing more until they are answered, since a key
//! may now route to another node (or a node's connections to a new login),
//! where a later request could overtake an earlier one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::pool::Upstream;
use super::upstream::Connection;

/// One client's connections, one per node it has requests in flight on.
#[derive(Default)]
pub struct Pins {
    /// The generation of the cluster (ring and nodes) the pins were made
    /// under.
    cluster: Option<u64>,
    /// A client talks to few nodes: a short list beats a map.
    by_node: Vec<(Arc<Upstream>, Connection)>,
    /// Hashes of the keys of this client's requests through replicas
    /// that later requests of the key must wait for (`Pins::hash`), each
    /// with whether it is done. Hashes, not keys: a key kept here was a
    /// copy of the key per write (an allocation, the first time a key read
    /// from the client is copied), and a hash that collides only makes a
    /// request wait for nothing.
    waited_on: Vec<(u64, Arc<AtomicBool>)>,
    /// Hashes of the keys of this client's reads through replicas sent as
    /// one request (`replica::steady_now`), kept until it has nothing in
    /// flight. Such a read that fails is tried again on the key's next
    /// replica once it is the client's oldest request; a later write of
    /// the key, which gives that replica its value as soon as its first
    /// replica answers, must wait, or the earlier read could see it.
    reads: Vec<u64>,
}

impl Pins {
    /// Forget every pin: the client has nothing in flight.
    pub fn clear(&mut self) {
        self.cluster = None;
        self.by_node.clear();
        self.waited_on.clear();
        self.reads.clear();
    }

    /// Whether the pins were made under another cluster than the one of
    /// generation `current`: the client must wait for its requests in
    /// flight before it sends more.
    pub fn outdated(&self, current: u64) -> bool {
        self.cluster.is_some_and(|made| made != current)
    }

    /// Whether this client has requests in flight.
    pub fn busy(&self) -> bool {
        self.cluster.is_some() || !self.waited_on.is_empty()
    }

    /// Whether a request of the key of hash `hash` (`Pins::hash`) must
    /// wait for this client's requests in flight: one of them, not yet
    /// done, writes it or waits itself.
    pub fn must_wait(&mut self, hash: u64) -> bool {
        self.waited_on
            .retain(|(_, done)| !done.load(Ordering::Acquire));
        self.waited_on.iter().any(|(h, _)| *h == hash)
    }

    /// This client reads the key of hash `hash` (`Pins::hash`) through
    /// replicas, as one request.
    pub fn reading(&mut self, hash: u64) {
        self.reads.push(hash);
    }

    /// Whether this client may have a read of the key of hash `hash` in
    /// flight (`reading`): a write of it must wait for it. A hash that
    /// collides makes a write wait for nothing, never the reverse.
    pub fn reads(&self, hash: u64) -> bool {
        self.reads.contains(&hash)
    }

    /// A key's hash, as the pins take it.
    pub fn hash(key: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        foldhash::fast::FixedState::default().hash_one(key)
    }

    /// Later requests of the key of hash `hash` wait for this one; it sets
    /// the flag returned when it is done.
    pub fn wait_for(&mut self, hash: u64) -> Arc<AtomicBool> {
        let done = Arc::new(AtomicBool::new(false));
        self.waited_on.push((hash, Arc::clone(&done)));
        done
    }

    /// The live connection this client uses on `node`, if it has one.
    pub fn get(&self, node: &Arc<Upstream>) -> Option<&Connection> {
        self.by_node
            .iter()
            .find(|(n, _)| Arc::ptr_eq(n, node))
            .map(|(_, conn)| conn)
            .filter(|conn| conn.is_alive())
    }

    /// Use `conn` for this client's requests to `node` from now on. A dead
    /// pin it replaces had its requests failed with the connection.
    pub fn pin(&mut self, generation: u64, node: &Arc<Upstream>, conn: Connection) {
        self.cluster.get_or_insert(generation);
        match self.by_node.iter_mut().find(|(n, _)| Arc::ptr_eq(n, node)) {
            Some((_, pinned)) => *pinned = conn,
            None => self.by_node.push((Arc::clone(node), conn)),
        }
    }
}

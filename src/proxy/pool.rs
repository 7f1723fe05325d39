//! The nodes, their pooled upstream connections, and key placement with failover.
//!
//! Each node has `--connections-per-node` slots, each holding at most one
//! logged-in connection shared by every client. A slot whose connection died is
//! refilled on demand (one connect at a time per slot); a node whose connect,
//! TLS or SASL fails is marked down, and a prober brings it back.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::health::Health;
use super::ring::Ring;
use super::upstream::{Connection, Settings, Target, UpstreamError};
use crate::metrics as m;

/// What happens to the keys of a node that is down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Failover {
    /// Its keys get `SERVER_ERROR` at once.
    Error,
    /// Its keys are rehashed onto the live nodes (libmemcached remove_failed,
    /// twemproxy auto_eject_hosts).
    Eject,
}

/// Requests queued or in flight on a connection beyond which clients that
/// pick a connection afresh go to the next one.
const SPILL_LOAD: usize = 16;

struct Slot {
    conn: Mutex<Option<Connection>>,
    /// Held while (re)connecting, so one connect runs per slot.
    connecting: tokio::sync::Mutex<()>,
}

/// One upstream node.
pub struct Node {
    pub target: Target,
    pub health: Health,
    /// Resolved once: the request path only bumps atomics.
    pub upstream_requests: metrics::Counter,
    pub upstream_latency: metrics::Histogram,
    slots: Vec<Slot>,
}

impl Node {
    fn new(target: Target, connections: usize, retry_delay: Duration) -> Node {
        Node {
            health: Health::new(target.name.clone(), retry_delay),
            upstream_requests: metrics::counter!(m::PROXY_UPSTREAM_REQUESTS_TOTAL, "node" => target.name.clone()),
            upstream_latency: metrics::histogram!(m::PROXY_UPSTREAM_DURATION_SECONDS, "node" => target.name.clone()),
            slots: (0..connections.max(1))
                .map(|_| Slot {
                    conn: Mutex::new(None),
                    connecting: tokio::sync::Mutex::new(()),
                })
                .collect(),
            target,
        }
    }

    /// The slot a client that has nothing in flight should use: the first
    /// whose connection is not busy, so that light traffic shares one
    /// connection and leaves in fewer, larger writes (fewer syscalls and
    /// wake-ups here and on the node), while a busy connection spills new
    /// clients onto the next slot. With every slot busy, the least loaded.
    pub fn pick_slot(&self) -> usize {
        let mut best = (usize::MAX, 0);
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(load) = live_load(&slot.conn) else {
                // Not connected yet: the first request connects it.
                return i;
            };
            if load < SPILL_LOAD {
                return i;
            }
            if load < best.0 {
                best = (load, i);
            }
        }
        best.1
    }

    /// A live, logged-in connection in `slot` (see `pick_slot`). A client
    /// keeps to one slot while it has requests in flight, so that its
    /// requests to this node stay in order: a get sent after a set must not
    /// overtake it on another connection.
    pub async fn connection(
        &self,
        settings: &Settings,
        slot: usize,
    ) -> Result<Connection, UpstreamError> {
        let i = slot % self.slots.len();
        let slot = &self.slots[i];
        if let Some(conn) = live(&slot.conn) {
            return Ok(conn);
        }
        if !self.health.may_try(Instant::now()) {
            return Err(UpstreamError::Down {
                node: self.target.name.clone(),
            });
        }
        let _connecting = slot.connecting.lock().await;
        if let Some(conn) = live(&slot.conn) {
            return Ok(conn);
        }
        self.open(slot, settings).await
    }

    async fn open(&self, slot: &Slot, settings: &Settings) -> Result<Connection, UpstreamError> {
        match Connection::open(&self.target, settings).await {
            Ok(conn) => {
                self.health.succeed();
                metrics::counter!(m::PROXY_UPSTREAM_CONNECTS_TOTAL, "node" => self.target.name.clone())
                    .increment(1);
                if let Ok(mut guard) = slot.conn.lock() {
                    *guard = Some(conn.clone());
                }
                Ok(conn)
            }
            Err(error) => {
                self.failed(&error);
                Err(error)
            }
        }
    }

    /// Count a failure and mark the node down.
    pub fn failed(&self, error: &UpstreamError) {
        let node = self.target.name.clone();
        metrics::counter!(m::PROXY_UPSTREAM_ERRORS_TOTAL, "node" => node.clone(), "kind" => error.kind())
            .increment(1);
        match error {
            UpstreamError::Tls { .. } => {
                metrics::counter!(m::PROXY_TLS_FAILURES_TOTAL, "node" => node).increment(1)
            }
            UpstreamError::Auth { .. } => {
                metrics::counter!(m::PROXY_SASL_FAILURES_TOTAL, "node" => node).increment(1)
            }
            _ => {}
        }
        if !matches!(error, UpstreamError::Io { .. } | UpstreamError::Unsupported) {
            self.health.fail(error.kind(), error);
        }
    }

    /// Drop every pooled connection (after a reload of credentials, say).
    pub fn reset(&self) {
        for slot in &self.slots {
            if let Ok(mut guard) = slot.conn.lock() {
                if let Some(conn) = guard.take() {
                    conn.close();
                }
            }
        }
    }

    /// Connections currently open.
    pub fn open_connections(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| live(&s.conn).is_some())
            .count()
    }

    /// Try one connection if the node is down and its retry time has come.
    async fn probe(&self, settings: &Settings) {
        if self.health.is_up() || !self.health.may_try(Instant::now()) {
            return;
        }
        let slot = &self.slots[0];
        let _connecting = slot.connecting.lock().await;
        if live(&slot.conn).is_none() {
            let _ = self.open(slot, settings).await;
        }
    }
}

fn live(conn: &Mutex<Option<Connection>>) -> Option<Connection> {
    let guard = conn.lock().ok()?;
    guard.as_ref().filter(|c| c.is_alive()).cloned()
}

/// The load of a live connection, read in place (no handle cloned: this runs
/// for most requests).
fn live_load(conn: &Mutex<Option<Connection>>) -> Option<usize> {
    let guard = conn.lock().ok()?;
    guard
        .as_ref()
        .filter(|c| c.is_alive())
        .map(Connection::load)
}

/// Every node, the ring over them, and the failover policy.
pub struct Cluster {
    pub nodes: Vec<Arc<Node>>,
    ring: Ring,
    failover: Failover,
    /// Eject mode: the ring over the live nodes, with the down set it was built for.
    live_ring: RwLock<(Vec<usize>, Arc<Ring>)>,
    pub settings: Settings,
}

impl Cluster {
    pub fn new(
        targets: Vec<Target>,
        ring: Ring,
        settings: Settings,
        connections: usize,
        retry_delay: Duration,
        failover: Failover,
    ) -> Cluster {
        let nodes = targets
            .into_iter()
            .map(|t| Arc::new(Node::new(t, connections, retry_delay)))
            .collect();
        let full = Arc::new(ring.clone());
        Cluster {
            nodes,
            ring,
            failover,
            live_ring: RwLock::new((Vec::new(), full)),
            settings,
        }
    }

    pub fn failover(&self) -> Failover {
        self.failover
    }

    /// The node that serves `key` now, or why none can.
    pub fn route(&self, key: &[u8]) -> Result<&Arc<Node>, UpstreamError> {
        let home = &self.nodes[self.ring.locate(key) % self.nodes.len()];
        if self.failover == Failover::Error || home.health.may_try(Instant::now()) {
            return Ok(home);
        }
        let now = Instant::now();
        let down: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| !self.nodes[i].health.may_try(now))
            .collect();
        let ring = self
            .live_ring_for(&down)
            .ok_or_else(|| UpstreamError::Down {
                node: home.target.name.clone(),
            })?;
        Ok(&self.nodes[ring.locate(key) % self.nodes.len()])
    }

    fn live_ring_for(&self, down: &[usize]) -> Option<Arc<Ring>> {
        if let Ok(guard) = self.live_ring.read() {
            if guard.0 == down {
                return Some(Arc::clone(&guard.1));
            }
        }
        let ring = Arc::new(self.ring.without(down)?);
        if let Ok(mut guard) = self.live_ring.write() {
            *guard = (down.to_vec(), Arc::clone(&ring));
        }
        Some(ring)
    }

    /// True if at least one node is up (`/readyz`).
    pub fn any_up(&self) -> bool {
        self.nodes.iter().any(|n| n.health.is_up())
    }

    /// Probe down nodes once a second, so they return even without traffic.
    pub async fn prober(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            for node in &self.nodes {
                node.probe(&self.settings).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Command;

    fn node(slots: usize) -> Node {
        let target = Target {
            name: "n0".into(),
            addr: "127.0.0.1:1".into(),
            server_name: rustls_pki_types::ServerName::try_from("localhost").unwrap(),
        };
        Node::new(target, slots, Duration::from_secs(30))
    }

    /// A connection to a node that never answers: what is sent stays in flight.
    fn silent_connection() -> (Connection, tokio::io::DuplexStream) {
        let (near, far) = tokio::io::duplex(1 << 20);
        (Connection::spawn(near, "n0".into()), far)
    }

    async fn load_with(conn: &Connection, n: usize) -> Vec<super::super::upstream::PendingReply> {
        let mut pending = Vec::new();
        for _ in 0..n {
            pending.push(conn.send(Command::Noop).await.unwrap());
        }
        pending
    }

    /// Light traffic shares the first connection; a busy one spills new
    /// clients onto the next slot, and with all busy the least loaded wins.
    #[tokio::test]
    async fn clients_fill_the_first_connection_then_spill() {
        let node = node(2);
        assert_eq!(node.pick_slot(), 0, "an empty slot is connected first");
        let (first, _far0) = silent_connection();
        *node.slots[0].conn.lock().unwrap() = Some(first.clone());
        assert_eq!(node.pick_slot(), 0);
        let _a = load_with(&first, SPILL_LOAD - 1).await;
        assert_eq!(node.pick_slot(), 0, "not busy yet");
        let _b = load_with(&first, 1).await;
        assert_eq!(node.pick_slot(), 1, "busy: the next slot, unconnected");

        let (second, _far1) = silent_connection();
        *node.slots[1].conn.lock().unwrap() = Some(second.clone());
        let _c = load_with(&second, SPILL_LOAD + 5).await;
        assert_eq!(node.pick_slot(), 0, "both busy: the least loaded");
        let _d = load_with(&first, 10).await;
        assert_eq!(node.pick_slot(), 1);
    }
}

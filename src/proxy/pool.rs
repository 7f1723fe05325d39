//! The nodes, their pooled upstream connections, and key placement with failover.
//!
//! Each node has `--connections-per-node` slots, each holding at most one
//! logged-in connection shared by every client. A slot whose connection died is
//! refilled on demand. At most one connect attempt per node is in flight: it
//! runs in a task of its own, every request that needs a connection meanwhile
//! waits for its outcome (never for a connect of its own), and no request
//! waits past its own deadline, whatever the connect does. A node is marked
//! down only after consecutive failures (see `health`); while it is down only
//! the prober connects to it, once per probe interval.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::health::Health;
use super::replicas::{Replay, Replayed, Trust};
use super::ring::Ring;
use super::upstream::{internal_frame, Connection, Settings, Target, UpstreamError};
use super::warmup::{Phase, Warmup};
use crate::metrics as m;
use crate::protocol::{Command, Response};
use crate::sync::lock;

/// What happens to the keys of a node that is down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Failover {
    /// Its keys get `SERVER_ERROR` at once.
    Error,
    /// Its keys are rehashed onto the live nodes (libmemcached remove_failed,
    /// twemproxy auto_eject_hosts).
    Eject,
}

impl std::str::FromStr for Failover {
    type Err = String;

    /// The names `--failover` and the config file take.
    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "error" => Ok(Failover::Error),
            "eject" => Ok(Failover::Eject),
            _ => Err(format!("{name:?} is not one of error, eject")),
        }
    }
}

/// Requests queued or in flight on a connection beyond which clients that
/// pick a connection afresh go to the next one.
const SPILL_LOAD: usize = 16;

/// The outcome of the connect attempt in flight: `None` until it ends.
type ConnectOutcome = Option<Result<(), UpstreamError>>;

/// One upstream node.
pub struct Upstream {
    pub target: Target,
    pub health: Health,
    /// What this sidecar trusts it with when keys have replicas.
    pub trust: Trust,
    /// Resolved once: the request path only bumps atomics.
    pub upstream_requests: metrics::Counter,
    pub upstream_latency: metrics::Histogram,
    slots: Vec<Mutex<Option<Connection>>>,
    /// The node's one connect attempt in flight, if any, and when it began;
    /// every request that needs a connection meanwhile watches it.
    connecting: Mutex<Option<(Instant, watch::Receiver<ConnectOutcome>)>>,
}

impl Upstream {
    pub fn new(target: Target, connections: usize, failure_limit: u32) -> Upstream {
        let name = target.name.clone();
        // Every error series exists from start-up, at 0, so that an alert on
        // `increase(...) > 0` sees the very first failure.
        for kind in UpstreamError::KINDS {
            metrics::counter!(m::PROXY_UPSTREAM_ERRORS_TOTAL, "node" => name.clone(), "kind" => *kind)
                .increment(0);
        }
        metrics::counter!(m::PROXY_TLS_FAILURES_TOTAL, "node" => name.clone()).increment(0);
        metrics::counter!(m::PROXY_SASL_FAILURES_TOTAL, "node" => name.clone()).increment(0);
        metrics::counter!(m::PROXY_UPSTREAM_CONNECTS_TOTAL, "node" => name.clone()).increment(0);
        metrics::counter!(m::PROXY_WARMUP_ABANDONED_TOTAL, "node" => name.clone()).increment(0);
        Upstream {
            health: Health::new(name.clone(), failure_limit),
            trust: Trust::new(name.clone()),
            upstream_requests: metrics::counter!(m::PROXY_UPSTREAM_REQUESTS_TOTAL, "node" => name.clone()),
            upstream_latency: metrics::histogram!(m::PROXY_UPSTREAM_DURATION_SECONDS, "node" => name),
            slots: (0..connections.max(1)).map(|_| Mutex::new(None)).collect(),
            connecting: Mutex::new(None),
            target,
        }
    }

    /// The slot a client with nothing in flight on this node should use:
    /// the first whose connection is not busy, so that light traffic shares
    /// one connection and leaves in fewer, larger writes (fewer syscalls and
    /// wake-ups here and on the node), while a busy connection spills new
    /// clients onto the next slot. With every slot busy, the least loaded.
    fn pick_slot(&self) -> usize {
        let mut best = (usize::MAX, 0);
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(load) = live_load(slot) else {
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

    /// A live, logged-in connection for a client that has nothing in flight
    /// on this node (`proxy::pins` keeps it for the client's later requests,
    /// so that they stay in order).
    ///
    /// With the chosen slot empty, a live connection in another slot is used
    /// at once while a connect fills the empty one in the background; with
    /// none live, the request waits for the node's connect attempt, until
    /// `deadline` at most.
    ///
    /// The flag says whether the connection was at hand at once; if not, the
    /// caller's clock may have moved.
    pub async fn connection(
        self: &Arc<Self>,
        settings: &Settings,
        deadline: Instant,
    ) -> Result<(Connection, bool), UpstreamError> {
        if let Some(conn) = live(&self.slots[self.pick_slot()]) {
            return Ok((conn, true));
        }
        self.connection_slow(settings, deadline)
            .await
            .map(|conn| (conn, false))
    }

    /// The live connection `connection` would pick at once, if there is
    /// one: the request path's answer without a future.
    pub fn live_connection(&self) -> Option<Connection> {
        live(&self.slots[self.pick_slot()])
    }

    /// `connection` when the slot has no live connection.
    async fn connection_slow(
        self: &Arc<Self>,
        settings: &Settings,
        deadline: Instant,
    ) -> Result<Connection, UpstreamError> {
        if !self.health.is_up() {
            return Err(self.down());
        }
        let (_, mut outcome) = self.connect_in_background(settings);
        if let Some(found) = self.any_live() {
            return Ok(found);
        }
        let ended = tokio::time::timeout_at(deadline, outcome.wait_for(Option::is_some)).await;
        match ended {
            Err(_) => {
                // The node did not take a connection within the request's
                // time: as much a failure as a reply that did not come. Not
                // counting it let a stopped node (TCP accepted by its kernel,
                // TLS never answered) stay up for as long as it was stopped,
                // every request for it waiting out its whole timeout.
                let error = UpstreamError::Timeout {
                    node: self.target.name.clone(),
                    timeout: settings.request_timeout,
                };
                self.failed(&error);
                Err(error)
            }
            Ok(Err(_)) => Err(UpstreamError::Io {
                node: self.target.name.clone(),
                reason: "connect abandoned".into(),
            }),
            Ok(Ok(result)) => match result.clone() {
                Some(Err(error)) => Err(error),
                _ => self.any_live().ok_or_else(|| UpstreamError::Io {
                    node: self.target.name.clone(),
                    reason: "connection closed".into(),
                }),
            },
        }
    }

    fn down(&self) -> UpstreamError {
        UpstreamError::Down {
            node: self.target.name.clone(),
        }
    }

    fn any_live(&self) -> Option<Connection> {
        self.slots.iter().find_map(live)
    }

    /// Join the connect attempt in flight, or start one: when it began, and
    /// its outcome to come. It runs in a task of its own so that a request
    /// giving up (deadline, client gone) does not cancel it, and its outcome
    /// is counted once, however many requests watch it.
    fn connect_in_background(
        self: &Arc<Self>,
        settings: &Settings,
    ) -> (Instant, watch::Receiver<ConnectOutcome>) {
        let mut connecting = lock(&self.connecting);
        if let Some((began, rx)) = connecting.as_ref() {
            return (*began, rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        let began = Instant::now();
        *connecting = Some((began, rx.clone()));
        drop(connecting);
        let node = Arc::clone(self);
        let settings = settings.clone();
        tokio::spawn(async move {
            let result = node.open(&settings).await;
            *lock(&node.connecting) = None;
            let _ = tx.send(Some(result));
        });
        (began, rx)
    }

    async fn open(&self, settings: &Settings) -> Result<(), UpstreamError> {
        match Connection::open(&self.target, settings).await {
            Ok(conn) => {
                self.health.succeed();
                metrics::counter!(m::PROXY_UPSTREAM_CONNECTS_TOTAL, "node" => self.target.name.clone())
                    .increment(1);
                // Fill the first empty slot; with none empty (another path
                // filled them meanwhile), this connection is not needed.
                for slot in &self.slots {
                    let mut guard = lock(slot);
                    if !guard.as_ref().is_some_and(Connection::is_alive) {
                        *guard = Some(conn);
                        return Ok(());
                    }
                }
                conn.close();
                Ok(())
            }
            Err(error) => {
                self.failed(&error);
                Err(error)
            }
        }
    }

    /// Count a failure, and mark the node down if it is one too many.
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
        if error.is_definitive() {
            self.health.fail_now(error.kind(), error);
        } else if error.counts_against_health() {
            self.health.fail(error.kind(), error);
        }
    }

    /// Stop using every pooled connection (after a change of credentials,
    /// say). Requests in flight on them still get their replies: a connection
    /// ends once its last request has been answered and its last handle has
    /// gone.
    pub fn release(&self) {
        for slot in &self.slots {
            lock(slot).take();
        }
    }

    /// Put `conn` in `slot`, as a connect would (for tests that stand in a
    /// node of their own).
    #[cfg(test)]
    pub(crate) fn fill_slot(&self, slot: usize, conn: Connection) {
        *lock(&self.slots[slot]) = Some(conn);
    }

    /// Connections currently open.
    pub fn open_connections(&self) -> usize {
        self.slots.iter().filter(|s| live(s).is_some()).count()
    }

    /// While the node is down, make sure one connect attempt begins at or
    /// after this probe: join the attempt in flight (a probe never doubles
    /// it), and if that one began earlier and fails, start the next at once.
    /// Without this, a probe that joined an attempt about to time out left
    /// the node without a fresh attempt (a fresh SYN, after a partition) for
    /// up to two intervals, as the connect timeout is a whole multiple of it.
    async fn probe(self: &Arc<Self>, settings: &Settings) {
        let tick = Instant::now();
        while !self.health.is_up() {
            let (began, mut outcome) = self.connect_in_background(settings);
            let ended = outcome.wait_for(Option::is_some).await.is_ok();
            if !ended || began >= tick {
                return;
            }
        }
    }
}

fn live(conn: &Mutex<Option<Connection>>) -> Option<Connection> {
    lock(conn).as_ref().filter(|c| c.is_alive()).cloned()
}

/// The load of a live connection, read in place (no handle cloned: this runs
/// for most requests).
fn live_load(conn: &Mutex<Option<Connection>>) -> Option<usize> {
    lock(conn)
        .as_ref()
        .filter(|c| c.is_alive())
        .map(Connection::load)
}

/// The number the next cluster gets (`Cluster::generation`).
static NEXT_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Every node, the ring over them, and the failover policy.
pub struct Cluster {
    pub nodes: Vec<Arc<Upstream>>,
    ring: Ring,
    failover: Failover,
    /// Eject mode: the ring over the live nodes, with the down set it was built for.
    live_ring: RwLock<(Vec<usize>, Arc<Ring>)>,
    pub settings: Settings,
    /// How often the prober tries a down node.
    probe_interval: Duration,
    /// Which cluster this is: every one built gets a new number, so that a
    /// session can tell a reload from one atomic load (`proxy::pins`).
    pub generation: u64,
    /// The ring before the reload that made this cluster, while moved keys
    /// are still looked for there (`proxy::warmup`).
    warmup: Option<Arc<Warmup>>,
    /// How many nodes keep each key, and what a node that missed writes
    /// needs before it is read again (`proxy::replicas`).
    pub replication: Replication,
}

/// `--replicas` and what goes with it.
#[derive(Clone, Copy, Debug)]
pub struct Replication {
    /// Nodes per key (`--replicas`); 1 is no replication.
    pub replicas: usize,
    /// Hints kept per node before its part of the cache is flushed instead
    /// (`--hints`).
    pub hint_capacity: usize,
    /// How long a reconciled node is written but not read (`--warmup-settle`).
    pub quarantine: Duration,
    /// How long after a node is trusted again its misses are read again
    /// from the next replica (`--warmup`).
    pub warming: Duration,
}

impl Default for Replication {
    fn default() -> Replication {
        Replication {
            replicas: 1,
            hint_capacity: super::config::defaults::HINTS,
            quarantine: super::config::defaults::WARMUP_SETTLE,
            warming: super::config::defaults::WARMUP,
        }
    }
}

impl Cluster {
    /// A cluster over `nodes` (built fresh, or kept from the cluster before a
    /// reload), in ring order.
    pub fn new(
        nodes: Vec<Arc<Upstream>>,
        ring: Ring,
        settings: Settings,
        failover: Failover,
        probe_interval: Duration,
    ) -> Cluster {
        let full = Arc::new(ring.clone());
        Cluster {
            nodes,
            ring,
            failover,
            live_ring: RwLock::new((Vec::new(), full)),
            settings,
            probe_interval,
            generation: NEXT_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            warmup: None,
            replication: Replication::default(),
        }
    }

    /// This cluster, keeping each key on `replication.replicas` nodes.
    pub fn with_replication(mut self, replication: Replication) -> Cluster {
        self.replication = replication;
        self
    }

    /// The nodes that keep `key`, in the order its writes visit them.
    pub fn replica_nodes(&self, key: &[u8]) -> Vec<&Arc<Upstream>> {
        let replicas = self.ring.replicas(key, self.replication.replicas);
        replicas
            .iter()
            .map(|i| &self.nodes[i % self.nodes.len()])
            .collect()
    }

    /// The first of `key`'s replicas that is steady (`Trust::steady`), if
    /// no other before it is trusted: where a read of the key goes as one
    /// request. Allocates nothing: most reads ask.
    pub fn steady_replica(&self, key: &[u8]) -> Option<&Arc<Upstream>> {
        let now = std::time::Instant::now();
        let window = self.replication.warming;
        let replicas = self.ring.replicas(key, self.replication.replicas);
        for i in replicas.iter() {
            let node = &self.nodes[i % self.nodes.len()];
            if node.trust.steady(&node.health, now, window) {
                return Some(node);
            }
            // Trusted but warming: its miss is read again elsewhere.
            if node.trust.role(&node.health, now) == super::replicas::Role::Trusted {
                return None;
            }
        }
        None
    }

    /// This cluster, warming up from the one it replaces.
    pub fn with_warmup(mut self, warmup: Option<Arc<Warmup>>) -> Cluster {
        self.warmup = warmup;
        self
    }

    /// The warm-up from the previous ring, if one is still going on.
    pub fn warmup(&self) -> Option<&Arc<Warmup>> {
        self.warmup
            .as_ref()
            .filter(|w| w.phase(std::time::Instant::now()) != Phase::Over)
    }

    /// The ring over every node, down or not.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    pub fn failover(&self) -> Failover {
        self.failover
    }

    /// The node that serves `key` now, or why none can.
    pub fn route(&self, key: &[u8]) -> Result<&Arc<Upstream>, UpstreamError> {
        let home = &self.nodes[self.ring.locate(key) % self.nodes.len()];
        if self.failover == Failover::Error || home.health.is_up() {
            return Ok(home);
        }
        let down: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| !self.nodes[i].health.is_up())
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

    /// Probe every down node once per probe interval, concurrently (a
    /// stalled node must not delay another's return), so that a node serves
    /// again about one interval after it answers, with or without traffic.
    pub async fn prober(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.probe_interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for node in &self.nodes {
                if !node.health.is_up() {
                    let node = Arc::clone(node);
                    let settings = self.settings.clone();
                    tokio::spawn(async move { node.probe(&settings).await });
                } else if self.replication.replicas > 1 {
                    if let Some(replay) = node.trust.take_replay(&node.health) {
                        let node = Arc::clone(node);
                        let settings = self.settings.clone();
                        let quarantine = self.replication.quarantine;
                        tokio::spawn(
                            async move { node.replay(&settings, replay, quarantine).await },
                        );
                    }
                }
            }
        }
    }
}

impl Upstream {
    /// Make this node safe to read again after it missed writes
    /// (`proxy::replicas`): delete every hinted key, leaving a tombstone
    /// where the node keeps them, or flush its part of the cache.
    async fn replay(self: &Arc<Self>, settings: &Settings, replay: Replay, quarantine: Duration) {
        let deadline = Instant::now() + settings.request_timeout;
        let connected = self.connection(settings, deadline).await;
        let outcome = match (connected, &replay) {
            (Err(_), Replay::Keys(keys)) => Replayed::Keys {
                deleted: 0,
                failed: keys.clone(),
            },
            (Err(_), Replay::Flush) => Replayed::Flushed(false),
            (Ok((conn, _)), Replay::Flush) => {
                let flush = Command::FlushAll { delay: 0 };
                let flushed = self.ask(&conn, flush, settings.request_timeout).await;
                Replayed::Flushed(matches!(flushed, Some(Response::Ok)))
            }
            (Ok((conn, _)), Replay::Keys(keys)) => {
                // Pipelined a bounded batch at a time, each against its own
                // deadline: a node that fails stops the replay. The
                // tombstones last the quarantine: long enough for requests
                // that reached the node before it went away and that it
                // runs late to be refused, and no longer, so that reads
                // copy the keys back to it once it is trusted.
                let ttl = (quarantine.as_secs() as i64).max(1);
                let mut failed = Vec::new();
                let mut deleted = 0;
                for batch in keys.chunks(REPLAY_BATCH) {
                    let mut pending = Vec::with_capacity(batch.len());
                    for key in batch {
                        let clear =
                            clear(key.clone(), conn.keeps_tombstones().then_some(ttl), None);
                        pending.push((key, self.ask(&conn, clear, settings.request_timeout)));
                    }
                    for (key, reply) in pending {
                        match reply.await {
                            Some(Response::Deleted | Response::NotFound) => deleted += 1,
                            _ => failed.push(key.clone()),
                        }
                    }
                }
                Replayed::Keys { deleted, failed }
            }
        };
        self.trust.replayed(outcome, &self.health, quarantine);
    }

    /// `command` on `conn` with its own deadline; None if it failed (and
    /// the failure counted against the node).
    fn ask(
        &self,
        conn: &Connection,
        command: Command,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Option<Response>> + '_ {
        let sent = conn.send(command, &internal_frame(), std::time::Instant::now());
        async move {
            let reply = sent.map_err(|no| self.failed(&no.error)).ok()?;
            match tokio::time::timeout(timeout, reply).await {
                Ok(Ok(Ok(response))) => Some(response),
                Ok(Ok(Err(no))) => {
                    self.failed(&no.error);
                    None
                }
                _ => {
                    self.failed(&UpstreamError::Timeout {
                        node: self.target.name.clone(),
                        timeout,
                    });
                    None
                }
            }
        }
    }
}

/// Replayed deletes in flight at once on one connection.
const REPLAY_BATCH: usize = 64;

/// How long the tombstones left by the sidecar's deletes last: long enough
/// for any copy or replica write already on its way to arrive.
pub fn tombstone_ttl(request_timeout: Duration) -> i64 {
    (4 * request_timeout.as_secs() as i64).max(10)
}

/// The request that deletes `key` on a node: with a tombstone of `bury`
/// seconds where the node keeps them (`node::tombstones`), which refuses
/// copies, and mirrors no newer than `version` (every mirror without one).
pub fn clear(
    key: crate::protocol::request::Key,
    bury: Option<i64>,
    version: Option<u64>,
) -> Command {
    match bury {
        Some(ttl) => Command::Bury {
            key,
            ttl,
            version,
            report: false,
        },
        None => Command::Delete(crate::protocol::request::Delete {
            key,
            cas: None,
            invalidate: false,
            exptime: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Command;

    fn node(slots: usize) -> Upstream {
        let target = Target {
            name: "n0".into(),
            addr: "127.0.0.1:1".into(),
            server_name: rustls_pki_types::ServerName::try_from("localhost").unwrap(),
        };
        Upstream::new(target, slots, 2)
    }

    /// A connection to a node that never answers: what is sent stays in flight.
    fn silent_connection() -> (Connection, tokio::io::DuplexStream) {
        let (near, far) = tokio::io::duplex(1 << 20);
        let protocol = super::super::upstream::UpstreamProtocol::Meta;
        (Connection::spawn(near, "n0".into(), protocol), far)
    }

    async fn load_with(conn: &Connection, n: usize) -> Vec<super::super::upstream::PendingReply> {
        let mut pending = Vec::new();
        for _ in 0..n {
            let frame = super::super::upstream::internal_frame();
            pending.push(
                conn.send(Command::Noop, &frame, std::time::Instant::now())
                    .unwrap(),
            );
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
        *node.slots[0].lock().unwrap() = Some(first.clone());
        assert_eq!(node.pick_slot(), 0);
        let _a = load_with(&first, SPILL_LOAD - 1).await;
        assert_eq!(node.pick_slot(), 0, "not busy yet");
        let _b = load_with(&first, 1).await;
        assert_eq!(node.pick_slot(), 1, "busy: the next slot, unconnected");

        let (second, _far1) = silent_connection();
        *node.slots[1].lock().unwrap() = Some(second.clone());
        let _c = load_with(&second, SPILL_LOAD + 5).await;
        assert_eq!(node.pick_slot(), 0, "both busy: the least loaded");
        let _d = load_with(&first, 10).await;
        assert_eq!(node.pick_slot(), 1);
    }
    /// A down node whose connects stall (the kernel accepts, TLS never
    /// answers, as with a stopped process) gets its next attempt as soon as
    /// one gives up: a fresh SYN at least once per probe interval after a
    /// partition heals, never a gap of a whole interval more.
    #[tokio::test]
    async fn a_down_node_whose_connects_stall_is_retried_without_a_gap() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&accepted);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                seen.lock().unwrap().push(Instant::now());
                held.push(stream);
            }
        });
        let ca = crate::pki::CertificateAuthority::generate("pool test CA").unwrap();
        let tls = crate::tls::client_config(ca.cert_pem().as_bytes(), None).unwrap();
        let interval = Duration::from_millis(200);
        let settings = Settings {
            tls: tokio_rustls::TlsConnector::from(tls),
            protocol: super::super::upstream::UpstreamProtocol::Meta,
            username: "u".into(),
            password: "p".into(),
            // A whole multiple of the interval, as the default 2 s is of 1 s.
            connect_timeout: 2 * interval,
            request_timeout: interval,
            keepalive: Duration::ZERO,
            tls_fingerprint: None,
        };
        let target = Target {
            name: "stalled".into(),
            addr: addr.to_string(),
            server_name: rustls_pki_types::ServerName::try_from("localhost").unwrap(),
        };
        let node = Arc::new(Upstream::new(target, 1, 1));
        node.health.fail_now("connect", &"test");
        let spec = super::super::ring::parse_server_entry(&format!("stalled={addr}")).unwrap();
        let ring = Ring::new(&[spec]).unwrap();
        let cluster = Arc::new(Cluster::new(
            vec![node],
            ring,
            settings,
            Failover::Error,
            interval,
        ));
        let prober = tokio::spawn(Arc::clone(&cluster).prober());
        tokio::time::sleep(12 * interval).await;
        prober.abort();
        let accepted = accepted.lock().unwrap();
        assert!(accepted.len() >= 4, "{} attempts", accepted.len());
        let widest = accepted.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        // Back to back: one connect timeout apart. A probe that only joined
        // the attempt about to give up left three intervals between them.
        assert!(
            widest < 2 * interval + interval / 2,
            "{widest:?} between attempts"
        );
    }
}

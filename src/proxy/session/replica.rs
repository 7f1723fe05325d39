//! Requests for keys kept on several nodes (`--replicas N`);
//! `proxy::replicas` says which nodes may be read, and why.
//!
//! - **Reads** go to the key's first trusted replica as one request; a
//!   failure there is read again from the next (`Again`). For `--warmup`
//!   after that replica was trusted again, a miss is read again from the
//!   next too, and a hit found there is copied back to those that missed,
//!   with its flags, remaining TTL and CAS, as an add that a tombstone
//!   refuses (memgate nodes).
//! - **Writes** go to the first trusted replica, the *authority*, which
//!   decides the outcome (a `cas`, an `add`, an `incr`). Then each other
//!   replica is given the result, before the client hears it:
//!   - a stored whole value (set, add, replace, cas) is *mirrored*: on
//!     memgate nodes as `ms … G MS E<cas>`, which stores it with the
//!     authority's CAS unless a newer CAS or a tombstone is there, so that
//!     two sidecars' writes reaching the replica out of order cannot leave
//!     the older one; on memcached nodes as a plain set;
//!   - anything else (delete, incr/decr, append/prepend, a failed replace)
//!     *clears* the key there, leaving a tombstone on memgate nodes so that
//!     no copy or mirror already on its way lands after it;
//!   - a node that is down gets a hint instead; one whose request fails
//!     gets a hint too, and is not read until it has been reconciled.
//!
//!   A client's plain delete is sent to the authority as a delete that
//!   leaves a tombstone too, for the copies.
//! - **Touches** (touch, gat) are read like a get, and the new TTL is given
//!   to the other replicas.
//!
//! During a warm-up (`proxy::warmup`) the nodes that kept the key under the
//! previous ring, and not under this one, are its *secondaries*: cleared
//! after every write and read last, as a moved key's previous node is.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use std::sync::atomic::Ordering;

use super::copy::{ask, ask_timed, copy_item, is_miss};
use super::moved::Outcome;
use super::{connection_for, start, try_send, Part, Routed};
use crate::metrics as m;
use crate::protocol::request::{Command, Frame, Key, MetaFrame, Store, StoreMode};
use crate::protocol::Response;
use crate::proxy::pins::Pins;
use crate::proxy::pool::{clear, tombstone_ttl, Cluster, Upstream};
use crate::proxy::replicas::Role;
use crate::proxy::upstream::{internal_frame, Connection, NoReply, UpstreamError};
use crate::proxy::warmup::{Phase, Warmup};
use tokio::time::Sleep;

/// Where a key lives now.
struct Placement<'a> {
    /// Its replicas, in the order writes visit them.
    primary: Vec<&'a Arc<Upstream>>,
    /// Nodes that kept it under the previous ring only, while a warm-up
    /// runs: cleared after every write, and read last if `fallback`.
    secondary: Vec<&'a Arc<Upstream>>,
    fallback: bool,
    /// The primaries are the new ring's (hits may be copied to them from
    /// the secondaries).
    new_is_primary: bool,
    warm: Option<&'a Arc<Warmup>>,
}

fn placement<'a>(cluster: &'a Cluster, key: &[u8]) -> Placement<'a> {
    let now = cluster.replica_nodes(key);
    let replicas = cluster.replication.replicas;
    let Some(warm) = cluster.warmup() else {
        return Placement {
            primary: now,
            secondary: Vec::new(),
            fallback: false,
            new_is_primary: true,
            warm: None,
        };
    };
    let before = warm.previous_replicas(key, replicas);
    let phase = warm.phase(Instant::now());
    let (primary, other) = match phase {
        // Until every sidecar has reloaded, the previous ring's nodes order
        // the writes.
        Phase::Settle if !before.is_empty() => (before, now),
        _ => (now, before),
    };
    let same = |a: &Arc<Upstream>, b: &Arc<Upstream>| a.target == b.target;
    let secondary = other
        .into_iter()
        .filter(|node| !primary.iter().any(|p| same(p, node)))
        .collect();
    Placement {
        new_is_primary: phase != Phase::Settle,
        fallback: matches!(phase, Phase::Settle | Phase::Window),
        primary,
        secondary,
        warm: Some(warm),
    }
}

/// What a request does to its key, for its replicas.
enum Effect {
    Read,
    /// A read that also sets the TTL: the new TTL goes to the others.
    Touch(crate::protocol::request::Exptime),
    Write,
}

fn effect(command: &Command) -> Effect {
    match command {
        // Meta vivify creates an item on a miss.
        Command::Get(get) if get.vivify.is_some() => Effect::Write,
        Command::Get(get) => match get.touch {
            Some(ttl) => Effect::Touch(ttl),
            None => Effect::Read,
        },
        Command::Touch { exptime, .. } => Effect::Touch(*exptime),
        Command::MetaDebug { .. } => Effect::Read,
        _ => Effect::Write,
    }
}

/// The miss a read of a key no replica may answer gets.
fn miss_for(command: &Command) -> Option<Response> {
    match command {
        Command::Get(_) => Some(Response::Get(vec![None])),
        Command::Touch { .. } => Some(Response::NotFound),
        Command::MetaDebug { .. } => Some(Response::MetaDebug(None)),
        _ => None,
    }
}

/// A reply known now.
fn known(result: Result<Response, UpstreamError>) -> Outcome {
    Box::pin(std::future::ready(result))
}

/// Start `command` on the replicas of its key. If this client has a write
/// of the key in flight, or a request of it that waits, the request waits
/// too: it is sent only once every request before it has been answered
/// (`proxy::pins`).
pub(super) async fn start_replicated(
    cluster: &Arc<Cluster>,
    command: Command,
    frame: Frame,
    pins: &mut Pins,
    now: &mut Instant,
) -> Routed {
    let key = command.key().cloned().unwrap_or_default();
    let hash = Pins::hash(&key);
    if pins.must_wait(hash) {
        return waiting(cluster, command, frame, key, hash, pins);
    }
    let effect = effect(&command);
    let (command, frame) = match effect {
        Effect::Read if cluster.warmup().is_none() => {
            match steady_read(cluster, command, frame, &key, hash, pins, now).await {
                Ok(part) => return Routed::Steady(part, Arc::clone(cluster)),
                Err(declined) => declined,
            }
        }
        _ => (command, frame),
    };
    // A write its key's first replica cannot take goes to another, where
    // a read of the key sent before it may be tried again if its first
    // replica fails: it waits for the client's requests before it. So does
    // one after a read of the key that may be tried again (`Pins::reads`).
    if matches!(effect, Effect::Write)
        && (pins.reads(hash) || (pins.busy() && !first_takes_writes(cluster, &key)))
    {
        return waiting(cluster, command, frame, key, hash, pins);
    }
    let done = pins.wait_for(hash);
    let started = start_now(cluster, command, frame, key, pins, now).await;
    // Started now: the session runs it as its replies come (`Running`).
    Routed::Running(marking_done(started, done))
}

/// `outcome`, which sets `done` once it is over (`Pins::wait_for`).
fn marking_done(
    outcome: impl std::future::Future<Output = Result<Response, UpstreamError>> + Send + 'static,
    done: Arc<std::sync::atomic::AtomicBool>,
) -> Outcome {
    Box::pin(async move {
        let reply = outcome.await;
        done.store(true, Ordering::Release);
        reply
    })
}

/// `command`, started only when every request of the client before it has
/// been answered (the session polls it only once it is the client's oldest
/// request, `Routed::Moved`), so it needs no pins of its own; later
/// requests of its key wait for it in turn.
fn waiting(
    cluster: &Arc<Cluster>,
    command: Command,
    frame: Frame,
    key: Key,
    hash: u64,
    pins: &mut Pins,
) -> Routed {
    let done = pins.wait_for(hash);
    let cluster = Arc::clone(cluster);
    Routed::Moved(Box::pin(async move {
        let mut pins = Pins::default();
        let mut now = Instant::now();
        let started = start_now(&cluster, command, frame, key, &mut pins, &mut now);
        let reply = started.await.await;
        done.store(true, Ordering::Release);
        reply
    }))
}

/// Whether `key`'s first replica (its node on the ring) is trusted, and so
/// takes its writes.
fn first_takes_writes(cluster: &Cluster, key: &[u8]) -> bool {
    let node = &cluster.nodes[cluster.ring().locate(key) % cluster.nodes.len()];
    node.trust.role(&node.health, Instant::now()) == Role::Trusted
}

/// A read from the key's steady replica alone (`Cluster::steady_replica`),
/// as an unreplicated read is: its miss is the answer, and if it fails the
/// read is tried on the next replica (`Again`). Declined (the request
/// handed back) when no replica is steady.
#[allow(clippy::too_many_arguments)]
async fn steady_read(
    cluster: &Arc<Cluster>,
    command: Command,
    frame: Frame,
    key: &Key,
    hash: u64,
    pins: &mut Pins,
    now: &mut Instant,
) -> Result<Part, (Command, Frame)> {
    let Some(node) = cluster.steady_replica(key) else {
        return Err((command, frame));
    };
    match connection_for(cluster, node, pins, now).await {
        Ok(conn) => match steady_send(cluster, node, conn, command, frame, hash, pins, *now) {
            Now::Sent(part) => Ok(part),
            Now::Declined(command, frame) => Err((command, frame)),
        },
        // It cannot be reached now: the full read, which goes on to the next.
        Err(_) => Err((command, frame)),
    }
}

/// `steady_read` when it needs nothing to wait for: a plain read whose
/// steady replica has a live connection (this client's pinned one, or one
/// picked and pinned now). No future to build, which is most of what a
/// replicated read would cost more.
pub(super) fn steady_now(
    cluster: &Arc<Cluster>,
    command: Command,
    frame: Frame,
    pins: &mut Pins,
    now: Instant,
) -> Now<Part> {
    let plain_read = matches!(effect(&command), Effect::Read) && cluster.warmup().is_none();
    let Some(key) = command.key().filter(|_| plain_read) else {
        return Now::Declined(command, frame);
    };
    let hash = Pins::hash(key);
    if pins.must_wait(hash) {
        return Now::Declined(command, frame);
    }
    let Some(node) = cluster.steady_replica(key) else {
        return Now::Declined(command, frame);
    };
    let conn = match pins.get(node) {
        Some(conn) => conn.clone(),
        None => match node.live_connection() {
            Some(conn) => {
                pins.pin(cluster.generation, node, conn.clone());
                conn
            }
            None => return Now::Declined(command, frame),
        },
    };
    steady_send(cluster, node, conn, command, frame, hash, pins, now)
}

/// What `steady_now` or `write_now` did with a request.
pub(super) enum Now<T> {
    /// Sent: a read with what it takes to try it on the next replica, a
    /// write with the rest of it.
    Sent(T),
    /// Handed back: it needs the full path (`start_replicated`).
    Declined(Command, Frame),
}

/// Send a steady read, handed back if it could not be sent. No copy of it
/// is kept for a try on the next replica: a read that fails there gets its
/// command back from its connection (`NoReply`, `Again`).
#[allow(clippy::too_many_arguments)]
fn steady_send(
    cluster: &Cluster,
    node: &Arc<Upstream>,
    conn: Connection,
    command: Command,
    frame: Frame,
    hash: u64,
    pins: &mut Pins,
    now: Instant,
) -> Now<Part> {
    let timeout = cluster.settings.request_timeout;
    match try_send(node, conn, command, &frame, now, timeout) {
        Ok(part) => {
            pins.reading(hash);
            Now::Sent(part)
        }
        Err(NoReply {
            command: Some(command),
            ..
        }) => Now::Declined(*command, frame),
        Err(NoReply { error, .. }) => Now::Sent(Part::Failed(error)),
    }
}

/// A replicated read to try again, without the replica that failed it: its
/// command, as its connection gave it back (`Part::settle_keeping`).
pub(super) struct Again {
    command: Box<Command>,
    failed: Arc<Upstream>,
}

impl Again {
    pub(super) fn new(command: Box<Command>, failed: Arc<Upstream>) -> Again {
        Again { command, failed }
    }

    /// Read the key from its replicas in `cluster` (the one it was routed
    /// by) but the one that failed; `frame` is the client's. Every earlier
    /// request of the client has been answered by now, and a later write
    /// that went to another replica than the failed one waited for this
    /// (`start_replicated`).
    pub(super) async fn run(
        self,
        cluster: Arc<Cluster>,
        frame: Frame,
    ) -> Result<Response, UpstreamError> {
        let Again { command, failed } = self;
        let command = *command;
        let key = command.key().cloned().unwrap_or_default();
        let mut placement = placement(&cluster, &key);
        placement.primary.retain(|node| !Arc::ptr_eq(node, &failed));
        let mut pins = Pins::default();
        let mut now = Instant::now();
        let started = read(
            &cluster, placement, command, frame, key, None, &mut pins, &mut now,
        );
        started.await.await
    }
}

/// Start `command` on the replicas of `key` now.
async fn start_now(
    cluster: &Cluster,
    command: Command,
    frame: Frame,
    key: Key,
    pins: &mut Pins,
    now: &mut Instant,
) -> Outcome {
    let placement = placement(cluster, &key);
    match effect(&command) {
        Effect::Read => read(cluster, placement, command, frame, key, None, pins, now).await,
        Effect::Touch(ttl) => {
            let touch = Some(ttl);
            read(cluster, placement, command, frame, key, touch, pins, now).await
        }
        Effect::Write => write(cluster, placement, command, frame, key, pins, now).await,
    }
}

/// A node to go to after the first, with the connection taken for it now
/// (pinned, in this request's place among the client's requests).
struct Next {
    node: Arc<Upstream>,
    conn: Connection,
    /// A secondary of the warm-up, not a replica.
    secondary: bool,
}

/// Read the key from its first trusted replica, then from the next on a
/// miss or a failure; `touch` also gives the other replicas the new TTL.
#[allow(clippy::too_many_arguments)]
async fn read(
    cluster: &Cluster,
    placement: Placement<'_>,
    command: Command,
    frame: Frame,
    key: Key,
    touch: Option<crate::protocol::request::Exptime>,
    pins: &mut Pins,
    now: &mut Instant,
) -> Outcome {
    let at = Instant::now();
    let mut order: Vec<(&Arc<Upstream>, bool)> = Vec::new();
    let mut others = Vec::new();
    for node in &placement.primary {
        match node.trust.role(&node.health, at) {
            Role::Trusted => order.push((node, false)),
            Role::WriteOnly => others.push(*node),
            Role::Down => {}
        }
    }
    if placement.fallback {
        for node in &placement.secondary {
            if node.trust.role(&node.health, at) == Role::Trusted {
                order.push((node, true));
            }
        }
    }
    let Some(&(first, first_is_secondary)) = order.first() else {
        // No replica may be read: a miss if one is up (its copy may be old),
        // else the key's node is down.
        let up = placement.primary.iter().any(|n| n.health.is_up());
        return known(match miss_for(&command) {
            Some(miss) if up => Ok(miss),
            _ => Err(UpstreamError::Down {
                node: placement
                    .primary
                    .first()
                    .map(|n| n.target.name.clone())
                    .unwrap_or_default(),
            }),
        });
    };
    let first_part = start(cluster, first, command.clone(), frame.clone(), pins, now).await;
    let mut next = Vec::with_capacity(order.len() - 1);
    for &(node, secondary) in &order[1..] {
        if let Ok(conn) = connection_for(cluster, node, pins, now).await {
            next.push(Next {
                node: Arc::clone(node),
                conn,
                secondary,
            });
        }
    }
    // The replicas not read get the touch too.
    let mut touched = Vec::new();
    if touch.is_some() {
        for node in order[1..].iter().map(|(n, _)| *n).chain(others) {
            if let Ok(conn) = connection_for(cluster, node, pins, now).await {
                touched.push((Arc::clone(node), conn));
            }
        }
    }
    let timeout = cluster.settings.request_timeout;
    // Hits from a warm-up's secondary are copied to the new ring only.
    let copy_from_secondary =
        placement.new_is_primary && placement.warm.is_some_and(|w| w.copies_allowed());
    let warm = placement.warm.cloned();
    let first_sent = first_part.sent_on().filter(|_| !first_is_secondary);
    Box::pin(async move {
        let first_reply = first_part.outcome().await;
        let mut missed: Vec<(Arc<Upstream>, Connection)> = Vec::new();
        let mut answer = first_reply;
        let mut hit = matches!(&answer, Ok(r) if !is_miss(r));
        if matches!(&answer, Ok(r) if is_miss(r)) {
            missed.extend(first_sent);
        }
        if !hit && !matches!(answer, Ok(Response::Error(_))) {
            for step in next {
                let reply = ask(
                    &step.node,
                    &step.conn,
                    command.clone(),
                    frame.clone(),
                    timeout,
                )
                .await;
                let result = match &reply {
                    Ok(r) if is_miss(r) => "miss",
                    Ok(Response::Error(_)) | Err(_) => "error",
                    Ok(_) => "hit",
                };
                let counter = match step.secondary {
                    true => m::PROXY_WARMUP_FALLBACKS_TOTAL,
                    false => m::PROXY_REPLICA_FALLBACKS_TOTAL,
                };
                metrics::counter!(counter, "result" => result).increment(1);
                match reply {
                    Ok(response) if result == "hit" => {
                        let copy = !step.secondary || copy_from_secondary;
                        if copy && !missed.is_empty() {
                            let counter = match step.secondary {
                                true => m::PROXY_WARMUP_COPIES_TOTAL,
                                false => m::PROXY_REPLICA_REPAIRS_TOTAL,
                            };
                            let key = key.clone();
                            tokio::spawn(async move {
                                let from = (&step.node, &step.conn);
                                copy_item(from, missed, key, timeout, counter).await;
                            });
                        }
                        answer = Ok(response);
                        hit = true;
                        break;
                    }
                    Ok(response) if result == "miss" => {
                        if !step.secondary {
                            missed.push((step.node, step.conn));
                        }
                        // A miss answers better than an earlier failure.
                        if answer.is_err() {
                            answer = Ok(response);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        if let (true, Some(warm)) = (step.secondary, &warm) {
                            warm.abandon(&step.node);
                        }
                    }
                }
            }
        }
        if let (true, Some(ttl)) = (hit, touch) {
            for (node, conn) in touched {
                let touch = Command::Touch {
                    key: key.clone(),
                    exptime: ttl,
                };
                // A TTL left longer on another replica keeps the same value.
                let _ = ask(&node, &conn, touch, internal_frame(), timeout).await;
            }
        }
        answer
    })
}

/// What a replica after the authority is given once the authority answered.
enum FollowUp {
    /// The stored value, with the authority's CAS.
    Mirror { store: Store, cas: u64 },
    /// Delete the key there, leaving a tombstone that refuses mirrors no
    /// newer than `version` (all of them without one).
    Clear { version: Option<u64> },
    /// Nothing changed at the authority.
    Nothing,
}

fn follow_up(command: &Command, reply: &Response) -> FollowUp {
    match (command, reply) {
        (Command::Store(store), Response::Stored { cas })
            if matches!(
                store.mode,
                StoreMode::Set | StoreMode::Add | StoreMode::Replace
            ) && !store.invalidate =>
        {
            let store = Store {
                mode: StoreMode::Set,
                cas: None,
                invalidate: false,
                vivify: None,
                ..store.clone()
            };
            FollowUp::Mirror { store, cas: *cas }
        }
        // The key is there, unchanged; or a CAS that did not match.
        (Command::Store(store), Response::NotStored) if store.mode == StoreMode::Add => {
            FollowUp::Nothing
        }
        (_, Response::Exists) => FollowUp::Nothing,
        (_, Response::DeletedCas { cas } | Response::NotFoundCas { cas }) => FollowUp::Clear {
            version: Some(*cas),
        },
        _ => FollowUp::Clear { version: None },
    }
}

/// A replica after the authority, with the connection taken for it.
struct Other {
    node: Arc<Upstream>,
    conn: Connection,
}

/// Write the key on its authority, then give the result to the others.
async fn write(
    cluster: &Cluster,
    placement: Placement<'_>,
    command: Command,
    frame: Frame,
    key: Key,
    pins: &mut Pins,
    now: &mut Instant,
) -> Outcome {
    let at = Instant::now();
    let capacity = cluster.replication.hint_capacity;
    let timeout = cluster.settings.request_timeout;
    let mut trusted = Vec::new();
    let mut others = Vec::new();
    for node in &placement.primary {
        match node.trust.role(&node.health, at) {
            Role::Trusted => trusted.push(*node),
            Role::WriteOnly => others.push(*node),
            Role::Down => {
                node.trust.hint(&key, capacity);
                m::ReplicaMetrics::get().wrote("hinted");
            }
        }
    }
    // The first trusted replica that can be reached orders the write; one
    // that cannot misses it, and is hinted.
    let mut trusted = trusted.into_iter();
    let (authority, conn) = loop {
        let Some(node) = trusted.next() else {
            let node = placement.primary.first().map(|n| n.target.name.clone());
            return known(Err(UpstreamError::Down {
                node: node.unwrap_or_default(),
            }));
        };
        match connection_for(cluster, node, pins, now).await {
            Ok(conn) => break (node, conn),
            Err(_) => {
                node.trust.hint(&key, capacity);
                m::ReplicaMetrics::get().wrote("failed");
            }
        }
    };
    let others: Vec<&Arc<Upstream>> = trusted.chain(others).collect();
    let (command, upstream_frame, part) =
        to_authority(authority, conn, command, &frame, *now, timeout);
    let mut later = Vec::with_capacity(others.len());
    for node in others {
        match connection_for(cluster, node, pins, now).await {
            Ok(conn) => later.push(Other {
                node: Arc::clone(node),
                conn,
            }),
            Err(_) => {
                node.trust.hint(&key, capacity);
                m::ReplicaMetrics::get().wrote("failed");
            }
        }
    }
    let mut secondaries = Vec::new();
    if let Some(warm) = placement.warm {
        for node in &placement.secondary {
            match connection_for(cluster, node, pins, now).await {
                Ok(conn) => secondaries.push(Other {
                    node: Arc::clone(node),
                    conn,
                }),
                Err(_) => warm.abandon(node),
            }
        }
    }
    Box::pin(finish(Written {
        key,
        command,
        upstream_frame,
        authority: Arc::clone(authority),
        part,
        later,
        secondaries,
        warm: placement.warm.cloned(),
        secondaries_are_new: !placement.new_is_primary,
        capacity,
        timeout,
    }))
}

/// `write` when it needs nothing to wait for, as most writes do: no
/// warm-up, the key's first replica trusted (the authority), every other
/// replica up, and a live connection to each (this client's pinned one, or
/// one picked and pinned now). Sent to the authority at once; the rest is
/// the future returned. Declined (handed back) otherwise.
pub(super) fn write_now(
    cluster: &Arc<Cluster>,
    command: Command,
    frame: Frame,
    pins: &mut Pins,
    now: Instant,
) -> Now<Outcome> {
    let plain_write = matches!(effect(&command), Effect::Write) && cluster.warmup().is_none();
    let Some(key) = command.key().filter(|_| plain_write) else {
        return Now::Declined(command, frame);
    };
    let hash = Pins::hash(key);
    if pins.must_wait(hash) || pins.reads(hash) {
        return Now::Declined(command, frame);
    }
    let replicas = cluster.ring().replicas(key, cluster.replication.replicas);
    let mut nodes = Vec::with_capacity(replicas.len());
    for (i, index) in replicas.iter().enumerate() {
        let node = &cluster.nodes[index % cluster.nodes.len()];
        let usable = match node.trust.role(&node.health, now) {
            Role::Trusted => true,
            Role::WriteOnly => i > 0,
            Role::Down => false,
        };
        // A connection picked now is pinned once every replica has one.
        let conn = match pins.get(node) {
            Some(conn) => Some((conn.clone(), false)),
            None => node.live_connection().map(|conn| (conn, true)),
        };
        match conn {
            Some((conn, picked)) if usable => nodes.push((node, conn, picked)),
            _ => return Now::Declined(command, frame),
        }
    }
    for (node, conn, picked) in &nodes {
        if *picked {
            pins.pin(cluster.generation, node, conn.clone());
        }
    }
    let mut nodes = nodes.into_iter().map(|(node, conn, _)| (node, conn));
    let Some((authority, conn)) = nodes.next() else {
        return Now::Declined(command, frame);
    };
    let key = key.clone();
    let done = pins.wait_for(hash);
    let timeout = cluster.settings.request_timeout;
    let (command, upstream_frame, part) =
        to_authority(authority, conn, command, &frame, now, timeout);
    let written = Written {
        key,
        command,
        upstream_frame,
        authority: Arc::clone(authority),
        part,
        later: nodes
            .map(|(node, conn)| Other {
                node: Arc::clone(node),
                conn,
            })
            .collect(),
        secondaries: Vec::new(),
        warm: None,
        secondaries_are_new: false,
        capacity: cluster.replication.hint_capacity,
        timeout,
    };
    Now::Sent(marking_done(finish(written), done))
}

/// Send `command` to its authority, as of `now`, as the authority is sent
/// it (returned, with its frame, for the replicas after it). A plain delete
/// leaves a tombstone at the authority too, so that a copy read from
/// another replica before it cannot land after it, and reports the CAS of
/// the item it removed, so that the other replicas' tombstones refuse only
/// mirrors of writes before it. A store asks for the CAS it gets, which is
/// what the others are given.
fn to_authority(
    authority: &Arc<Upstream>,
    conn: Connection,
    command: Command,
    frame: &Frame,
    now: Instant,
    timeout: std::time::Duration,
) -> (Command, Frame, Part) {
    let command = match command {
        Command::Delete(delete)
            if conn.keeps_tombstones()
                && delete.cas.is_none()
                && !delete.invalidate
                && delete.exptime.is_none() =>
        {
            Command::Bury {
                key: delete.key,
                ttl: tombstone_ttl(timeout),
                version: None,
                report: true,
            }
        }
        command => command,
    };
    let frame = match (&command, frame) {
        (Command::Store(_), Frame::Text(_)) => Frame::Meta(Box::new(MetaFrame {
            return_cas: true,
            ..MetaFrame::default()
        })),
        (Command::Store(_), Frame::Meta(meta)) => Frame::Meta(Box::new(MetaFrame {
            return_cas: true,
            ..(**meta).clone()
        })),
        _ => frame.clone(),
    };
    // The command stays here, for the other replicas.
    let part = match conn.send_kept(&command, &frame, now) {
        Ok(reply) => Part::sent(authority, conn, reply, now, timeout),
        Err(unsent) => Part::Failed(unsent.error),
    };
    (command, frame, part)
}

/// A write sent to its authority, with what it takes to finish it.
struct Written {
    key: Key,
    /// As the authority was sent it (`to_authority`).
    command: Command,
    upstream_frame: Frame,
    authority: Arc<Upstream>,
    part: Part,
    /// The other replicas, in order, with their connections.
    later: Vec<Other>,
    /// The warm-up's secondaries (`Placement::secondary`).
    secondaries: Vec<Other>,
    warm: Option<Arc<Warmup>>,
    secondaries_are_new: bool,
    capacity: usize,
    timeout: std::time::Duration,
}

/// The authority's reply, once the other replicas (and the warm-up's
/// secondaries) have been given its outcome.
async fn finish(written: Written) -> Result<Response, UpstreamError> {
    let Written {
        key,
        command,
        upstream_frame,
        authority,
        part,
        mut later,
        secondaries,
        warm,
        secondaries_are_new,
        capacity,
        timeout,
    } = written;
    let bury = tombstone_ttl(timeout);
    // One timer for every round trip the write makes.
    let mut timer = std::pin::pin!(tokio::time::sleep(timeout));
    let mut first = part.outcome_timed(timer.as_mut()).await;
    let mut failed_on = authority;
    // An authority that failed may have changed the key, or not: it is
    // marked down, so that nothing reads it until it has been reconciled
    // (its copy deleted), and the write goes to the next trusted replica
    // instead, where reads now go too.
    while let Err(error) = &first {
        if !failure_of_node(error) {
            break;
        }
        failed_on.health.fail_now("replica write", error);
        failed_on.trust.hint(&key, capacity);
        let now = Instant::now();
        let Some(next) = later
            .iter()
            .position(|o| o.node.trust.role(&o.node.health, now) == Role::Trusted)
        else {
            break;
        };
        let next = later.remove(next);
        let command = match (&command, next.conn.keeps_tombstones()) {
            (Command::Bury { .. }, false) => clear(key.clone(), None, None),
            (command, _) => command.clone(),
        };
        first = ask_timed(
            &next.node,
            &next.conn,
            command,
            upstream_frame.clone(),
            timeout,
            timer.as_mut(),
        )
        .await;
        failed_on = next.node;
    }
    let follow = match &first {
        Ok(reply) => follow_up(&command, reply),
        // No replica took it: none is left trusted with the key.
        Err(error) if failure_of_node(error) => FollowUp::Clear { version: None },
        Err(_) => FollowUp::Nothing,
    };
    let mut deleted_elsewhere = false;
    for other in later {
        let result = give(&other, &follow, &key, bury, timeout, timer.as_mut()).await;
        if let Given::Failed = result {
            // Its copy may be old: not read, nor written, until reconciled.
            let why = UpstreamError::Down {
                node: other.node.target.name.clone(),
            };
            other.node.health.fail_now("replica write", &why);
            other.node.trust.hint(&key, capacity);
        }
        deleted_elsewhere |= matches!(result, Given::Deleted);
        m::ReplicaMetrics::get().wrote(result.label());
    }
    for other in secondaries {
        let tombstone = other.conn.keeps_tombstones().then_some(bury);
        let cleared = ask_timed(
            &other.node,
            &other.conn,
            clear(key.clone(), tombstone, None),
            internal_frame(),
            timeout,
            timer.as_mut(),
        )
        .await;
        let ok = matches!(cleared, Ok(Response::Deleted | Response::NotFound));
        metrics::counter!(m::PROXY_WARMUP_CLEARS_TOTAL, "result" => if ok { "ok" } else { "error" })
            .increment(1);
        deleted_elsewhere |= matches!(cleared, Ok(Response::Deleted));
        if let (false, Some(warm)) = (ok, &warm) {
            // It may still hold the old value: never read it again. A new
            // node may also lack the tombstone: no more copies.
            warm.abandon(&other.node);
            if secondaries_are_new {
                warm.stop_copies();
            }
        }
    }
    match first {
        // The client asked for a plain delete.
        Ok(Response::DeletedCas { .. }) => Ok(Response::Deleted),
        Ok(Response::NotFoundCas { .. }) if deleted_elsewhere => Ok(Response::Deleted),
        Ok(Response::NotFoundCas { .. }) => Ok(Response::NotFound),
        // The key was on another node alone: the client's delete found it.
        Ok(Response::NotFound)
            if deleted_elsewhere
                && matches!(command, Command::Delete(_) | Command::Bury { .. }) =>
        {
            Ok(Response::Deleted)
        }
        other => other,
    }
}

/// Whether `error` says the node may not have done what it was asked (not
/// a request its protocol cannot carry).
pub(super) fn failure_of_node(error: &UpstreamError) -> bool {
    !matches!(
        error,
        UpstreamError::Unsupported(_) | UpstreamError::NotCarried(_)
    )
}

/// What giving a write to a replica came to.
enum Given {
    Mirrored,
    Deleted,
    Cleared,
    /// A newer value or a tombstone was there.
    Refused,
    Nothing,
    Failed,
}

impl Given {
    fn label(&self) -> &'static str {
        match self {
            Given::Mirrored => "mirrored",
            Given::Deleted | Given::Cleared | Given::Nothing => "cleared",
            Given::Refused => "refused",
            Given::Failed => "failed",
        }
    }
}

/// Give `other` the authority's outcome, `follow`.
async fn give(
    other: &Other,
    follow: &FollowUp,
    key: &Key,
    bury: i64,
    timeout: std::time::Duration,
    mut timer: Pin<&mut Sleep>,
) -> Given {
    let tombstone = other.conn.keeps_tombstones().then_some(bury);
    let (node, conn) = (&other.node, &other.conn);
    let cleared = |reply: Result<Response, UpstreamError>| match reply {
        Ok(Response::Deleted) => Given::Deleted,
        Ok(Response::NotFound) => Given::Cleared,
        _ => Given::Failed,
    };
    match follow {
        FollowUp::Nothing => Given::Nothing,
        FollowUp::Clear { version } => cleared(
            ask_timed(
                node,
                conn,
                clear(key.clone(), tombstone, *version),
                internal_frame(),
                timeout,
                timer.as_mut(),
            )
            .await,
        ),
        FollowUp::Mirror { store, cas } => {
            let mirror = match (tombstone, *cas) {
                (Some(_), 0) => {
                    let clear = clear(key.clone(), tombstone, None);
                    return cleared(
                        ask_timed(node, conn, clear, internal_frame(), timeout, timer).await,
                    );
                }
                (Some(_), cas) => Command::Copy {
                    store: store.clone(),
                    version: Some(cas),
                },
                // memcached: no versions; the value as it was stored.
                (None, _) => Command::Store(store.clone()),
            };
            match ask_timed(
                node,
                conn,
                mirror,
                internal_frame(),
                timeout,
                timer.as_mut(),
            )
            .await
            {
                Ok(Response::Stored { .. }) => Given::Mirrored,
                // Refused: a tombstone newer than this write, or a higher CAS
                // by the node's clock, which may still be an older value
                // (stored while this authority was away, or by the node as
                // authority under its own tombstone). Whatever it holds must
                // go: the key lives on the authority alone until its next
                // write.
                // Its tombstone takes this write's version: older mirrors
                // still on their way are refused, newer ones pass.
                Ok(Response::NotStored | Response::Exists) => {
                    let clear = clear(key.clone(), tombstone, Some(*cas));
                    match cleared(
                        ask_timed(node, conn, clear, internal_frame(), timeout, timer).await,
                    ) {
                        Given::Failed => Given::Failed,
                        _ => Given::Refused,
                    }
                }
                _ => Given::Failed,
            }
        }
    }
}

//! The live caches (tenants) of a node: each cache's store and counters.
//!
//! The caches file says which caches exist and who may log in; this module
//! keeps the running state that must survive a reload: a cache that is still
//! in the file keeps its store, items and counters when SIGHUP re-reads it.
//! Connections hold an `Arc<Tenant>`, so a reload never drops them.
//!
//! Logins pass the failed-login [`Throttle`] first; it is kept across
//! reloads too, while the verified-secret caches in the [`Directory`] are
//! rebuilt (emptied) with every snapshot. A login that needs a password
//! hash (a first login, a wrong password, an unknown username) is checked
//! on tokio's blocking pool, a few at a time, so it never holds an async
//! worker: the other connections' logins and commands go on meanwhile.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::caches::{CachesFile, Capabilities, Directory, Invalid, LoginError, LoginOk};
use super::counters::CacheStats;
use super::hotkeys::HotKeys;
use super::store::Store;
use super::tombstones::Tombstones;
use super::NodeSettings;
use crate::auth::hashers::Hashers;
use crate::auth::throttle::{Admission, Throttle, Throttled};
use crate::clock::unix_now;
use crate::metrics as m;

/// One cache's running state.
pub struct Tenant {
    pub id: String,
    pub store: Store,
    pub stats: Arc<CacheStats>,
    /// Its hottest keys, fed after each command (off until asked for).
    pub hot_keys: HotKeys,
    /// Set when the cache is disabled or removed by a reload: its logged-in
    /// connections then get authentication errors, as a fresh login would.
    pub disabled: AtomicBool,
    /// Unix seconds of the last login or command, for `memgate analytics
    /// --disable-after`. Starts at the node's start (or the cache's
    /// creation), so a restart never makes a cache look idle.
    pub last_active: AtomicU64,
    /// Keys a sidecar's warm-up deleted recently, which refuse its copies.
    pub tombstones: Tombstones,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Tenant {
    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Relaxed)
    }

    /// Record activity at `now` (unix seconds). Stores only when the second
    /// changed, so busy caches do not bounce the cache line between cores.
    #[inline]
    pub fn touch(&self, now: u64) {
        if self.last_active.load(Ordering::Relaxed) < now {
            self.last_active.store(now, Ordering::Relaxed);
        }
    }

    pub fn last_active(&self) -> u64 {
        self.last_active.load(Ordering::Relaxed)
    }
}

/// A successful login: the cache it lands in and what it may do there.
#[derive(Clone, Debug)]
pub struct Login {
    pub tenant: Arc<Tenant>,
    pub caps: Capabilities,
}

/// Why a login failed; `tenant` is set when the username belongs to a cache,
/// so that cache's `auth_errors` can be counted.
#[derive(Debug)]
pub struct LoginFailure {
    pub tenant: Option<Arc<Tenant>>,
    /// Set when the throttle refused the attempt unchecked.
    pub throttled: Option<Throttled>,
}

impl LoginFailure {
    /// For a throttled attempt, how long until the throttle may let the
    /// next one through: any attempt sooner is refused unchecked.
    pub fn retry_after(&self) -> Option<Duration> {
        self.throttled.map(|t| t.remaining)
    }
}

/// A login's credentials, as the client sent them.
#[derive(Clone, Copy)]
pub enum Attempt<'a> {
    /// SASL PLAIN's username and password.
    Sasl {
        username: &'a [u8],
        password: &'a [u8],
    },
    /// The ASCII login: MemCachier's form (key = username, value =
    /// password), else memcached `-Y`'s (any key, value = "username
    /// password").
    Ascii { key: &'a [u8], value: &'a [u8] },
}

/// The usernames an attempt as `forms` tries, each once.
fn usernames<'a>(forms: &[(&'a [u8], &[u8])]) -> Vec<&'a [u8]> {
    let mut usernames: Vec<&[u8]> = forms.iter().map(|&(u, _)| u).collect();
    usernames.dedup();
    usernames
}

/// Tell the throttle how an admitted attempt went.
fn settle(
    admission: Admission,
    checked: Result<(Login, &[u8]), LoginFailure>,
) -> Result<Login, LoginFailure> {
    match checked {
        Ok((login, username)) => {
            admission.succeeded(username);
            Ok(login)
        }
        Err(failure) => {
            admission.failed(Instant::now());
            Err(failure)
        }
    }
}

/// A consistent snapshot of the caches file and the running caches.
pub struct Tenants {
    directory: Directory,
    by_id: HashMap<String, Arc<Tenant>>,
    throttle: Arc<Throttle>,
    /// The threads that check password hashes, one per core, at a lower
    /// priority than the sessions. Kept across reloads, like the throttle.
    hashers: Arc<Hashers>,
}

impl Tenants {
    /// Build the running state for `file`, reusing the stores of `previous`
    /// for caches that are still present (so reload keeps data), and its
    /// throttle. New stores get `settings`' item size and what-if switch.
    pub fn build(
        file: &CachesFile,
        settings: &NodeSettings,
        previous: Option<&Tenants>,
    ) -> Result<Tenants, Invalid> {
        let directory = Directory::new(file.clone())?;
        let mut by_id = HashMap::with_capacity(file.caches.len());
        for cache in &file.caches {
            let limit = usize::try_from(cache.memory_limit).unwrap_or(usize::MAX);
            let tenant = match previous.and_then(|p| p.by_id.get(&cache.id)) {
                Some(existing) => {
                    existing.store.set_limit(limit);
                    Arc::clone(existing)
                }
                None => {
                    let stats = Arc::new(CacheStats::default());
                    let store = Store::new(limit, settings.max_item_size, Arc::clone(&stats));
                    Arc::new(Tenant {
                        id: cache.id.clone(),
                        store: if settings.what_if {
                            store
                        } else {
                            store.without_what_if()
                        },
                        stats,
                        hot_keys: HotKeys::default(),
                        disabled: AtomicBool::new(false),
                        last_active: AtomicU64::new(unix_now()),
                        tombstones: Tombstones::default(),
                    })
                }
            };
            tenant.disabled.store(cache.disabled, Ordering::Relaxed);
            by_id.insert(cache.id.clone(), tenant);
        }
        // Caches that left the file: their connections must stop working.
        if let Some(previous) = previous {
            for (id, tenant) in &previous.by_id {
                if !by_id.contains_key(id) {
                    tenant.disabled.store(true, Ordering::Relaxed);
                }
            }
        }
        let throttle = previous.map_or_else(Arc::default, |p| Arc::clone(&p.throttle));
        let hashers = match previous {
            Some(previous) => Arc::clone(&previous.hashers),
            None => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                Arc::new(Hashers::new(cores))
            }
        };
        Ok(Tenants {
            directory,
            by_id,
            throttle,
            hashers,
        })
    }

    /// Check a login from `peer`; on success, the cache and capabilities.
    /// The throttle admits it first, or refuses it unchecked. Decided on
    /// the spot when no password hash is needed (a returning client, a
    /// plain-text secret); otherwise checked again in full on the blocking
    /// pool, once one of the [`Tenants::hashers`] is free.
    pub async fn log_in(
        self: Arc<Self>,
        attempt: Attempt<'_>,
        peer: IpAddr,
    ) -> Result<Login, LoginFailure> {
        let anonymous = || LoginFailure {
            tenant: None,
            throttled: None,
        };
        let (ascii, first, second) = match attempt {
            Attempt::Sasl { username, password } => (false, username, password),
            Attempt::Ascii { key, value } => (true, key, value),
        };
        let forms = self.forms(ascii, first, second);
        let admission = self
            .throttle
            .admit(peer, &usernames(&forms), Instant::now())
            .map_err(|throttled| self.throttled(&forms, throttled))?;
        if let Some(checked) = self.check_forms(&forms, false) {
            return settle(admission, checked);
        }
        // Dropped undecided (the client left, or the check panicked), the
        // admission stops counting.
        let (first, second) = (first.to_vec(), second.to_vec());
        let hashers = Arc::clone(&self.hashers);
        let checked = hashers.run(move || {
            let forms = self.forms(ascii, &first, &second);
            // Other attempts may have failed, and blocked this one's keys,
            // while it waited for a hasher: then it is refused unhashed.
            if let Err(throttled) = admission.still_admitted(Instant::now()) {
                return Err(self.throttled(&forms, throttled));
            }
            match self.check_forms(&forms, true) {
                Some(checked) => settle(admission, checked),
                None => Err(anonymous()),
            }
        });
        // A check that may hash always decides; a panicked one fails.
        checked.await.unwrap_or_else(|| Err(anonymous()))
    }

    /// The (username, password) forms a login may be: one for SASL; for the
    /// ASCII login (`ascii`), only the forms whose username exists, so a
    /// `-Y` login costs one verification. Both forms count as one attempt
    /// for the throttle: a `-Y` client never throttles itself.
    fn forms<'a>(
        &self,
        ascii: bool,
        first: &'a [u8],
        second: &'a [u8],
    ) -> Vec<(&'a [u8], &'a [u8])> {
        if !ascii {
            return vec![(first, second)];
        }
        let (key, value) = (first, second);
        let known = |u: &[u8]| self.directory.cache_of_username(u).is_some();
        let mut forms: Vec<(&[u8], &[u8])> = Vec::with_capacity(2);
        if known(key) {
            forms.push((key, value));
        }
        let mut parts = value.splitn(2, |&b| b == b' ');
        if let (Some(user), Some(pass)) = (parts.next(), parts.next()) {
            if known(user) {
                forms.push((user, pass));
            }
        }
        if forms.is_empty() {
            // Nobody to check: fails like an unknown username, in as long.
            forms.push((key, value));
        }
        forms
    }

    /// The failure of an attempt as `forms` that the throttle refused.
    fn throttled(&self, forms: &[(&[u8], &[u8])], throttled: Throttled) -> LoginFailure {
        metrics::counter!(m::NODE_AUTH_THROTTLED_TOTAL, "reason" => throttled.reason.as_str())
            .increment(1);
        LoginFailure {
            tenant: usernames(forms)
                .iter()
                .rev()
                .find_map(|u| self.tenant_of(u)),
            throttled: Some(throttled),
        }
    }

    /// Check an attempt that succeeds if any of `forms` (username,
    /// password) does: the login and the username it used. Without
    /// `may_hash`, `None` when a form needs a password hash.
    fn check_forms<'f>(
        &self,
        forms: &[(&'f [u8], &[u8])],
        may_hash: bool,
    ) -> Option<Result<(Login, &'f [u8]), LoginFailure>> {
        let mut failure = LoginFailure {
            tenant: None,
            throttled: None,
        };
        for &(username, password) in forms {
            match self.check(username, password, may_hash)? {
                Ok(login) => return Some(Ok((login, username))),
                Err(f) if f.tenant.is_some() || failure.tenant.is_none() => failure = f,
                Err(_) => {}
            }
        }
        Some(Err(failure))
    }

    /// Check one username and password, unthrottled; without `may_hash`,
    /// `None` when that needs a password hash.
    fn check(
        &self,
        username: &[u8],
        password: &[u8],
        may_hash: bool,
    ) -> Option<Result<Login, LoginFailure>> {
        let failed = |tenant: Option<Arc<Tenant>>| LoginFailure {
            tenant,
            throttled: None,
        };
        let checked = if may_hash {
            self.directory.login(username, password)
        } else {
            self.directory.login_unhashed(username, password)?
        };
        Some(match checked {
            Ok(ok) => match self.by_id.get(&ok.cache_id) {
                Some(tenant) if !tenant.is_disabled() => Ok(Login {
                    tenant: Arc::clone(tenant),
                    caps: ok.caps,
                }),
                other => Err(failed(other.cloned())),
            },
            Err(_) => Err(failed(self.tenant_of(username))),
        })
    }

    /// The running cache a username belongs to, for counting its failures.
    fn tenant_of(&self, username: &[u8]) -> Option<Arc<Tenant>> {
        self.directory
            .cache_of_username(username)
            .and_then(|i| self.directory.caches().get(i))
            .and_then(|cache| self.by_id.get(&cache.id).cloned())
    }

    /// How long `peer`'s address stays blocked by the throttle, if it is.
    pub fn address_blocked(&self, peer: IpAddr, now: Instant) -> Option<Duration> {
        self.throttle.address_blocked(peer, now)
    }

    /// The caches file this snapshot was built from.
    pub fn file(&self) -> &CachesFile {
        self.directory.file()
    }

    /// Check a username and password without touching any cache's counters
    /// (the admin API's login check): the cache, username and capabilities,
    /// and whether the cache is disabled. Unlike [`Tenants::login`] it
    /// accepts a disabled cache's credential, so its owner can still reach
    /// the dashboard to enable it again.
    pub fn check_login(
        &self,
        username: &[u8],
        password: &[u8],
    ) -> Result<(LoginOk, bool), LoginError> {
        let ok = self.directory.verify(username, password)?;
        let disabled = self
            .directory
            .caches()
            .get(ok.cache_index)
            .is_some_and(|c| c.disabled);
        Ok((ok, disabled))
    }

    /// Every running cache, for stats, metrics and the background sweeper.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.by_id.values()
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Tenant>> {
        self.by_id.get(id)
    }

    /// Sum of every cache's memory limit.
    pub fn total_limit(&self) -> u64 {
        self.by_id.values().map(|t| t.store.usage().limit).sum()
    }
}

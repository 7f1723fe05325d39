//! The live caches (tenants) of a node: each cache's store and counters.
//!
//! The caches file says which caches exist and who may log in; this module
//! keeps the running state that must survive a reload: a cache that is still
//! in the file keeps its store, items and counters when SIGHUP re-reads it.
//! Connections hold an `Arc<Tenant>`, so a reload never drops them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::caches::{CachesFile, Capabilities, Directory, Invalid, LoginError, LoginOk};
use super::counters::CacheStats;
use super::store::Store;
use crate::clock::unix_now;

/// One cache's running state.
pub struct Tenant {
    pub id: String,
    pub store: Store,
    pub stats: Arc<CacheStats>,
    /// Set when the cache is disabled or removed by a reload: its logged-in
    /// connections then get authentication errors, as a fresh login would.
    pub disabled: AtomicBool,
    /// Unix seconds of the last login or command, for `memgate analytics
    /// --disable-after`. Starts at the node's start (or the cache's
    /// creation), so a restart never makes a cache look idle.
    pub last_active: AtomicU64,
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
}

/// A consistent snapshot of the caches file and the running caches.
pub struct Tenants {
    directory: Directory,
    by_id: HashMap<String, Arc<Tenant>>,
}

impl Tenants {
    /// Build the running state for `file`, reusing the stores of `previous`
    /// for caches that are still present (so reload keeps data).
    pub fn build(
        file: &CachesFile,
        max_item_size: usize,
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
                    Arc::new(Tenant {
                        id: cache.id.clone(),
                        store: Store::new(limit, max_item_size, Arc::clone(&stats)),
                        stats,
                        disabled: AtomicBool::new(false),
                        last_active: AtomicU64::new(unix_now()),
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
        Ok(Tenants { directory, by_id })
    }

    /// Check a username and password; on success, the cache and capabilities.
    pub fn login(&self, username: &[u8], password: &[u8]) -> Result<Login, LoginFailure> {
        match self.directory.login(username, password) {
            Ok(ok) => match self.by_id.get(&ok.cache_id) {
                Some(tenant) if !tenant.is_disabled() => Ok(Login {
                    tenant: Arc::clone(tenant),
                    caps: ok.caps,
                }),
                other => Err(LoginFailure {
                    tenant: other.cloned(),
                }),
            },
            Err(_) => Err(LoginFailure {
                tenant: self
                    .directory
                    .cache_of_username(username)
                    .and_then(|i| self.directory.caches().get(i))
                    .and_then(|cache| self.by_id.get(&cache.id).cloned()),
            }),
        }
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

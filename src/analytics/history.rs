//! The analytics database (SQLite) and the background loop.
//!
//! Tables:
//! - `history(cache_id, server, timestamp_ms, stats)`: one row per cache per
//!   node per sample; `stats` is the node's JSON object. Rows older than
//!   `--retention` are deleted after each sample.
//! - `what_if(cache_id, timestamp_ms, curve)`: the cache's what-if curve
//!   merged over its nodes (`mrc::WhatIf` as JSON), one row per cache
//!   per sample, pruned with the history.
//! - `pending(id, node, change)`: credential changes a node has not applied
//!   yet, in order; they survive a restart of `memgate analytics`.
//!
//! The loop wakes every few seconds (at most every `--sample-interval`):
//! it retries pending changes and looks for idle caches (`--disable-after`)
//! each time, and samples when a sample is due.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};
use serde_json::Value;

use super::{ops, Change, Service};
use crate::clock::unix_now_ms;
use crate::metrics as m;
use crate::mrc::WhatIf;

/// How often pending changes are retried (when the sample interval is longer).
const RETRY_EVERY: Duration = Duration::from_secs(5);

/// One history row, as the API returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub cache_id: String,
    pub server: String,
    pub timestamp_ms: i64,
    pub stats: Value,
}

/// The SQLite connection. Every statement is short, so one connection
/// behind a mutex is enough.
pub struct Db {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cache_id TEXT NOT NULL,
    server TEXT NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    stats TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_by_cache ON history (cache_id, timestamp_ms);
CREATE TABLE IF NOT EXISTS what_if (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cache_id TEXT NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    curve TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS what_if_by_cache ON what_if (cache_id, timestamp_ms);
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    change TEXT NOT NULL
);
";

impl Db {
    pub fn open(path: &Path) -> rusqlite::Result<Db> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Db::with(conn)
    }

    pub fn in_memory() -> rusqlite::Result<Db> {
        Db::with(Connection::open_in_memory()?)
    }

    fn with(conn: Connection) -> rusqlite::Result<Db> {
        conn.execute_batch(SCHEMA)?;
        Ok(Db {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert_samples(&self, samples: &[Sample]) -> rusqlite::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO history (cache_id, server, timestamp_ms, stats) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for s in samples {
                stmt.execute(params![
                    s.cache_id,
                    s.server,
                    s.timestamp_ms,
                    s.stats.to_string()
                ])?;
            }
        }
        tx.commit()
    }

    /// A cache's history, oldest first.
    pub fn history(&self, cache_id: &str) -> rusqlite::Result<Vec<Sample>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT cache_id, server, timestamp_ms, stats FROM history \
             WHERE cache_id = ?1 ORDER BY timestamp_ms, id",
        )?;
        let rows = stmt.query_map(params![cache_id], |row| {
            let stats: String = row.get(3)?;
            Ok(Sample {
                cache_id: row.get(0)?,
                server: row.get(1)?,
                timestamp_ms: row.get(2)?,
                stats: serde_json::from_str(&stats).unwrap_or(Value::Null),
            })
        })?;
        rows.collect()
    }

    /// Keep merged what-if curves: `(cache_id, timestamp_ms, curve)`.
    pub fn insert_what_ifs(&self, rows: &[(String, i64, WhatIf)]) -> rusqlite::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO what_if (cache_id, timestamp_ms, curve) VALUES (?1, ?2, ?3)",
            )?;
            for (cache_id, timestamp_ms, curve) in rows {
                let json = serde_json::to_string(curve).unwrap_or_default();
                stmt.execute(params![cache_id, timestamp_ms, json])?;
            }
        }
        tx.commit()
    }

    /// A cache's kept what-if curves, oldest first.
    pub fn what_if_history(&self, cache_id: &str) -> rusqlite::Result<Vec<(i64, WhatIf)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT timestamp_ms, curve FROM what_if WHERE cache_id = ?1 ORDER BY timestamp_ms, id",
        )?;
        let rows = stmt.query_map(params![cache_id], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (t, json) = row?;
            if let Ok(curve) = serde_json::from_str(&json) {
                out.push((t, curve));
            }
        }
        Ok(out)
    }

    /// Delete rows older than `cutoff_ms`; returns how many.
    pub fn prune(&self, cutoff_ms: i64) -> rusqlite::Result<usize> {
        let conn = self.conn();
        conn.execute(
            "DELETE FROM what_if WHERE timestamp_ms < ?1",
            params![cutoff_ms],
        )?;
        conn.execute(
            "DELETE FROM history WHERE timestamp_ms < ?1",
            params![cutoff_ms],
        )
    }

    pub fn pending_add(&self, node: &str, change: &Change) -> rusqlite::Result<()> {
        let json = serde_json::to_string(change).unwrap_or_default();
        self.conn().execute(
            "INSERT INTO pending (node, change) VALUES (?1, ?2)",
            params![node, json],
        )?;
        Ok(())
    }

    /// A node's pending changes, in order.
    pub fn pending_for(&self, node: &str) -> rusqlite::Result<Vec<(i64, Change)>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT id, change FROM pending WHERE node = ?1 ORDER BY id")?;
        let rows = stmt.query_map(params![node], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, json) = row?;
            match serde_json::from_str(&json) {
                Ok(change) => out.push((id, change)),
                Err(error) => tracing::error!(id, %error, "unreadable pending change skipped"),
            }
        }
        Ok(out)
    }

    pub fn pending_remove(&self, id: i64) -> rusqlite::Result<()> {
        self.conn()
            .execute("DELETE FROM pending WHERE id = ?1", params![id])?;
        Ok(())
    }

    pub fn pending_count(&self, node: &str) -> rusqlite::Result<u64> {
        self.conn().query_row(
            "SELECT COUNT(*) FROM pending WHERE node = ?1",
            params![node],
            |row| row.get(0),
        )
    }

    /// The nodes that have pending changes.
    pub fn pending_nodes(&self) -> rusqlite::Result<HashSet<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT DISTINCT node FROM pending")?;
        let rows = stmt.query_map([], |row| row.get(0))?;
        rows.collect()
    }
}

/// Sample every cache on every node once; returns the rows written.
pub async fn sample_once(service: &Service) -> usize {
    let now = unix_now_ms();
    let mut samples = Vec::new();
    let mut curves: BTreeMap<String, Vec<WhatIf>> = BTreeMap::new();
    for node in &service.nodes {
        let caches = match service.caches_of(node).await {
            Ok(view) => view.caches,
            Err(error) => {
                tracing::debug!(%error, "node not sampled");
                continue;
            }
        };
        for cache in caches {
            if let Ok(ops::NodeWhatIf::Curve(curve)) =
                ops::node_what_if(service, node, &cache.id).await
            {
                curves.entry(cache.id.clone()).or_default().push(curve);
            }
            let path = format!("/admin/caches/{}/stats", cache.id);
            if let Ok((200, stats)) = service.call(node, "GET", &path, None).await {
                samples.push(Sample {
                    cache_id: cache.id,
                    server: node.label.clone(),
                    timestamp_ms: now,
                    stats,
                });
            }
        }
    }
    if let Err(error) = service.db.insert_samples(&samples) {
        tracing::error!(%error, "history not written");
        return 0;
    }
    let merged: Vec<(String, i64, WhatIf)> = curves
        .into_iter()
        .map(|(id, parts)| (id, now, WhatIf::merged(&parts)))
        .collect();
    if let Err(error) = service.db.insert_what_ifs(&merged) {
        tracing::error!(%error, "what-if history not written");
    }
    metrics::counter!(m::ANALYTICS_SAMPLES_TOTAL).increment(samples.len() as u64);
    let cutoff = now - service.retention.as_millis().min(i64::MAX as u128) as i64;
    match service.db.prune(cutoff) {
        Ok(0) => {}
        Ok(n) => tracing::debug!(rows = n, "old history deleted"),
        Err(error) => tracing::error!(%error, "history not pruned"),
    }
    samples.len()
}

/// Retry pending changes and sample on schedule, forever.
pub async fn background(service: Arc<Service>) {
    let step = service.sample_interval.min(RETRY_EVERY);
    let mut tick = tokio::time::interval(step);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_sample = Instant::now();
    loop {
        tick.tick().await;
        service.retry_pending().await;
        if let Some(idle) = service.disable_after {
            super::inactivity::sweep(&service, idle).await;
        }
        if Instant::now() >= next_sample {
            next_sample = Instant::now() + service.sample_interval;
            let rows = sample_once(&service).await;
            tracing::debug!(rows, "history sampled");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_and_pending_round_trip() {
        let db = Db::in_memory().unwrap();
        let row = |t, cache: &str| Sample {
            cache_id: cache.into(),
            server: "n1".into(),
            timestamp_ms: t,
            stats: serde_json::json!({ "get_hits": t }),
        };
        db.insert_samples(&[row(2, "a"), row(1, "a"), row(1, "b")])
            .unwrap();
        let h = db.history("a").unwrap();
        assert_eq!(h.iter().map(|s| s.timestamp_ms).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(h[0].stats["get_hits"], 1);
        assert_eq!(db.prune(2).unwrap(), 2);
        assert_eq!(db.history("a").unwrap().len(), 1);

        let change = Change::Promote {
            cache_id: "a".into(),
            username: "u".into(),
        };
        db.pending_add("n1", &change).unwrap();
        db.pending_add("n1", &change).unwrap();
        let q = db.pending_for("n1").unwrap();
        assert_eq!(q.len(), 2);
        assert_eq!(q[0].1, change);
        assert!(db.pending_nodes().unwrap().contains("n1"));
        db.pending_remove(q[0].0).unwrap();
        assert_eq!(db.pending_count("n1").unwrap(), 1);
        assert!(db.pending_for("n2").unwrap().is_empty());
    }
}

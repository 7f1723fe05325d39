//! The server's `stats` before and after a check: evictions, flushes and
//! restarts explain misses that would otherwise be lost writes.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::protocol::binary;
use crate::protocol::text::client::{self as text_client, TextReply};
use crate::protocol::Command;

use super::super::conn::{self, MAX_REPLY_VALUE};
use super::super::{BenchConfig, Protocol};
use super::CheckOptions;

/// A server that takes longer than this for `stats` has none to give.
const STATS_TIMEOUT: Duration = Duration::from_secs(5);
/// A `stats` reply larger than this is not one.
const MAX_STATS_BYTES: usize = 1 << 20;

/// One server's stats, or `None` if they could not be read.
pub(super) type Snapshot = Vec<(String, Option<HashMap<String, String>>)>;

/// Read every stats source of the run.
pub(super) async fn read(config: &BenchConfig, options: &CheckOptions) -> Snapshot {
    let mut snapshot = Vec::new();
    if options.stats_from.is_empty() {
        let got = tokio::time::timeout(STATS_TIMEOUT, async {
            let mut conn = conn::connect(config).await.ok()?;
            fetch(&mut conn, config.protocol).await
        })
        .await
        .ok()
        .flatten();
        snapshot.push((config.server.clone(), got));
    }
    for server in &options.stats_from {
        let got = tokio::time::timeout(STATS_TIMEOUT, async {
            let mut conn = tokio::net::TcpStream::connect(server.as_str()).await.ok()?;
            fetch(&mut conn, Protocol::Text).await
        })
        .await
        .ok()
        .flatten();
        snapshot.push((server.clone(), got));
    }
    snapshot
}

/// `stats` on `conn`, in `protocol`.
async fn fetch(
    conn: &mut (impl AsyncRead + AsyncWrite + Unpin),
    protocol: Protocol,
) -> Option<HashMap<String, String>> {
    let mut stats = HashMap::new();
    let mut buf = BytesMut::new();
    match protocol {
        Protocol::Text | Protocol::Meta => {
            conn.write_all(b"stats\r\n").await.ok()?;
            loop {
                match text_client::parse_reply(&buf, MAX_REPLY_VALUE).ok()? {
                    Some((TextReply::Stat { name, value }, used)) => {
                        stats.insert(name, value);
                        let _ = buf.split_to(used);
                    }
                    Some((TextReply::End, _)) => return Some(stats),
                    // An error (twemproxy has no `stats`) or anything else.
                    Some(_) => return None,
                    None => {
                        if buf.len() > MAX_STATS_BYTES || conn.read_buf(&mut buf).await.ok()? == 0 {
                            return None;
                        }
                    }
                }
            }
        }
        Protocol::Binary => {
            let command = Command::Stats { group: None };
            let mut out = BytesMut::new();
            binary::encode_request(&command, false, 0, &mut out).ok()?;
            conn.write_all(&out).await.ok()?;
            loop {
                match binary::parse_response(&buf).ok()? {
                    Some((packet, used)) => {
                        let _ = buf.split_to(used);
                        if packet.status != binary::status::NO_ERROR {
                            return None;
                        }
                        if packet.key.is_empty() {
                            return Some(stats);
                        }
                        stats.insert(text(&packet.key), text(&packet.value));
                    }
                    None => {
                        if buf.len() > MAX_STATS_BYTES || conn.read_buf(&mut buf).await.ok()? == 0 {
                            return None;
                        }
                    }
                }
            }
        }
    }
}

fn text(bytes: &Bytes) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What changed on the servers during the run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerChange {
    /// The stats of every source were read, before and after.
    pub available: bool,
    /// Servers whose stats could not be read.
    pub unavailable: Vec<String>,
    /// Servers whose stats have no `evictions` counter: they cannot say
    /// they evicted nothing.
    pub uncounted: Vec<String>,
    /// `evictions` went up by this much, summed over the servers.
    pub evictions: u64,
    /// `cmd_flush` went up by this much.
    pub flushes: u64,
    /// A server's `pid` changed or its `uptime` went back.
    pub restarted: Vec<String>,
}

impl ServerChange {
    pub(super) fn between(before: Snapshot, after: Snapshot) -> ServerChange {
        let mut change = ServerChange {
            available: true,
            ..ServerChange::default()
        };
        for ((server, before), (_, after)) in before.into_iter().zip(after) {
            let (Some(before), Some(after)) = (before, after) else {
                change.available = false;
                change.unavailable.push(server);
                continue;
            };
            let number = |stats: &HashMap<String, String>, name: &str| {
                stats.get(name).and_then(|v| v.trim().parse::<u64>().ok())
            };
            let delta = |name: &str| match (number(&before, name), number(&after, name)) {
                (Some(b), Some(a)) => a.saturating_sub(b),
                _ => 0,
            };
            // A restart resets the counters, so a delta can then hide it:
            // the restart itself is what explains the misses.
            if number(&before, "evictions").is_none() || number(&after, "evictions").is_none() {
                change.uncounted.push(server.clone());
            }
            change.evictions += delta("evictions");
            change.flushes += delta("cmd_flush");
            let pid_changed = matches!(
                (before.get("pid"), after.get("pid")),
                (Some(b), Some(a)) if a != b
            );
            let uptime_back = matches!(
                (number(&before, "uptime"), number(&after, "uptime")),
                (Some(b), Some(a)) if a < b
            );
            if pid_changed || uptime_back {
                change.restarted.push(server);
            }
        }
        change
    }

    /// What explains a miss after an acknowledged set, if anything does:
    /// `None` means such a miss is a lost write.
    pub fn explains_misses(&self) -> Option<String> {
        let mut why = Vec::new();
        if !self.available {
            why.push(format!(
                "unknown server stats ({})",
                self.unavailable.join(", ")
            ));
        }
        if !self.uncounted.is_empty() {
            why.push(format!(
                "stats without an evictions counter ({})",
                self.uncounted.join(", ")
            ));
        }
        if self.evictions > 0 {
            why.push(format!("{} evictions", self.evictions));
        }
        if self.flushes > 0 {
            why.push(format!("{} flushes", self.flushes));
        }
        if !self.restarted.is_empty() {
            why.push(format!("a restart of {}", self.restarted.join(", ")));
        }
        (!why.is_empty()).then(|| why.join(", "))
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "stats_available": self.available,
            "unavailable": self.unavailable,
            "no_evictions_counter": self.uncounted,
            "evictions": self.evictions,
            "flushes": self.flushes,
            "restarted": self.restarted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn evictions_flushes_and_restarts_explain_misses() {
        let s = |pairs| vec![("m".to_string(), stats(pairs))];
        let quiet = ServerChange::between(
            s(&[("pid", "1"), ("uptime", "5"), ("evictions", "3")]),
            s(&[("pid", "1"), ("uptime", "9"), ("evictions", "3")]),
        );
        assert_eq!(quiet.explains_misses(), None);
        // Without the counter, no eviction cannot be told from none counted.
        let uncounted = ServerChange::between(s(&[("pid", "1")]), s(&[("pid", "1")]));
        assert!(uncounted
            .explains_misses()
            .unwrap()
            .contains("without an evictions counter"));
        let evicted = ServerChange::between(s(&[("evictions", "3")]), s(&[("evictions", "5")]));
        assert_eq!(evicted.explains_misses().as_deref(), Some("2 evictions"));
        let restarted = ServerChange::between(
            s(&[("pid", "1"), ("evictions", "0")]),
            s(&[("pid", "2"), ("evictions", "0")]),
        );
        assert!(restarted.explains_misses().unwrap().contains("restart"));
        let back = ServerChange::between(
            s(&[("uptime", "50"), ("evictions", "0")]),
            s(&[("uptime", "2"), ("evictions", "0")]),
        );
        assert!(back.explains_misses().is_some());
        let flushed = ServerChange::between(
            s(&[("cmd_flush", "0"), ("evictions", "0")]),
            s(&[("cmd_flush", "1"), ("evictions", "0")]),
        );
        assert_eq!(flushed.explains_misses().as_deref(), Some("1 flushes"));
        let unknown = ServerChange::between(
            vec![("t".to_string(), None)],
            vec![("t".to_string(), stats(&[]))],
        );
        assert!(unknown.explains_misses().unwrap().contains("unknown"));
    }
}

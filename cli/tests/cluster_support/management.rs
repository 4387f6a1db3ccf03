//! A broker's management HTTP API as the tests read it: readiness and the per-partition raft gauges.
//!
//! Requests are plain HTTP/1.0 over a TCP stream: the tests need two GETs, not an HTTP client.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `waggle_raft_role` of a leader.
pub const LEADER: i64 = 2;

/// One broker's raft gauges for one partition, all from the same scrape (a broker fills them from
/// one read of its raft state, so role and term belong together).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RaftGauges {
    pub role: i64,
    pub term: i64,
    pub last_log_index: i64,
    pub commit_index: i64,
    pub applied_index: i64,
    /// The raft index the log is compacted up to: entries up to it are gone from the log.
    pub purged_index: i64,
}

/// GETs `path` and returns the status code and body.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await.map_err(|e| e.to_string())?;
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("not an HTTP response: {text:?}"))?;
        let body = text.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .map_err(|_| format!("http://{addr}{path} did not answer within 2 s"))?
}

/// The raft gauges of every partition a broker reports, by partition id.
pub async fn raft_gauges(addr: SocketAddr) -> Result<BTreeMap<u32, RaftGauges>, String> {
    match get(addr, "/metrics").await? {
        (200, text) => Ok(parse_raft_gauges(&text)),
        (status, body) => Err(format!("GET /metrics answered {status}: {body}")),
    }
}

/// Reads lines such as `waggle_raft_term{partition="2"} 7` out of Prometheus' text format.
fn parse_raft_gauges(text: &str) -> BTreeMap<u32, RaftGauges> {
    let mut gauges: BTreeMap<u32, RaftGauges> = BTreeMap::new();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once("{partition=\"") else { continue };
        let Some((partition, value)) = rest.split_once("\"} ") else { continue };
        let (Ok(partition), Ok(value)) = (partition.parse::<u32>(), value.trim().parse::<i64>()) else { continue };
        let field: fn(&mut RaftGauges) -> &mut i64 = match name {
            "waggle_raft_role" => |g: &mut RaftGauges| &mut g.role,
            "waggle_raft_term" => |g: &mut RaftGauges| &mut g.term,
            "waggle_raft_last_log_index" => |g: &mut RaftGauges| &mut g.last_log_index,
            "waggle_raft_commit_index" => |g: &mut RaftGauges| &mut g.commit_index,
            "waggle_raft_applied_index" => |g: &mut RaftGauges| &mut g.applied_index,
            "waggle_raft_purged_index" => |g: &mut RaftGauges| &mut g.purged_index,
            _ => continue,
        };
        *field(gauges.entry(partition).or_default()) = value;
    }
    gauges
}
